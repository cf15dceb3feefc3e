//! AMQP values as the management API writes them in JSON, and back: field
//! tables, message properties and bodies.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::inspect::MessageSnapshot;

/// A field table as RabbitMQ's management API shows it: an object whose
/// values are JSON numbers, strings, booleans, arrays and objects.
pub fn table(t: &FieldTable) -> Value {
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
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!(d.value as f64 / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A JSON object as a field table, typed as RabbitMQ's management plugin
/// types it (`rabbit_mgmt_util:args`): integers are `long`s, other numbers
/// doubles, strings long strings.
pub fn to_table(v: &Value) -> Result<FieldTable, String> {
    match v {
        Value::Null => Ok(FieldTable::default()),
        Value::Object(m) => {
            let mut t = FieldTable::default();
            for (k, v) in m {
                if let Some(v) = to_value(v) {
                    t.insert(ShortString::from(k.as_str()), v);
                }
            }
            Ok(t)
        }
        _ => Err("arguments must be an object".to_owned()),
    }
}

fn to_value(v: &Value) -> Option<AMQPValue> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().filter_map(to_value).collect::<Vec<_>>(),
        )),
        Value::Object(_) => AMQPValue::FieldTable(to_table(v).ok()?),
    })
}

/// Message properties with the management API's names; absent ones left out.
pub fn properties(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), json!(v.as_str()));
        }
    };
    s("content_type", p.content_type());
    s("content_encoding", p.content_encoding());
    s("correlation_id", p.correlation_id());
    s("reply_to", p.reply_to());
    s("expiration", p.expiration());
    s("message_id", p.message_id());
    s("type", p.kind());
    s("user_id", p.user_id());
    s("app_id", p.app_id());
    s("cluster_id", p.cluster_id());
    if let Some(h) = p.headers() {
        m.insert("headers".into(), table(h));
    }
    if let Some(d) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(d));
    }
    if let Some(d) = p.priority() {
        m.insert("priority".into(), json!(d));
    }
    if let Some(t) = p.timestamp() {
        m.insert("timestamp".into(), json!(t));
    }
    Value::Object(m)
}

/// Properties from their JSON form; unknown names are refused, as a typo
/// silently ignored would make a test lie.
pub fn to_properties(v: &Value) -> Result<BasicProperties, String> {
    let mut p = BasicProperties::default();
    let Some(m) = v.as_object() else {
        return match v {
            Value::Null => Ok(p),
            _ => Err("properties must be an object".to_owned()),
        };
    };
    for (k, v) in m {
        let text = || -> Result<ShortString, String> {
            match v {
                Value::String(s) => Ok(ShortString::from(s.as_str())),
                Value::Number(n) => Ok(ShortString::from(n.to_string())),
                _ => Err(format!("property {k} must be a string")),
            }
        };
        let int = || -> Result<u64, String> {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| format!("property {k} must be a non-negative integer"))
        };
        let small = || -> Result<u8, String> {
            u8::try_from(int()?).map_err(|_| format!("property {k} is out of range"))
        };
        p = match k.as_str() {
            "content_type" => p.with_content_type(text()?),
            "content_encoding" => p.with_content_encoding(text()?),
            "correlation_id" => p.with_correlation_id(text()?),
            "reply_to" => p.with_reply_to(text()?),
            "expiration" => p.with_expiration(text()?),
            "message_id" => p.with_message_id(text()?),
            "type" => p.with_type(text()?),
            "user_id" => p.with_user_id(text()?),
            "app_id" => p.with_app_id(text()?),
            "cluster_id" => p.with_cluster_id(text()?),
            "headers" => p.with_headers(to_table(v)?),
            "delivery_mode" => p.with_delivery_mode(small()?),
            "priority" => p.with_priority(small()?),
            "timestamp" => p.with_timestamp(int()?),
            other => return Err(format!("unknown property {other}")),
        };
    }
    Ok(p)
}

/// A body as text when it is UTF-8, else base64: `(body, body_encoding)`.
pub fn body(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), "string"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            "base64",
        ),
    }
}

/// A body given as text (`"string"`, the default) or base64.
pub fn to_body(body: &str, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding.unwrap_or("string") {
        "string" => Ok(body.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("body is not valid base64: {e}")),
        other => Err(format!("unknown body encoding {other}")),
    }
}

/// A message as the snapshot shows it (control-plane.md's message object).
pub fn message(m: &MessageSnapshot) -> Map<String, Value> {
    let (body, encoding) = body(&m.body);
    let mut o = Map::new();
    o.insert("body".into(), json!(body));
    o.insert("body_encoding".into(), json!(encoding));
    o.insert("properties".into(), properties(&m.properties));
    o.insert("exchange".into(), json!(m.exchange));
    o.insert("routing_key".into(), json!(m.routing_key));
    o.insert("redelivered".into(), json!(m.redelivered));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_through_json_as_rabbitmq_types_them() {
        let v = json!({"x-message-ttl": 60000, "x-queue-type": "classic",
                       "nested": {"on": true, "list": [1, "a"]}, "ratio": 0.5});
        let t = to_table(&v).unwrap();
        assert_eq!(
            t.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(60000))
        );
        assert_eq!(table(&t), v);
    }

    #[test]
    fn properties_round_trip_and_unknown_names_are_refused() {
        let v = json!({"content_type": "text/plain", "delivery_mode": 2,
                       "headers": {"k": "v"}, "timestamp": 7});
        assert_eq!(properties(&to_properties(&v).unwrap()), v);
        assert!(to_properties(&json!({"delivery-mode": 2})).is_err());
    }

    #[test]
    fn bodies_are_text_when_utf8_and_base64_otherwise() {
        assert_eq!(body(b"hi"), ("hi".to_owned(), "string"));
        let (b, e) = body(&[0xff, 0]);
        assert_eq!(e, "base64");
        assert_eq!(to_body(&b, Some(e)).unwrap(), vec![0xff, 0]);
    }
}
