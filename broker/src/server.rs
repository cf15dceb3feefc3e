//! The I/O around the protocol core: accept loops, one task per connection (it
//! feeds the state machine, writes what the outbox gathers and keeps the timers),
//! and the tracking that lets shutdown wait for all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::busy_wait::{self, BusyWait};
use crate::codec;
use crate::commands::{Command, ConnInfo};
use crate::connection::{Connection, Outcome};
use crate::outbox::{Outbox, HIGH_WATER};
use crate::pacing::PacedSocket;
use crate::shared::Shared;
use crate::trace::Direction;

/// Counts live connection tasks so that shutdown and restart can wait for them.
#[derive(Debug, Default)]
pub struct Tracker {
    live: AtomicUsize,
    /// Woken when `live` drops to zero.
    idle: Notify,
}

impl Tracker {
    pub fn enter(self: &Arc<Self>) -> TaskGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Held by a connection task for as long as it runs.
#[derive(Debug)]
pub struct TaskGuard(Arc<Tracker>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Accepts TCP connections until `stop` changes.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
    mut close: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    capacity: usize,
) {
    // Near the descriptor limit a connection is refused (accepted and closed at
    // once), never left in the backlog or failing later inside the broker.
    let limit = shared.config.max_connections.min(capacity);
    let mut spare = crate::alarms::Spare::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if tracker.live() >= limit {
                        tracing::warn!(
                            %peer,
                            "connection refused: {} connections open, the most the {} allows",
                            tracker.live(),
                            if limit == capacity { "file descriptor limit" } else { "max_connections" }
                        );
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "accepted");
                    let guard = tracker.enter();
                    // The connection's receiver counts every signal sent after
                    // this accept as unseen, even one sent before its task first
                    // runs: shutdown and restart close every connection accepted
                    // before their signal, and none accepted after it.
                    close.mark_unchanged();
                    let local = stream.local_addr().ok();
                    let busy = BusyWait::new(
                        if busy_wait::helps() {
                            shared.config.busy_wait
                        } else {
                            Duration::ZERO
                        },
                        shared.spinner.clone(),
                    );
                    let paced = PacedSocket::new(&stream, busy);
                    tokio::spawn(serve(
                        stream,
                        peer.to_string(),
                        local,
                        shared.clone(),
                        close.clone(),
                        guard,
                        paced,
                    ));
                }
                Err(e) if crate::alarms::out_of_descriptors(&e) => {
                    // Something else took the descriptors: free the spare one to
                    // take the waiting connection and refuse it.
                    spare.release();
                    if let Ok(Ok((_stream, peer))) =
                        tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
                    {
                        tracing::warn!(%peer, "connection refused: out of file descriptors");
                    }
                    spare.restore();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    // Back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Runs one connection to its end over any byte stream.
///
/// One task both reads and writes: the deliveries a batch of input frees go out
/// from the task that handled the input, with no wake-up of a second task (and
/// no hop between runtime threads) per batch. Writes are polled beside reads, so
/// a peer that stops reading never stops the broker hearing it.
///
/// `close` must have seen every signal sent before the connection was accepted
/// (and none after): a signal it has not seen closes the connection, however
/// late its task starts.
///
/// `paced` is a TCP connection's socket, for pacing its reads (see `pacing`); an
/// in-process connection has none and reads at once, as its peer is woken inside
/// the runtime with no system call to spare.
pub async fn serve<S>(
    stream: S,
    peer: String,
    local: Option<std::net::SocketAddr>,
    shared: Arc<Shared>,
    mut close: watch::Receiver<u64>,
    _guard: TaskGuard,
    mut paced: Option<PacedSocket>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // Held for the connection's life: a restart or crash waits for every holder
    // to end, and a connection arriving meanwhile waits here until it is over.
    let _up = shared.gate.read().await;
    let id = shared.next_connection_id();
    let outbox = Arc::new(Outbox::default());
    let info = Arc::new(ConnInfo::new(
        id,
        peer,
        outbox.clone(),
        shared.tracer.clone(),
    ));
    if let Some(local) = local {
        let _ = info.local.set(local.to_string());
    }
    shared.register(info.clone());
    if let Some(p) = &paced {
        outbox.write_directly(p.handle(), shared.tracer.clone());
    }
    let (mut reader, writer) = tokio::io::split(stream);
    tokio::pin!(writer);
    let mut conn = Connection::new(shared.clone(), info.clone(), now());
    // Set by a `Drop` or `CutMidFrame` command: the socket dies without a word.
    let mut abort = false;
    // Whether, once its last bytes are written, the socket is read until the
    // client hangs up: false once it has, or is gone, or a timer ended it.
    let mut linger = true;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Taken from the outbox, not yet accepted by the socket; always written before
    // anything taken later, which keeps the order of appends.
    let mut out = Bytes::new();
    // Whether the peer may be waiting for some of `out`; when not, since when it
    // has been held back (`COALESCE`).
    let mut urgent = false;
    let mut deferred_at: Option<Instant> = None;
    // The bytes in `out` had pushed the outbox over its mark: consumers resume
    // once they are written.
    let mut backed_up = false;
    // The core's timers (heartbeats, handshake, close): it says when, this sleeps.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut durable = conn.durability_updates();
    let mut alarm = shared.gauge.subscribe();
    let hold = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(hold);
    'serve: loop {
        if out.is_empty() {
            (out, urgent) = take_outbox_with_urgency(&info, &mut backed_up);
            deferred_at = (!out.is_empty() && !urgent).then(Instant::now);
        } else if deferred_at.is_some() && info.outbox.pending() > 0 {
            // Joins the deliveries held back, ahead of nothing written yet.
            let (more, more_urgent) = take_outbox_with_urgency(&info, &mut backed_up);
            let mut joined = BytesMut::with_capacity(out.len() + more.len());
            joined.extend_from_slice(&out);
            joined.extend_from_slice(&more);
            out = joined.freeze();
            urgent |= more_urgent;
            backed_up = out.len() > HIGH_WATER;
        }
        // A memory alarm stops reading from publishers until it clears, and
        // tells them so when they asked.
        let paused = *alarm.borrow() && conn.is_publisher() && conn.is_open();
        conn.set_blocked(paused);
        let due = conn.poll_timeout(now()).map(Instant::from_std);
        if let Some(at) = due {
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
        }
        let last_read = Instant::from_std(conn.last_read());
        let hold_until = paced.as_ref().and_then(|p| p.hold_until(last_read));
        // Polling instead of parking (`busy_wait`) keeps the CPU awake.
        let poll = paced.as_mut().is_some_and(|p| p.poll(paused));
        // While the task polls anyway, deliveries the peer is not waiting for
        // wait a little for the ones after them, so that a consumer acking one
        // at a time is not woken once per refill of its window.
        let hold_write = poll && !urgent && deferred_at.is_some_and(|t| t.elapsed() < COALESCE);
        if let Some(at) = hold_until {
            if hold.deadline() != at {
                hold.as_mut().reset(at);
            }
        }
        tokio::select! {
            // `write` is cancel-safe: a write that did not complete wrote nothing.
            written = writer.write(&out), if !out.is_empty() && !hold_write => match written {
                Ok(0) | Err(_) => {
                    linger = false;
                    break;
                }
                Ok(n) => {
                    deferred_at = None;
                    if let Some(p) = paced.as_mut() {
                        p.traffic();
                    }
                    out.advance(n);
                    if out.is_empty() {
                        outbox.wrote_all();
                        if std::mem::take(&mut backed_up) {
                            conn.resume();
                        }
                    }
                }
            },
            _ = outbox.wait_ready(), if out.is_empty() => {}
            _ = alarm.changed() => {}
            changed = async {
                match durable.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if changed.is_err() {
                    durable = None;
                }
                conn.flush_confirms();
            }
            read = reader.read_buf(&mut buf), if !paused => match read {
                Ok(0) | Err(_) => {
                    linger = false;
                    break;
                }
                Ok(_) => {
                    if take_input(&mut conn, &mut buf, &mut paced, &outbox) != Outcome::Continue {
                        break;
                    }
                }
            },
            // Between polls the thread yields to the kernel
            // (`PacedSocket::between_polls`), and the task goes back to the runtime
            // only when something may want it or its worker: each return wakes the
            // runtime's parked worker (tokio hands work on as the last searching
            // worker finds it), which then runs on the CPU the client needs.
            _ = tokio::task::yield_now(), if poll => {
                let wakes = busy_wait::wakes_here();
                let since = Instant::now();
                while let Some(p) = paced.as_mut() {
                    p.between_polls();
                    let batching = hold_until.is_some();
                    if hold_until.is_none_or(|h| Instant::now() >= h) {
                        match p.read_now(&mut buf) {
                            Ok(Some(0)) | Err(_) => {
                                linger = false;
                                break 'serve;
                            }
                            Ok(None) => {
                                if batching {
                                    p.after_read(0, outbox.answers());
                                    break;
                                }
                            }
                            Ok(Some(_)) => {
                                if take_input(&mut conn, &mut buf, &mut paced, &outbox)
                                    != Outcome::Continue
                                {
                                    break 'serve;
                                }
                                if batching || conn.is_closing() {
                                    break;
                                }
                            }
                        }
                    }
                    let Some(p) = paced.as_mut() else { break };
                    // What wakes the task (its outbox, confirms written to disk, an
                    // alarm, shutdown) or another task on this worker (an append to
                    // another connection's outbox) is served at once, and a change
                    // of pace; anything else within `busy_wait::SPIN`.
                    if busy_wait::wakes_here() != wakes
                        || outbox.pending() > 0
                        || p.batching() != batching
                        || durable.as_ref().is_some_and(|rx| rx.has_changed().unwrap_or(true))
                        || alarm.has_changed().unwrap_or(true)
                        || close.has_changed().unwrap_or(true)
                        || since.elapsed() >= busy_wait::SPIN
                        || !p.poll(paused)
                    {
                        break;
                    }
                }
            }
            // A batching connection's socket wakes nobody until much has gathered:
            // read what there is when the hold ends.
            _ = &mut hold, if hold_until.is_some() && !paused => {
                let Some(p) = paced.as_mut() else { continue };
                match p.read_now(&mut buf) {
                    Ok(Some(0)) | Err(_) => {
                        linger = false;
                        break;
                    }
                    Ok(None) => p.after_read(0, outbox.answers()),
                    Ok(Some(_)) => {
                        if take_input(&mut conn, &mut buf, &mut paced, &outbox) != Outcome::Continue {
                            break;
                        }
                    }
                }
            }
            _ = info.wake.notified() => {
                for command in info.take_commands() {
                    match command {
                        Command::CloseConnection { code, text } => {
                            let text = crate::AmqpError::connection(code, text).reply_text();
                            conn.close_connection(code, text, 0, 0);
                        }
                        Command::CloseChannel { channel, code, text } => {
                            if conn.channel_is_open(channel) {
                                conn.fail(channel, crate::AmqpError::channel(code, text));
                            }
                        }
                        Command::ConsumerTimeout { channel, text } => {
                            conn.consumer_timed_out(channel, text);
                        }
                        Command::Drop => abort = true,
                        Command::CutMidFrame => {
                            // The start of a heartbeat frame, never finished.
                            outbox.push(|out| out.extend_from_slice(&[8, 0, 0, 0]));
                            abort = true;
                        }
                    }
                }
                if abort || conn.is_closed() {
                    break;
                }
            }
            changed = close.changed() => {
                if changed.is_err() {
                    break;
                }
                conn.force_close("shutdown");
                if !conn.is_closing() {
                    break;
                }
            }
            _ = &mut timer, if due.is_some() => match conn.handle_timeout(now()) {
                Outcome::Continue => {}
                Outcome::Close => break,
                Outcome::TimedOut => {
                    linger = false;
                    break;
                }
            },
        }
    }
    outbox.stop_writing_directly();
    conn.release();
    shared.unregister(id);
    // A client that does not read must not keep the task (and its gate guard,
    // and so a restart or shutdown) forever: what is left goes out within the
    // close timeout, counted from the close when there was one, or is dropped.
    let deadline = Instant::from_std(conn.close_deadline(now()));
    if abort {
        // Whatever the socket takes at once is written; the rest dies with it.
        let rest = take_outbox(&info, &mut backed_up);
        for data in [out, rest] {
            match tokio::time::timeout(Duration::ZERO, writer.write(&data)).await {
                Ok(Ok(n)) if n == data.len() => {}
                _ => break,
            }
        }
    } else {
        let _ = tokio::time::timeout_at(deadline, finish_writing(writer, &info, out)).await;
        if linger {
            // Closing a socket with unread input makes the kernel answer with a
            // reset, which can destroy what was just written (the close-ok a
            // client waits for) before the client reads it: what the client
            // still sends is read and dropped until it hangs up, within the
            // same deadline.
            let _ = tokio::time::timeout_at(deadline, read_to_end(&mut reader, &mut buf)).await;
        }
    }
    drop(reader);
    tracing::debug!(conn = id, "closed");
}

/// How long deliveries a consumer is not waiting for may wait for the ones after
/// them while the task polls (`Outbox::push_delivery`).
const COALESCE: Duration = Duration::from_micros(50);

/// Feeds what was read to the state machine, with when (heartbeats and the
/// pacer's hold count from it), and tells the pacer how many frames it held and
/// how much the connection has been sent (`Outbox::answers`).
fn take_input(
    conn: &mut Connection,
    buf: &mut BytesMut,
    paced: &mut Option<PacedSocket>,
    outbox: &Outbox,
) -> Outcome {
    let before = conn.frames_received();
    let bytes = buf.len();
    let outcome = {
        // The deliveries this input makes go out as it is handled, from here.
        let _deliveries = crate::outbox::gather();
        conn.handle_input(buf, now())
    };
    if let Some(p) = paced {
        p.read(bytes, conn.mid_content());
        p.after_read(conn.frames_received() - before, outbox.answers());
    }
    outcome
}

/// The time for the core, from tokio's clock: under `tokio::time::pause()` the
/// core's timers stand still with it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Everything pending in the outbox, recorded in the frame trace when it is on.
fn take_outbox(info: &ConnInfo, backed_up: &mut bool) -> Bytes {
    take_outbox_with_urgency(info, backed_up).0
}

/// The same, and whether the peer may be waiting for any of it (see
/// `Outbox::push_delivery`).
fn take_outbox_with_urgency(info: &ConnInfo, backed_up: &mut bool) -> (Bytes, bool) {
    // A publisher's task rarely has anything to write: skip the lock then. An
    // append racing with this check also wakes `wait_ready`, so nothing waits.
    if info.outbox.pending() == 0 {
        return (Bytes::new(), false);
    }
    let (data, urgent) = info.outbox.take_with_urgency();
    if data.is_empty() {
        return (Bytes::new(), false);
    }
    if info.trace.is_on() {
        trace_out(info, &data);
    }
    *backed_up = data.len() > HIGH_WATER;
    (data.freeze(), urgent)
}

/// Writes what is left (the close-ok, the last deliveries) and shuts the socket down.
async fn finish_writing<W: AsyncWrite>(
    mut writer: std::pin::Pin<&mut W>,
    info: &ConnInfo,
    mut out: Bytes,
) -> std::io::Result<()> {
    let mut backed_up = false;
    loop {
        if out.is_empty() {
            out = take_outbox(info, &mut backed_up);
            if out.is_empty() {
                break;
            }
        }
        writer.write_all(&out).await?;
        out.clear();
    }
    writer.flush().await?;
    writer.shutdown().await
}

/// Reads and drops everything until the peer hangs up, through the
/// connection's read buffer (an array here would grow every connection's task).
async fn read_to_end<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) {
    loop {
        buf.clear();
        match reader.read_buf(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Records the frames in bytes about to be written (the outbox holds whole frames).
fn trace_out(info: &ConnInfo, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    if buf.starts_with(b"AMQP") {
        return;
    }
    while let Ok(Some(frame)) = codec::decode(&mut buf, u32::MAX) {
        info.trace.record(Direction::Out, &frame);
    }
}
