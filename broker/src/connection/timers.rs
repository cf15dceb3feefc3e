//! The connection's clocks: the heartbeats it owes and expects, and how long a
//! handshake or a close may take. The core never reads the time: the driver hands
//! it `now` with each read and asks [`Connection::poll_timeout`] when to come back,
//! so `testing::Core` steps these timers without sockets or sleeping.

use std::time::{Duration, Instant};

use super::{Connection, Outcome, Phase};

/// What the timers remember.
#[derive(Debug)]
pub(super) struct Timers {
    /// When the socket was accepted: the handshake must end within its timeout.
    started: Instant,
    /// When the client last sent anything: two silent heartbeat intervals end it.
    last_read: Instant,
    /// When the broker last sent a heartbeat: it owes one each half interval.
    last_heartbeat: Instant,
    /// When the close began, once the driver has asked since: the client has the
    /// close timeout to answer and hang up.
    closing_since: Option<Instant>,
}

impl Timers {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_read: now,
            last_heartbeat: now,
            closing_since: None,
        }
    }

    pub(super) fn read_at(&mut self, now: Instant) {
        self.last_read = now;
    }
}

impl Connection {
    /// When the driver must call [`Connection::handle_timeout`] next; `None` once
    /// closed. `now` is when the driver asks: a close begun since it last asked
    /// counts its timeout from here, so the driver asks after every step.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let heartbeat = self.heartbeat_interval();
        let config = &self.shared.config;
        let t = &mut self.timers;
        match self.phase {
            Phase::Closed => None,
            Phase::Closing => Some(*t.closing_since.get_or_insert(now) + config.close_timeout),
            _ => {
                let handshake =
                    (self.phase != Phase::Opened).then(|| t.started + config.handshake_timeout);
                let heartbeat = heartbeat.map(|interval| {
                    (t.last_read + interval * 2).min(t.last_heartbeat + interval / 2)
                });
                match (handshake, heartbeat) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Runs the timers that are due at `now`: sends the heartbeat the broker owes,
    /// or gives up on a client that let the handshake, its heartbeats or the close
    /// run out ([`Outcome::TimedOut`]: the socket closes without waiting for it).
    pub fn handle_timeout(&mut self, now: Instant) -> Outcome {
        let heartbeat = self.heartbeat_interval();
        let config = &self.shared.config;
        let t = &mut self.timers;
        match self.phase {
            Phase::Closed => return Outcome::Close,
            Phase::Closing => {
                if t.closing_since
                    .is_some_and(|at| now >= at + config.close_timeout)
                {
                    self.phase = Phase::Closed;
                    return Outcome::TimedOut;
                }
                return Outcome::Continue;
            }
            _ => {}
        }
        if self.phase != Phase::Opened && now >= t.started + config.handshake_timeout {
            tracing::info!(conn = self.id, "handshake timed out");
            self.phase = Phase::Closed;
            return Outcome::TimedOut;
        }
        if let Some(interval) = heartbeat {
            if now >= t.last_read + interval * 2 {
                tracing::info!(conn = self.id, "missed heartbeats from client, closing");
                self.phase = Phase::Closed;
                return Outcome::TimedOut;
            }
            if now >= t.last_heartbeat + interval / 2 {
                t.last_heartbeat = now;
                self.outbox.push_heartbeat();
            }
        }
        Outcome::Continue
    }

    /// When what is still to be written must be out by, once the connection
    /// ends: the close timeout, counted from the close when there was one.
    pub fn close_deadline(&self, now: Instant) -> Instant {
        self.timers.closing_since.unwrap_or(now) + self.shared.config.close_timeout
    }

    /// When the client last sent anything (the pacer's hold counts from it).
    pub fn last_read(&self) -> Instant {
        self.timers.last_read
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        match self.heartbeat() {
            0 => None,
            hb => Some(Duration::from_secs(hb.into())),
        }
    }
}
