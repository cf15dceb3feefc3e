//! When a TCP connection's task reads: as each frame lands, or in batches while the
//! peer streams.
//!
//! On loopback the sender pays, inside its own `write`, for waking a reader that is
//! parked in epoll. A client that writes every frame on its own (Go's amqp091 flushes
//! each of a publish's three frames) then spends more time waking Warren than making
//! frames, and a broker that reads eagerly caps the client: one Go amqp091
//! connection sent about 50 000 publishes/s into Warren reading each frame as it
//! landed, and about 140 000/s once Warren batched (see `bench/PROFILE.md`).
//!
//! So once a connection has had many reads in a row, each soon after the one before,
//! its socket's `SO_RCVLOWAT` is raised: arriving frames stop waking anyone, and the
//! task reads whatever gathered once per [`HOLD`] (or as soon as [`LOWAT`] bytes
//! wait). A batch that brings few frames ends this: the peer was not streaming (a
//! request/response client, or a publisher that paused), and the next try needs
//! twice as many quick reads, so a client that only looks like a stream rarely pays
//! a hold. A peer that was sent something since the previous read (deliveries,
//! confirms, replies; heartbeats aside) may be waiting for that before it sends
//! more, as a consumer with a small prefetch waits for deliveries to ack; holding
//! it would stall it once per round trip (a Go consumer with prefetch 10 took
//! 50 000 messages at 4 900 msg/s, RabbitMQ at 30 000). Its batches must be
//! larger to go on: [`MIN_ANSWERED_BATCH`] frames, more than a small window holds.

use std::time::{Duration, Instant};

use crate::busy_wait::BusyWait;

/// A read this soon after the previous one counts towards batching.
const QUICK: Duration = Duration::from_micros(50);
/// Quick reads in a row before batching starts (and again after a batch that
/// paid off).
const START_AFTER: u32 = 16;
/// The most quick reads in a row that batching can come to need.
const MAX_START_AFTER: u32 = 1 << 14;
/// While batching, how long after a read the next one waits at most.
const HOLD: Duration = Duration::from_millis(1);
/// While batching, this many waiting bytes wake the reader before the hold ends.
const LOWAT: usize = 64 * 1024;
/// A batch with fewer frames than this shows the peer is not streaming.
const MIN_BATCH: u64 = 8;
/// The same, for a peer that was sent something since the previous read: a
/// window it filled and then waited on is smaller (a consumer with prefetch 50
/// acks 50 deliveries, a publisher with 20 unconfirmed sends 60 frames).
const MIN_ANSWERED_BATCH: u64 = 64;

/// What the socket must be told after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// Raise `SO_RCVLOWAT`: reads are batched from now on.
    Start,
    /// Back to 1: read each frame as it lands.
    Stop,
}

/// The decision alone, free of sockets and clocks, so that it can be tested.
#[derive(Debug)]
pub struct ReadPacer {
    last: Option<Instant>,
    quick: u32,
    needed: u32,
    batching: bool,
}

impl Default for ReadPacer {
    fn default() -> Self {
        Self {
            last: None,
            quick: 0,
            needed: START_AFTER,
            batching: false,
        }
    }
}

impl ReadPacer {
    /// Records a read at `now` that brought `frames` whole frames; `answered`
    /// says the connection was sent something since the previous read.
    pub fn read(&mut self, now: Instant, frames: u64, answered: bool) -> Change {
        let quick = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < QUICK);
        self.last = Some(now);
        if self.batching {
            let min = if answered {
                MIN_ANSWERED_BATCH
            } else {
                MIN_BATCH
            };
            if frames >= min {
                self.needed = START_AFTER;
                return Change::None;
            }
            self.batching = false;
            self.quick = 0;
            self.needed = (self.needed * 2).min(MAX_START_AFTER);
            return Change::Stop;
        }
        self.quick = if quick { self.quick + 1 } else { 0 };
        if self.quick >= self.needed {
            self.batching = true;
            self.quick = 0;
            return Change::Start;
        }
        Change::None
    }

    pub fn batching(&self) -> bool {
        self.batching
    }

    /// Stops batching, never to start again: the socket cannot hold arrivals back.
    pub fn give_up(&mut self) {
        self.batching = false;
        self.needed = u32::MAX;
    }
}

/// A TCP connection's socket as the pacer drives it: its own handle on the socket
/// (a duplicate descriptor, so the async stream keeps the original), to set
/// `SO_RCVLOWAT` and to read when a hold ends.
#[derive(Debug)]
pub struct PacedSocket {
    /// Shared with the outbox, for other tasks' writes (`handle`).
    sock: std::sync::Arc<socket2::Socket>,
    pacer: ReadPacer,
    /// `Outbox::answers` at the previous read.
    answers: u64,
    /// When the task polls the socket instead of parking (`crate::busy_wait`).
    busy: BusyWait,
    /// The task polls, so `SO_RCVLOWAT` is raised whether or not it batches.
    polling: bool,
}

impl PacedSocket {
    /// None where the platform or the descriptor table says no: the connection
    /// then reads each frame as it lands, which is only slower.
    #[cfg(target_os = "linux")]
    pub fn new(stream: &tokio::net::TcpStream, busy: BusyWait) -> Option<Self> {
        use std::os::fd::AsFd;
        let fd = stream.as_fd().try_clone_to_owned().ok()?;
        Some(Self {
            sock: std::sync::Arc::new(socket2::Socket::from(fd)),
            pacer: ReadPacer::default(),
            answers: 0,
            busy,
            polling: false,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new(_: &tokio::net::TcpStream, _: BusyWait) -> Option<Self> {
        None
    }

    /// Records a read that brought `frames` frames, with the connection's
    /// `Outbox::answers` after handling them, and retunes the socket.
    pub fn after_read(&mut self, frames: u64, answers: u64) {
        let answered = std::mem::replace(&mut self.answers, answers) != answers;
        match self.pacer.read(Instant::now(), frames, answered) {
            Change::None => {}
            Change::Start => {
                if set_rcvlowat(&self.sock, LOWAT).is_err() {
                    self.pacer.give_up();
                }
            }
            Change::Stop => {
                // Setting it also wakes the reader if bytes already wait (Linux
                // checks at once), so nothing that arrived meanwhile is stranded.
                if !self.polling {
                    let _ = set_rcvlowat(&self.sock, 1);
                }
            }
        }
    }

    /// The socket, for other tasks' writes (`Outbox::write_directly`).
    pub fn handle(&self) -> std::sync::Arc<socket2::Socket> {
        self.sock.clone()
    }

    /// Whether the pacer holds reads back to batch them.
    pub fn batching(&self) -> bool {
        self.pacer.batching()
    }

    /// Bytes went either way: the busy wait goes on from now.
    pub fn traffic(&mut self) {
        self.busy.traffic(Instant::now());
    }

    /// A read found `bytes` waiting (with what an earlier read left unparsed);
    /// `split`: once handled, a publish was left waiting for the rest of it.
    pub fn read(&mut self, bytes: usize, split: bool) {
        self.busy.read(Instant::now(), bytes, split);
    }

    /// Whether the task should poll the socket (`read_now`) now rather than park
    /// (`paused`: the memory alarm stopped reading). While it polls, arrivals must
    /// wake nobody: `SO_RCVLOWAT` is raised as for batching, and lowered again
    /// when it stops, unless it batches.
    pub fn poll(&mut self, paused: bool) -> bool {
        let on = if paused {
            self.busy.stop();
            false
        } else {
            self.busy.poll(Instant::now(), self.pacer.batching())
        };
        if on != self.polling {
            let lowat = if on { LOWAT } else { 1 };
            if !self.pacer.batching() && set_rcvlowat(&self.sock, lowat).is_err() {
                self.busy.disable();
                self.polling = false;
                return false;
            }
            self.polling = on;
        }
        on
    }

    /// Between two polls: yields the CPU to any thread that wants it, and tells
    /// the busy wait whether one did.
    pub fn between_polls(&mut self) {
        let before = Instant::now();
        std::thread::yield_now();
        let now = Instant::now();
        self.busy.yielded(now, now - before);
    }

    /// While batching, when the task should read whatever has gathered since
    /// its last read.
    pub fn hold_until(&self, last_read: tokio::time::Instant) -> Option<tokio::time::Instant> {
        self.pacer.batching().then(|| last_read + HOLD)
    }

    /// Reads what waits now, without the runtime's readiness (which the raised
    /// `SO_RCVLOWAT` holds back): `Ok(None)` when nothing does, `Ok(Some(0))` at
    /// end of stream.
    #[allow(unsafe_code)]
    pub fn read_now(&self, buf: &mut bytes::BytesMut) -> std::io::Result<Option<usize>> {
        use bytes::BufMut;
        buf.reserve(LOWAT);
        // Into the spare capacity, not zeroed first: a spinning task reads often,
        // mostly nothing.
        let read = self.sock.recv(buf.spare_capacity_mut());
        match read {
            Ok(n) => {
                // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
                unsafe { buf.advance_mut(n) };
                Ok(Some(n))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One of the broker's two `unsafe` blocks, both here: neither std nor socket2
/// sets `SO_RCVLOWAT`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_rcvlowat(sock: &socket2::Socket, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for as long as `sock` lives, and the option
    // value is a c_int on the stack whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_rcvlowat(_: &socket2::Socket, _: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `n` times, `gap` apart, each bringing `frames`; the changes seen.
    fn reads(
        p: &mut ReadPacer,
        t: &mut Instant,
        n: u32,
        gap: Duration,
        frames: u64,
    ) -> Vec<Change> {
        (0..n)
            .map(|_| {
                *t += gap;
                p.read(*t, frames, false)
            })
            .filter(|c| *c != Change::None)
            .collect()
    }

    /// A gap between reads well within `QUICK`.
    const SOON: Duration = Duration::from_micros(10);

    /// A pacer that has just started batching, and the time of its last read.
    fn batching_pacer() -> (ReadPacer, Instant) {
        let mut p = ReadPacer::default();
        let mut t = Instant::now();
        assert_eq!(
            reads(&mut p, &mut t, START_AFTER + 1, SOON, 3),
            [Change::Start]
        );
        (p, t)
    }

    /// After a stop, batching starts again only after twice as many quick reads.
    fn restarts_after_twice_as_many(p: &mut ReadPacer, t: &mut Instant) {
        assert_eq!(reads(p, t, 2 * START_AFTER - 1, SOON, 3), []);
        assert_eq!(reads(p, t, 1, SOON, 3), [Change::Start]);
    }

    #[test]
    fn a_stream_of_quick_reads_starts_batching() {
        let mut p = ReadPacer::default();
        let mut t = Instant::now();
        let changes = reads(&mut p, &mut t, START_AFTER, SOON, 3);
        assert_eq!(changes, []);
        assert!(!p.batching());
        assert_eq!(p.read(t + SOON, 3, false), Change::Start);
        assert!(p.batching());
        // Full batches keep it going, however long each hold was.
        t += SOON;
        assert_eq!(reads(&mut p, &mut t, 50, HOLD, 60), []);
        assert!(p.batching());
    }

    #[test]
    fn reads_spaced_wider_than_quick_never_batch() {
        // A client waiting for each delivery before its next publish.
        let mut p = ReadPacer::default();
        let mut t = Instant::now();
        assert_eq!(reads(&mut p, &mut t, 10_000, QUICK * 2, 3), []);
        assert!(!p.batching());
    }

    #[test]
    fn a_slow_read_resets_the_count() {
        let mut p = ReadPacer::default();
        let mut t = Instant::now();
        for _ in 0..100 {
            reads(&mut p, &mut t, START_AFTER - 1, SOON, 3);
            reads(&mut p, &mut t, 1, QUICK * 2, 3);
        }
        assert!(!p.batching());
    }

    #[test]
    fn a_thin_batch_stops_and_the_next_start_needs_twice_as_many() {
        let (mut p, mut t) = batching_pacer();
        // A request/response client: one message gathered in the hold.
        assert_eq!(reads(&mut p, &mut t, 1, HOLD, 3), [Change::Stop]);
        restarts_after_twice_as_many(&mut p, &mut t);
        assert_eq!(reads(&mut p, &mut t, 1, HOLD, 0), [Change::Stop]);
        // A client that keeps looking like a stream and is not one pays a hold
        // ever more rarely, down to one in MAX_START_AFTER reads.
        let mut holds = 0;
        for _ in 0..200_000 {
            t += SOON;
            if p.read(t, 3, false) == Change::Start {
                holds += 1;
                t += HOLD;
                assert_eq!(p.read(t, 1, false), Change::Stop);
            }
        }
        assert!(
            holds <= 200_000 / MAX_START_AFTER as usize + 10,
            "{holds} holds"
        );
        // A real stream later still batches, and a full batch resets the count.
        assert_eq!(reads(&mut p, &mut t, 1, QUICK * 2, 3), []);
        assert_eq!(
            reads(&mut p, &mut t, MAX_START_AFTER, SOON, 3),
            [Change::Start]
        );
        assert_eq!(reads(&mut p, &mut t, 1, HOLD, 40), []);
        assert_eq!(reads(&mut p, &mut t, 1, HOLD, 1), [Change::Stop]);
        restarts_after_twice_as_many(&mut p, &mut t);
    }

    #[test]
    fn a_peer_waiting_on_what_it_was_sent_stops_batching() {
        // A consumer with prefetch 1000 acks far more than a hold's worth between
        // deliveries: batching goes on.
        let (mut p, mut t) = batching_pacer();
        for _ in 0..100 {
            t += HOLD;
            assert_eq!(p.read(t, 2 * MIN_ANSWERED_BATCH, true), Change::None);
        }
        // One with prefetch 50 acks 50 and waits for more deliveries: the batch
        // is full enough for a peer sent nothing, not for one that was.
        t += HOLD;
        assert_eq!(p.read(t, 50, false), Change::None);
        t += HOLD;
        assert_eq!(p.read(t, 50, true), Change::Stop);
        assert!(!p.batching());
        // Then twice as many quick reads are needed to try again.
        restarts_after_twice_as_many(&mut p, &mut t);
    }

    #[test]
    fn a_pacer_given_up_never_batches() {
        let mut p = ReadPacer::default();
        let mut t = Instant::now();
        p.give_up();
        assert_eq!(reads(&mut p, &mut t, 100_000, SOON, 3), []);
        assert!(!p.batching());
    }

    /// The socket side, on a real loopback connection: while batching, a few bytes
    /// do not wake the runtime but are there to read when the hold ends; when a
    /// thin batch stops batching, bytes that arrived meanwhile wake it at once.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_batching_socket_holds_arrivals_back_and_strands_none() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = loopback_pair().await;
        let mut paced =
            PacedSocket::new(&server, BusyWait::new(Duration::ZERO, Default::default()))
                .expect("a duplicate descriptor");
        assert_eq!(paced.hold_until(tokio::time::Instant::now()), None);
        while paced.hold_until(tokio::time::Instant::now()).is_none() {
            paced.after_read(3, 0);
        }
        // A new socket starts out readable to the runtime, until a read finds nothing.
        let mut rest = [0u8; 64];
        let empty = server.try_read(&mut rest).unwrap_err();
        assert_eq!(empty.kind(), std::io::ErrorKind::WouldBlock);

        client.write_all(&[7; 100]).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(200), server.readable()).await;
        assert!(quiet.is_err(), "100 bytes woke a batching reader");
        let mut buf = bytes::BytesMut::new();
        assert_eq!(paced.read_now(&mut buf).unwrap(), Some(100));
        assert_eq!(paced.read_now(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &[7; 100][..]);
        // A full batch keeps it batching, unless the peer was sent something since
        // (a changed `Outbox::answers`): then it takes a larger one.
        paced.after_read(MIN_BATCH, 0);
        assert!(paced.hold_until(tokio::time::Instant::now()).is_some());
        paced.after_read(MIN_ANSWERED_BATCH, 1);
        assert!(paced.hold_until(tokio::time::Instant::now()).is_some());
        paced.after_read(MIN_ANSWERED_BATCH - 1, 2);
        assert_eq!(paced.hold_until(tokio::time::Instant::now()), None);
        while paced.hold_until(tokio::time::Instant::now()).is_none() {
            paced.after_read(3, 2);
        }

        client.write_all(&[8; 10]).await.unwrap();
        // Nothing is announced yet; a thin batch then ends batching, and the bytes
        // that wait are announced to the runtime at once.
        paced.after_read(1, 0);
        assert_eq!(paced.hold_until(tokio::time::Instant::now()), None);
        tokio::time::timeout(Duration::from_secs(10), server.readable())
            .await
            .expect("bytes waiting when batching stopped were never announced")
            .unwrap();
        assert_eq!(server.try_read(&mut rest).unwrap(), 10);

        // At end of stream a read finds it.
        drop(client);
        assert_eq!(paced.read_now(&mut buf).unwrap(), Some(0));
    }

    /// A connected loopback pair: the client's end, the server's end.
    async fn loopback_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// While a task polls its socket, arrivals wake nobody; when it stops, bytes
    /// that arrived meanwhile wake the runtime at once.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_polling_socket_wakes_nobody_and_strands_nothing() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = loopback_pair().await;
        let busy = BusyWait::new(Duration::from_secs(60), Default::default());
        let mut paced = PacedSocket::new(&server, busy).expect("a duplicate descriptor");
        let mut rest = [0u8; 256];
        let empty = server.try_read(&mut rest).unwrap_err();
        assert_eq!(empty.kind(), std::io::ErrorKind::WouldBlock);
        assert!(!paced.poll(false), "polled before any traffic");

        paced.traffic();
        assert!(paced.poll(false));
        client.write_all(&[7; 100]).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(200), server.readable()).await;
        assert!(
            quiet.is_err(),
            "100 bytes woke the runtime of a task that polls"
        );
        let mut buf = bytes::BytesMut::new();
        assert_eq!(paced.read_now(&mut buf).unwrap(), Some(100));
        assert_eq!(paced.read_now(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &[7; 100][..]);

        // The memory alarm stops the polling; what arrived is announced.
        client.write_all(&[8; 10]).await.unwrap();
        assert!(!paced.poll(true));
        tokio::time::timeout(Duration::from_secs(10), server.readable())
            .await
            .expect("bytes waiting when polling stopped were never announced")
            .unwrap();
        assert_eq!(server.try_read(&mut rest).unwrap(), 10);
    }
}
