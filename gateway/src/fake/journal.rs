//! The fake provider's durable state: an append-only JSON-lines journal.
//!
//! Each line is one batch of operations, applied all or not at all: a line
//! cut short by a crash (`kill -9` mid-write) does not parse and is dropped at
//! the next start, together with everything the process never acknowledged.
//! A request is answered only once its batch is on disk (`fdatasync`), so a
//! charge whose answer is lost is already durable. One writer thread does the
//! writes and syncs; batches queued while it syncs share the next sync.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::records::Op;

const FILE_NAME: &str = "journal.jsonl";

#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    pub ops: Vec<Op>,
}

/// Queues batches for the writer thread, in the order they were made.
pub struct Writer {
    tx: mpsc::Sender<(u64, Vec<u8>)>,
}

impl Writer {
    pub fn append(&self, batch: &Batch) {
        let mut line = serde_json::to_vec(batch).expect("journal batches serialize");
        line.push(b'\n');
        // The thread only stops when the process does.
        self.tx.send((batch.seq, line)).expect("the journal writer is running");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("state folder {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("state folder {0} is used by another fake provider")]
    Locked(String),
    #[error("journal {path} is corrupt at line {line}: {reason}")]
    Corrupt { path: String, line: usize, reason: String },
}

/// Opens (or creates) the journal in `dir`, returns the batches it holds, a
/// writer for new ones and the sequence number known to be on disk.
pub fn open(dir: &Path) -> Result<(Vec<Batch>, Writer, watch::Receiver<u64>), OpenError> {
    let path = dir.join(FILE_NAME);
    let shown = path.display().to_string();
    let io_err = |source| OpenError::Io { path: shown.clone(), source };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_err)?;
    // Two processes appending to one journal would interleave batches. The
    // lock goes with the process, so it survives nothing but the process.
    if file.try_lock().is_err() {
        return Err(OpenError::Locked(dir.display().to_string()));
    }

    let (batches, good_len) = read(&file, &shown)?;
    if good_len < file.metadata().map_err(io_err)?.len() {
        // The tail of a write that never completed: never acknowledged, so
        // never relied on.
        file.set_len(good_len).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    file.seek(SeekFrom::End(0)).map_err(io_err)?;

    let last = batches.last().map_or(0, |b| b.seq);
    let (durable_tx, durable_rx) = watch::channel(last);
    let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
    std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || write_loop(file, rx, durable_tx, shown))
        .map_err(|source| OpenError::Io { path: dir.display().to_string(), source })?;
    Ok((batches, Writer { tx }, durable_rx))
}

/// The batches of complete lines, and the length of the file they span.
fn read(file: &File, shown: &str) -> Result<(Vec<Batch>, u64), OpenError> {
    let mut reader = BufReader::new(file);
    let mut batches = Vec::new();
    let mut good_len = 0u64;
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let n =
            reader.read_until(b'\n', &mut line).map_err(|source| OpenError::Io { path: shown.to_owned(), source })?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = line.ends_with(b"\n");
        match serde_json::from_slice::<Batch>(&line) {
            Ok(batch) if complete => {
                batches.push(batch);
                good_len += n as u64;
            }
            // Only the last line may be cut short.
            _ if !complete => break,
            Ok(_) => unreachable!(),
            Err(e) => {
                return Err(OpenError::Corrupt { path: shown.to_owned(), line: number, reason: e.to_string() });
            }
        }
    }
    Ok((batches, good_len))
}

fn write_loop(mut file: File, rx: mpsc::Receiver<(u64, Vec<u8>)>, durable: watch::Sender<u64>, shown: String) {
    while let Ok((mut last, line)) = rx.recv() {
        let mut buffer = line;
        while let Ok((seq, more)) = rx.try_recv() {
            buffer.extend_from_slice(&more);
            last = seq;
        }
        if let Err(e) = file.write_all(&buffer).and_then(|()| file.sync_data()) {
            // Nothing can be promised any more: stop rather than answer.
            eprintln!("fake-provider: cannot write the journal {shown}: {e}");
            std::process::abort();
        }
        durable.send_replace(last);
    }
}
