//! Which queues an exchange sends a message to: direct, fanout, topic and headers
//! matching over an exchange's bindings.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::vhost::{Binding, ExchangeKind};

/// Whether a binding of an exchange of `kind` takes a message.
pub fn matches(
    kind: ExchangeKind,
    binding: &Binding,
    routing_key: &str,
    headers: Option<&FieldTable>,
) -> bool {
    match kind {
        ExchangeKind::Direct => binding.routing_key == routing_key,
        ExchangeKind::Fanout => true,
        ExchangeKind::Topic => topic_matches(&binding.routing_key, routing_key),
        ExchangeKind::Headers => headers_match(&binding.arguments, headers),
    }
}

/// AMQP topic matching: words separated by `.`, `*` matches exactly one word and
/// `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    matches_words(&p, &k)
}

fn matches_words(p: &[&str], k: &[&str]) -> bool {
    match p.split_first() {
        None => k.is_empty(),
        Some((&"#", rest)) => (0..=k.len()).any(|i| matches_words(rest, &k[i..])),
        Some((&w, rest)) => match k.split_first() {
            Some((&kw, krest)) => (w == "*" || w == kw) && matches_words(rest, krest),
            None => false,
        },
    }
}

/// Headers matching: `x-match` all (default) or any, and RabbitMQ's `all-with-x` /
/// `any-with-x`, which also compare arguments starting with `x-`.
pub fn headers_match(binding: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = match binding.inner().get("x-match") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "all".to_owned(),
    };
    let (any, with_x) = match mode.as_str() {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut considered = binding
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")));
    let hit = |(k, v): (&amq_protocol::types::ShortString, &AMQPValue)| match headers.get(k) {
        None => false,
        Some(h) => matches!(v, AMQPValue::Void) || h == v,
    };
    if any {
        considered.any(hit)
    } else {
        considered.all(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_wildcards() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("a.b", "a.b.c"));
        assert!(topic_matches("", ""));
        assert!(topic_matches("a..b", "a..b"));
    }

    #[test]
    fn headers_all_and_any() {
        let mut b = FieldTable::default();
        b.insert("a".into(), AMQPValue::LongString("1".into()));
        b.insert("b".into(), AMQPValue::LongString("2".into()));
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongString("1".into()));
        assert!(!headers_match(&b, Some(&h)));
        b.insert("x-match".into(), AMQPValue::LongString("any".into()));
        assert!(headers_match(&b, Some(&h)));
        assert!(!headers_match(&b, None));
    }
}
