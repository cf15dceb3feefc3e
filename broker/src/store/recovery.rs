//! Recovery: the segments read back in order (a torn tail cut off, a corrupt record
//! skipped and reported) and their records replayed into each vhost's state.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use bytes::Bytes;

use super::Record;

/// A durable message as recovered, shared by the queues that hold it.
#[derive(Debug, Clone)]
pub struct RecoveredMessage {
    pub exchange: String,
    pub routing_key: String,
    pub header: Bytes,
    pub body: Bytes,
    pub dead_lettered: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RecoveredQueue {
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// Message id → delivered before (comes back redelivered), in publish order.
    pub messages: BTreeMap<u64, bool>,
    /// A stream's first offset (non-zero once retention cut it).
    pub stream_first: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RecoveredVhost {
    /// name → (kind, auto_delete, internal, arguments)
    pub exchanges: BTreeMap<String, (String, bool, bool, FieldTable)>,
    pub queues: BTreeMap<String, RecoveredQueue>,
    /// (source, to_exchange, destination, routing key, arguments), in bind order.
    pub bindings: Vec<(String, bool, String, String, FieldTable)>,
    pub messages: HashMap<u64, Arc<RecoveredMessage>>,
}

/// What the log held.
#[derive(Debug, Default)]
pub struct Recovered {
    pub vhosts: BTreeMap<String, RecoveredVhost>,
    /// The next message id to hand out.
    pub next_id: u64,
    /// Problems found and repaired (torn tails cut off, corrupt records skipped).
    pub repairs: Vec<String>,
    /// Vhosts whose last snapshot was cut off by a crash, and so ignored: a
    /// `SnapshotAbandoned` must be logged for each before anything else of it.
    pub abandoned: Vec<String>,
    /// Snapshots begun and not yet whole, by vhost.
    snapshots: BTreeMap<String, OpenSnapshot>,
}

/// A snapshot being read.
#[derive(Debug, Default)]
struct OpenSnapshot {
    /// The state read so far.
    state: RecoveredVhost,
    /// How many of the vhost's records are still to come.
    left: u64,
    /// A corrupt record was skipped meanwhile, perhaps one of this snapshot's:
    /// then it may never be whole, though it was written whole.
    damaged: bool,
}

impl RecoveredVhost {
    /// Applies one change of this vhost (not a reset or a snapshot boundary).
    fn apply(&mut self, rec: Record, next_id: &mut u64) {
        match rec {
            Record::ExchangeDeclare {
                vhost: _,
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } => {
                self.exchanges
                    .insert(name, (kind, auto_delete, internal, arguments));
            }
            Record::ExchangeDelete { vhost: _, name } => {
                self.exchanges.remove(&name);
                self.bindings
                    .retain(|(s, to_x, d, _, _)| *s != name && !(*to_x && *d == name));
            }
            Record::QueueDeclare {
                vhost: _,
                name,
                auto_delete,
                arguments,
            } => {
                self.queues.insert(
                    name,
                    RecoveredQueue {
                        auto_delete,
                        arguments,
                        messages: BTreeMap::new(),
                        stream_first: 0,
                    },
                );
            }
            Record::QueueDelete { vhost: _, name } => {
                self.queues.remove(&name);
                self.bindings
                    .retain(|(_, to_x, d, _, _)| *to_x || *d != name);
            }
            Record::Bind {
                vhost: _,
                source,
                to_exchange,
                destination,
                routing_key,
                arguments,
            } => {
                let b = (source, to_exchange, destination, routing_key, arguments);
                if !self.bindings.contains(&b) {
                    self.bindings.push(b);
                }
            }
            Record::Unbind {
                vhost: _,
                source,
                to_exchange,
                destination,
                routing_key,
                arguments,
            } => {
                let b = (source, to_exchange, destination, routing_key, arguments);
                self.bindings.retain(|x| *x != b);
            }
            Record::Publish {
                id,
                vhost: _,
                queues,
                exchange,
                routing_key,
                header,
                body,
                dead_lettered,
            } => {
                *next_id = (*next_id).max(id + 1);
                let mut held = false;
                for q in queues {
                    if let Some(q) = self.queues.get_mut(&q) {
                        q.messages.insert(id, false);
                        held = true;
                    }
                }
                if held {
                    self.messages.insert(
                        id,
                        Arc::new(RecoveredMessage {
                            exchange,
                            routing_key,
                            header,
                            body,
                            dead_lettered,
                        }),
                    );
                }
            }
            Record::Remove { id, queue, .. } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.messages.remove(&id);
                }
            }
            Record::Delivered { id, queue, .. } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    if let Some(delivered) = q.messages.get_mut(&id) {
                        *delivered = true;
                    }
                }
            }
            Record::VhostReset { .. }
            | Record::SnapshotBegin { .. }
            | Record::SnapshotAbandoned { .. } => {}
            Record::StreamStart {
                vhost: _,
                queue,
                first,
            } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.stream_first = first;
                }
            }
        }
    }
}

impl Recovered {
    fn apply(&mut self, rec: Record) {
        match rec {
            Record::VhostReset { vhost } => {
                self.snapshots.remove(&vhost);
                self.vhosts.insert(vhost, RecoveredVhost::default());
            }
            Record::SnapshotBegin { vhost, records: 0 } => {
                self.snapshots.remove(&vhost);
                self.vhosts.insert(vhost, RecoveredVhost::default());
            }
            Record::SnapshotBegin { vhost, records } => {
                // A snapshot begun while another was open: the older one was cut
                // off and its abandonment lost; the newer one supersedes it.
                let open = OpenSnapshot {
                    left: records,
                    ..Default::default()
                };
                self.snapshots.insert(vhost, open);
            }
            Record::SnapshotAbandoned { vhost } => {
                self.snapshots.remove(&vhost);
            }
            rec if self.snapshots.is_empty() => {
                let v = self.vhosts.entry(rec.vhost().to_owned()).or_default();
                v.apply(rec, &mut self.next_id);
            }
            rec => {
                let name = rec.vhost().to_owned();
                match self.snapshots.get_mut(&name) {
                    Some(open) => {
                        open.state.apply(rec, &mut self.next_id);
                        open.left -= 1;
                        if open.left == 0 {
                            let open = self.snapshots.remove(&name).expect("open");
                            self.vhosts.insert(name, open.state);
                        }
                    }
                    None => self
                        .vhosts
                        .entry(name)
                        .or_default()
                        .apply(rec, &mut self.next_id),
                }
            }
        }
    }

    /// Drops messages no queue holds any more.
    fn prune(&mut self) {
        for v in self.vhosts.values_mut() {
            let live: std::collections::HashSet<u64> = v
                .queues
                .values()
                .flat_map(|q| q.messages.keys().copied())
                .collect();
            v.messages.retain(|id, _| live.contains(id));
        }
    }
}

pub(super) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:010}.wlog"))
}

/// Segment numbers present in `dir`, ascending.
pub(super) fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_suffix(".wlog").and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads every segment of `dir` in order. A torn or corrupt tail of the last
/// segment is cut off; a corrupt record elsewhere is skipped and reported.
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut recovered = Recovered::default();
    let segs = segments(dir)?;
    for (i, &n) in segs.iter().enumerate() {
        let path = segment_path(dir, n);
        let mut data = Vec::new();
        File::open(&path)?.read_to_end(&mut data)?;
        let last = i + 1 == segs.len();
        let mut pos = 0usize;
        while pos < data.len() {
            match read_record(&data, pos) {
                Ok((rec, next)) => {
                    if let Some(rec) = rec {
                        recovered.apply(rec);
                    }
                    pos = next;
                }
                Err(why) => {
                    // A valid record further on means this one is damaged in
                    // place; none means the tail was torn by a crash.
                    match next_valid_record(&data, pos + 1) {
                        Some(resume) => {
                            recovered.repairs.push(format!(
                                "{}: corrupt record at offset {pos} ({why}); skipped {} bytes",
                                path.display(),
                                resume - pos
                            ));
                            for open in recovered.snapshots.values_mut() {
                                open.damaged = true;
                            }
                            pos = resume;
                        }
                        None => {
                            recovered.repairs.push(format!(
                                "{}: {} bytes of torn tail at offset {pos} ({why}) cut off",
                                path.display(),
                                data.len() - pos
                            ));
                            if last {
                                OpenOptions::new()
                                    .write(true)
                                    .open(&path)?
                                    .set_len(pos as u64)?;
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
    for (vhost, open) in std::mem::take(&mut recovered.snapshots) {
        let left = open.left;
        if open.damaged {
            // Short because a record of it was skipped, not because a crash cut
            // it off: the segments before it may be gone, so it is all there is.
            recovered.repairs.push(format!(
                "snapshot of vhost '{vhost}' {left} records short after a corrupt record; kept"
            ));
            recovered.vhosts.insert(vhost, open.state);
        } else {
            // Cut off by a crash: the segments before it are still there (they go
            // only once it is whole), so the state it was to replace is complete
            // without it.
            recovered.repairs.push(format!(
                "snapshot of vhost '{vhost}' cut off {left} records short by a crash; ignored"
            ));
            recovered.abandoned.push(vhost);
        }
    }
    recovered.prune();
    Ok(recovered)
}

/// One record at `pos`: `Ok((None, next))` for an intact record of an unknown kind.
pub(super) fn read_record(
    data: &[u8],
    pos: usize,
) -> Result<(Option<Record>, usize), &'static str> {
    if data.len() - pos < 8 {
        return Err("truncated record header");
    }
    let len = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
    let end = pos + 8 + len;
    if end > data.len() {
        return Err("truncated record");
    }
    let payload = &data[pos + 8..end];
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch");
    }
    match Record::decode(payload) {
        Some(rec) => Ok((Some(rec), end)),
        None => Err("undecodable record"),
    }
}

fn next_valid_record(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(8)).find(|&p| read_record(data, p).is_ok())
}
