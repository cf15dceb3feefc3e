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
        let own = msg.dead_lettered() || self.profile.reads_client_x_death();
        // From 4.0 a client's `x-death` is neither counted nor a cycle (the
        // cycle check reads the broker's annotation only, mc.erl:441-445 at
        // v4.0.9): the history starts afresh and is written over the header.
        let history = original
            .headers()
            .as_ref()
            .filter(|_| own)
            .and_then(|h| match h.inner().get("x-death") {
                Some(AMQPValue::FieldArray(a)) => Some(a.clone()),
                _ => None,
            })
            .unwrap_or_default();
        // The `x-first-death-*` headers are (re)written at a message's first
        // death: until 3.13, when it has no `x-death` header at all
        // (rabbit_dead_letter.erl:116-127 at v3.10.8); from 4.0, when the broker
        // has no history of it, its annotations then overriding the client's
        // headers (mc.erl:423-425 and mc_amqpl.erl:454-479 at v4.0.9).
        let first = if self.profile.reads_client_x_death() {
            !original
                .headers()
                .as_ref()
                .is_some_and(|h| h.contains_key("x-death"))
        } else {
            !msg.dead_lettered()
        };
        let mut properties = original.clone();
        let headers = with_death(
            properties.headers().clone().unwrap_or_default(),
            history.clone(),
            Death {
                queue,
                reason,
                first,
                last: self.profile.last_death_headers(),
            },
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
        let mut dead = Message::new(
            Route::new(&exchange, &routing_key, &self.gauge),
            &properties,
            header,
            msg.body_bytes(),
        );
        dead.set_dead_lettered(true);
        self.enqueue(&targets, dead, false);
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

/// One death of a message, and which of the top-level headers it sets.
struct Death<'a> {
    queue: &'a str,
    reason: &'a str,
    /// Write `x-first-death-*` (this is the message's first death).
    first: bool,
    /// Write `x-last-death-*` (3.13 and later).
    last: bool,
}

/// Adds this death to the `x-death` history (newest first) and sets the
/// top-level `x-first-death-*` / `x-last-death-*` headers. A repeat of the same
/// queue and reason moves that entry to the front with its count up and keeps
/// the rest of it as it was (its time, exchange and routing keys are the first
/// such death's): `increment_xdeath_event_count/1` in rabbit_dead_letter.erl at
/// v3.10.8, `update_death/2` (count and `last_time` only) in mc.erl at v4.0.9.
fn with_death(
    mut headers: FieldTable,
    history: FieldArray,
    death: Death<'_>,
    msg: &Message,
    expiration: Option<&str>,
    now: u64,
) -> FieldTable {
    let Death {
        queue,
        reason,
        first,
        last,
    } = death;
    let same = |t: &FieldTable| {
        matches!(t.inner().get("queue"), Some(AMQPValue::LongString(q)) if q.as_bytes() == queue.as_bytes())
            && matches!(t.inner().get("reason"), Some(AMQPValue::LongString(r)) if r.as_bytes() == reason.as_bytes())
    };
    let mut repeat = None;
    let mut rest = Vec::new();
    for entry in history.as_slice() {
        match entry {
            AMQPValue::FieldTable(t) if repeat.is_none() && same(t) => repeat = Some(t.clone()),
            other => rest.push(other.clone()),
        }
    }
    let entry = match repeat {
        Some(mut t) => {
            let count = t.inner().get("count").and_then(integer).unwrap_or(0);
            t.insert("count".into(), AMQPValue::LongLongInt(count + 1));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long(reason));
            t.insert("queue".into(), long(queue));
            t.insert("time".into(), AMQPValue::Timestamp(now));
            t.insert("exchange".into(), long(msg.exchange()));
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(vec![long(msg.routing_key())].into()),
            );
            if let Some(exp) = expiration {
                t.insert("original-expiration".into(), long(exp));
            }
            t
        }
    };
    let mut deaths = vec![AMQPValue::FieldTable(entry)];
    deaths.extend(rest);
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    let tops = [
        ("reason", reason),
        ("queue", queue),
        ("exchange", msg.exchange()),
    ];
    for (name, value) in tops {
        if first {
            headers.insert(format!("x-first-death-{name}").into(), long(value));
        }
        if last {
            headers.insert(format!("x-last-death-{name}").into(), long(value));
        }
    }
    headers
}

/// A count as a client may have typed it: RabbitMQ 3.x adds one to whatever
/// integer it finds (`x_death_event_key/2` returns the value, any type).
fn integer(v: &AMQPValue) -> Option<i64> {
    Some(match *v {
        AMQPValue::ShortShortInt(n) => n.into(),
        AMQPValue::ShortShortUInt(n) => n.into(),
        AMQPValue::ShortInt(n) => n.into(),
        AMQPValue::ShortUInt(n) => n.into(),
        AMQPValue::LongInt(n) => n.into(),
        AMQPValue::LongUInt(n) => n.into(),
        AMQPValue::LongLongInt(n) => n,
        _ => return None,
    })
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
