//! The alarms that block publishers (`connection.blocked`), as RabbitMQ's
//! resource alarms do: memory (the process's memory against the high
//! watermark) and free disk space, plus one raised by hand. The measuring is in
//! `alarms`; this is the state every connection watches, and the per-message
//! count that keeps the memory figure current between two measures.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Which alarms are raised, as bits.
pub const MEMORY: u8 = 1;
pub const DISK: u8 = 2;
/// Raised by hand (`Broker::set_memory_alarm`); reads as a memory alarm.
pub const FORCED: u8 = 4;

#[derive(Debug)]
pub struct Gauge {
    /// Bytes of message bodies held (queued, unacked or in flight).
    bytes: AtomicUsize,
    /// The memory high watermark, in bytes of process memory; 0: no alarm.
    high_watermark: AtomicU64,
    /// Process memory less message bytes, as of the last measure: the memory
    /// figure between two measures is this plus the message bytes held now, so
    /// that a flood of publishes raises the alarm on the message that crosses
    /// the watermark, not up to a measuring interval later.
    offset: AtomicI64,
    /// The alarms raised (`MEMORY`, `DISK`, `FORCED`).
    raised: AtomicU8,
    /// True while any alarm is raised; connections watch it.
    blocked: watch::Sender<bool>,
}

impl Gauge {
    /// A gauge whose memory alarm rises above `high_watermark` bytes (0: never).
    pub fn new(high_watermark: usize) -> Arc<Gauge> {
        Arc::new(Gauge {
            bytes: AtomicUsize::new(0),
            high_watermark: AtomicU64::new(high_watermark as u64),
            offset: AtomicI64::new(0),
            raised: AtomicU8::new(0),
            blocked: watch::channel(false).0,
        })
    }

    /// Counts `n` more bytes; each message adds its body when made and takes it
    /// back when dropped (a counter per message would cost 16 bytes each).
    pub fn add(&self, n: usize) {
        let now = self.bytes.fetch_add(n, Ordering::AcqRel) + n;
        let high = self.high_watermark.load(Ordering::Relaxed);
        if high > 0 && self.raised.load(Ordering::Relaxed) & MEMORY == 0 {
            let used = self.offset.load(Ordering::Relaxed) + now as i64;
            if used > high as i64 {
                // RabbitMQ's log line (vm_memory_monitor.erl:420-423).
                tracing::warn!("vm_memory_high_watermark set. Memory used:{used} allowed:{high}");
                self.set(MEMORY, true);
            }
        }
    }

    /// Takes `n` bytes back. The alarm clears only at the next measure: the
    /// process's memory, not the message count, decides that.
    pub fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Relaxed)
    }

    /// A new measure of the process's memory in use (`used`, with the message
    /// bytes `bytes` held when it was taken): raises or clears the memory alarm.
    /// Returns whether the alarm changed, and the figure compared.
    pub fn measured(&self, used: u64, bytes: usize) -> Option<bool> {
        self.offset
            .store(used as i64 - bytes as i64, Ordering::Relaxed);
        let high = self.high_watermark();
        let on = high > 0 && used > high;
        let was = self.raised.load(Ordering::Acquire) & MEMORY != 0;
        (on != was).then(|| {
            self.set(MEMORY, on);
            on
        })
    }

    /// Raises or clears one alarm.
    pub fn set(&self, alarm: u8, on: bool) {
        let raised = if on {
            self.raised.fetch_or(alarm, Ordering::AcqRel) | alarm
        } else {
            self.raised.fetch_and(!alarm, Ordering::AcqRel) & !alarm
        };
        self.blocked.send_if_modified(|b| {
            let changed = *b != (raised != 0);
            *b = raised != 0;
            changed
        });
    }

    /// Raises or clears the alarm by hand, whatever the memory in use.
    pub fn force(&self, blocked: bool) {
        self.set(FORCED, blocked);
    }

    pub fn raised(&self) -> u8 {
        self.raised.load(Ordering::Acquire)
    }

    /// What `connection.blocked` says: RabbitMQ's "low on memory", "low on disk"
    /// or "low on memory & disk" (rabbit_reader.erl:1652-1661, v3.10.8).
    pub fn reason(&self) -> &'static str {
        let raised = self.raised();
        match (raised & (MEMORY | FORCED) != 0, raised & DISK != 0) {
            (true, true) => "low on memory & disk",
            (false, true) => "low on disk",
            _ => "low on memory",
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_raise_the_alarm_between_measures_and_a_measure_clears_it() {
        let g = Gauge::new(1000);
        let rx = g.subscribe();
        // 600 bytes of process memory besides 100 of messages.
        g.add(100);
        assert_eq!(g.measured(700, 100), None);
        g.add(300);
        assert!(!*rx.borrow(), "600 + 400 is not above 1000");
        g.add(1);
        assert!(*rx.borrow());
        assert_eq!(g.reason(), "low on memory");
        g.sub(301);
        assert!(*rx.borrow(), "only a measure clears it");
        assert_eq!(g.measured(990, 100), Some(false));
        assert!(!*rx.borrow());
        assert_eq!(g.measured(1001, 100), Some(true));
    }

    #[test]
    fn alarms_add_up_and_name_themselves() {
        let g = Gauge::new(0);
        g.add(1 << 30);
        assert_eq!(g.raised(), 0, "no watermark, no memory alarm");
        g.set(DISK, true);
        assert_eq!(g.reason(), "low on disk");
        g.force(true);
        assert_eq!(g.reason(), "low on memory & disk");
        g.set(DISK, false);
        assert!(*g.subscribe().borrow());
        g.force(false);
        assert!(!*g.subscribe().borrow());
    }
}
