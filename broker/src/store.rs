//! Durable storage: an append-only log of checksummed records in segment files,
//! written by one thread with group commit, replayed on start, and compacted by
//! rewriting the live state into a fresh segment.
//!
//! A record is `len: u32 | crc32: u32 | payload`. The vhost appends records under
//! its lock, so the log's order is the order of the changes; publisher confirms
//! wait for the fsync that covers their record (`Store::durable_lsn`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;
use bytes::Bytes;
use tokio::sync::watch;

/// A segment is closed and a new one started past this size.
const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// Compaction is considered once this much was written since the last one.
const COMPACT_MIN: u64 = 64 * 1024 * 1024;

/// One change to durable state.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    ExchangeDeclare {
        vhost: String,
        name: String,
        kind: String,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    ExchangeDelete {
        vhost: String,
        name: String,
    },
    QueueDeclare {
        vhost: String,
        name: String,
        auto_delete: bool,
        arguments: FieldTable,
    },
    QueueDelete {
        vhost: String,
        name: String,
    },
    Bind {
        vhost: String,
        source: String,
        /// True when the destination is an exchange.
        to_exchange: bool,
        destination: String,
        routing_key: String,
        arguments: FieldTable,
    },
    Unbind {
        vhost: String,
        source: String,
        to_exchange: bool,
        destination: String,
        routing_key: String,
        arguments: FieldTable,
    },
    /// A persistent message, in the durable queues it was routed to.
    Publish {
        id: u64,
        vhost: String,
        queues: Vec<String>,
        exchange: String,
        routing_key: String,
        header: Bytes,
        body: Bytes,
    },
    /// A message left a queue: acked, rejected, purged, or delivered with no-ack.
    Remove {
        id: u64,
        vhost: String,
        queue: String,
    },
    /// A message was delivered at least once: it comes back marked redelivered.
    Delivered {
        id: u64,
        vhost: String,
        queue: String,
    },
    /// Forget everything about a vhost. Written before each snapshot by
    /// versions that had no `SnapshotBegin`; still read from their logs.
    VhostReset {
        vhost: String,
    },
    /// The next `records` records of this vhost are a snapshot of it, which
    /// replaces its state once the last of them was read. Counting them, rather
    /// than closing with a marker, keeps a corrupt record inside a snapshot from
    /// costing more than that record. A snapshot cut off by a crash is ignored:
    /// the segments before it are deleted only once it is whole on disk.
    SnapshotBegin {
        vhost: String,
        records: u64,
    },
    /// Recovery found this vhost's last snapshot cut off: what follows is no
    /// longer part of it. Written before anything else of the vhost, so that
    /// its later records are not taken for the rest of the snapshot.
    SnapshotAbandoned {
        vhost: String,
    },
    /// Retention cut a stream: its log now starts at offset `first`, so that
    /// offsets survive a restart.
    StreamStart {
        vhost: String,
        queue: String,
        first: u64,
    },
}

const T_EXCHANGE_DECLARE: u8 = 1;
const T_EXCHANGE_DELETE: u8 = 2;
const T_QUEUE_DECLARE: u8 = 3;
const T_QUEUE_DELETE: u8 = 4;
const T_BIND: u8 = 5;
const T_UNBIND: u8 = 6;
const T_PUBLISH: u8 = 7;
const T_REMOVE: u8 = 8;
const T_DELIVERED: u8 = 9;
const T_VHOST_RESET: u8 = 10;
const T_STREAM_START: u8 = 11;
const T_SNAPSHOT_BEGIN: u8 = 12;
const T_SNAPSHOT_ABANDONED: u8 = 13;

impl Record {
    /// Appends `len | crc | payload` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        framed(out, |w| self.write(w));
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Record::ExchangeDeclare {
                vhost,
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } => {
                w.u8(T_EXCHANGE_DECLARE);
                w.str(vhost);
                w.str(name);
                w.str(kind);
                w.u8(*auto_delete as u8 | (*internal as u8) << 1);
                w.table(arguments);
            }
            Record::ExchangeDelete { vhost, name } => {
                w.u8(T_EXCHANGE_DELETE);
                w.str(vhost);
                w.str(name);
            }
            Record::QueueDeclare {
                vhost,
                name,
                auto_delete,
                arguments,
            } => {
                w.u8(T_QUEUE_DECLARE);
                w.str(vhost);
                w.str(name);
                w.u8(*auto_delete as u8);
                w.table(arguments);
            }
            Record::QueueDelete { vhost, name } => {
                w.u8(T_QUEUE_DELETE);
                w.str(vhost);
                w.str(name);
            }
            Record::Bind {
                vhost,
                source,
                to_exchange,
                destination,
                routing_key,
                arguments,
            }
            | Record::Unbind {
                vhost,
                source,
                to_exchange,
                destination,
                routing_key,
                arguments,
            } => {
                w.u8(if matches!(self, Record::Bind { .. }) {
                    T_BIND
                } else {
                    T_UNBIND
                });
                w.str(vhost);
                w.str(source);
                w.u8(*to_exchange as u8);
                w.str(destination);
                w.str(routing_key);
                w.table(arguments);
            }
            Record::Publish {
                id,
                vhost,
                queues,
                exchange,
                routing_key,
                header,
                body,
            } => PublishRef {
                id: *id,
                vhost,
                queues,
                exchange,
                routing_key,
                header: [header, &[]],
                body,
            }
            .write(w),
            Record::Remove { id, vhost, queue } | Record::Delivered { id, vhost, queue } => {
                w.u8(if matches!(self, Record::Remove { .. }) {
                    T_REMOVE
                } else {
                    T_DELIVERED
                });
                w.u64(*id);
                w.str(vhost);
                w.str(queue);
            }
            Record::VhostReset { vhost } => {
                w.u8(T_VHOST_RESET);
                w.str(vhost);
            }
            Record::SnapshotBegin { vhost, records } => {
                w.u8(T_SNAPSHOT_BEGIN);
                w.str(vhost);
                w.u64(*records);
            }
            Record::SnapshotAbandoned { vhost } => {
                w.u8(T_SNAPSHOT_ABANDONED);
                w.str(vhost);
            }
            Record::StreamStart {
                vhost,
                queue,
                first,
            } => {
                w.u8(T_STREAM_START);
                w.str(vhost);
                w.str(queue);
                w.u64(*first);
            }
        }
    }

    /// Decodes one payload (without its length and checksum).
    pub fn decode(payload: &[u8]) -> Option<Record> {
        let mut r = Reader(payload);
        let rec = match r.u8()? {
            T_EXCHANGE_DECLARE => {
                let vhost = r.str()?;
                let name = r.str()?;
                let kind = r.str()?;
                let flags = r.u8()?;
                Record::ExchangeDeclare {
                    vhost,
                    name,
                    kind,
                    auto_delete: flags & 1 != 0,
                    internal: flags & 2 != 0,
                    arguments: r.table()?,
                }
            }
            T_EXCHANGE_DELETE => Record::ExchangeDelete {
                vhost: r.str()?,
                name: r.str()?,
            },
            T_QUEUE_DECLARE => Record::QueueDeclare {
                vhost: r.str()?,
                name: r.str()?,
                auto_delete: r.u8()? != 0,
                arguments: r.table()?,
            },
            T_QUEUE_DELETE => Record::QueueDelete {
                vhost: r.str()?,
                name: r.str()?,
            },
            tag @ (T_BIND | T_UNBIND) => {
                let vhost = r.str()?;
                let source = r.str()?;
                let to_exchange = r.u8()? != 0;
                let destination = r.str()?;
                let routing_key = r.str()?;
                let arguments = r.table()?;
                if tag == T_BIND {
                    Record::Bind {
                        vhost,
                        source,
                        to_exchange,
                        destination,
                        routing_key,
                        arguments,
                    }
                } else {
                    Record::Unbind {
                        vhost,
                        source,
                        to_exchange,
                        destination,
                        routing_key,
                        arguments,
                    }
                }
            }
            T_PUBLISH => {
                let id = r.u64()?;
                let vhost = r.str()?;
                let n = r.u32()? as usize;
                let mut queues = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    queues.push(r.str()?);
                }
                Record::Publish {
                    id,
                    vhost,
                    queues,
                    exchange: r.str()?,
                    routing_key: r.str()?,
                    header: Bytes::copy_from_slice(r.bytes()?),
                    body: Bytes::copy_from_slice(r.bytes()?),
                }
            }
            tag @ (T_REMOVE | T_DELIVERED) => {
                let id = r.u64()?;
                let vhost = r.str()?;
                let queue = r.str()?;
                if tag == T_REMOVE {
                    Record::Remove { id, vhost, queue }
                } else {
                    Record::Delivered { id, vhost, queue }
                }
            }
            T_VHOST_RESET => Record::VhostReset { vhost: r.str()? },
            T_SNAPSHOT_BEGIN => Record::SnapshotBegin {
                vhost: r.str()?,
                records: r.u64()?,
            },
            T_SNAPSHOT_ABANDONED => Record::SnapshotAbandoned { vhost: r.str()? },
            T_STREAM_START => Record::StreamStart {
                vhost: r.str()?,
                queue: r.str()?,
                first: r.u64()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(rec)
    }

    /// The vhost the record belongs to.
    pub fn vhost(&self) -> &str {
        match self {
            Record::ExchangeDeclare { vhost, .. }
            | Record::ExchangeDelete { vhost, .. }
            | Record::QueueDeclare { vhost, .. }
            | Record::QueueDelete { vhost, .. }
            | Record::Bind { vhost, .. }
            | Record::Unbind { vhost, .. }
            | Record::Publish { vhost, .. }
            | Record::Remove { vhost, .. }
            | Record::Delivered { vhost, .. }
            | Record::VhostReset { vhost }
            | Record::SnapshotBegin { vhost, .. }
            | Record::SnapshotAbandoned { vhost }
            | Record::StreamStart { vhost, .. } => vhost,
        }
    }
}

/// Appends `len | crc | payload` to `out`, the payload written by `write`.
fn framed(out: &mut Vec<u8>, write: impl FnOnce(&mut Writer)) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    write(&mut Writer(out));
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// A `Record::Publish` borrowed from the message it records: appending one
/// copies the message into the log's buffer and allocates nothing for it.
pub struct PublishRef<'a, Q: AsRef<str> = String> {
    pub id: u64,
    pub vhost: &'a str,
    pub queues: &'a [Q],
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// The content header payload, in two pieces: a queued message keeps its
    /// properties apart from the class, weight and size before them.
    pub header: [&'a [u8]; 2],
    pub body: &'a [u8],
}

impl<Q: AsRef<str>> PublishRef<'_, Q> {
    fn write(&self, w: &mut Writer) {
        w.u8(T_PUBLISH);
        w.u64(self.id);
        w.str(self.vhost);
        w.u32(self.queues.len() as u32);
        for q in self.queues {
            w.str(q.as_ref());
        }
        w.str(self.exchange);
        w.str(self.routing_key);
        let [a, b] = self.header;
        w.u32((a.len() + b.len()) as u32);
        w.0.extend_from_slice(a);
        w.0.extend_from_slice(b);
        w.bytes(self.body);
    }

    fn size(&self) -> usize {
        self.header[0].len() + self.header[1].len() + self.body.len()
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn table(&mut self, t: &FieldTable) {
        let (buf, _) = gen_field_table(t)(Vec::new().into())
            .expect("encoding into a Vec")
            .into_inner();
        self.bytes(&buf);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn table(&mut self) -> Option<FieldTable> {
        let raw = self.bytes()?;
        let (rest, table) = parse_field_table(raw).ok()?;
        rest.is_empty().then_some(table)
    }
}

// ---- recovery -----------------------------------------------------------------

/// A durable message as recovered, shared by the queues that hold it.
#[derive(Debug, Clone)]
pub struct RecoveredMessage {
    pub exchange: String,
    pub routing_key: String,
    pub header: Bytes,
    pub body: Bytes,
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

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:010}.wlog"))
}

/// Segment numbers present in `dir`, ascending.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
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
fn read_record(data: &[u8], pos: usize) -> Result<(Option<Record>, usize), &'static str> {
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

// ---- the writer -----------------------------------------------------------------

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
            pending: Mutex::new(Pending::default()),
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
        self.push(|buf| rec.encode(buf))
    }

    /// Appends a publish record without building a `Record` (see `PublishRef`).
    pub fn append_publish<Q: AsRef<str>>(&self, rec: &PublishRef<'_, Q>) -> u64 {
        let size = rec.size() as i64;
        self.live
            .fetch_add(size * rec.queues.len() as i64, Ordering::Relaxed);
        self.push(|buf| {
            framed(buf, |w| rec.write(w));
        })
    }

    fn push(&self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
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
        drop(p);
        self.wake.notify_one();
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

    /// The power goes out: what was appended and not yet written is dropped,
    /// and from now on nothing is written or made durable until [`Store::thaw`].
    /// Returns once the writer has finished the batch it was writing, so that
    /// the files no longer change.
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
        loop {
            let (items, lsn, closed) = {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                while (p.items.is_empty() || p.stalled) && !p.closed {
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.frozen {
                    // Appended after the power cut: it never reaches the disk.
                    p.items.clear();
                    if p.closed {
                        return;
                    }
                    continue;
                }
                p.writing = !p.items.is_empty() && !self.has_failed();
                (std::mem::take(&mut p.items), p.lsn, p.closed)
            };
            if items.is_empty() && closed {
                return;
            }
            if self.has_failed() {
                continue;
            }
            let result = (|| -> io::Result<()> {
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
                            }
                        }
                        Item::Rotate => {
                            file.sync_data()?;
                            old.push(current);
                            current += 1;
                            file = open_segment(&self.dir, current)?;
                            size = 0;
                            snapshot_start = Some(current);
                        }
                        Item::DropBefore => drop_old = true,
                    }
                }
                file.sync_data()?;
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
                Ok(())
            })();
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.writing = false;
            // Written, but the power went out before it could be reported: no
            // confirm goes out for it (it may still be found on recovery).
            let report = !p.frozen;
            drop(p);
            match result {
                Ok(()) if !report => {}
                Ok(()) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    fn publish(id: u64, queue: &str) -> Record {
        Record::Publish {
            id,
            vhost: "/".into(),
            queues: vec![queue.into()],
            exchange: "".into(),
            routing_key: queue.into(),
            header: Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 2]),
            body: Bytes::from(format!("m{id}")),
        }
    }

    #[test]
    fn borrowed_publish_is_the_same_record() {
        let rec = publish(7, "q");
        let Record::Publish { header, body, .. } = &rec else {
            unreachable!()
        };
        let (mut owned, mut borrowed) = (Vec::new(), Vec::new());
        rec.encode(&mut owned);
        framed(&mut borrowed, |w| {
            PublishRef {
                id: 7,
                vhost: "/",
                queues: &["q".to_owned()],
                exchange: "",
                routing_key: "q",
                header: [&header[..12], &header[12..]],
                body,
            }
            .write(w)
        });
        assert_eq!(owned, borrowed);
    }

    #[test]
    fn records_round_trip() {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(5));
        let records = vec![
            Record::ExchangeDeclare {
                vhost: "/".into(),
                name: "x".into(),
                kind: "topic".into(),
                auto_delete: true,
                internal: false,
                arguments: args.clone(),
            },
            Record::QueueDeclare {
                vhost: "/".into(),
                name: "q".into(),
                auto_delete: false,
                arguments: args,
            },
            Record::Bind {
                vhost: "/".into(),
                source: "x".into(),
                to_exchange: false,
                destination: "q".into(),
                routing_key: "a.#".into(),
                arguments: FieldTable::default(),
            },
            publish(7, "q"),
            Record::Delivered {
                id: 7,
                vhost: "/".into(),
                queue: "q".into(),
            },
            Record::Remove {
                id: 7,
                vhost: "/".into(),
                queue: "q".into(),
            },
            Record::VhostReset { vhost: "v".into() },
            begin("v", 3),
            Record::SnapshotAbandoned { vhost: "v".into() },
            Record::StreamStart {
                vhost: "/".into(),
                queue: "s".into(),
                first: 42,
            },
        ];
        let mut buf = Vec::new();
        for r in &records {
            r.encode(&mut buf);
        }
        let mut pos = 0;
        for r in &records {
            let (got, next) = read_record(&buf, pos).unwrap();
            assert_eq!(got.as_ref(), Some(r));
            pos = next;
        }
        assert_eq!(pos, buf.len());
    }

    fn write_log(dir: &Path, records: &[Record]) -> Vec<u8> {
        let mut buf = Vec::new();
        for r in records {
            r.encode(&mut buf);
        }
        fs::write(segment_path(dir, 1), &buf).unwrap();
        buf
    }

    fn queue(name: &str) -> Record {
        Record::QueueDeclare {
            vhost: "/".into(),
            name: name.into(),
            auto_delete: false,
            arguments: FieldTable::default(),
        }
    }

    fn ids(r: &Recovered, q: &str) -> Vec<u64> {
        r.vhosts["/"].queues[q].messages.keys().copied().collect()
    }

    #[test]
    fn torn_tail_is_cut_off_and_the_rest_kept() {
        let dir = tempdir("torn");
        let full = write_log(&dir, &[queue("q"), publish(1, "q"), publish(2, "q")]);
        let cut = full.len() - 3;
        fs::write(segment_path(&dir, 1), &full[..cut]).unwrap();
        let r = recover(&dir).unwrap();
        assert_eq!(ids(&r, "q"), vec![1]);
        assert_eq!(r.repairs.len(), 1, "{:?}", r.repairs);
        assert!(r.repairs[0].contains("torn tail"), "{:?}", r.repairs);
        let len = fs::metadata(segment_path(&dir, 1)).unwrap().len();
        assert!(len < cut as u64, "the torn tail is truncated away");
        assert!(recover(&dir).unwrap().repairs.is_empty());
    }

    #[test]
    fn corrupt_record_in_the_middle_is_skipped_and_reported() {
        let dir = tempdir("middle");
        let mut data = write_log(&dir, &[queue("q"), publish(1, "q"), publish(2, "q")]);
        let mut first = Vec::new();
        queue("q").encode(&mut first);
        data[first.len() + 12] ^= 0xff;
        fs::write(segment_path(&dir, 1), &data).unwrap();
        let r = recover(&dir).unwrap();
        assert_eq!(ids(&r, "q"), vec![2]);
        assert!(
            r.repairs[0].contains("corrupt record at offset"),
            "{:?}",
            r.repairs
        );
    }

    #[test]
    fn removed_and_deleted_messages_do_not_come_back() {
        let dir = tempdir("removed");
        write_log(
            &dir,
            &[
                queue("q"),
                queue("r"),
                publish(1, "q"),
                publish(2, "q"),
                Record::Remove {
                    id: 1,
                    vhost: "/".into(),
                    queue: "q".into(),
                },
                publish(3, "r"),
                Record::QueueDelete {
                    vhost: "/".into(),
                    name: "r".into(),
                },
            ],
        );
        let r = recover(&dir).unwrap();
        assert_eq!(ids(&r, "q"), vec![2]);
        assert!(!r.vhosts["/"].queues.contains_key("r"));
        assert_eq!(r.vhosts["/"].messages.len(), 1);
        assert_eq!(r.next_id, 4);
    }

    fn in_vhost(vhost: &str, mut rec: Record) -> Record {
        match &mut rec {
            Record::QueueDeclare { vhost: v, .. }
            | Record::Publish { vhost: v, .. }
            | Record::Remove { vhost: v, .. } => *v = vhost.into(),
            _ => unreachable!("not used in these tests"),
        }
        rec
    }

    fn remove(id: u64, queue: &str) -> Record {
        Record::Remove {
            id,
            vhost: "/".into(),
            queue: queue.into(),
        }
    }

    fn begin(vhost: &str, records: u64) -> Record {
        Record::SnapshotBegin {
            vhost: vhost.into(),
            records,
        }
    }

    /// What a test compares of recovered state: every vhost's exchanges,
    /// queues with their (message, delivered) lists, bindings as a set, and
    /// the bodies of held messages.
    fn summary(r: &Recovered) -> String {
        let mut out = String::new();
        for (name, v) in &r.vhosts {
            let mut bindings: Vec<String> = v.bindings.iter().map(|b| format!("{b:?}")).collect();
            bindings.sort();
            let queues: Vec<(&String, Vec<(&u64, &bool)>)> = v
                .queues
                .iter()
                .map(|(n, q)| (n, q.messages.iter().collect()))
                .collect();
            let bodies: BTreeMap<&u64, &Bytes> =
                v.messages.iter().map(|(id, m)| (id, &m.body)).collect();
            out += &format!(
                "{name}: {:?} {queues:?} {bindings:?} {bodies:?}\n",
                v.exchanges
            );
        }
        out
    }

    /// The old log of a compaction: two vhosts' history, with an acked and a
    /// delivered message.
    fn history() -> Vec<Record> {
        vec![
            Record::ExchangeDeclare {
                vhost: "/".into(),
                name: "x".into(),
                kind: "direct".into(),
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
            },
            queue("q"),
            Record::Bind {
                vhost: "/".into(),
                source: "x".into(),
                to_exchange: false,
                destination: "q".into(),
                routing_key: "k".into(),
                arguments: FieldTable::default(),
            },
            publish(1, "q"),
            publish(2, "q"),
            publish(3, "q"),
            remove(1, "q"),
            Record::Delivered {
                id: 2,
                vhost: "/".into(),
                queue: "q".into(),
            },
            in_vhost("v", queue("vq")),
            in_vhost("v", publish(4, "vq")),
        ]
    }

    /// The new segment of that compaction as the writer lays it out: each
    /// vhost's snapshot (true) is written under its lock, so other vhosts'
    /// changes interleave with it, and its own come before and after.
    fn compaction() -> Vec<(Record, bool)> {
        let h = history();
        vec![
            (publish(5, "q"), false),
            (begin("/", 7), true),
            (h[0].clone(), true),
            (queue("q"), true),
            (in_vhost("v", publish(6, "vq")), false),
            (h[2].clone(), true),
            (publish(2, "q"), true),
            (in_vhost("v", remove(4, "vq")), false),
            (publish(3, "q"), true),
            (publish(5, "q"), true),
            (h[7].clone(), true),
            (publish(7, "q"), false),
            (begin("v", 2), true),
            (in_vhost("v", queue("vq")), true),
            (in_vhost("v", publish(6, "vq")), true),
            (in_vhost("v", publish(8, "vq")), false),
            (remove(3, "q"), false),
        ]
    }

    /// A crash at every byte of a compaction's new segment: recovery always
    /// yields the state of the changes made up to that point, never less (a
    /// snapshot cut off is ignored, the old segments still hold its state) and
    /// never more.
    #[test]
    fn a_compaction_cut_off_anywhere_loses_nothing() {
        let dir = tempdir("cut");
        let expected_dir = tempdir("cut-expected");
        write_log(&dir, &history());
        let mut full = Vec::new();
        let mut ends = Vec::new();
        for (rec, _) in compaction() {
            rec.encode(&mut full);
            ends.push(full.len());
        }
        for cut in 0..=full.len() {
            fs::write(segment_path(&dir, 2), &full[..cut]).unwrap();
            let got = recover(&dir).unwrap();
            // The same changes, without any snapshot.
            let mut logical = history();
            logical.extend(
                compaction()
                    .into_iter()
                    .zip(&ends)
                    .filter(|((_, snap), &end)| !snap && end <= cut)
                    .map(|((rec, _), _)| rec),
            );
            write_log(&expected_dir, &logical);
            let want = recover(&expected_dir).unwrap();
            assert_eq!(
                summary(&got),
                summary(&want),
                "cut at byte {cut} of {}",
                full.len()
            );
            // "/"'s snapshot is records 1..=10 of the segment, "v"'s 12..=14.
            let cut_off = |first: usize, last: usize| ends[first] <= cut && cut < ends[last];
            let abandoned: Vec<&str> = [("/", cut_off(1, 10)), ("v", cut_off(12, 14))]
                .into_iter()
                .filter_map(|(v, cut)| cut.then_some(v))
                .collect();
            assert_eq!(got.abandoned, abandoned, "cut at byte {cut}");
        }
    }

    /// After a cut-off snapshot the vhost's next records are its own again,
    /// whether the log is reopened (after `kill -9`) or thawed (after
    /// `Broker::crash`), rather than read as the rest of the snapshot.
    #[test]
    fn records_after_a_cut_off_snapshot_are_not_taken_for_its_rest() {
        let dir = tempdir("abandoned");
        write_log(&dir, &history());
        let mut cut = Vec::new();
        for (rec, _) in &compaction()[..7] {
            rec.encode(&mut cut);
        }
        fs::write(segment_path(&dir, 2), &cut).unwrap();
        let (store, recovered) = Store::open(&dir).unwrap();
        assert_eq!(recovered.abandoned, ["/"]);
        assert_eq!(ids(&recovered, "q"), [2, 3, 5]);
        store.append(&publish(9, "q"));
        // Another compaction, cut off by a power cut: its start reached the
        // disk, the rest did not.
        store.append(&begin("/", 3));
        store.append(&queue("q"));
        store.flush();
        store.freeze();
        store.append(&publish(2, "q"));
        let recovered = recover(&dir).unwrap();
        assert_eq!(recovered.abandoned, ["/"]);
        assert_eq!(ids(&recovered, "q"), [2, 3, 5, 9]);
        store.thaw(&recovered.abandoned);
        store.append(&publish(10, "q"));
        store.flush();
        store.close();
        let recovered = recover(&dir).unwrap();
        assert!(recovered.abandoned.is_empty());
        assert_eq!(ids(&recovered, "q"), [2, 3, 5, 9, 10]);
    }

    /// A corrupt record inside a snapshot whose old segments are gone costs
    /// that record, not the whole snapshot.
    #[test]
    fn a_corrupt_record_in_a_whole_snapshot_costs_only_that_record() {
        let dir = tempdir("corrupt-snapshot");
        let mut data = write_log(
            &dir,
            &[
                begin("/", 4),
                queue("q"),
                publish(1, "q"),
                publish(2, "q"),
                publish(3, "q"),
            ],
        );
        let at = data
            .windows(2)
            .position(|w| w == b"m2")
            .expect("m2 is in the log");
        data[at] ^= 0xff;
        fs::write(segment_path(&dir, 1), &data).unwrap();
        let r = recover(&dir).unwrap();
        assert_eq!(ids(&r, "q"), [1, 3]);
        assert!(r.abandoned.is_empty());
    }

    /// Logs written before snapshots were counted reset the vhost outright.
    #[test]
    fn a_legacy_reset_still_replaces_the_vhost() {
        let dir = tempdir("legacy");
        write_log(
            &dir,
            &[
                queue("q"),
                publish(1, "q"),
                publish(2, "q"),
                Record::VhostReset { vhost: "/".into() },
                queue("q"),
                publish(2, "q"),
            ],
        );
        assert_eq!(ids(&recover(&dir).unwrap(), "q"), [2]);
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "warren-store-{name}-{}-{}",
            std::process::id(),
            crate::connection::random_token()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
