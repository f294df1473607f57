//! The fake provider as a separate process, for tests and the benchmark: a
//! free port, a state folder of its own, its log in that folder. One place
//! that knows how the binary is started and how it says it is up (its first
//! line on stdout is the URL it listens on).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Why the fake provider did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("could not run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("could not prepare {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error("the fake provider did not start (first line {first_line:?}):\n{log}")]
    NotUp { first_line: String, log: String },
}

/// A running fake provider. Dropping it kills the process and removes its
/// state folder.
#[derive(Debug)]
pub struct Process {
    child: Child,
    // kept open: the fake writes nothing more, but a closed pipe must not
    // become its problem
    _stdout: BufReader<ChildStdout>,
    url: String,
    bin: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    log_level: String,
}

impl Process {
    /// Starts `bin` on a free port with state in `dir` (created), `args`
    /// beside those (e.g. `--fault-seed`, `--webhook-url`), logging at
    /// `log_level` to `dir/stderr.log`.
    pub fn start(bin: &Path, dir: &Path, args: &[&str], log_level: &str) -> Result<Process, LaunchError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| LaunchError::Folder { path: dir.display().to_string(), source })?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, stdout, url) = spawn(bin, dir, &args, log_level)?;
        Ok(Process {
            child,
            _stdout: stdout,
            url,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            args,
            log_level: log_level.to_owned(),
        })
    }

    /// Where it listens, `http://127.0.0.1:<port>`.
    /// The process's id (for reading its CPU time from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its state folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kill -9`, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new process on the same state folder (and a new port), after a kill.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        let (child, stdout, url) = spawn(&self.bin, &self.dir, &self.args, &self.log_level)?;
        (self.child, self._stdout, self.url) = (child, stdout, url);
        Ok(())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(
    bin: &Path,
    dir: &Path,
    args: &[String],
    log_level: &str,
) -> Result<(Child, BufReader<ChildStdout>, String), LaunchError> {
    let log_path = dir.join("stderr.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| LaunchError::Folder { path: log_path.display().to_string(), source })?;
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir)
        .args(args)
        .env("FAKE_PROVIDER_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|source| LaunchError::Spawn { program: bin.display().to_string(), source })?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let url = line.trim().to_owned();
    if !url.starts_with("http://127.0.0.1:") {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(LaunchError::NotUp { first_line: line, log });
    }
    Ok((child, stdout, url))
}
