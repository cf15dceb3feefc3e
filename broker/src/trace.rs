//! The frame trace: what each connection sent and got, kept while tracing is on.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::codec::Frame;

/// Which way a traced frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the broker.
    In,
    /// From the broker to the client.
    Out,
}

/// One frame seen on a connection.
#[derive(Clone, Debug)]
pub struct TraceEntry {
    pub direction: Direction,
    pub channel: u16,
    /// The method with its arguments, or what content frame it was.
    pub frame: String,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::In => "C->S",
            Direction::Out => "S->C",
        };
        write!(f, "{arrow} ch{} {}", self.channel, self.frame)
    }
}

/// The last frames of one connection, kept while tracing is on.
#[derive(Debug)]
pub struct Trace {
    on: AtomicBool,
    entries: Mutex<VecDeque<TraceEntry>>,
}

/// Frames kept per connection; older ones are dropped.
const TRACE_LIMIT: usize = 10_000;

impl Trace {
    pub(crate) fn new(on: bool) -> Self {
        Trace {
            on: AtomicBool::new(on),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn record(&self, direction: Direction, frame: &Frame) {
        if !self.is_on() {
            return;
        }
        let (channel, what) = match frame {
            Frame::Method(ch, m) => (*ch, format!("{m:?}")),
            Frame::Header {
                channel,
                body_size,
                properties,
                ..
            } => (
                *channel,
                format!(
                    "content header: body {body_size} bytes, {:?}",
                    properties
                        .as_deref()
                        .unwrap_or(crate::codec::no_properties())
                ),
            ),
            Frame::Body(ch, body) => (*ch, format!("content body: {} bytes", body.len())),
            Frame::Heartbeat(ch) => (*ch, "heartbeat".to_owned()),
            Frame::Publish(ch, p) => (*ch, format!("{:?}", p.to_method())),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == TRACE_LIMIT {
            entries.pop_front();
        }
        entries.push_back(TraceEntry {
            direction,
            channel,
            frame: what,
        });
    }

    pub fn entries(&self) -> Vec<TraceEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
