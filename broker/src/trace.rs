//! The frame trace: every frame each connection sent and got, in one broker-wide
//! order, with its method and key fields, kept while tracing is on.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amq_protocol::protocol::{basic, channel, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::codec::Frame;

/// Which way a traced frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the broker.
    In,
    /// From the broker to the client.
    Out,
}

impl Direction {
    /// `"in"` or `"out"`, as the HTTP API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One field of a traced frame: a name, a number or a flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceValue {
    Text(String),
    Number(u64),
    Flag(bool),
}

impl fmt::Display for TraceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceValue::Text(s) => write!(f, "{s:?}"),
            TraceValue::Number(n) => write!(f, "{n}"),
            TraceValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

/// A scripted fault that fired while the broker handled a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultMark {
    /// What the fault did: `close_channel`, `close_connection`, `nack_confirm`
    /// or `withhold_confirm`.
    pub action: &'static str,
    /// The code and text of a close, empty otherwise.
    pub detail: String,
}

/// One frame seen on a connection.
#[derive(Clone, Debug)]
pub struct TraceEntry {
    /// Its place in the broker-wide order of traced frames (from 1).
    pub seq: u64,
    /// The broker's id of the connection (as in [`crate::Broker::connections`]).
    pub connection: u64,
    pub direction: Direction,
    pub channel: u16,
    /// `class.method` (`basic.publish`, `queue.declare-ok`), or `content-header`,
    /// `content-body`, `heartbeat`.
    pub method: String,
    /// The fields a reader looks for: names, routing keys, delivery tags, reply
    /// codes and texts, flags; a content body abbreviated.
    pub fields: Vec<(&'static str, TraceValue)>,
    /// The method with all its arguments as amq-protocol prints it, or what
    /// content frame it was.
    pub frame: String,
    /// The faults that fired while the broker handled this frame.
    pub faults: Vec<FaultMark>,
}

impl TraceEntry {
    /// The method and its fields on one line: `basic.publish exchange="" routing_key="tasks"`.
    pub fn summary(&self) -> String {
        let mut s = self.method.clone();
        for (name, value) in &self.fields {
            s.push_str(&format!(" {name}={value}"));
        }
        s
    }

    /// The entry as the HTTP API and the page read it (`docs/control-plane.md`).
    pub fn to_json(&self) -> serde_json::Value {
        let fields: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(name, value)| {
                let v = match value {
                    TraceValue::Text(s) => serde_json::Value::from(s.as_str()),
                    TraceValue::Number(n) => serde_json::Value::from(*n),
                    TraceValue::Flag(b) => serde_json::Value::from(*b),
                };
                ((*name).to_owned(), v)
            })
            .collect();
        let faults: Vec<serde_json::Value> = self
            .faults
            .iter()
            .map(|m| serde_json::json!({"action": m.action, "detail": m.detail}))
            .collect();
        serde_json::json!({
            "seq": self.seq,
            "connection": self.connection,
            "channel": self.channel,
            "direction": self.direction.as_str(),
            "method": self.method,
            "summary": self.summary(),
            "fields": fields,
            "faults": faults,
        })
    }

    /// The first field called `name`.
    pub fn field(&self, name: &str) -> Option<&TraceValue> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::In => "C->S",
            Direction::Out => "S->C",
        };
        write!(f, "{arrow} ch{} {}", self.channel, self.summary())?;
        for mark in &self.faults {
            write!(f, " [fault fired: {} {}]", mark.action, mark.detail)?;
        }
        Ok(())
    }
}

/// Frames kept broker-wide; older ones are dropped.
pub const TRACE_LIMIT: usize = 100_000;

/// Body bytes a traced content frame keeps.
const BODY_PREVIEW: usize = 64;

/// The broker's frame trace: one order for every connection's frames, so that a
/// reader sees which publish came before which delivery. It outlives the
/// connections it traced, so a test can look after they closed.
#[derive(Debug, Default)]
pub struct Tracer {
    on: AtomicBool,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    /// The seq of the next entry.
    next: u64,
    /// Contiguous seqs, oldest first: an entry's index is its seq less the first's.
    entries: VecDeque<TraceEntry>,
}

impl Tracer {
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Appends an entry (its seq is given here) and returns that seq.
    fn push(&self, mut entry: TraceEntry) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.next += 1;
        entry.seq = ring.next;
        if ring.entries.len() == TRACE_LIMIT {
            ring.entries.pop_front();
        }
        ring.entries.push_back(entry);
        ring.next
    }

    fn mark(&self, seq: u64, mark: FaultMark) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let Some(first) = ring.entries.front().map(|e| e.seq) else {
            return;
        };
        if let Some(entry) = seq
            .checked_sub(first)
            .and_then(|i| ring.entries.get_mut(i as usize))
        {
            entry.faults.push(mark);
        }
    }

    /// The entries kept, oldest first; only one connection's with `Some`.
    pub fn entries(&self, connection: Option<u64>) -> Vec<TraceEntry> {
        self.entries_after(connection, 0)
    }

    /// The entries whose seq is above `after`: a poller's new ones, found
    /// without walking the older ones (seqs are contiguous in the ring).
    pub fn entries_after(&self, connection: Option<u64>, after: u64) -> Vec<TraceEntry> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let first = ring.entries.front().map_or(1, |e| e.seq);
        let skip = after.saturating_add(1).saturating_sub(first);
        ring.entries
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .filter(|e| connection.is_none_or(|c| c == e.connection))
            .cloned()
            .collect()
    }
}

/// One connection's side of the trace.
#[derive(Debug)]
pub struct Trace {
    tracer: Arc<Tracer>,
    connection: u64,
    /// The seq of the last frame received: the one being handled when a fault
    /// fires.
    last_in: AtomicU64,
}

impl Trace {
    pub(crate) fn new(tracer: Arc<Tracer>, connection: u64) -> Self {
        Trace {
            tracer,
            connection,
            last_in: AtomicU64::new(0),
        }
    }

    pub fn is_on(&self) -> bool {
        self.tracer.is_on()
    }

    pub fn record(&self, direction: Direction, frame: &Frame) {
        if !self.is_on() {
            return;
        }
        let (method, fields, text) = describe(frame);
        let seq = self.tracer.push(TraceEntry {
            seq: 0,
            connection: self.connection,
            direction,
            channel: frame.channel(),
            method,
            fields,
            frame: text,
            faults: Vec::new(),
        });
        if direction == Direction::In {
            self.last_in.store(seq, Ordering::Relaxed);
        }
    }

    /// Marks the frame being handled: a scripted fault fired on it.
    pub fn fault(&self, action: &'static str, detail: String) {
        if self.is_on() {
            let seq = self.last_in.load(Ordering::Relaxed);
            self.tracer.mark(seq, FaultMark { action, detail });
        }
    }
}

// ---- what a frame says ------------------------------------------------------------

type Fields = Vec<(&'static str, TraceValue)>;

fn text(s: impl Into<String>) -> TraceValue {
    TraceValue::Text(s.into())
}

fn num(n: impl Into<u64>) -> TraceValue {
    TraceValue::Number(n.into())
}

fn flag(b: bool) -> TraceValue {
    TraceValue::Flag(b)
}

/// The method name, the key fields and the full text of a frame.
fn describe(frame: &Frame) -> (String, Fields, String) {
    match frame {
        Frame::Method(_, m) => {
            let debug = format!("{m:?}");
            (method_name(&debug), method_fields(m), debug)
        }
        Frame::Publish(_, p) => {
            let m = p.to_method();
            let debug = format!("{m:?}");
            (method_name(&debug), method_fields(&m), debug)
        }
        Frame::Header {
            body_size,
            properties,
            ..
        } => {
            let props = properties
                .as_deref()
                .unwrap_or(crate::codec::no_properties());
            let mut fields = vec![("body_size", num(*body_size))];
            property_fields(props, &mut fields);
            let debug = format!("content header: body {body_size} bytes, {props:?}");
            ("content-header".into(), fields, debug)
        }
        Frame::Body(_, body) => {
            let fields = vec![
                ("size", num(body.len() as u64)),
                ("body", text(preview(body))),
            ];
            let debug = format!("content body: {} bytes", body.len());
            ("content-body".into(), fields, debug)
        }
        Frame::Heartbeat(_) => ("heartbeat".into(), Vec::new(), "heartbeat".into()),
    }
}

/// `basic.declare-ok` from amq-protocol's `Basic(DeclareOk(DeclareOk { … }))`:
/// its Debug output names every class and method, so no table of names can fall
/// behind it.
fn method_name(debug: &str) -> String {
    let mut parts = debug.splitn(3, '(');
    let class = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let mut name = class.to_ascii_lowercase();
    name.push('.');
    for (i, c) in method.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                name.push('-');
            }
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

/// The first bytes of a body: as text when they are UTF-8, else in hex.
pub fn preview(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_PREVIEW)];
    let more = if body.len() > BODY_PREVIEW { "…" } else { "" };
    // A cut may split a character: keep the valid prefix when the rest is text.
    match std::str::from_utf8(cut) {
        Ok(s) => format!("{s}{more}"),
        Err(e) if e.error_len().is_none() => {
            format!(
                "{}…",
                std::str::from_utf8(&cut[..e.valid_up_to()]).unwrap_or("")
            )
        }
        Err(_) => {
            let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

fn table_text(t: &FieldTable) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in t.inner().iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{}: {}", k.as_str(), value_text(v)));
    }
    s.push('}');
    s
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => format!("{:?}", String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => format!("{:?}", s.as_str()),
        AMQPValue::FieldTable(t) => table_text(t),
        AMQPValue::FieldArray(a) => {
            let items: Vec<String> = a.as_slice().iter().map(value_text).collect();
            format!("[{}]", items.join(", "))
        }
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn arguments(t: &FieldTable, fields: &mut Fields) {
    if !t.inner().is_empty() {
        fields.push(("arguments", text(table_text(t))));
    }
}

fn property_fields(p: &amq_protocol::protocol::BasicProperties, fields: &mut Fields) {
    let mut short = |name: &'static str, v: &Option<amq_protocol::types::ShortString>| {
        if let Some(v) = v {
            fields.push((name, text(v.as_str())));
        }
    };
    short("content_type", p.content_type());
    short("content_encoding", p.content_encoding());
    short("correlation_id", p.correlation_id());
    short("reply_to", p.reply_to());
    short("expiration", p.expiration());
    short("message_id", p.message_id());
    short("type", p.kind());
    short("user_id", p.user_id());
    short("app_id", p.app_id());
    if let Some(m) = p.delivery_mode() {
        fields.push(("delivery_mode", num(*m)));
    }
    if let Some(m) = p.priority() {
        fields.push(("priority", num(*m)));
    }
    if let Some(t) = p.timestamp() {
        fields.push(("timestamp", num(*t)));
    }
    if let Some(h) = p.headers() {
        fields.push(("headers", text(table_text(h))));
    }
}

fn method_fields(m: &AMQPClass) -> Fields {
    let mut f: Fields = Vec::new();
    match m {
        AMQPClass::Basic(b) => match b {
            basic::AMQPMethod::Publish(p) => {
                f.push(("exchange", text(p.exchange.as_str())));
                f.push(("routing_key", text(p.routing_key.as_str())));
                if p.mandatory {
                    f.push(("mandatory", flag(true)));
                }
            }
            basic::AMQPMethod::Deliver(d) => {
                f.push(("consumer_tag", text(d.consumer_tag.as_str())));
                f.push(("delivery_tag", num(d.delivery_tag)));
                f.push(("redelivered", flag(d.redelivered)));
                f.push(("exchange", text(d.exchange.as_str())));
                f.push(("routing_key", text(d.routing_key.as_str())));
            }
            basic::AMQPMethod::Ack(a) => {
                f.push(("delivery_tag", num(a.delivery_tag)));
                f.push(("multiple", flag(a.multiple)));
            }
            basic::AMQPMethod::Nack(n) => {
                f.push(("delivery_tag", num(n.delivery_tag)));
                f.push(("multiple", flag(n.multiple)));
                f.push(("requeue", flag(n.requeue)));
            }
            basic::AMQPMethod::Reject(r) => {
                f.push(("delivery_tag", num(r.delivery_tag)));
                f.push(("requeue", flag(r.requeue)));
            }
            basic::AMQPMethod::Consume(c) => {
                f.push(("queue", text(c.queue.as_str())));
                f.push(("consumer_tag", text(c.consumer_tag.as_str())));
                f.push(("no_ack", flag(c.no_ack)));
                if c.exclusive {
                    f.push(("exclusive", flag(true)));
                }
                arguments(&c.arguments, &mut f);
            }
            basic::AMQPMethod::ConsumeOk(c) => {
                f.push(("consumer_tag", text(c.consumer_tag.as_str())))
            }
            basic::AMQPMethod::Cancel(c) => f.push(("consumer_tag", text(c.consumer_tag.as_str()))),
            basic::AMQPMethod::CancelOk(c) => {
                f.push(("consumer_tag", text(c.consumer_tag.as_str())))
            }
            basic::AMQPMethod::Qos(q) => {
                f.push(("prefetch_count", num(q.prefetch_count)));
                f.push(("global", flag(q.global)));
            }
            basic::AMQPMethod::Get(g) => {
                f.push(("queue", text(g.queue.as_str())));
                f.push(("no_ack", flag(g.no_ack)));
            }
            basic::AMQPMethod::GetOk(g) => {
                f.push(("delivery_tag", num(g.delivery_tag)));
                f.push(("redelivered", flag(g.redelivered)));
                f.push(("exchange", text(g.exchange.as_str())));
                f.push(("routing_key", text(g.routing_key.as_str())));
                f.push(("message_count", num(g.message_count)));
            }
            basic::AMQPMethod::Return(r) => {
                f.push(("reply_code", num(r.reply_code)));
                f.push(("reply_text", text(r.reply_text.as_str())));
                f.push(("exchange", text(r.exchange.as_str())));
                f.push(("routing_key", text(r.routing_key.as_str())));
            }
            basic::AMQPMethod::Recover(r) => f.push(("requeue", flag(r.requeue))),
            basic::AMQPMethod::RecoverAsync(r) => f.push(("requeue", flag(r.requeue))),
            _ => {}
        },
        AMQPClass::Queue(q) => match q {
            queue::AMQPMethod::Declare(d) => {
                f.push(("queue", text(d.queue.as_str())));
                for (name, on) in [
                    ("passive", d.passive),
                    ("durable", d.durable),
                    ("exclusive", d.exclusive),
                    ("auto_delete", d.auto_delete),
                ] {
                    if on {
                        f.push((name, flag(true)));
                    }
                }
                arguments(&d.arguments, &mut f);
            }
            queue::AMQPMethod::DeclareOk(d) => {
                f.push(("queue", text(d.queue.as_str())));
                f.push(("message_count", num(d.message_count)));
                f.push(("consumer_count", num(d.consumer_count)));
            }
            queue::AMQPMethod::Bind(b) => {
                f.push(("queue", text(b.queue.as_str())));
                f.push(("exchange", text(b.exchange.as_str())));
                f.push(("routing_key", text(b.routing_key.as_str())));
                arguments(&b.arguments, &mut f);
            }
            queue::AMQPMethod::Unbind(b) => {
                f.push(("queue", text(b.queue.as_str())));
                f.push(("exchange", text(b.exchange.as_str())));
                f.push(("routing_key", text(b.routing_key.as_str())));
            }
            queue::AMQPMethod::Purge(p) => f.push(("queue", text(p.queue.as_str()))),
            queue::AMQPMethod::PurgeOk(p) => f.push(("message_count", num(p.message_count))),
            queue::AMQPMethod::Delete(d) => f.push(("queue", text(d.queue.as_str()))),
            queue::AMQPMethod::DeleteOk(d) => f.push(("message_count", num(d.message_count))),
            _ => {}
        },
        AMQPClass::Exchange(x) => match x {
            exchange::AMQPMethod::Declare(d) => {
                f.push(("exchange", text(d.exchange.as_str())));
                f.push(("type", text(d.kind.as_str())));
                for (name, on) in [
                    ("passive", d.passive),
                    ("durable", d.durable),
                    ("auto_delete", d.auto_delete),
                    ("internal", d.internal),
                ] {
                    if on {
                        f.push((name, flag(true)));
                    }
                }
                arguments(&d.arguments, &mut f);
            }
            exchange::AMQPMethod::Delete(d) => f.push(("exchange", text(d.exchange.as_str()))),
            exchange::AMQPMethod::Bind(b) => {
                f.push(("destination", text(b.destination.as_str())));
                f.push(("source", text(b.source.as_str())));
                f.push(("routing_key", text(b.routing_key.as_str())));
            }
            exchange::AMQPMethod::Unbind(b) => {
                f.push(("destination", text(b.destination.as_str())));
                f.push(("source", text(b.source.as_str())));
                f.push(("routing_key", text(b.routing_key.as_str())));
            }
            _ => {}
        },
        AMQPClass::Channel(c) => match c {
            channel::AMQPMethod::Close(c) => {
                f.push(("reply_code", num(c.reply_code)));
                f.push(("reply_text", text(c.reply_text.as_str())));
                f.push(("class_id", num(c.class_id)));
                f.push(("method_id", num(c.method_id)));
            }
            channel::AMQPMethod::Flow(c) => f.push(("active", flag(c.active))),
            channel::AMQPMethod::FlowOk(c) => f.push(("active", flag(c.active))),
            _ => {}
        },
        AMQPClass::Connection(c) => match c {
            connection::AMQPMethod::StartOk(s) => {
                for key in ["connection_name", "product"] {
                    if let Some(AMQPValue::LongString(v)) = s.client_properties.inner().get(key) {
                        f.push((key, text(String::from_utf8_lossy(v.as_bytes()))));
                    }
                }
                f.push(("mechanism", text(s.mechanism.as_str())));
            }
            connection::AMQPMethod::Tune(t) => {
                f.push(("channel_max", num(t.channel_max)));
                f.push(("frame_max", num(t.frame_max)));
                f.push(("heartbeat", num(t.heartbeat)));
            }
            connection::AMQPMethod::TuneOk(t) => {
                f.push(("channel_max", num(t.channel_max)));
                f.push(("frame_max", num(t.frame_max)));
                f.push(("heartbeat", num(t.heartbeat)));
            }
            connection::AMQPMethod::Open(o) => {
                f.push(("virtual_host", text(o.virtual_host.as_str())))
            }
            connection::AMQPMethod::Close(c) => {
                f.push(("reply_code", num(c.reply_code)));
                f.push(("reply_text", text(c.reply_text.as_str())));
                f.push(("class_id", num(c.class_id)));
                f.push(("method_id", num(c.method_id)));
            }
            connection::AMQPMethod::Blocked(b) => f.push(("reason", text(b.reason.as_str()))),
            _ => {}
        },
        _ => {}
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_come_from_amq_protocol() {
        assert_eq!(method_name("Basic(Publish(Publish { }))"), "basic.publish");
        assert_eq!(
            method_name("Queue(DeclareOk(DeclareOk { }))"),
            "queue.declare-ok"
        );
        assert_eq!(
            method_name("Confirm(SelectOk(SelectOk))"),
            "confirm.select-ok"
        );
        let m = AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(basic::RecoverAsync {
            requeue: true,
        }));
        assert_eq!(method_name(&format!("{m:?}")), "basic.recover-async");
    }

    #[test]
    fn bodies_are_shown_as_text_or_hex_and_cut() {
        assert_eq!(preview(b"hello"), "hello");
        assert_eq!(preview(&[0xff, 0x00]), "0xff00");
        let long = "é".repeat(100);
        let p = preview(long.as_bytes());
        assert!(p.ends_with('…') && p.starts_with("éé"), "{p}");
        assert_eq!(preview(&[7u8; 100]), format!("{}…", "\u{7}".repeat(64)));
        let bin = preview(&[0xffu8; 100]);
        assert_eq!(bin, format!("0x{}…", "ff".repeat(64)));
    }

    #[test]
    fn the_ring_keeps_the_newest_and_marks_by_seq() {
        let tracer = Arc::new(Tracer::default());
        tracer.set(true);
        let trace = Trace::new(tracer.clone(), 7);
        for _ in 0..TRACE_LIMIT + 5 {
            trace.record(Direction::In, &Frame::Heartbeat(0));
        }
        trace.fault("nack_confirm", String::new());
        let entries = tracer.entries(None);
        assert_eq!(entries.len(), TRACE_LIMIT);
        assert_eq!(entries[0].seq, 6);
        let last = entries.last().unwrap();
        assert_eq!(last.seq, TRACE_LIMIT as u64 + 5);
        assert_eq!(last.faults[0].action, "nack_confirm");
        assert!(tracer.entries(Some(8)).is_empty());
        let newest = tracer.entries_after(None, TRACE_LIMIT as u64 + 3);
        let seqs: Vec<u64> = newest.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [TRACE_LIMIT as u64 + 4, TRACE_LIMIT as u64 + 5]);
        assert_eq!(tracer.entries_after(None, 2).len(), TRACE_LIMIT);
    }
}
