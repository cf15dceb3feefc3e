//! Queue and exchange arguments as RabbitMQ checks them: which a queue type
//! takes, their values, and what a redeclaration must repeat; and `Limits`, the
//! queue arguments that change behaviour, read once at declaration.

use super::queue::Ready;
use super::stream::{parse_age, Retention};
use super::*;

/// `invalid arg 'x-…' for queue 'q' in vhost '/' of queue type rabbit_…_queue`:
/// an argument this queue type does not take.
pub(super) fn wrong_type_arg(arg: &str, queue: &str, vhost: &str, kind: &str) -> AmqpError {
    AmqpError::precondition(format!(
        "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}' of queue type {kind}"
    ))
}

/// Queue arguments that only streams take.
pub(super) const STREAM_ONLY_ARGS: &[&str] = &[
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
];

/// Queue arguments RabbitMQ 3.10 refuses on a stream.
pub(super) const NOT_FOR_STREAMS: &[&str] = &[
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-priority",
    "x-overflow",
    "x-expires",
    "x-single-active-consumer",
    "x-queue-mode",
    "x-queue-master-locator",
    "x-delivery-limit",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-quorum-initial-group-size",
];

/// RabbitMQ's first check of a declaration: arguments the queue type does not
/// take, named before any value is looked at.
pub(super) fn check_type_args(
    queue: &str,
    vhost: &str,
    args: &FieldTable,
    profile: &Profile,
) -> Result<(), AmqpError> {
    let kind = match args.inner().get("x-queue-type") {
        None => QueueType::Classic,
        // An unknown name, or not a string, is left to the value check, which
        // names the type problem.
        Some(v) => match text(v).as_deref().and_then(QueueType::parse) {
            Some(kind) => kind,
            None => return Ok(()),
        },
    };
    // From 4.3 the consumer timeouts are quorum queue arguments
    // (`rabbit_quorum_queue.erl:625-626` at v4.3.5), which the other types refuse
    // (`rabbit_amqqueue.erl:912-913`); before, no type lists them.
    let quorum_only = |k: &str| {
        profile.quorum_consumer_timeout()
            && matches!(k, "x-consumer-timeout" | "x-consumer-disconnected-timeout")
    };
    let refused = |k: &str| match kind {
        QueueType::Classic => {
            STREAM_ONLY_ARGS.contains(&k) || k == "x-queue-leader-locator" || quorum_only(k)
        }
        QueueType::Quorum => STREAM_ONLY_ARGS.contains(&k),
        QueueType::Stream => NOT_FOR_STREAMS.contains(&k) || quorum_only(k),
    };
    match args.inner().keys().find(|k| refused(k.as_str())) {
        Some(k) => Err(wrong_type_arg(k.as_str(), queue, vhost, kind.module())),
        None => Ok(()),
    }
}

/// The properties RabbitMQ 3.10 refuses on a stream, in the order it checks them.
pub(super) fn check_stream(d: &QueueDeclare, vhost: &str) -> Result<(), AmqpError> {
    let name = &d.name;
    let property = |p: &str| {
        Err(AmqpError::precondition(format!(
            "invalid property '{p}' for queue '{name}' in vhost '{vhost}'"
        )))
    };
    if d.auto_delete {
        return property("auto-delete");
    }
    if d.exclusive {
        return property("exclusive-owner");
    }
    if !d.durable {
        return property("non-durable");
    }
    Ok(())
}

/// What RabbitMQ 3.10 refuses in a quorum queue's declaration.
pub(super) fn check_quorum(d: &QueueDeclare, vhost: &str) -> Result<(), AmqpError> {
    let name = &d.name;
    let property = |p: &str| {
        Err(AmqpError::precondition(format!(
            "invalid property '{p}' for queue '{name}' in vhost '{vhost}'"
        )))
    };
    if !d.durable {
        return property("non-durable");
    }
    if d.exclusive {
        return property("exclusive-owner");
    }
    if d.auto_delete {
        return property("auto-delete");
    }
    for arg in ["x-max-priority", "x-queue-mode"] {
        if d.arguments.contains_key(arg) {
            return Err(AmqpError::precondition(format!(
                "invalid arg '{arg}' for queue '{name}' in vhost '{vhost}' of queue type \
                 rabbit_quorum_queue"
            )));
        }
    }
    Ok(())
}

/// RabbitMQ's validation of the queue arguments it knows (which ones, and how,
/// depends on the version imitated).
pub(super) fn validate_queue_args(
    queue: &str,
    vhost: &str,
    args: &FieldTable,
    profile: &Profile,
) -> Result<(), AmqpError> {
    for (key, value) in args.inner() {
        let int = || {
            as_integer(value)
                .ok_or_else(|| format!("\"expected integer, got {}\"", type_name(value)))
        };
        let non_negative = || {
            int().and_then(|n| {
                if n < 0 {
                    Err(format!("{{value_negative,{n}}}"))
                } else {
                    Ok(n)
                }
            })
        };
        let text = || match value {
            AMQPValue::LongString(s) => Ok(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Ok(s.to_string()),
            other => Err(format!("\"expected string, got {}\"", type_name(other))),
        };
        let one_of = |allowed: &[&str]| {
            text().and_then(|t| {
                if allowed.contains(&t.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{{unacceptable_value,<<\"{t}\">>}}"))
                }
            })
        };
        let problem = match key.as_str() {
            "x-expires" => int().and_then(|n| match n {
                0 => Err("{value_zero,0}".to_owned()),
                n if n < 0 => Err(format!("{{value_negative,{n}}}")),
                _ => Ok(()),
            }),
            "x-consumer-timeout" | "x-consumer-disconnected-timeout"
                if profile.quorum_consumer_timeout() =>
            {
                non_negative().map(|_| ())
            }
            "x-message-ttl"
            | "x-max-length"
            | "x-max-length-bytes"
            | "x-stream-max-segment-size-bytes" => non_negative().map(|_| ()),
            // No validator in `rabbit_amqqueue:declare_args/0` in any version:
            // RabbitMQ 3.10.8 takes -1, and 4.0+ reads a negative limit as none.
            "x-delivery-limit" => int().map(|_| ()),
            "x-queue-version" => non_negative().and_then(|n| {
                if profile.queue_versions().contains(&(n as i64)) {
                    Ok(())
                } else {
                    Err(format!("\"unsupported queue version '{n}'\""))
                }
            }),
            "x-initial-cluster-size" => int().and_then(|n| match n {
                0 => Err("{value_zero,0}".to_owned()),
                n if n < 0 => Err(format!("{{value_negative,{n}}}")),
                _ => Ok(()),
            }),
            "x-max-age" => match text() {
                Err(_) => Err(format!("{{unacceptable_type,{}}}", type_name(value))),
                Ok(t) => match stream::parse_age(&t) {
                    Ok(_) => Ok(()),
                    Err(stream::AgeError::Invalid) => Err("invalid_max_age".to_owned()),
                    Err(stream::AgeError::Crash) => return Err(stream::crash()),
                },
            },
            "x-queue-leader-locator" => match text() {
                Err(_) => Err(format!("{{unacceptable_type,{}}}", type_name(value))),
                Ok(_) => one_of(&["client-local", "balanced", "random", "least-leaders"])
                    .map_err(|_| "invalid_queue_locator_arg".to_owned()),
            },
            "x-max-priority" => non_negative().and_then(|n| {
                if n > 255 {
                    Err(format!("{{value_too_large,{n},255}}"))
                } else {
                    Ok(())
                }
            }),
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" => text().map(|_| ()),
            "x-overflow" => one_of(&["drop-head", "reject-publish", "reject-publish-dlx"])
                .map_err(|_| "invalid_overflow".to_owned()),
            // rabbit_amqqueue:check_queue_mode/2, gone in 4.3.
            "x-queue-mode" if profile.checks_queue_mode() => match value {
                AMQPValue::LongString(s) => {
                    let mode = String::from_utf8_lossy(s.as_bytes());
                    if mode == "default" || mode == "lazy" {
                        Ok(())
                    } else {
                        Err(format!("\"unsupported queue mode '{mode}'\""))
                    }
                }
                other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
            },
            "x-single-active-consumer" => match value {
                AMQPValue::Boolean(_) => Ok(()),
                other => Err(format!("\"expected bool, got {}\"", type_name(other))),
            },
            "x-queue-type" => text().and_then(|t| match QueueType::parse(&t) {
                Some(_) => Ok(()),
                None => Err(format!("\"unsupported queue type '{t}'\"")),
            }),
            _ => Ok(()),
        };
        if let Err(why) = problem {
            return Err(AmqpError::precondition(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
            )));
        }
    }
    Ok(())
}

/// What an `x-local-random` exchange may be bound to: classic queues, with the
/// empty key (rabbit_exchange_type_local_random.erl:85-106 at v4.3.5, answered
/// 406 by rabbit_channel.erl:1859-1860). `queue_type` is the destination queue's
/// type, `None` for an exchange, which its queue lookup does not find.
pub(super) fn local_random_binding(
    routing_key: &str,
    queue_type: Option<QueueType>,
) -> Result<(), AmqpError> {
    if !routing_key.is_empty() {
        return Err(AmqpError::precondition(format!(
            "Non empty binding '{routing_key}' key not permitted"
        )));
    }
    match queue_type {
        None => Err(AmqpError::precondition("Destination not found")),
        Some(QueueType::Classic) => Ok(()),
        Some(other) => Err(AmqpError::precondition(format!(
            "Queue type {} not valid for this exchange type",
            other.module()
        ))),
    }
}

/// A headers binding's `x-match` must be one RabbitMQ knows.
pub(super) fn check_x_match(kind: ExchangeKind, arguments: &FieldTable) -> Result<(), AmqpError> {
    if kind != ExchangeKind::Headers {
        return Ok(());
    }
    let value = match arguments.inner().get("x-match") {
        None => return Ok(()),
        Some(AMQPValue::LongString(s)) => s.as_bytes().to_vec(),
        Some(AMQPValue::ShortString(s)) => s.as_str().as_bytes().to_vec(),
        Some(_) => return Ok(()),
    };
    if [&b"all"[..], b"any", b"all-with-x", b"any-with-x"].contains(&value.as_slice()) {
        return Ok(());
    }
    Err(AmqpError::precondition(format!(
        "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
        codec::erlang_binary(&value)
    )))
}

/// Queue arguments RabbitMQ compares on redeclaration; others are not checked.
pub(super) const QUEUE_EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-dead-letter-strategy",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Exchange arguments RabbitMQ compares on redeclaration.
pub(super) const EXCHANGE_EQUIVALENCE_ARGS: &[&str] = &["alternate-exchange"];

/// RabbitMQ's check that a redeclaration names the same arguments: `what` is
/// e.g. `queue 'q' in vhost '/'`.
pub(super) fn check_equivalent_args(
    what: &str,
    keys: &[&str],
    current: &FieldTable,
    got: &FieldTable,
) -> Result<(), AmqpError> {
    for key in keys {
        let a = current.inner().get(*key);
        let b = got.inner().get(*key);
        let same = match (a, b) {
            (Some(x), Some(y)) => same_value(x, y),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let (received, current) = match (b, a) {
                (Some(x), Some(y)) => (
                    format!("'{}'", value_text(x)),
                    format!("'{}'", value_text(y)),
                ),
                (x, y) => (describe_arg(x), describe_arg(y)),
            };
            return Err(AmqpError::precondition(format!(
                "inequivalent arg '{key}' for {what}: received {received} but current is {current}"
            )));
        }
    }
    Ok(())
}

/// How RabbitMQ words an argument value in an inequivalence message.
pub(super) fn describe_arg(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_owned(),
        Some(v) => format!("the value '{}' of type '{}'", value_text(v), type_name(v)),
    }
}

impl VhostState {
    /// Declares (or checks) a queue; returns its name, message and consumer counts.
    /// The deprecated features a new queue's declaration may use, checked where
    /// RabbitMQ checks them: after the arguments' values, before the queue type's
    /// own checks (`rabbit_amqqueue:declare/7`, then `rabbit_classic_queue:declare/2`).
    pub(super) fn check_deprecated_declare(
        &self,
        d: &QueueDeclare,
        limits: &Limits,
    ) -> Result<(), AmqpError> {
        let refusal = |f| match self.profile.deprecated_feature_refusal(f) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if !d.durable && !d.exclusive {
            refusal(DeprecatedFeature::TransientNonexclQueues)?;
        }
        if limits.kind == QueueType::Classic && d.arguments.contains_key("x-queue-master-locator") {
            refusal(DeprecatedFeature::QueueMasterLocator)?;
        }
        Ok(())
    }
}

/// `x-queue-type`: what a queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum QueueType {
    #[default]
    Classic,
    /// Deliveries carry `x-delivery-count`, `x-delivery-limit` applies, global
    /// prefetch is refused.
    Quorum,
    /// An append-only log read by offset (`stream.rs`).
    Stream,
}

impl QueueType {
    /// The type an `x-queue-type` names, if RabbitMQ knows it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            "stream" => Some(QueueType::Stream),
            _ => None,
        }
    }

    /// RabbitMQ's module for the type, as its error messages name it.
    pub fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }
}

/// What `x-overflow` does when a queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

/// The queue arguments that change behaviour, read once at declaration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-dead-letter-exchange` ("" is the default exchange).
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    /// `x-queue-type`.
    pub kind: QueueType,
    /// A quorum queue's `x-delivery-limit` as given (it may be negative):
    /// returns beyond the limit the profile makes of it drop the message.
    pub delivery_limit: Option<i64>,
    /// A stream's `x-max-length-bytes`, `x-max-age`, segment size.
    pub retention: Retention,
    /// `x-consumer-timeout` in milliseconds, a quorum queue's from 4.3.
    pub consumer_timeout: Option<u64>,
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

impl Limits {
    /// Reads arguments already checked by `validate_queue_args`.
    pub fn from_args(args: &FieldTable) -> Self {
        let get = |k: &str| args.inner().get(k);
        let num = |k: &str| get(k).and_then(as_integer).map(|n| n.max(0) as u64);
        let kind = get("x-queue-type")
            .and_then(text)
            .and_then(|t| QueueType::parse(&t))
            .unwrap_or_default();
        let stream = kind == QueueType::Stream;
        Limits {
            message_ttl: num("x-message-ttl"),
            expires: num("x-expires"),
            max_length: num("x-max-length"),
            // A stream's is retention: it drops old segments, never refuses.
            max_length_bytes: num("x-max-length-bytes").filter(|_| !stream),
            overflow: match get("x-overflow").and_then(text).as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dead_letter_exchange: get("x-dead-letter-exchange").and_then(text),
            dead_letter_routing_key: get("x-dead-letter-routing-key").and_then(text),
            max_priority: num("x-max-priority").map(|n| n.min(255) as u8),
            single_active_consumer: matches!(
                get("x-single-active-consumer"),
                Some(AMQPValue::Boolean(true))
            ),
            kind,
            delivery_limit: get("x-delivery-limit")
                .and_then(as_integer)
                .map(|n| n.clamp(i64::MIN.into(), i64::MAX.into()) as i64),
            retention: Retention {
                max_bytes: num("x-max-length-bytes"),
                max_age_ms: get("x-max-age")
                    .and_then(text)
                    .and_then(|t| parse_age(&t).ok()),
                segment_bytes: num("x-stream-max-segment-size-bytes"),
            },
            consumer_timeout: num("x-consumer-timeout"),
        }
    }

    /// Whether the queue may ever refuse a publish (`x-overflow` reject-publish
    /// with a length limit).
    pub fn may_refuse(&self) -> bool {
        self.overflow != Overflow::DropHead
            && (self.max_length.is_some() || self.max_length_bytes.is_some())
    }

    /// Whether one more message of `size` bytes would take the queue over a limit.
    pub fn full(&self, ready: &Ready, size: usize) -> bool {
        self.max_length.is_some_and(|max| ready.len() as u64 >= max)
            || self
                .max_length_bytes
                .is_some_and(|max| (ready.bytes() + size) as u64 > max)
    }

    /// Whether the queue is over a limit now (drop-head trims it back).
    pub fn over(&self, ready: &Ready) -> bool {
        self.max_length.is_some_and(|max| ready.len() as u64 > max)
            || self
                .max_length_bytes
                .is_some_and(|max| ready.bytes() as u64 > max)
    }
}
