//! Durable storage: an append-only log of checksummed records in segment files,
//! written by one thread with group commit, replayed on start, and compacted by
//! rewriting the live state into a fresh segment.
//!
//! A record is `len: u32 | crc32: u32 | payload`. The vhost appends records under
//! its lock, so the log's order is the order of the changes; publisher confirms
//! wait for the fsync that covers their record (`Store::durable_lsn`).
//!
//! Every batch is written to the file at once, so `kill -9` loses nothing the
//! writer took; it is fsynced only when something waits for it (a confirm, a
//! commit, a change of topology, a flush), as RabbitMQ's message store syncs
//! only for the confirms it owes (`internal_sync`, rabbit_msg_store.erl:1064-1081
//! at v3.10.8).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

mod record;
mod recovery;
#[cfg(test)]
mod tests;

use record::framed;
pub use record::*;
pub use recovery::*;
use recovery::{segment_path, segments};

/// A segment is closed and a new one started past this size.
const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// Compaction is considered once this much was written since the last one.
const COMPACT_MIN: u64 = 64 * 1024 * 1024;
/// How long records nobody waits for gather before the writer takes them: one
/// wake-up writes a burst instead of one per append.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Debug)]
enum Item {
    Records(Vec<u8>),
    /// Start a new segment before what follows (a snapshot begins).
    Rotate,
    /// The snapshot is complete: once durable, older segments can go.
    DropBefore,
}

#[derive(Debug, Default)]
struct Pending {
    items: Vec<Item>,
    /// Log sequence number of the last record appended.
    lsn: u64,
    closed: bool,
    /// A simulated power cut (`Broker::crash`): nothing appended from now on
    /// reaches the disk or advances `durable`, until `thaw`.
    frozen: bool,
    /// A simulated stalled disk: the writer takes nothing until released.
    stalled: bool,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
    /// The writer sleeps on `wake`: only then does an append need to wake it.
    idle: bool,
    /// The writer lets records nobody waits for gather (`GATHER`): only an
    /// append that something waits for needs to wake it.
    gathering: bool,
    /// Highest LSN something waits to see durable (`Store::want`).
    wanted: u64,
    /// The current segment and its length as of the last fsync: where a power
    /// cut ends the log (`Store::freeze`).
    synced: (u64, u64),
    /// `freeze` cut the current segment back to `synced`.
    cut: bool,
}

/// The log: appended to under the vhost locks, written and fsynced by its own thread.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Highest LSN known to be on disk.
    durable: AtomicU64,
    /// Tells async waiters (publishers awaiting confirms) that `durable` moved.
    durable_tx: watch::Sender<u64>,
    failed: AtomicBool,
    next_id: AtomicU64,
    /// Bytes written since the last compaction, and an estimate of live bytes.
    written: AtomicU64,
    live: AtomicI64,
    compacting: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating) `dir`, recovers what it holds, and starts the writer.
    pub fn open(dir: &Path) -> io::Result<(Arc<Store>, Recovered)> {
        fs::create_dir_all(dir)?;
        let recovered = recover(dir)?;
        for repair in &recovered.repairs {
            tracing::warn!("storage recovery: {repair}");
        }
        let live: i64 = recovered
            .vhosts
            .values()
            .flat_map(|v| v.messages.values())
            .map(|m| (m.body.len() + m.header.len()) as i64)
            .sum();
        let segs = segments(dir)?;
        let current = segs.last().copied().unwrap_or(0) + 1;
        let (durable_tx, _) = watch::channel(0);
        let store = Arc::new(Store {
            dir: dir.to_owned(),
            pending: Mutex::new(Pending {
                synced: (current, 0),
                ..Pending::default()
            }),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
            durable_tx,
            failed: AtomicBool::new(false),
            next_id: AtomicU64::new(recovered.next_id.max(1)),
            written: AtomicU64::new(0),
            live: AtomicI64::new(live),
            compacting: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        store.abandon_snapshots(&recovered.abandoned);
        let file = open_segment(dir, current)?;
        let writer = store.clone();
        let handle = std::thread::Builder::new()
            .name("warren-store".into())
            .spawn(move || writer.run(file, current, segs))?;
        *store.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok((store, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh id for a persistent message.
    pub fn next_message_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends a record; returns its LSN, durable once `durable_lsn()` reaches it.
    /// A change of topology is made durable without anyone asking: it is rare,
    /// and a durable queue that vanished in a crash would surprise every client.
    pub fn append(&self, rec: &Record) -> u64 {
        if let Record::Publish {
            queues,
            header,
            body,
            ..
        } = rec
        {
            let size = (header.len() + body.len()) as i64;
            self.live
                .fetch_add(size * queues.len() as i64, Ordering::Relaxed);
        }
        let want = !matches!(
            rec,
            Record::Publish { .. } | Record::Remove { .. } | Record::Delivered { .. }
        );
        self.push(want, |buf| rec.encode(buf))
    }

    /// Appends a publish record without building a `Record` (see `PublishRef`);
    /// `awaited` as for [`Store::want`].
    pub fn append_publish<Q: AsRef<str>>(&self, rec: &PublishRef<'_, Q>, awaited: bool) -> u64 {
        let size = rec.size() as i64;
        self.live
            .fetch_add(size * rec.queues.len() as i64, Ordering::Relaxed);
        self.push(awaited, |buf| {
            framed(buf, |w| rec.write(w));
        })
    }

    /// Something waits until `lsn` is durable (`flush`): the writer fsyncs once
    /// it has written that far. A publish that a confirm or a commit waits for
    /// says so as it is appended (`append_publish`), so the writer syncs in the
    /// pass that writes it.
    fn want(&self, lsn: u64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if lsn <= p.wanted {
            return;
        }
        p.wanted = lsn;
        let sleeping = p.idle || p.gathering;
        drop(p);
        if sleeping {
            self.wake.notify_one();
        }
    }

    fn push(&self, want: bool, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.items.last_mut() {
            Some(Item::Records(buf)) => encode(buf),
            _ => {
                let mut buf = Vec::with_capacity(256);
                encode(&mut buf);
                p.items.push(Item::Records(buf));
            }
        }
        p.lsn += 1;
        let lsn = p.lsn;
        if want {
            p.wanted = lsn;
        }
        // A busy writer looks for more before it sleeps: waking it costs a
        // system call per append for nothing.
        let sleeping = p.idle || (want && p.gathering);
        drop(p);
        if sleeping {
            self.wake.notify_one();
        }
        lsn
    }

    /// A message of `size` bytes left a queue for good.
    pub fn released(&self, size: usize) {
        self.live.fetch_sub(size as i64, Ordering::Relaxed);
    }

    pub fn durable_lsn(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// The LSN appended last.
    pub fn appended_lsn(&self) -> u64 {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).lsn
    }

    /// True once a write or fsync failed: nothing more is confirmed.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable_tx.subscribe()
    }

    /// Waits (blocking) until everything appended so far is on disk. A stalled
    /// disk is released first: only a crash loses what it held back.
    pub fn flush(&self) {
        self.stall(false);
        let target = self.appended_lsn();
        self.want(target);
        // Only shutdown and restart wait here, so a short poll is simpler than a
        // second wake-up channel from the writer thread.
        while self.durable_lsn() < target && !self.has_failed() {
            self.wake.notify_one();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Stalls the disk (true): records are still appended, but none is written
    /// or synced, so no confirm that waits for one is sent, until released.
    pub fn stall(&self, on: bool) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stalled = on;
        self.wake.notify_one();
    }

    /// The power goes out: what was appended and not yet fsynced is lost (the
    /// file is cut back to its length at the last fsync, as the page cache
    /// goes with the power), and from now on nothing is written or made
    /// durable until [`Store::thaw`]. Returns once the writer has finished the
    /// batch it was writing, so that the files no longer change.
    pub fn freeze(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.frozen = true;
        p.stalled = false;
        p.items.clear();
        while p.writing {
            drop(p);
            std::thread::sleep(std::time::Duration::from_millis(1));
            p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        }
        let (segment, len) = p.synced;
        let path = segment_path(&self.dir, segment);
        if let Ok(file) = OpenOptions::new().write(true).open(&path) {
            if file.metadata().is_ok_and(|m| m.len() > len) {
                if let Err(e) = file.set_len(len) {
                    tracing::warn!(error = %e, path = %path.display(), "crash: cannot cut off what was not fsynced");
                }
            }
        }
        p.cut = true;
    }

    pub fn is_frozen(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .frozen
    }

    /// Power is back and the state was recovered from the files: appends are
    /// written again. The dropped records' LSNs count as settled, so that
    /// `flush` does not wait for them; nobody is waiting for their confirms,
    /// since every connection died with the power. `abandoned` are the vhosts
    /// whose snapshot the power cut off (`Recovered::abandoned`).
    pub fn thaw(&self, abandoned: &[String]) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.frozen = false;
        // Appended while the power was out, against the state recovery has
        // just replaced: never written.
        p.items.clear();
        let lsn = p.lsn;
        drop(p);
        let durable = self.durable.fetch_max(lsn, Ordering::AcqRel).max(lsn);
        self.durable_tx.send_replace(durable);
        // A snapshot under way lost its end with the power; the next one starts
        // afresh and deletes what this one would have.
        self.compacting.store(false, Ordering::Release);
        self.abandon_snapshots(abandoned);
    }

    /// Logs that these vhosts' cut-off snapshots are over, before any other
    /// record of theirs can follow.
    pub fn abandon_snapshots(&self, vhosts: &[String]) {
        for vhost in vhosts {
            self.append(&Record::SnapshotAbandoned {
                vhost: vhost.clone(),
            });
        }
    }

    /// Whether the log has grown enough past its live content to be rewritten.
    pub fn wants_compaction(&self) -> bool {
        let written = self.written.load(Ordering::Relaxed);
        let live = self.live.load(Ordering::Relaxed).max(0) as u64;
        written > COMPACT_MIN && written > 4 * live && !self.compacting.load(Ordering::Acquire)
    }

    /// Starts a snapshot: records appended from now on go to a new segment.
    pub fn begin_snapshot(&self) {
        self.compacting.store(true, Ordering::Release);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.items.push(Item::Rotate);
        drop(p);
        self.wake.notify_one();
    }

    /// The snapshot is complete: segments before it are deleted once it is durable.
    pub fn end_snapshot(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.items.push(Item::DropBefore);
        // An LSN of its own, so that `flush` waits until the old segments are gone.
        p.lsn += 1;
        drop(p);
        self.wake.notify_one();
    }

    /// Stops the writer after it wrote and synced everything appended.
    pub fn close(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.wake.notify_one();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn run(self: Arc<Self>, mut file: File, mut current: u64, mut old: Vec<u64>) {
        let mut size = 0u64;
        let mut snapshot_start: Option<u64> = None;
        // The LSN the file holds up to, fsynced or not.
        let mut written = 0u64;
        let mut synced = (current, 0u64);
        loop {
            let (items, lsn, closed, wanted) = {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let mut gather_until = None;
                loop {
                    let durable = self.durable_lsn();
                    let owed = p.wanted > durable
                        && (written > durable || !p.items.is_empty())
                        && !p.frozen
                        && !self.has_failed();
                    let frozen_out = p.frozen && !p.items.is_empty();
                    if p.closed || frozen_out || (!p.stalled && owed) {
                        break;
                    }
                    if !p.stalled && !p.items.is_empty() {
                        let now = std::time::Instant::now();
                        let until = *gather_until.get_or_insert(now + GATHER);
                        if now >= until {
                            break;
                        }
                        p.gathering = true;
                        p = self
                            .wake
                            .wait_timeout(p, until - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        p.gathering = false;
                        continue;
                    }
                    p.idle = true;
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                    p.idle = false;
                }
                if p.cut {
                    // `freeze` cut the file back to its last fsync.
                    p.cut = false;
                    synced = p.synced;
                    size = synced.1;
                }
                if p.frozen {
                    // Appended after the power cut: it never reaches the disk.
                    p.items.clear();
                    if p.closed {
                        return;
                    }
                    continue;
                }
                p.writing = !self.has_failed();
                (std::mem::take(&mut p.items), p.lsn, p.closed, p.wanted)
            };
            if self.has_failed() {
                if closed {
                    return;
                }
                continue;
            }
            let result = (|| -> io::Result<bool> {
                let mut drop_old = false;
                for item in items {
                    match item {
                        Item::Records(buf) => {
                            file.write_all(&buf)?;
                            size += buf.len() as u64;
                            self.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
                            if size > SEGMENT_MAX {
                                file.sync_data()?;
                                old.push(current);
                                current += 1;
                                file = open_segment(&self.dir, current)?;
                                size = 0;
                                synced = (current, 0);
                            }
                        }
                        Item::Rotate => {
                            file.sync_data()?;
                            old.push(current);
                            current += 1;
                            file = open_segment(&self.dir, current)?;
                            size = 0;
                            synced = (current, 0);
                            snapshot_start = Some(current);
                        }
                        Item::DropBefore => drop_old = true,
                    }
                }
                written = lsn;
                // Nobody waits for the rest: it stays in the page cache, where
                // `kill -9` cannot take it and a power cut can.
                let sync = closed || drop_old || wanted > self.durable_lsn();
                if !sync {
                    return Ok(false);
                }
                file.sync_data()?;
                synced = (current, size);
                if drop_old {
                    if let Some(start) = snapshot_start.take() {
                        // Oldest first: a crash part-way leaves a tail of the old
                        // log, which the whole snapshots after it supersede.
                        for n in old.iter().filter(|&&n| n < start) {
                            let _ = fs::remove_file(segment_path(&self.dir, *n));
                        }
                        old.retain(|&n| n >= start);
                        sync_dir(&self.dir)?;
                        self.written.store(size, Ordering::Relaxed);
                    }
                    self.compacting.store(false, Ordering::Release);
                }
                Ok(true)
            })();
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.writing = false;
            p.synced = synced;
            // Synced, but the power went out before it could be reported: no
            // confirm goes out for it (it may still be found on recovery).
            let report = !p.frozen;
            drop(p);
            match result {
                Ok(false) => {}
                Ok(true) if !report => {}
                Ok(true) => {
                    // A max: after a power cut `thaw` may have moved past a batch
                    // that was still being written.
                    let durable = self.durable.fetch_max(lsn, Ordering::AcqRel).max(lsn);
                    self.durable_tx.send_replace(durable);
                }
                Err(e) => {
                    tracing::error!(error = %e, dir = %self.dir.display(), "storage write failed; no more publishes will be confirmed");
                    self.failed.store(true, Ordering::Release);
                    self.durable_tx.send_replace(self.durable_lsn());
                }
            }
            if closed {
                return;
            }
        }
    }
}

fn open_segment(dir: &Path, n: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, n))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
