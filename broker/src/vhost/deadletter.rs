//! Dead-lettering as RabbitMQ does it: a message rejected without requeue,
//! expired, or dropped by a length limit is republished to its queue's
//! `x-dead-letter-exchange` with an `x-death` history in its headers.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use super::{Message, Route, Targets, VhostState};
use crate::codec;

/// Why a message left its queue unacked: the `reason` of its `x-death` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DeathReason {
    /// `basic.reject` or `basic.nack` without requeue.
    Rejected,
    /// Its TTL (per message or per queue) passed.
    Expired,
    /// Dropped from the head by `x-max-length` / `x-max-length-bytes`
    /// (`x-overflow` drop-head or reject-publish-dlx).
    MaxLen,
    /// A quorum queue's `x-delivery-limit` was passed.
    DeliveryLimit,
}

impl DeathReason {
    /// As RabbitMQ writes it in `x-death` and `x-first-death-reason`.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::MaxLen => "maxlen",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

impl VhostState {
    pub(super) fn dead_letter(&mut self, queue: &str, msg: &Arc<Message>, why: DeathReason) {
        let reason = why.as_str();
        let Some(q) = self.queues.get(queue) else {
            return;
        };
        let Some(exchange) = q.limits.dead_letter_exchange.clone() else {
            return;
        };
        let routing_key = q
            .limits
            .dead_letter_routing_key
            .clone()
            .unwrap_or_else(|| msg.routing_key().to_string());
        let original = msg.properties();
        let history = original
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get("x-death") {
                Some(AMQPValue::FieldArray(a)) => Some(a.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let mut properties = original.clone();
        let headers = with_death(
            properties.headers().clone().unwrap_or_default(),
            history.clone(),
            queue,
            reason,
            msg,
            original.expiration().as_ref().map(|e| e.as_str()),
            self.clock.unix_seconds(),
        );
        properties = properties.with_headers(headers.clone());
        // The TTL does not travel: RabbitMQ keeps it as `original-expiration`.
        properties = strip_expiration(properties);
        let Ok(targets) = self.route(&exchange, &routing_key, Some(&headers)) else {
            return;
        };
        // A message that would come back to a queue it already died in, with no
        // rejection on the way, is dropped: RabbitMQ's cycle detection.
        let targets: Targets = targets
            .into_iter()
            .filter(|t| why == DeathReason::Rejected || !died_in(&history, t))
            .collect();
        if targets.is_empty() {
            return;
        }
        let header = codec::encode_header(msg.body().len() as u64, &properties);
        let dead = Message::new(
            Route::new(&exchange, &routing_key, &self.gauge),
            &properties,
            header,
            msg.body_bytes(),
        );
        self.enqueue(&targets, dead);
    }
}

fn died_in(history: &FieldArray, queue: &str) -> bool {
    history.as_slice().iter().any(|entry| match entry {
        AMQPValue::FieldTable(t) => {
            matches!(t.inner().get("queue"), Some(AMQPValue::LongString(q)) if q.as_bytes() == queue.as_bytes())
                && !matches!(t.inner().get("reason"), Some(AMQPValue::LongString(r)) if r.as_bytes() == b"rejected")
        }
        _ => false,
    })
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Adds this death to the `x-death` history (newest first; a repeat of the same
/// queue and reason counts up) and sets the `x-first-death-*` headers once.
fn with_death(
    mut headers: FieldTable,
    history: FieldArray,
    queue: &str,
    reason: &str,
    msg: &Message,
    expiration: Option<&str>,
    now: u64,
) -> FieldTable {
    let same = |t: &FieldTable| {
        matches!(t.inner().get("queue"), Some(AMQPValue::LongString(q)) if q.as_bytes() == queue.as_bytes())
            && matches!(t.inner().get("reason"), Some(AMQPValue::LongString(r)) if r.as_bytes() == reason.as_bytes())
    };
    let mut count = 1i64;
    let mut rest = Vec::new();
    for entry in history.as_slice() {
        match entry {
            AMQPValue::FieldTable(t) if same(t) => {
                if let Some(AMQPValue::LongLongInt(n)) = t.inner().get("count") {
                    count = n + 1;
                }
            }
            other => rest.push(other.clone()),
        }
    }
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(count));
    death.insert("reason".into(), long(reason));
    death.insert("queue".into(), long(queue));
    death.insert("time".into(), AMQPValue::Timestamp(now));
    death.insert("exchange".into(), long(msg.exchange()));
    death.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(vec![long(msg.routing_key())].into()),
    );
    if let Some(exp) = expiration {
        death.insert("original-expiration".into(), long(exp));
    }
    let mut deaths = vec![AMQPValue::FieldTable(death)];
    deaths.extend(rest);
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    for (key, value) in [
        ("x-first-death-reason", reason),
        ("x-first-death-queue", queue),
        ("x-first-death-exchange", msg.exchange()),
    ] {
        if !headers.contains_key(key) {
            headers.insert(key.into(), long(value));
        }
    }
    headers
}

fn strip_expiration(
    p: amq_protocol::protocol::basic::AMQPProperties,
) -> amq_protocol::protocol::basic::AMQPProperties {
    let mut out = amq_protocol::protocol::basic::AMQPProperties::default();
    macro_rules! copy {
        ($($get:ident => $with:ident),* $(,)?) => {
            $(if let Some(v) = p.$get().clone() { out = out.$with(v); })*
        };
    }
    copy!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    out
}
