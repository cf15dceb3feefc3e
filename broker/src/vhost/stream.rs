//! Stream queues (`x-queue-type: stream`): an append-only log read by offset.
//!
//! Each consumer keeps its own position in the log; an ack only frees prefetch
//! credit and never removes anything. Messages leave only through retention
//! (`x-max-length-bytes`, `x-max-age`), which, as in RabbitMQ, drops whole
//! segments and only when a new segment is started, never the one being written.

use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::types::AMQPValue;

use super::Message;
use crate::error::{code, AmqpError};
use crate::table::as_integer;

/// RabbitMQ's default `x-stream-max-segment-size-bytes` (500 MB).
const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;

/// One message in the log.
#[derive(Debug)]
pub(crate) struct Entry {
    pub msg: Arc<Message>,
    /// When it was appended, in Unix milliseconds on the broker's clock.
    pub timestamp: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Offset of its first entry.
    start: u64,
    bytes: u64,
    /// Timestamp of its newest entry.
    newest: u64,
}

/// The retention settings of a stream, from its declaration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age_ms: Option<u64>,
    pub segment_bytes: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    entries: VecDeque<Entry>,
    /// Offset of `entries[0]`; the next offset when the log is empty.
    first: u64,
    /// Oldest first; the last one is being written.
    segments: VecDeque<Segment>,
}

/// Where a new consumer starts reading (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    First,
    Last,
    Next,
    Offset(i64),
    /// Unix milliseconds: the first message appended at or after it.
    Time(u64),
}

impl Log {
    /// An empty log whose first offset is `first`: a recovered stream that
    /// retention had cut.
    pub fn starting_at(first: u64) -> Self {
        Log {
            first,
            ..Default::default()
        }
    }

    pub fn first(&self) -> u64 {
        self.first
    }

    pub fn next_offset(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    pub fn get(&self, offset: u64) -> Option<&Entry> {
        let i = offset.checked_sub(self.first)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        (self.first..).zip(self.entries.iter())
    }

    /// Appends a message; returns the entries retention removed (oldest first).
    pub fn append(&mut self, msg: Arc<Message>, now: u64, retention: Retention) -> Vec<Entry> {
        let size = msg.size() as u64;
        let offset = self.next_offset();
        let segment_bytes = retention.segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES);
        let rolled = match self.segments.back() {
            Some(s) => s.bytes > 0 && s.bytes + size > segment_bytes,
            None => true,
        };
        if rolled {
            self.segments.push_back(Segment {
                start: offset,
                bytes: 0,
                newest: now,
            });
        }
        let seg = self.segments.back_mut().expect("pushed above");
        seg.bytes += size;
        seg.newest = now;
        self.entries.push_back(Entry {
            msg,
            timestamp: now,
        });
        // RabbitMQ applies retention when a segment is full and a new one begins.
        if rolled {
            self.retain(now, retention)
        } else {
            Vec::new()
        }
    }

    /// Drops the oldest segments beyond the limits, never the one being written.
    fn retain(&mut self, now: u64, retention: Retention) -> Vec<Entry> {
        let mut removed = Vec::new();
        while self.segments.len() > 1 {
            let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
            let oldest = self.segments[0];
            let too_big = retention.max_bytes.is_some_and(|max| total > max);
            let too_old = retention
                .max_age_ms
                .is_some_and(|age| oldest.newest.saturating_add(age) < now);
            if !too_big && !too_old {
                break;
            }
            self.segments.pop_front();
            let end = self.segments[0].start;
            while self.first < end {
                removed.extend(self.entries.pop_front());
                self.first += 1;
            }
        }
        removed
    }

    /// The offset a consumer asking for `start` reads first.
    pub fn start_offset(&self, start: Start) -> u64 {
        match start {
            Start::First => self.first,
            // Every message is its own chunk here, so "last" is the newest message.
            Start::Last => self.next_offset().saturating_sub(1).max(self.first),
            Start::Next => self.next_offset(),
            Start::Offset(n) => u64::try_from(n).unwrap_or(0).max(self.first),
            Start::Time(t) => self
                .iter()
                .find(|(_, e)| e.timestamp >= t)
                .map_or(self.next_offset(), |(o, _)| o),
        }
    }
}

/// How `x-max-age` (and an interval `x-stream-offset`) reads: digits then one of
/// `Y M D h m s`.
pub(crate) enum AgeError {
    /// RabbitMQ's parser crashes on a value that does not start with a digit: the
    /// connection closes with 541 INTERNAL_ERROR.
    Crash,
    Invalid,
}

pub(crate) fn parse_age(s: &str) -> Result<u64, AgeError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(AgeError::Crash);
    }
    // RabbitMQ's integers have no upper bound: a huge age is a valid one.
    let n = s.bytes().take(digits).fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    let unit_s: u64 = match &s[digits..] {
        "Y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "D" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(AgeError::Invalid),
    };
    if n == 0 {
        return Err(AgeError::Invalid);
    }
    Ok(n.saturating_mul(unit_s).saturating_mul(1000))
}

/// RabbitMQ's answer to input its stream code does not expect: a crash, which
/// the client sees as 541 INTERNAL_ERROR naming no method.
pub(crate) fn crash() -> AmqpError {
    AmqpError::internal()
}

/// Reads the `x-stream-offset` consumer argument; `now` is in Unix milliseconds.
pub(crate) fn parse_start(
    value: Option<&AMQPValue>,
    now: u64,
    queue: &str,
    vhost: &str,
) -> Result<Start, AmqpError> {
    let Some(value) = value else {
        return Ok(Start::Next);
    };
    let invalid = |kind: &str, text: &str| {
        AmqpError::precondition(format!(
            "invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}': \
             {{invalid_stream_offset_arg,{{{kind},<<\"{text}\">>}}}}"
        ))
    };
    let text = match value {
        AMQPValue::LongString(s) => (
            "longstr",
            String::from_utf8_lossy(s.as_bytes()).into_owned(),
        ),
        AMQPValue::ShortString(s) => ("shortstr", s.to_string()),
        // An AMQP timestamp is in seconds.
        AMQPValue::Timestamp(t) => return Ok(Start::Time(t.saturating_mul(1000))),
        other => {
            return match as_integer(other) {
                Some(n) => Ok(Start::Offset(
                    n.clamp(i64::MIN as i128, i64::MAX as i128) as i64
                )),
                None => Err(crash()),
            }
        }
    };
    Ok(match text.1.as_str() {
        "first" => Start::First,
        "last" => Start::Last,
        "next" => Start::Next,
        // Anything else is an interval back from now, written like `x-max-age`.
        s => match parse_age(s) {
            Ok(ms) => Start::Time(now.saturating_sub(ms)),
            Err(AgeError::Crash) => return Err(crash()),
            Err(AgeError::Invalid) => return Err(invalid(text.0, s)),
        },
    })
}

/// The reply to what RabbitMQ 3.10 does not implement for streams, e.g.
/// `basic.get not supported by stream queues queue 'q' in vhost '/'`.
pub(crate) fn not_supported(what: &str, queue: &str, vhost: &str) -> AmqpError {
    AmqpError::connection(
        code::NOT_IMPLEMENTED,
        format!("{what} not supported by stream queues queue '{queue}' in vhost '{vhost}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_beyond_u64_are_valid_and_saturate() {
        // RabbitMQ 3.10 accepts x-max-age "99999999999999999999s".
        assert!(matches!(parse_age("99999999999999999999s"), Ok(u64::MAX)));
        assert!(matches!(parse_age("0000000000000000000001s"), Ok(1000)));
        assert!(matches!(
            parse_age("00000000000000000000000s"),
            Err(AgeError::Invalid)
        ));
        assert!(matches!(parse_age("1hh"), Err(AgeError::Invalid)));
        assert!(matches!(parse_age("h"), Err(AgeError::Crash)));
    }
}
