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
    buf: Mutex<Pending>,
    /// Mirrors `buf.len()` so dispatch can check back-pressure without the lock.
    pending: AtomicUsize,
    /// Wakes the connection task when bytes arrive.
    ready: Notify,
    /// Appends other than heartbeats: what the peer may be waiting for (see
    /// `pacing`, which must not hold back the frames of a peer that waits).
    answers: AtomicU64,
}

/// The bytes not yet taken, and whether any of them may be awaited.
#[derive(Debug, Default)]
struct Pending {
    bytes: BytesMut,
    urgent: bool,
}

impl Outbox {
    /// Appends with `write` and wakes the writer.
    pub fn push(&self, write: impl FnOnce(&mut BytesMut)) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.append(true, write);
    }

    /// Appends a delivery; unless `awaited`, the peer is not waiting for it (a
    /// consumer that already holds many unacknowledged), and it may go out a
    /// little later with the ones after it (see `server::serve`).
    pub fn push_delivery(&self, awaited: bool, write: impl FnOnce(&mut BytesMut)) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.append(awaited, write);
    }

    /// Appends a heartbeat, which answers nothing.
    pub fn push_heartbeat(&self) {
        self.append(true, crate::codec::put_heartbeat);
    }

    /// How many appends other than heartbeats there have been.
    pub fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    fn append(&self, urgent: bool, write: impl FnOnce(&mut BytesMut)) {
        crate::busy_wait::woke_a_task();
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        write(&mut buf.bytes);
        buf.urgent |= urgent;
        self.pending.store(buf.bytes.len(), Ordering::Release);
        drop(buf);
        self.ready.notify_one();
    }

    /// Takes everything pending.
    pub fn take(&self) -> BytesMut {
        self.take_with_urgency().0
    }

    /// Takes everything pending, and says whether any of it was pushed with
    /// `push` or as an awaited delivery.
    pub fn take_with_urgency(&self) -> (BytesMut, bool) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let out = buf.bytes.split();
        let urgent = std::mem::take(&mut buf.urgent);
        self.pending.store(0, Ordering::Release);
        (out, urgent)
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
    use std::sync::Arc;

    /// A polling task learns that it woke another connection's task onto its
    /// worker from this count (`server::serve`): every append counts, on the
    /// thread that made it and no other.
    #[test]
    fn an_append_counts_as_a_wake_on_its_own_thread() {
        let outbox = Arc::new(Outbox::default());
        let before = crate::busy_wait::wakes_here();
        outbox.push(|out| out.extend_from_slice(b"reply"));
        outbox.push_delivery(false, |out| out.extend_from_slice(b"deliver"));
        outbox.push_heartbeat();
        assert_eq!(crate::busy_wait::wakes_here() - before, 3);
        let elsewhere = outbox.clone();
        std::thread::spawn(move || elsewhere.push(|out| out.extend_from_slice(b"x")))
            .join()
            .unwrap();
        assert_eq!(crate::busy_wait::wakes_here() - before, 3);
    }

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

    #[test]
    fn only_deliveries_nobody_waits_for_may_be_held_back() {
        let outbox = Outbox::default();
        outbox.push_delivery(false, |out| out.extend_from_slice(b"d1"));
        outbox.push_delivery(false, |out| out.extend_from_slice(b"d2"));
        assert_eq!(
            outbox.take_with_urgency(),
            (BytesMut::from(&b"d1d2"[..]), false)
        );
        // Anything else among them, a reply or an awaited delivery, is awaited.
        for push in [
            |o: &Outbox| o.push(|out| out.extend_from_slice(b"ok")),
            |o: &Outbox| o.push_delivery(true, |out| out.extend_from_slice(b"ok")),
            |o: &Outbox| o.push_heartbeat(),
        ] {
            outbox.push_delivery(false, |out| out.extend_from_slice(b"d"));
            push(&outbox);
            assert!(outbox.take_with_urgency().1);
            assert_eq!(outbox.take_with_urgency(), (BytesMut::new(), false));
        }
        assert_eq!(outbox.answers(), 7, "deliveries answer, held back or not");
    }
}
