//! Scripted faults: rules a test sets that fire on publishes and acks (close the
//! channel or connection, nack or withhold the confirm). Commands to one live
//! connection are in `commands`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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

impl Action {
    /// The action's name in the HTTP API and the frame trace.
    pub fn name(&self) -> &'static str {
        match self {
            Action::CloseChannel { .. } => "close_channel",
            Action::CloseConnection { .. } => "close_connection",
            Action::NackConfirm => "nack_confirm",
            Action::WithholdConfirm => "withhold_confirm",
        }
    }

    /// The code and text of a close; empty for the others.
    pub fn detail(&self) -> String {
        match self {
            Action::CloseChannel { code, text } | Action::CloseConnection { code, text } => {
                format!("{code} {text}")
            }
            _ => String::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A message published (`basic.publish` with its content).
    Publish,
    /// A `basic.ack`, `nack` or `reject`.
    Settle,
}

/// A publish as the rules see it, once it was routed.
#[derive(Debug)]
pub struct PublishEvent<'a> {
    pub connection: u64,
    pub channel: u16,
    pub exchange: &'a str,
    /// The queues it was routed to.
    pub queues: &'a [std::sync::Arc<str>],
}

/// A scripted fault: "on the 3rd publish to exchange X, close the channel with
/// 406", "nack the next 2 confirms", "close the channel on the next ack".
///
/// A rule fires on the events its constructor names, narrowed by the scopes
/// added to it ([`Fault::on_channel`], [`Fault::on_connection`]); `nth` and
/// `times` count only the events in scope. The action decides what happens.
///
/// ```
/// use warren_broker::Fault;
/// // "On the 3rd publish to exchange X, close the channel with 406."
/// let fault = Fault::on_publish_to("orders").nth(3).close_channel(406, "no more orders");
/// // Nack the next 2 confirms, whatever was published.
/// let flaky = Fault::on_any_publish().times(2).nack_confirm();
/// // Nack the confirm of every message that lands in queue "audit", whichever
/// // exchange it came through.
/// let audit = Fault::on_publish_routed_to("audit").nack_confirm();
/// // Withhold the confirms of channel 2 only (of any connection), or of one
/// // connection (ids from `Broker::connections`).
/// let stuck = Fault::on_any_publish().on_channel(2).withhold_confirm();
/// let one = Fault::on_any_publish().on_connection(7).on_channel(1).nack_confirm();
/// // Close the channel on its next ack.
/// let picky = Fault::on_ack().on_channel(1).times(1).close_channel(406, "no");
/// # let _ = (fault, flaky, audit, stuck, one, picky);
/// ```
#[derive(Clone, Debug)]
pub struct Fault {
    pub(crate) trigger: Trigger,
    /// Only publishes to this exchange ("" is the default exchange).
    pub(crate) exchange: Option<String>,
    /// Only publishes routed to this queue (among others, perhaps).
    pub(crate) queue: Option<String>,
    /// Only events on this channel number.
    pub(crate) channel: Option<u16>,
    /// Only events on this connection (the broker's connection id).
    pub(crate) connection: Option<u64>,
    /// Fire from this matching event on (1-based).
    pub(crate) from: u64,
    /// How many times it fires; `None`: every time from then on.
    pub(crate) times: Option<u64>,
    pub(crate) action: Option<Action>,
}

impl Fault {
    fn new(trigger: Trigger) -> Self {
        Fault {
            trigger,
            exchange: None,
            queue: None,
            channel: None,
            connection: None,
            from: 1,
            times: None,
            action: None,
        }
    }

    /// Fires on publishes to `exchange` ("" for the default exchange).
    pub fn on_publish_to(exchange: &str) -> Self {
        Fault {
            exchange: Some(exchange.to_owned()),
            ..Self::new(Trigger::Publish)
        }
    }

    /// Fires on every publish.
    pub fn on_any_publish() -> Self {
        Self::new(Trigger::Publish)
    }

    /// Fires on publishes that are routed to `queue` (through any exchange, and
    /// whatever other queues they reach too). A publish that reaches no queue
    /// never matches.
    pub fn on_publish_routed_to(queue: &str) -> Self {
        Fault {
            queue: Some(queue.to_owned()),
            ..Self::new(Trigger::Publish)
        }
    }

    /// Fires on `basic.ack`, `basic.nack` and `basic.reject`.
    pub fn on_ack() -> Self {
        Self::new(Trigger::Settle)
    }

    /// Only events on channel number `channel` (of any connection, unless
    /// [`Fault::on_connection`] narrows it too).
    pub fn on_channel(mut self, channel: u16) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Only events on one connection: its id as in [`crate::Broker::connections`]
    /// and [`crate::ConnectionSnapshot::id`].
    pub fn on_connection(mut self, connection: u64) -> Self {
        self.connection = Some(connection);
        self
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

    /// The message is enqueued, but its confirm is a `basic.nack`.
    pub fn nack_confirm(mut self) -> Self {
        self.action = Some(Action::NackConfirm);
        self
    }

    /// The message is enqueued, but its confirm never comes (and neither do
    /// those after it on the channel, which RabbitMQ confirms in order).
    pub fn withhold_confirm(mut self) -> Self {
        self.action = Some(Action::WithholdConfirm);
        self
    }

    fn in_scope(&self, trigger: Trigger, connection: u64, channel: u16) -> bool {
        self.trigger == trigger
            && self.connection.is_none_or(|c| c == connection)
            && self.channel.is_none_or(|c| c == channel)
    }

    fn matches_publish(&self, e: &PublishEvent<'_>) -> bool {
        self.in_scope(Trigger::Publish, e.connection, e.channel)
            && self.exchange.as_deref().is_none_or(|x| x == e.exchange)
            && self
                .queue
                .as_deref()
                .is_none_or(|q| e.queues.iter().any(|t| **t == *q))
    }
}

#[derive(Debug)]
struct Armed {
    id: u64,
    fault: Fault,
    seen: u64,
    fired: u64,
}

/// A rule in force, as listed: its id, the fault, and how often it fired.
#[derive(Clone, Debug)]
pub struct ArmedFault {
    pub id: u64,
    pub fault: Fault,
    pub fired: u64,
}

/// The rules in force on a broker.
#[derive(Debug, Default)]
pub struct Rules {
    armed: Mutex<Vec<Armed>>,
    /// Lets the hot path skip the lock when no rule is armed.
    any: AtomicBool,
    /// The last id given to a rule (ids start at 1 and are never reused).
    last_id: std::sync::atomic::AtomicU64,
}

impl Rules {
    /// Arms a rule; returns its id, for listing and removal.
    pub fn add(&self, fault: Fault) -> u64 {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        armed.push(Armed {
            id,
            fault,
            seen: 0,
            fired: 0,
        });
        self.any.store(true, Ordering::Release);
        id
    }

    pub fn clear(&self) {
        self.armed.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.any.store(false, Ordering::Release);
    }

    /// Disarms one rule; false when there is none with that id.
    pub fn remove(&self, id: u64) -> bool {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let before = armed.len();
        armed.retain(|a| a.id != id);
        self.any.store(!armed.is_empty(), Ordering::Release);
        armed.len() != before
    }

    /// The rules in force, oldest first.
    pub fn list(&self) -> Vec<ArmedFault> {
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|a| ArmedFault {
                id: a.id,
                fault: a.fault.clone(),
                fired: a.fired,
            })
            .collect()
    }

    fn check(&self, matches: impl Fn(&Fault) -> bool) -> Option<Action> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let mut action = None;
        for a in armed.iter_mut().filter(|a| matches(&a.fault)) {
            a.seen += 1;
            let due = a.seen >= a.fault.from && a.fault.times.is_none_or(|t| a.fired < t);
            if due && action.is_none() {
                a.fired += 1;
                action = a.fault.action.clone();
            }
        }
        action
    }

    /// The action for a routed publish, if a rule fires.
    pub fn on_publish(&self, event: &PublishEvent<'_>) -> Option<Action> {
        self.check(|f| f.matches_publish(event))
    }

    /// The action for an ack, nack or reject, if a rule fires.
    pub fn on_settle(&self, connection: u64, channel: u16) -> Option<Action> {
        self.check(|f| f.in_scope(Trigger::Settle, connection, channel))
    }
}
