//! What a test does to the broker from outside the protocol: commands to one live
//! connection (close it or a channel with a chosen code, drop it, cut it
//! mid-frame), rules that fire on publishes and acks (close, nack or withhold the
//! confirm), and the per-connection frame trace.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::codec::Frame;
use crate::outbox::Outbox;

/// Something a test asks one connection to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `connection.close` with this code and text (after the `CODE_NAME - `
    /// prefix, which the broker adds).
    CloseConnection { code: u16, text: String },
    /// `channel.close` on one channel.
    CloseChannel {
        channel: u16,
        code: u16,
        text: String,
    },
    /// The socket just dies: no close, as when a network cable is pulled.
    Drop,
    /// Half a frame is written, then the socket dies.
    CutMidFrame,
}

/// The broker's handle on one live connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: String,
    pub vhost: Mutex<Option<String>>,
    pub outbox: Arc<Outbox>,
    commands: Mutex<VecDeque<Command>>,
    /// Wakes the connection's task when a command arrives.
    pub wake: Notify,
    pub trace: Trace,
}

impl ConnInfo {
    pub fn new(id: u64, peer: String, outbox: Arc<Outbox>, tracing: bool) -> Self {
        ConnInfo {
            id,
            peer,
            vhost: Mutex::new(None),
            outbox,
            commands: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            trace: Trace::new(tracing),
        }
    }

    pub fn command(&self, c: Command) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(c);
        self.wake.notify_one();
    }

    pub fn take_commands(&self) -> Vec<Command> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }
}

// ---- the frame trace --------------------------------------------------------------

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
    fn new(on: bool) -> Self {
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
                format!("content header: body {body_size} bytes, {properties:?}"),
            ),
            Frame::Body(ch, body) => (*ch, format!("content body: {} bytes", body.len())),
            Frame::Heartbeat(ch) => (*ch, "heartbeat".to_owned()),
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

// ---- rules ----------------------------------------------------------------------

/// What happens when a rule fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close the channel the publish or ack came on (text after the prefix).
    CloseChannel { code: u16, text: String },
    /// Close the whole connection.
    CloseConnection { code: u16, text: String },
    /// The publish is enqueued, but its confirm is a nack.
    NackConfirm,
    /// The publish is enqueued, and its confirm never comes.
    WithholdConfirm,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Trigger {
    /// A publish to this exchange ("" is the default exchange), or to any.
    Publish(Option<String>),
    /// A `basic.ack`, `nack` or `reject`.
    Settle,
}

/// A scripted fault: "on the 3rd publish to exchange X, close the channel with
/// 406", "nack the next 2 confirms", "close the channel on the next ack".
///
/// ```
/// use warren_broker::Fault;
/// let fault = Fault::on_publish_to("orders").nth(3).close_channel(406, "no more orders");
/// let flaky = Fault::on_any_publish().times(2).nack_confirm();
/// # let _ = (fault, flaky);
/// ```
#[derive(Clone, Debug)]
pub struct Fault {
    trigger: Trigger,
    /// Fire from this matching event on (1-based).
    from: u64,
    /// How many times it fires; `None`: every time from then on.
    times: Option<u64>,
    action: Option<Action>,
}

impl Fault {
    fn new(trigger: Trigger) -> Self {
        Fault {
            trigger,
            from: 1,
            times: None,
            action: None,
        }
    }

    /// Fires on publishes to `exchange` ("" for the default exchange).
    pub fn on_publish_to(exchange: &str) -> Self {
        Self::new(Trigger::Publish(Some(exchange.to_owned())))
    }

    /// Fires on every publish.
    pub fn on_any_publish() -> Self {
        Self::new(Trigger::Publish(None))
    }

    /// Fires on `basic.ack`, `basic.nack` and `basic.reject`.
    pub fn on_ack() -> Self {
        Self::new(Trigger::Settle)
    }

    /// Only the `n`th matching event (1-based) fires, once.
    pub fn nth(mut self, n: u64) -> Self {
        self.from = n.max(1);
        self.times = Some(1);
        self
    }

    /// Fires this many times (from the first matching event, or from `nth`).
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    pub fn close_channel(mut self, code: u16, text: &str) -> Self {
        self.action = Some(Action::CloseChannel {
            code,
            text: text.to_owned(),
        });
        self
    }

    pub fn close_connection(mut self, code: u16, text: &str) -> Self {
        self.action = Some(Action::CloseConnection {
            code,
            text: text.to_owned(),
        });
        self
    }

    pub fn nack_confirm(mut self) -> Self {
        self.action = Some(Action::NackConfirm);
        self
    }

    pub fn withhold_confirm(mut self) -> Self {
        self.action = Some(Action::WithholdConfirm);
        self
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    seen: u64,
    fired: u64,
}

/// The rules in force on a broker.
#[derive(Debug, Default)]
pub struct Rules {
    armed: Mutex<Vec<Armed>>,
    /// Lets the hot path skip the lock when no rule is armed.
    any: AtomicBool,
}

impl Rules {
    pub fn add(&self, fault: Fault) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        armed.push(Armed {
            fault,
            seen: 0,
            fired: 0,
        });
        self.any.store(true, Ordering::Release);
    }

    pub fn clear(&self) {
        self.armed.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.any.store(false, Ordering::Release);
    }

    fn check(&self, matches: impl Fn(&Trigger) -> bool) -> Option<Action> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let mut action = None;
        for a in armed.iter_mut().filter(|a| matches(&a.fault.trigger)) {
            a.seen += 1;
            let due = a.seen >= a.fault.from && a.fault.times.is_none_or(|t| a.fired < t);
            if due && action.is_none() {
                a.fired += 1;
                action = a.fault.action.clone();
            }
        }
        action
    }

    /// The action for a publish to `exchange`, if a rule fires.
    pub fn on_publish(&self, exchange: &str) -> Option<Action> {
        self.check(|t| match t {
            Trigger::Publish(None) => true,
            Trigger::Publish(Some(x)) => x == exchange,
            Trigger::Settle => false,
        })
    }

    /// The action for an ack, nack or reject, if a rule fires.
    pub fn on_settle(&self) -> Option<Action> {
        self.check(|t| *t == Trigger::Settle)
    }
}
