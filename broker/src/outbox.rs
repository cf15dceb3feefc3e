//! The bytes waiting to be written to one connection's socket.
//!
//! Everything a connection is sent — replies, deliveries from other connections'
//! publishes, heartbeats — is appended here in order, and the connection's task
//! drains it. Appending never blocks on I/O, so the broker can deliver while
//! holding its state lock.
//!
//! Deliveries made while a connection handles its input ([`gather`]) are written
//! straight to their consumer's socket once the input is handled, by the task that
//! handled it, when the consumer's own task holds none of its bytes: waking the
//! consumer's task to write them would cost a wake-up of the runtime's other
//! worker per message, the larger part of a round trip's time in the broker on a
//! 2-CPU machine (`bench/PROFILE.md`, "Writing a delivery from the publisher's
//! task").

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;

use crate::trace::Tracer;

/// Above this many pending bytes a connection's consumers get no new deliveries
/// until its writer catches up: a client that does not read must not make the
/// broker buffer without bound.
pub const HIGH_WATER: usize = 4 * 1024 * 1024;

/// The most a task writes into another connection's socket at once: more than
/// this is the consumer's task's to write, beside its other work.
const DIRECT_MAX: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct Outbox {
    /// Held only to append or to take the whole buffer, or for one non-blocking
    /// `send` of it; never across an `.await`.
    buf: Mutex<Pending>,
    /// Mirrors `buf.len()` so dispatch can check back-pressure without the lock.
    pending: AtomicUsize,
    /// Wakes the connection task when bytes arrive.
    ready: Notify,
    /// Appends other than heartbeats: what the peer may be waiting for (see
    /// `pacing`, which must not hold back the frames of a peer that waits).
    answers: AtomicU64,
    /// The connection's task took bytes it has not finished writing: nothing
    /// appended after them may go out before them.
    task_holds: AtomicBool,
}

/// The bytes not yet taken, and whether any of them may be awaited.
#[derive(Debug, Default)]
struct Pending {
    bytes: BytesMut,
    urgent: bool,
    /// The connection's socket, while other tasks may write to it (`write_directly`).
    direct: Option<Direct>,
}

/// A handle on a connection's socket, for writes from other tasks.
#[derive(Debug)]
struct Direct {
    sock: Arc<socket2::Socket>,
    /// The frame trace records what the connection's task writes; while it is
    /// on, only that task writes.
    tracer: Arc<Tracer>,
}

thread_local! {
    /// The outboxes this thread delivered to since `gather` began, if it did.
    static GATHERED: RefCell<Option<Vec<Arc<Outbox>>>> = const { RefCell::new(None) };
}

/// Until the guard drops, deliveries made on this thread wake nobody; then each
/// outbox they went to is written to its socket at once where it can be
/// (`write_directly`), and its task is woken where not. Inside another `gather`,
/// it adds nothing.
pub fn gather() -> Gathering {
    let outer = GATHERED.with(|g| {
        let mut g = g.borrow_mut();
        let outer = g.is_none();
        if outer {
            *g = Some(Vec::new());
        }
        outer
    });
    Gathering {
        outer,
        _thread: std::marker::PhantomData,
    }
}

/// See [`gather`].
#[must_use]
pub struct Gathering {
    outer: bool,
    /// What it gathered is in a thread-local: it must end where it began.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Drop for Gathering {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let gathered = GATHERED.with(|g| g.borrow_mut().take()).unwrap_or_default();
        for outbox in gathered {
            if !outbox.write_now() {
                outbox.wake();
            }
        }
    }
}

impl Outbox {
    /// Appends with `write` and wakes the writer.
    pub fn push(&self, write: impl FnOnce(&mut BytesMut)) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.append(true, write);
        self.wake();
    }

    /// Appends a delivery; unless `awaited`, the peer is not waiting for it (a
    /// consumer that already holds many unacknowledged), and it may go out a
    /// little later with the ones after it (see `server::serve`). Inside
    /// [`gather`], the writer is woken (or not needed) when the gathering ends.
    pub fn push_delivery(self: &Arc<Self>, awaited: bool, write: impl FnOnce(&mut BytesMut)) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.append(awaited, write);
        let gathered = GATHERED.with(|g| match g.borrow_mut().as_mut() {
            Some(list) => {
                if !list.iter().any(|o| Arc::ptr_eq(o, self)) {
                    list.push(self.clone());
                }
                true
            }
            None => false,
        });
        if !gathered {
            self.wake();
        }
    }

    /// Appends a heartbeat, which answers nothing.
    pub fn push_heartbeat(&self) {
        self.append(true, crate::codec::put_heartbeat);
        self.wake();
    }

    /// How many appends other than heartbeats there have been.
    pub fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    fn append(&self, urgent: bool, write: impl FnOnce(&mut BytesMut)) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        write(&mut buf.bytes);
        buf.urgent |= urgent;
        self.pending.store(buf.bytes.len(), Ordering::Release);
    }

    fn wake(&self) {
        crate::busy_wait::woke_a_task();
        self.ready.notify_one();
    }

    /// Lets other tasks write to the connection's socket, through `sock`, while
    /// the frame trace is off.
    pub fn write_directly(&self, sock: Arc<socket2::Socket>, tracer: Arc<Tracer>) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        buf.direct = Some(Direct { sock, tracer });
    }

    /// No other task writes to the socket from now on, nor keeps it open.
    pub fn stop_writing_directly(&self) {
        let direct = self
            .buf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .direct
            .take();
        drop(direct);
    }

    /// Writes what is pending to the socket, if another task may (`write_directly`),
    /// the peer may be waiting for it, and the connection's task holds nothing
    /// unwritten; true when nothing is left for the connection's task.
    fn write_now(&self) -> bool {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        if buf.bytes.is_empty() {
            return true;
        }
        let Some(direct) = &buf.direct else {
            return false;
        };
        if !buf.urgent
            || buf.bytes.len() > DIRECT_MAX
            || direct.tracer.is_on()
            || self.task_holds.load(Ordering::Acquire)
        {
            return false;
        }
        let Ok(n) = direct.sock.send(&buf.bytes) else {
            // The connection's task meets the error on its own write.
            return false;
        };
        buf.bytes.advance(n);
        self.pending.store(buf.bytes.len(), Ordering::Release);
        if buf.bytes.is_empty() {
            buf.urgent = false;
            true
        } else {
            false
        }
    }

    /// Takes everything pending.
    pub fn take(&self) -> BytesMut {
        self.take_with_urgency().0
    }

    /// Takes everything pending, and says whether any of it was pushed with
    /// `push` or as an awaited delivery. Until `wrote_all`, no other task writes
    /// to the socket.
    pub fn take_with_urgency(&self) -> (BytesMut, bool) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let out = buf.bytes.split();
        let urgent = std::mem::take(&mut buf.urgent);
        self.pending.store(0, Ordering::Release);
        if !out.is_empty() {
            self.task_holds.store(true, Ordering::Release);
        }
        (out, urgent)
    }

    /// The connection's task wrote everything it took.
    pub fn wrote_all(&self) {
        self.task_holds.store(false, Ordering::Release);
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
        let outbox = Arc::new(Outbox::default());
        outbox.push_delivery(false, |out| out.extend_from_slice(b"d1"));
        outbox.push_delivery(false, |out| out.extend_from_slice(b"d2"));
        assert_eq!(
            outbox.take_with_urgency(),
            (BytesMut::from(&b"d1d2"[..]), false)
        );
        // Anything else among them, a reply or an awaited delivery, is awaited.
        for push in [
            |o: &Arc<Outbox>| o.push(|out| out.extend_from_slice(b"ok")),
            |o: &Arc<Outbox>| o.push_delivery(true, |out| out.extend_from_slice(b"ok")),
            |o: &Arc<Outbox>| o.push_heartbeat(),
        ] {
            outbox.push_delivery(false, |out| out.extend_from_slice(b"d"));
            push(&outbox);
            assert!(outbox.take_with_urgency().1);
            assert_eq!(outbox.take_with_urgency(), (BytesMut::new(), false));
        }
        assert_eq!(outbox.answers(), 7, "deliveries answer, held back or not");
    }

    /// An outbox whose socket other tasks may write to, and the peer's end.
    #[cfg(unix)]
    fn direct() -> (Arc<Outbox>, Arc<Tracer>, std::os::unix::net::UnixStream) {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let outbox = Arc::new(Outbox::default());
        let tracer = Arc::new(Tracer::default());
        outbox.write_directly(Arc::new(socket2::Socket::from(ours)), tracer.clone());
        (outbox, tracer, peer)
    }

    /// What the peer has been sent so far.
    #[cfg(unix)]
    fn received(peer: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        let mut got = vec![0; 1024];
        match peer.read(&mut got) {
            Ok(n) => got.truncate(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => got.clear(),
            Err(e) => panic!("{e}"),
        }
        got
    }

    /// One delivery of `bytes`, made while input is handled.
    #[cfg(unix)]
    fn deliver_gathered(outbox: &Arc<Outbox>, awaited: bool, bytes: &'static [u8]) {
        let _g = gather();
        outbox.push_delivery(awaited, |out| out.extend_from_slice(bytes));
    }

    #[test]
    #[cfg(unix)]
    fn a_gathered_delivery_goes_straight_to_the_socket_and_wakes_nobody() {
        let (outbox, _, mut peer) = direct();
        let before = crate::busy_wait::wakes_here();
        {
            let _g = gather();
            outbox.push_delivery(true, |out| out.extend_from_slice(b"d1"));
            outbox.push_delivery(true, |out| out.extend_from_slice(b"d2"));
            assert_eq!(
                received(&mut peer),
                b"",
                "written before the input was handled"
            );
        }
        assert_eq!(received(&mut peer), b"d1d2");
        assert_eq!(outbox.pending(), 0);
        assert_eq!(crate::busy_wait::wakes_here(), before, "the task was woken");
        assert!(outbox.take().is_empty());
    }

    #[test]
    #[cfg(unix)]
    fn what_the_task_holds_unwritten_goes_out_before_anything_after_it() {
        let (outbox, _, mut peer) = direct();
        outbox.push(|out| out.extend_from_slice(b"reply"));
        let (taken, _) = outbox.take_with_urgency();
        let before = crate::busy_wait::wakes_here();
        deliver_gathered(&outbox, true, b"d1");
        assert_eq!(
            received(&mut peer),
            b"",
            "written ahead of the task's bytes"
        );
        assert_eq!(
            crate::busy_wait::wakes_here(),
            before + 1,
            "the task sleeps on"
        );
        // The task writes what it took; then a gathered delivery takes the rest.
        assert_eq!(&taken[..], b"reply");
        outbox.wrote_all();
        deliver_gathered(&outbox, true, b"d2");
        assert_eq!(received(&mut peer), b"d1d2");
    }

    #[test]
    #[cfg(unix)]
    fn the_task_writes_what_nobody_waits_for_and_what_the_trace_must_see() {
        let (outbox, tracer, mut peer) = direct();
        deliver_gathered(&outbox, false, b"later");
        assert_eq!(received(&mut peer), b"");
        assert_eq!(&outbox.take()[..], b"later");
        outbox.wrote_all();
        tracer.set(true);
        deliver_gathered(&outbox, true, b"traced");
        assert_eq!(received(&mut peer), b"");
        assert_eq!(&outbox.take()[..], b"traced");
        outbox.wrote_all();
        tracer.set(false);
        outbox.stop_writing_directly();
        deliver_gathered(&outbox, true, b"closed");
        assert_eq!(received(&mut peer), b"", "written after the task let go");
    }

    #[test]
    #[cfg(unix)]
    fn a_gathering_inside_another_waits_for_the_outer_one() {
        let (outbox, _, mut peer) = direct();
        let outer = gather();
        {
            let _inner = gather();
            outbox.push_delivery(true, |out| out.extend_from_slice(b"d"));
        }
        assert_eq!(received(&mut peer), b"");
        drop(outer);
        assert_eq!(received(&mut peer), b"d");
    }
}
