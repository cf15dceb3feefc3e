//! The bytes waiting to be written to one connection's socket.
//!
//! Everything a connection is sent — replies, deliveries from other connections'
//! publishes, heartbeats — is appended here in order, and the connection's task
//! drains it. Appending never blocks on I/O, so the broker can deliver while
//! holding its state lock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Appends other than heartbeats: what the peer may be waiting for (see
    /// `pacing`, which must not hold back the frames of a peer that waits).
    answers: AtomicU64,
}

impl Outbox {
    /// Appends with `write` and wakes the writer.
    pub fn push(&self, write: impl FnOnce(&mut BytesMut)) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.append(write);
    }

    /// Appends a heartbeat, which answers nothing.
    pub fn push_heartbeat(&self) {
        self.append(crate::codec::put_heartbeat);
    }

    /// How many appends other than heartbeats there have been.
    pub fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    fn append(&self, write: impl FnOnce(&mut BytesMut)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_go_out_in_order_but_answer_nothing() {
        let outbox = Outbox::default();
        outbox.push(|out| out.extend_from_slice(b"reply"));
        outbox.push_heartbeat();
        outbox.push(|out| out.extend_from_slice(b"deliver"));
        assert_eq!(outbox.answers(), 2);
        let mut heartbeat = BytesMut::new();
        crate::codec::put_heartbeat(&mut heartbeat);
        let mut want = b"reply".to_vec();
        want.extend_from_slice(&heartbeat);
        want.extend_from_slice(b"deliver");
        assert_eq!(outbox.pending(), want.len());
        assert_eq!(&outbox.take()[..], &want[..]);
        outbox.push_heartbeat();
        assert_eq!(outbox.answers(), 2, "a heartbeat alone answers nothing");
    }
}
