//! The log's records: each durable change, and its bytes (`len | crc32 | payload`).

use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;
use bytes::Bytes;

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
        /// Its `x-death` header is the broker's own history (see
        /// `Message::dead_lettered`). Written as its own record type, so that
        /// logs from before it read as `false`.
        dead_lettered: bool,
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
/// `T_PUBLISH` of a message the broker dead-lettered.
const T_PUBLISH_DEAD_LETTERED: u8 = 14;

impl Record {
    /// Appends `len | crc | payload` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        framed(out, |w| self.write(w));
    }

    pub(super) fn write(&self, w: &mut Writer) {
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
                dead_lettered,
            } => PublishRef {
                id: *id,
                vhost,
                queues,
                exchange,
                routing_key,
                header: [header, &[]],
                body,
                dead_lettered: *dead_lettered,
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
            tag @ (T_PUBLISH | T_PUBLISH_DEAD_LETTERED) => {
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
                    dead_lettered: tag == T_PUBLISH_DEAD_LETTERED,
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
pub(super) fn framed(out: &mut Vec<u8>, write: impl FnOnce(&mut Writer)) {
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
    pub dead_lettered: bool,
}

impl<Q: AsRef<str>> PublishRef<'_, Q> {
    pub(super) fn write(&self, w: &mut Writer) {
        w.u8(if self.dead_lettered {
            T_PUBLISH_DEAD_LETTERED
        } else {
            T_PUBLISH
        });
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

    pub(super) fn size(&self) -> usize {
        self.header[0].len() + self.header[1].len() + self.body.len()
    }
}

pub(super) struct Writer<'a>(&'a mut Vec<u8>);

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

pub(super) struct Reader<'a>(&'a [u8]);

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
