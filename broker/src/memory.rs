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

    /// Counts `n` more bytes; each message adds its body when made and takes it
    /// back when dropped (a counter per message would cost 16 bytes each).
    pub fn add(&self, n: usize) {
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        let high = self.high_watermark;
        if high > 0 && before <= high && before + n > high {
            self.blocked.send_replace(true);
        }
    }

    pub fn sub(&self, n: usize) {
        let before = self.bytes.fetch_sub(n, Ordering::AcqRel);
        let high = self.high_watermark;
        if high > 0 && before > high && before - n <= high {
            self.blocked.send_replace(false);
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
