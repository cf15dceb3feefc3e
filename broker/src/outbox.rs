//! The bytes waiting to be written to one connection's socket.
//!
//! Everything a connection is sent — replies, deliveries from other connections'
//! publishes, heartbeats — is appended here in order, and the connection's task
//! drains it. Appending never blocks on I/O, so the broker can deliver while
//! holding its state lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::Notify;

/// Above this many pending bytes a connection's consumers get no new deliveries
/// until its writer catches up: a client that does not read must not make the
/// broker buffer without bound.
pub const HIGH_WATER: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Outbox {
    /// Held only to append or to take the whole buffer; never across an `.await`.
    buf: Mutex<BytesMut>,
    /// Mirrors `buf.len()` so dispatch can check back-pressure without the lock.
    pending: AtomicUsize,
    /// Wakes the connection task when bytes arrive.
    ready: Notify,
}

impl Outbox {
    /// Appends with `write` and wakes the writer.
    pub fn push(&self, write: impl FnOnce(&mut BytesMut)) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        write(&mut buf);
        self.pending.store(buf.len(), Ordering::Release);
        drop(buf);
        self.ready.notify_one();
    }

    /// Takes everything pending.
    pub fn take(&self) -> BytesMut {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let out = buf.split();
        self.pending.store(0, Ordering::Release);
        out
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub fn is_backed_up(&self) -> bool {
        self.pending() > HIGH_WATER
    }

    pub async fn wait_ready(&self) {
        self.ready.notified().await
    }
}
