//! How much message data the broker holds, against the high watermark that
//! makes it block publishers (`connection.blocked`), as RabbitMQ's memory alarm
//! does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug)]
pub struct Gauge {
    bytes: AtomicUsize,
    /// Above this many bytes publishers are blocked; 0 means never.
    high_watermark: usize,
    /// True while above the watermark; connections watch it.
    blocked: watch::Sender<bool>,
}

impl Gauge {
    pub fn new(high_watermark: usize) -> Arc<Gauge> {
        Arc::new(Gauge {
            bytes: AtomicUsize::new(0),
            high_watermark,
            blocked: watch::channel(false).0,
        })
    }

    /// Counts `n` bytes for as long as the returned token lives.
    pub fn hold(self: &Arc<Self>, n: usize) -> Held {
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        let high = self.high_watermark;
        if high > 0 && before <= high && before + n > high {
            self.blocked.send_replace(true);
        }
        Held {
            gauge: self.clone(),
            n,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Raises or clears the alarm by hand, whatever the bytes held.
    pub fn force(&self, blocked: bool) {
        self.blocked.send_replace(blocked);
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }
}

/// Bytes counted in a gauge until dropped: each message holds one.
#[derive(Debug)]
pub struct Held {
    gauge: Arc<Gauge>,
    n: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let before = self.gauge.bytes.fetch_sub(self.n, Ordering::AcqRel);
        let high = self.gauge.high_watermark;
        if high > 0 && before > high && before - self.n <= high {
            self.gauge.blocked.send_replace(false);
        }
    }
}
