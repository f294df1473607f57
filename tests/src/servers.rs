//! Private PostgreSQL and RabbitMQ servers for tests that stop, crash and
//! restart the database or the broker themselves. The machine's shared
//! servers (and the shared node's epmd) are never touched: each instance has
//! a folder of its own under the temp dir, ports of its own and, for
//! RabbitMQ, a node name, cookie and epmd of its own. Dropping an instance
//! stops every process it started and removes its folder, also when the test
//! panicked.
//!
//! Two choices keep restarts and cleanup reliable:
//! - Ports come from below the kernel's ephemeral range and are leased
//!   through a file per port, so while a server is down for a minute its port
//!   cannot be handed to an outgoing connection (a client retrying against a
//!   closed ephemeral port can even connect to itself) nor to another private
//!   server, and a restart binds the same address again.
//! - Every instance has a watchdog shell holding the read end of a pipe whose
//!   write end only the owning process holds. If that process dies without
//!   dropping the instance (killed by a timeout, Ctrl-C), the pipe closes and
//!   the watchdog kills what the instance started and removes its folder.
//!   Processes are recognised by an environment variable naming the folder,
//!   not by pid files.
//!
//! Blocking work (spawning, signalling, waiting) runs on tokio's blocking
//! pool, so a test's other tasks (purchases flowing) keep running on a
//! current-thread runtime while a server stops or starts.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv6Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable set on every process an instance starts; its value is
/// the instance's folder.
const MARKER: &str = "LEDGER_PRIVATE_SERVER";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Debian's PostgreSQL 15 binaries; `PRIVATE_PG_BINDIR` overrides.
const PG_BINDIR: &str = "/usr/lib/postgresql/15/bin";
/// RabbitMQ's own scripts, not Debian's wrappers in /usr/sbin, which switch
/// to the `rabbitmq` user, its cookie and its node name; `PRIVATE_RABBITMQ_BINDIR`
/// overrides.
const RABBITMQ_BINDIR: &str = "/usr/lib/rabbitmq/bin";
/// The shared servers' ports: never lease them, even while a server is down.
const RESERVED_PORTS: &[u16] = &[4369, 5432, 5672, 15672, 25672];
/// Each node would otherwise allow itself 0.4 × the machine's RAM. An idle
/// node's RSS (what 3.10 compares with the watermark) is about 140 MB; this
/// leaves room for a backlog built up during an outage before publishers
/// are blocked.
const RABBIT_MEMORY_WATERMARK_BYTES: u64 = 512 * 1024 * 1024;

const PG_START_TIMEOUT: Duration = Duration::from_secs(60);
const PG_STOP_TIMEOUT: Duration = Duration::from_secs(60);
const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(120);
const RABBIT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// A first start retries with new ports when these are taken meanwhile.
const FIRST_START_ATTEMPTS: usize = 4;

/// A private server could not be created, started or stopped.
#[derive(Debug)]
pub struct ServerError {
    message: String,
    port_in_use: bool,
}

impl ServerError {
    fn new(message: impl Into<String>) -> ServerError {
        ServerError { message: message.into(), port_in_use: false }
    }

    fn io(what: impl fmt::Display, e: io::Error) -> ServerError {
        ServerError::new(format!("{what}: {e}"))
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

type Result<T> = std::result::Result<T, ServerError>;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServerError::new(format!("blocking task failed: {e}")))?
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the cleanup in Drop.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

// ---------------------------------------------------------------------------
// Processes

/// Whether a process exists and has not exited (a zombie waiting to be
/// reaped counts as gone).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X') | None
        ),
        Err(_) => false,
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

fn children_of(pid: u32) -> Vec<u32> {
    all_pids().into_iter().filter(|&p| parent_of(p) == Some(pid)).collect()
}

/// Live processes started by the instance in `dir` (they carry its marker).
/// PostgreSQL's backends overwrite their environment with their process
/// title, so for PostgreSQL this finds the postmaster only.
pub fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = format!("{MARKER}={}", dir.display()).into_bytes();
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&p| p != me && process_alive(p))
        .filter(|p| {
            fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}

fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Polls until every pid has exited or the deadline passes.
fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|&p| !process_alive(p)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls a child until it exits; true if it did within `timeout`.
fn wait_child(slot: &Mutex<Option<Child>>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let mut guard = lock(slot);
            match guard.as_mut().map(|c| c.try_wait()) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => {
                    *guard = None;
                    return true;
                }
                Some(Ok(None)) => {}
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn child_running(slot: &Mutex<Option<Child>>) -> bool {
    let mut guard = lock(slot);
    match guard.as_mut().map(|c| c.try_wait()) {
        Some(Ok(None)) => true,
        Some(_) => {
            *guard = None;
            false
        }
        None => false,
    }
}

fn child_pid(slot: &Mutex<Option<Child>>) -> Option<u32> {
    lock(slot).as_ref().map(Child::id)
}

/// SIGKILL for a child of ours, then reap it.
fn kill_child(slot: &Mutex<Option<Child>>) {
    if let Some(mut child) = lock(slot).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How many processes have a System V shared memory segment attached, if it
/// exists.
fn attached(key: u64, id: u64) -> Option<u64> {
    let table = fs::read_to_string("/proc/sysvipc/shm").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 6 && f[0].parse() == Ok(key) && f[1].parse() == Ok(id)).then(|| f[6].parse().ok())?
    })
}

fn our_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The uid and gid of a local user.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The last lines a file received since `offset`.
fn log_tail(path: &Path, offset: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn append_log(path: &Path) -> Result<(Stdio, Stdio)> {
    let f = OpenOptions::new().create(true).append(true).open(path).map_err(|e| ServerError::io(path.display(), e))?;
    let g = f.try_clone().map_err(|e| ServerError::io(path.display(), e))?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

// ---------------------------------------------------------------------------
// Ports

fn ports_dir() -> PathBuf {
    std::env::temp_dir().join("ledger-private-ports")
}

/// A port held for one instance until dropped.
struct PortLease {
    port: u16,
    file: PathBuf,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

/// Candidate ports lie below the ephemeral range, which the kernel hands out
/// for bind(0) and for the local end of every outgoing connection.
fn candidate_range() -> (u16, u16) {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 21000 {
        (20000, low)
    } else {
        // An unusual ephemeral range: fall back to the top of the port space.
        (61000, 65535)
    }
}

fn port_is_free(port: u16) -> bool {
    if TcpListener::bind(("127.0.0.1", port)).is_err() {
        return false;
    }
    // epmd also listens on ::1.
    match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::AddrNotAvailable || e.kind() == io::ErrorKind::Unsupported,
    }
}

fn try_lease(port: u16, owner: &Path) -> Option<PortLease> {
    let file = ports_dir().join(port.to_string());
    for _ in 0..3 {
        match OpenOptions::new().write(true).create_new(true).open(&file) {
            Ok(mut f) => {
                let _ = f.write_all(owner.to_string_lossy().as_bytes());
                return Some(PortLease { port, file });
            }
            // The last instance to go removes the folder; make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = fs::create_dir_all(ports_dir());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A lease whose instance folder is gone was left by a process
                // that died before its watchdog could run: take it over.
                let holder = fs::read_to_string(&file).unwrap_or_default();
                if holder.is_empty() || Path::new(&holder).exists() {
                    return None;
                }
                let _ = fs::remove_file(&file);
            }
            Err(_) => return None,
        }
    }
    None
}

fn lease_ports(n: usize, owner: &Path) -> Result<Vec<PortLease>> {
    fs::create_dir_all(ports_dir()).map_err(|e| ServerError::io(ports_dir().display(), e))?;
    let (low, high) = candidate_range();
    let mut leases = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if leases.len() == n {
            return Ok(leases);
        }
        let port = low + (random_u64() % u64::from(high - low)) as u16;
        if RESERVED_PORTS.contains(&port) || leases.iter().any(|l: &PortLease| l.port == port) {
            continue;
        }
        if let Some(lease) = try_lease(port, owner) {
            if port_is_free(port) {
                leases.push(lease);
            }
        }
    }
    Err(ServerError::new(format!("no free ports between {low} and {high}")))
}

// ---------------------------------------------------------------------------
// The folder, its leases and its watchdog

/// What the watchdog runs when the owner goes away without saying `done`:
/// stop a PostgreSQL postmaster (immediate shutdown, it stops its backends),
/// kill everything carrying the marker, remove the folder and its leases.
const WATCHDOG: &str = r#"
read -r line
[ "$line" = done ] && exit 0
dir=$1
ports=$2
pidfile="$dir/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  pid=$(head -n 1 "$pidfile")
  shm=$(sed -n 7p "$pidfile")
  if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/data"; then
    kill -QUIT "$pid" 2>/dev/null
    n=0
    while [ $n -lt 50 ] && [ -d "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; do
      sleep 0.1
      n=$((n + 1))
    done
  fi
  # A crashed postmaster leaves its System V segment behind.
  set -- $shm
  if [ -n "$2" ] && awk -v k="$1" -v id="$2" '$1 == k && $2 == id && $7 == 0 { f = 1 } END { exit !f }' /proc/sysvipc/shm; then
    ipcrm -m "$2"
  fi
fi
for e in /proc/[0-9]*/environ; do
  if tr '\0' '\n' < "$e" 2>/dev/null | grep -qxF "LEDGER_PRIVATE_SERVER=$dir"; then
    p=${e#/proc/}
    kill -9 "${p%/environ}" 2>/dev/null
  fi
done
rm -rf "$dir"
for f in "$ports"/*; do
  [ "$(cat "$f" 2>/dev/null)" = "$dir" ] && rm -f "$f"
done
rmdir "$ports" 2>/dev/null
exit 0
"#;

struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

struct Site {
    dir: PathBuf,
    leases: Mutex<Vec<PortLease>>,
    watchdog: Mutex<Option<Watchdog>>,
}

impl Site {
    fn create(kind: &str) -> Result<Site> {
        let dir = loop {
            let dir =
                std::env::temp_dir().join(format!("ledger-{kind}-{}-{:08x}", std::process::id(), random_u64() as u32));
            match fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ServerError::io(dir.display(), e)),
            }
        };
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
        let site = Site { dir, leases: Mutex::new(Vec::new()), watchdog: Mutex::new(None) };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG.replace("LEDGER_PRIVATE_SERVER", MARKER))
            .arg("watchdog")
            .arg(&site.dir)
            .arg(ports_dir())
            .env_clear()
            .env("PATH", PATH)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C meant for the tests must not take it down first.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let _ = fs::remove_dir_all(&site.dir);
                ServerError::io("starting the watchdog", e)
            })?;
        let stdin = child.stdin.take();
        *lock(&site.watchdog) = Some(Watchdog { child, stdin });
        Ok(site)
    }

    /// Leases `n` new ports, releasing the ones held before.
    fn lease(&self, n: usize) -> Result<Vec<u16>> {
        let fresh = lease_ports(n, &self.dir)?;
        let ports = fresh.iter().map(|l| l.port).collect();
        *lock(&self.leases) = fresh;
        Ok(ports)
    }

    fn marker(&self) -> String {
        self.dir.display().to_string()
    }

    /// Kills whatever still carries the marker, removes the folder and the
    /// leases, then dismisses the watchdog.
    fn teardown(&self) {
        let left = processes_of(&self.dir);
        signal(&left, "KILL");
        wait_gone(&left, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&self.dir);
        lock(&self.leases).clear();
        // Succeeds only once no instance holds a lease.
        let _ = fs::remove_dir(ports_dir());
        if let Some(mut w) = lock(&self.watchdog).take() {
            if let Some(mut stdin) = w.stdin.take() {
                let _ = stdin.write_all(b"done\n");
            }
            let _ = w.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL cluster of its own (`initdb` in a temp folder, trust auth on
/// 127.0.0.1, its own port and socket directory). The port stays the same
/// across restarts. Dropping it stops the cluster and removes the folder.
pub struct PrivatePostgres {
    inner: Arc<Pg>,
}

struct Pg {
    site: Site,
    data: PathBuf,
    log: PathBuf,
    /// The postgres user's ids when running as root (PostgreSQL refuses root).
    owner: Option<(u32, u32)>,
    port: AtomicU16,
    postmaster: Mutex<Option<Child>>,
    ops: tokio::sync::Mutex<()>,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it; returns once it accepts connections.
    pub async fn new() -> Result<PrivatePostgres> {
        let owner = match our_uid() {
            Some(0) => {
                Some(user_ids("postgres").ok_or_else(|| ServerError::new("no postgres user to run PostgreSQL as"))?)
            }
            _ => None,
        };
        let site = blocking(|| Site::create("pg")).await?;
        let pg = PrivatePostgres {
            inner: Arc::new(Pg {
                data: site.dir.join("data"),
                log: site.dir.join("postgres.log"),
                site,
                owner,
                port: AtomicU16::new(0),
                postmaster: Mutex::new(None),
                ops: tokio::sync::Mutex::new(()),
            }),
        };
        let inner = pg.inner.clone();
        blocking(move || inner.init()).await?;
        for attempt in 1..=FIRST_START_ATTEMPTS {
            match pg.start().await {
                Ok(()) => return Ok(pg),
                Err(e) if e.port_in_use && attempt < FIRST_START_ATTEMPTS => {
                    let inner = pg.inner.clone();
                    blocking(move || inner.move_to_new_port()).await?;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Starts the stopped cluster (crash recovery runs here after `kill`);
    /// returns once it accepts connections. Does nothing if it is running.
    pub async fn start(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        if self.is_running() {
            return Ok(());
        }
        let since = file_len(&self.inner.log);
        let inner = self.inner.clone();
        blocking(move || inner.spawn_postmaster()).await?;
        let deadline = Instant::now() + PG_START_TIMEOUT;
        loop {
            if !self.is_running() {
                let tail = log_tail(&self.inner.log, since, 20);
                return Err(ServerError {
                    port_in_use: tail.contains("could not bind") || tail.contains("already in use"),
                    message: format!("PostgreSQL on port {} exited while starting:\n{tail}", self.port()),
                });
            }
            let url = self.admin_url();
            let attempt = tokio_postgres::connect(&url, tokio_postgres::NoTls);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tail = log_tail(&self.inner.log, since, 20);
                return Err(ServerError::new(format!("PostgreSQL did not accept connections in time:\n{tail}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fast shutdown: sessions are cut, a checkpoint is written. Does nothing
    /// if it is stopped.
    pub async fn stop(&self) -> Result<()> {
        self.shutdown("INT", PG_STOP_TIMEOUT).await
    }

    /// Immediate shutdown: the postmaster stops every process without a
    /// checkpoint, so the next start runs crash recovery.
    pub async fn stop_immediate(&self) -> Result<()> {
        self.shutdown("QUIT", PG_STOP_TIMEOUT).await
    }

    /// A crash: SIGKILL to the postmaster and every process it forked at
    /// once, as an OOM kill or a lost machine does; the next start runs crash
    /// recovery.
    pub async fn kill(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        let inner = self.inner.clone();
        blocking(move || {
            inner.crash();
            Ok(())
        })
        .await
    }

    /// `stop` then `start`.
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Whether the postmaster is alive (it may still be starting).
    pub fn is_running(&self) -> bool {
        child_running(&self.inner.postmaster)
    }

    pub fn port(&self) -> u16 {
        self.inner.port.load(Ordering::SeqCst)
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.is_running().then(|| child_pid(&self.inner.postmaster)).flatten()
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port())
    }

    /// The `postgres` database, for creating and dropping others.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let (client, conn) = tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls)
            .await
            .map_err(|e| ServerError::new(format!("connecting to {}: {e}", self.admin_url())))?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))
            .await
            .map_err(|e| ServerError::new(format!("CREATE DATABASE {name}: {e}")))?;
        Ok(self.url(name))
    }

    /// The instance's folder (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.inner.site.dir
    }

    /// The server log: every start appends to it.
    pub fn log_path(&self) -> &Path {
        &self.inner.log
    }

    async fn shutdown(&self, sig: &'static str, timeout: Duration) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        let inner = self.inner.clone();
        blocking(move || inner.shutdown(sig, timeout)).await
    }
}

impl Pg {
    fn command(&self, program: &str) -> Command {
        let bindir = std::env::var_os("PRIVATE_PG_BINDIR").map(PathBuf::from).unwrap_or_else(|| PG_BINDIR.into());
        let mut cmd = Command::new(bindir.join(program));
        cmd.env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .env(MARKER, self.site.marker())
            .current_dir(&self.site.dir);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn give_to_owner(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| ServerError::io(path.display(), e))?;
        }
        Ok(())
    }

    fn init(&self) -> Result<()> {
        let sock = self.site.dir.join("sock");
        for dir in [&self.data, &sock] {
            fs::create_dir(dir).map_err(|e| ServerError::io(dir.display(), e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| ServerError::io(dir.display(), e))?;
            self.give_to_owner(dir)?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-instructions"])
            // The cluster is thrown away with the folder: no need to fsync its creation.
            .arg("--no-sync")
            .output()
            .map_err(|e| ServerError::io("running initdb", e))?;
        if !out.status.success() {
            return Err(ServerError::new(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let conf = self.data.join("postgresql.conf");
        let mut f = OpenOptions::new().append(true).open(&conf).map_err(|e| ServerError::io(conf.display(), e))?;
        writeln!(f, "\ninclude 'private.conf'").map_err(|e| ServerError::io(conf.display(), e))?;
        self.move_to_new_port()
    }

    /// Leases a port and writes the settings that name it.
    fn move_to_new_port(&self) -> Result<()> {
        let port = self.site.lease(1)?[0];
        self.port.store(port, Ordering::SeqCst);
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             # enough for a service's pools, its workers' pools and the test's own clients\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             fsync = on\n\
             synchronous_commit = on\n\
             logging_collector = off\n",
            sock = self.site.dir.join("sock").display(),
        );
        let path = self.data.join("private.conf");
        fs::write(&path, settings).map_err(|e| ServerError::io(path.display(), e))?;
        self.give_to_owner(&path)
    }

    fn spawn_postmaster(&self) -> Result<()> {
        let (out, err) = append_log(&self.log)?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Out of the tests' process group: a Ctrl-C is the watchdog's to handle.
            .process_group(0)
            .spawn()
            .map_err(|e| ServerError::io("starting postgres", e))?;
        *lock(&self.postmaster) = Some(child);
        Ok(())
    }

    fn shutdown(&self, sig: &str, timeout: Duration) -> Result<()> {
        let Some(pid) = child_pid(&self.postmaster) else { return Ok(()) };
        if !child_running(&self.postmaster) {
            return Ok(());
        }
        signal(&[pid], sig);
        if wait_child(&self.postmaster, timeout) {
            return Ok(());
        }
        self.crash();
        Err(ServerError::new(format!("PostgreSQL did not stop within {timeout:?} after SIG{sig}; killed it")))
    }

    fn crash(&self) {
        let Some(pid) = child_pid(&self.postmaster) else { return };
        // Stopped, the postmaster cannot fork a backend between the listing
        // of its children and the kill.
        signal(&[pid], "STOP");
        let mut all = children_of(pid);
        all.push(pid);
        signal(&all, "KILL");
        kill_child(&self.postmaster);
        // The backends are reparented and reaped by init; what matters for
        // a restart is that none of them runs any more.
        wait_gone(&all, Duration::from_secs(10));
    }

    /// The System V segment (key, id) that `postmaster.pid` names, if any.
    fn shared_memory(&self) -> Option<(u64, u64)> {
        let pidfile = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let mut line = pidfile.lines().nth(6)?.split_whitespace();
        Some((line.next()?.parse().ok()?, line.next()?.parse().ok()?))
    }

    fn teardown(&self) {
        let shm = self.shared_memory();
        // Immediate shutdown: the postmaster stops and reaps its backends and
        // removes its shared memory.
        if self.shutdown("QUIT", Duration::from_secs(10)).is_err() {
            self.crash();
        }
        // After a crash nobody removed it; a restart would have.
        if let Some((key, id)) = shm {
            if let Some(0) = attached(key, id) {
                let _ = Command::new("ipcrm").arg("-m").arg(id.to_string()).stderr(Stdio::null()).status();
            }
        }
        self.site.teardown();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.inner.teardown();
    }
}

// ---------------------------------------------------------------------------
// RabbitMQ

/// A RabbitMQ node of its own: its own node name, cookie, AMQP and
/// distribution ports, epmd, data and log folders, no plugins, an absolute
/// memory watermark. The AMQP port stays the same across restarts. Dropping
/// it stops the node and its epmd and removes the folder.
pub struct PrivateRabbit {
    inner: Arc<Rabbit>,
}

struct Rabbit {
    site: Site,
    node: String,
    amqp_port: AtomicU16,
    dist_port: AtomicU16,
    epmd_port: AtomicU16,
    /// `rabbitmq-server` (a shell that runs the beam as its child).
    server: Mutex<Option<Child>>,
    epmd: Mutex<Option<Child>>,
    /// The running beam's pid, as the node itself reported it.
    beam: AtomicU32,
    ops: tokio::sync::Mutex<()>,
}

impl PrivateRabbit {
    /// Creates the node and starts it; returns once AMQP accepts a connection.
    pub async fn new() -> Result<PrivateRabbit> {
        let site = blocking(|| Site::create("rabbit")).await?;
        let node = format!("ledger_{}_{:08x}@localhost", std::process::id(), random_u64() as u32);
        let rabbit = PrivateRabbit {
            inner: Arc::new(Rabbit {
                site,
                node,
                amqp_port: AtomicU16::new(0),
                dist_port: AtomicU16::new(0),
                epmd_port: AtomicU16::new(0),
                server: Mutex::new(None),
                epmd: Mutex::new(None),
                beam: AtomicU32::new(0),
                ops: tokio::sync::Mutex::new(()),
            }),
        };
        let inner = rabbit.inner.clone();
        blocking(move || inner.init()).await?;
        for attempt in 1..=FIRST_START_ATTEMPTS {
            let inner = rabbit.inner.clone();
            let started = match blocking(move || inner.ensure_epmd()).await {
                Ok(()) => rabbit.start().await,
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => return Ok(rabbit),
                Err(e) if e.port_in_use && attempt < FIRST_START_ATTEMPTS => {
                    let inner = rabbit.inner.clone();
                    blocking(move || {
                        kill_child(&inner.epmd);
                        inner.lease_ports()
                    })
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Starts the stopped node; returns once AMQP accepts a connection.
    /// Does nothing if it is running.
    pub async fn start(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        if self.is_running() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let since = blocking(move || inner.spawn_server()).await?;
        let deadline = Instant::now() + RABBIT_START_TIMEOUT;
        loop {
            if !self.is_running() {
                let tail = self.inner.log_tail(since);
                return Err(ServerError {
                    port_in_use: ["eaddrinuse", "already in use", "dist_port_already_used"]
                        .iter()
                        .any(|s| tail.contains(s)),
                    message: format!("RabbitMQ node {} exited while starting:\n{tail}", self.node_name()),
                });
            }
            if self.amqp_accepts().await {
                break;
            }
            if Instant::now() > deadline {
                return Err(ServerError::new(format!(
                    "RabbitMQ node {} did not accept AMQP in time:\n{}",
                    self.node_name(),
                    self.inner.log_tail(since)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Ask the node itself for its pid: a pid file can be stale or deleted.
        let inner = self.inner.clone();
        let pid = blocking(move || inner.ask_pid()).await?;
        self.inner.beam.store(pid, Ordering::SeqCst);
        Ok(())
    }

    /// The whole node stops (graceful: the beam exits), as a broker outage
    /// does. Its epmd keeps running, as a host's would. Does nothing if it is
    /// stopped.
    pub async fn stop(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        let inner = self.inner.clone();
        blocking(move || inner.stop()).await
    }

    /// A crash: `kill -9` of the beam.
    pub async fn kill(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        let inner = self.inner.clone();
        blocking(move || {
            inner.crash();
            Ok(())
        })
        .await
    }

    /// `stop` then `start`.
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Whether the node's process runs (it may still be booting).
    pub fn is_running(&self) -> bool {
        child_running(&self.inner.server)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f?heartbeat=10`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=10", self.port())
    }

    pub fn port(&self) -> u16 {
        self.inner.amqp_port.load(Ordering::SeqCst)
    }

    /// The Erlang node name, `ledger_<pid>_<random>@localhost`.
    pub fn node_name(&self) -> &str {
        &self.inner.node
    }

    /// The port of the node's own epmd.
    pub fn epmd_port(&self) -> u16 {
        self.inner.epmd_port.load(Ordering::SeqCst)
    }

    /// The beam's pid while the node runs.
    pub fn beam_pid(&self) -> Option<u32> {
        let pid = self.inner.beam.load(Ordering::SeqCst);
        (pid != 0 && process_alive(pid)).then_some(pid)
    }

    /// The beam's resident memory in KiB.
    pub fn memory_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.beam_pid()?)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
    }

    /// Runs `rabbitmqctl -n NODE args…` against this node (for faults such as
    /// `close_all_connections` or `set_vm_memory_high_watermark`); returns
    /// its standard output.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> Result<String> {
        let inner = self.inner.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        blocking(move || inner.ctl(&args)).await
    }

    /// The instance's folder (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.inner.site.dir
    }

    async fn amqp_accepts(&self) -> bool {
        let url = self.amqp_url();
        let connect = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(conn)) => {
                let _ = conn.close(200, "".into()).await;
                true
            }
            _ => false,
        }
    }
}

impl Rabbit {
    fn path(&self, name: &str) -> PathBuf {
        self.site.dir.join(name)
    }

    fn node_log(&self) -> PathBuf {
        self.path("log").join(format!("{}.log", self.node))
    }

    fn init(&self) -> Result<()> {
        let io = |p: &Path, e| ServerError::io(p.display(), e);
        for d in ["home", "mnesia", "log"] {
            fs::create_dir(self.path(d)).map_err(|e| io(&self.path(d), e))?;
        }
        // A cookie of its own: the shared node's cookie is never read.
        let cookie_path = self.path("home").join(".erlang.cookie");
        let cookie: String = (0..20).map(|_| char::from(b'A' + (random_u64() % 26) as u8)).collect();
        fs::write(&cookie_path, cookie).map_err(|e| io(&cookie_path, e))?;
        fs::set_permissions(&cookie_path, fs::Permissions::from_mode(0o400)).map_err(|e| io(&cookie_path, e))?;
        let files = [
            ("enabled_plugins", "[].\n".to_owned()),
            // Read instead of /etc/rabbitmq/rabbitmq-env.conf, which sets the shared node's name.
            ("rabbitmq-env.conf", String::new()),
            ("rabbitmq.conf", format!("vm_memory_high_watermark.absolute = {RABBIT_MEMORY_WATERMARK_BYTES}\n")),
        ];
        for (name, text) in files {
            fs::write(self.path(name), text).map_err(|e| io(&self.path(name), e))?;
        }
        self.lease_ports()
    }

    fn lease_ports(&self) -> Result<()> {
        let ports = self.site.lease(3)?;
        self.amqp_port.store(ports[0], Ordering::SeqCst);
        self.dist_port.store(ports[1], Ordering::SeqCst);
        self.epmd_port.store(ports[2], Ordering::SeqCst);
        Ok(())
    }

    /// The environment every process of this node runs with.
    fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new(program.as_ref());
        let p = |name: &str| self.path(name);
        cmd.env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .env(MARKER, self.site.marker())
            .env("HOME", p("home"))
            .env("ERL_EPMD_PORT", self.epmd_port.load(Ordering::SeqCst).to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_CRASH_DUMP_SECONDS", "0")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.load(Ordering::SeqCst).to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.load(Ordering::SeqCst).to_string())
            .env("RABBITMQ_MNESIA_BASE", p("mnesia"))
            .env("RABBITMQ_LOG_BASE", p("log"))
            .env("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", p("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", p("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", p("rabbitmq.pid"))
            // Never start a daemon epmd (it would outlive the node); the
            // distribution listens on loopback only.
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}")
            .current_dir(&self.site.dir)
            .stdin(Stdio::null());
        cmd
    }

    fn bin(&self, name: &str) -> PathBuf {
        std::env::var_os("PRIVATE_RABBITMQ_BINDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| RABBITMQ_BINDIR.into())
            .join(name)
    }

    /// An epmd of its own, so the shared one on 4369 is never used.
    fn ensure_epmd(&self) -> Result<()> {
        if child_running(&self.epmd) {
            return Ok(());
        }
        let port = self.epmd_port.load(Ordering::SeqCst);
        let log = self.path("log").join("epmd.log");
        let since = file_len(&log);
        let (out, err) = append_log(&log)?;
        let child = self
            .command("epmd")
            .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| ServerError::io("starting epmd", e))?;
        *lock(&self.epmd) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !child_running(&self.epmd) {
                let tail = log_tail(&log, since, 10);
                return Err(ServerError {
                    port_in_use: true,
                    message: format!("epmd on port {port} exited at once:\n{tail}"),
                });
            }
            if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ServerError::new(format!("epmd did not listen on port {port} in time")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `rabbitmq-server`; returns the log offsets to read errors from.
    fn spawn_server(&self) -> Result<(u64, u64)> {
        self.ensure_epmd()?;
        let out_log = self.path("log").join("server.out");
        let since = (file_len(&out_log), file_len(&self.node_log()));
        let (out, err) = append_log(&out_log)?;
        let child = self
            .command(self.bin("rabbitmq-server"))
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| ServerError::io("starting rabbitmq-server", e))?;
        self.beam.store(0, Ordering::SeqCst);
        *lock(&self.server) = Some(child);
        Ok(since)
    }

    fn log_tail(&self, since: (u64, u64)) -> String {
        format!(
            "{}\n{}",
            log_tail(&self.path("log").join("server.out"), since.0, 15),
            log_tail(&self.node_log(), since.1, 15)
        )
    }

    fn ctl(&self, args: &[String]) -> Result<String> {
        let out = self
            .command(self.bin("rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .map_err(|e| ServerError::io("running rabbitmqctl", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ServerError::new(format!(
                "rabbitmqctl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// The beam's pid from the node itself; the CLI can fail while the node
    /// is still booting, or when its own distribution ports are busy: retry.
    fn ask_pid(&self) -> Result<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.ctl(&["eval".into(), "os:getpid().".into()]);
            if let Ok(text) = &answer {
                if let Ok(pid) = text.trim().trim_matches('"').parse::<u32>() {
                    return Ok(pid);
                }
            }
            if Instant::now() > deadline {
                return Err(ServerError::new(format!("node {} did not report its pid: {answer:?}", self.node)));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn stop(&self) -> Result<()> {
        let Some(wrapper) = child_pid(&self.server) else { return Ok(()) };
        if !child_running(&self.server) {
            return Ok(());
        }
        // rabbitmq-server traps SIGTERM, stops the node gracefully and waits for the beam.
        signal(&[wrapper], "TERM");
        let stopped = wait_child(&self.server, RABBIT_STOP_TIMEOUT);
        if !stopped {
            self.crash();
            return Err(ServerError::new(format!("node {} did not stop in time; killed it", self.node)));
        }
        let beam = self.beam.swap(0, Ordering::SeqCst);
        wait_gone(&[beam], Duration::from_secs(5));
        Ok(())
    }

    fn crash(&self) {
        if !child_running(&self.server) {
            return;
        }
        let mut beam = self.beam.load(Ordering::SeqCst);
        if beam == 0 || !process_alive(beam) {
            // Killed before it finished booting: find the beam among the wrapper's children.
            beam = child_pid(&self.server).map(children_of).unwrap_or_default().into_iter().next().unwrap_or(0);
        }
        if beam != 0 {
            signal(&[beam], "KILL");
        }
        // The wrapper exits once the beam is gone.
        if !wait_child(&self.server, Duration::from_secs(10)) {
            kill_child(&self.server);
        }
        self.beam.store(0, Ordering::SeqCst);
        wait_gone(&[beam], Duration::from_secs(5));
    }

    fn teardown(&self) {
        // The data goes with the folder: no need for a graceful stop.
        self.crash();
        kill_child(&self.epmd);
        self.site.teardown();
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.inner.teardown();
    }
}
