//! Field-table values compared and named as RabbitMQ does: integers equal by value
//! whatever their wire type, and each type's name in RabbitMQ's messages.

use amq_protocol::types::AMQPValue;

/// Integers compare by value whatever their wire type, as clients choose types
/// freely (pika sends `l`, others `I`).
pub(crate) fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub(crate) fn as_integer(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => *n as i128,
        AMQPValue::ShortShortUInt(n) => *n as i128,
        AMQPValue::ShortInt(n) => *n as i128,
        AMQPValue::ShortUInt(n) => *n as i128,
        AMQPValue::LongInt(n) => *n as i128,
        AMQPValue::LongUInt(n) => *n as i128,
        AMQPValue::LongLongInt(n) => *n as i128,
        AMQPValue::Timestamp(n) => *n as i128,
        _ => return None,
    })
}

pub(crate) fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        other => match as_integer(other) {
            Some(n) => n.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// RabbitMQ's name for a field's wire type.
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}
