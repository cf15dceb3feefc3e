//! A broker snapshot as the control plane's JSON (`docs/control-plane.md`,
//! "Snapshot"), for the trace file: queues with their messages, exchanges,
//! bindings, connections and the clock.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use serde_json::{json, Map, Value};

use crate::inspect::{BrokerSnapshot, MessageSnapshot, QueueSnapshot};

/// The snapshot and the clock (virtual or not, its time in ms).
pub fn snapshot(snap: &BrokerSnapshot, vhosts: &[String], clock: (bool, u64)) -> Value {
    json!({
        "clock": {"virtual": clock.0, "now_ms": clock.1},
        "vhosts": vhosts,
        "queues": snap.queues.iter().map(queue).collect::<Vec<_>>(),
        "exchanges": snap.exchanges.iter().map(|e| json!({
            "vhost": e.vhost, "name": e.name, "type": e.kind, "durable": e.durable,
            "auto_delete": e.auto_delete, "internal": e.internal,
            "arguments": table(&e.arguments),
        })).collect::<Vec<_>>(),
        "bindings": snap.bindings.iter().map(|b| json!({
            "vhost": b.vhost, "source": b.source, "destination": b.destination,
            "destination_type": if b.to_exchange { "exchange" } else { "queue" },
            "routing_key": b.routing_key, "arguments": table(&b.arguments),
        })).collect::<Vec<_>>(),
        "connections": snap.connections.iter().map(|c| json!({
            "id": c.id, "name": c.peer, "peer": c.peer, "vhost": c.vhost,
            "channels": c.channels, "client_properties": {},
        })).collect::<Vec<_>>(),
        "faults": [],
    })
}

fn queue(q: &QueueSnapshot) -> Value {
    let kind = match q.arguments.inner().get("x-queue-type") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "classic".to_owned(),
    };
    let unacked: Vec<Value> = q
        .unacked
        .iter()
        .map(|u| {
            let mut m = message(&u.message);
            m.insert("connection".into(), json!(u.connection));
            m.insert("channel".into(), json!(u.channel));
            m.insert("delivery_tag".into(), json!(u.delivery_tag));
            m.insert("consumer_tag".into(), json!(u.consumer_tag));
            Value::Object(m)
        })
        .collect();
    json!({
        "vhost": q.vhost, "name": q.name, "type": kind,
        "durable": q.durable, "exclusive": q.exclusive_owner.is_some(),
        "auto_delete": q.auto_delete, "arguments": table(&q.arguments),
        "messages": q.messages.len() + q.unacked.len(),
        "messages_ready": q.messages.len(),
        "messages_unacknowledged": q.unacked.len(),
        "consumers": q.consumers.len(),
        "ready": q.messages.iter().map(|m| Value::Object(message(m))).collect::<Vec<_>>(),
        "unacked": unacked,
        "consumer_details": q.consumers.iter().map(|c| json!({
            "consumer_tag": c.tag, "connection": c.connection, "channel": c.channel,
            "ack_required": !c.no_ack, "exclusive": c.exclusive,
            "prefetch_count": c.prefetch, "unacked": c.unacked, "priority": c.priority,
        })).collect::<Vec<_>>(),
    })
}

/// Bodies in a file are cut to this: the page shows less, and a queue of large
/// messages must not make the file huge.
const BODY_KEPT: usize = 4096;

fn message(m: &MessageSnapshot) -> Map<String, Value> {
    let body = &m.body[..m.body.len().min(BODY_KEPT)];
    let (text, encoding) = match std::str::from_utf8(body) {
        Ok(s) => (s.to_owned(), "string"),
        // A cut may split a character: the text up to it is still text.
        Err(e) if e.error_len().is_none() && m.body.len() > BODY_KEPT => (
            String::from_utf8_lossy(&body[..e.valid_up_to()]).into_owned(),
            "string",
        ),
        Err(_) => (base64(body), "base64"),
    };
    let mut out = Map::new();
    out.insert("body".into(), json!(text));
    out.insert("body_encoding".into(), json!(encoding));
    out.insert("body_size".into(), json!(m.body.len()));
    out.insert("properties".into(), properties(&m.properties));
    out.insert("exchange".into(), json!(m.exchange));
    out.insert("routing_key".into(), json!(m.routing_key));
    out.insert("redelivered".into(), json!(m.redelivered));
    out
}

fn properties(p: &BasicProperties) -> Value {
    let mut out = Map::new();
    let mut text = |name: &str, v: &Option<amq_protocol::types::ShortString>| {
        if let Some(v) = v {
            out.insert(name.into(), json!(v.as_str()));
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    if let Some(v) = p.delivery_mode() {
        out.insert("delivery_mode".into(), json!(v));
    }
    if let Some(v) = p.priority() {
        out.insert("priority".into(), json!(v));
    }
    if let Some(v) = p.timestamp() {
        out.insert("timestamp".into(), json!(v));
    }
    if let Some(h) = p.headers() {
        out.insert("headers".into(), table(h));
    }
    Value::Object(out)
}

fn table(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value(v)))
            .collect(),
    )
}

fn value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Timestamp(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value).collect()),
        AMQPValue::FieldTable(t) => table(t),
        AMQPValue::ByteArray(b) => json!(base64(b.as_slice())),
        AMQPValue::DecimalValue(d) => json!(format!("{d:?}")),
        AMQPValue::Void => Value::Null,
    }
}

/// Standard base64 with padding, as the control plane writes binary bodies.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_the_standard_writes_it() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0x00, 0xfe]), "/wD+");
    }
}
