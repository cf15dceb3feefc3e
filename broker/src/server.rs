//! The I/O around the protocol core: accept loops, one task pair per connection
//! (a reader that feeds the state machine and keeps the timers, a writer that
//! drains the outbox), and the tracking that lets shutdown wait for all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::codec;
use crate::connection::{Connection, Outcome};
use crate::faults::{Command, ConnInfo, Direction};
use crate::outbox::{Outbox, HIGH_WATER};
use crate::Shared;

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
    close: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if tracker.live() >= shared.config.max_connections {
                        tracing::warn!(%peer, "connection refused: max_connections reached");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "accepted");
                    let guard = tracker.enter();
                    tokio::spawn(serve(stream, peer.to_string(), shared.clone(), close.clone(), guard));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Runs one connection to its end over any byte stream.
pub async fn serve<S>(
    stream: S,
    peer: String,
    shared: Arc<Shared>,
    mut close: watch::Receiver<u64>,
    _guard: TaskGuard,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // Held for the connection's life: a restart or crash waits for every holder
    // to end, and a connection arriving meanwhile waits here until it is over.
    let _up = shared.gate.read().await;
    // Before it is registered: a restart that sees it registered counts on this
    // receiver to tell it (and tells the unregistered ones by a command), so a
    // signal sent in between must not be marked as seen.
    close.mark_unchanged();
    let id = shared.next_connection_id();
    let outbox = Arc::new(Outbox::default());
    let info = Arc::new(ConnInfo::new(id, peer, outbox.clone(), shared.tracing()));
    shared.register(info.clone());
    let (mut reader, writer) = tokio::io::split(stream);
    let writer = tokio::spawn(write_loop(writer, info.clone()));
    let mut conn = Connection::new(shared.clone(), info.clone());
    // Set by a `Drop` or `CutMidFrame` command: the socket dies without a word.
    let mut abort = false;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let started = Instant::now();
    let mut last_read = started;
    let mut last_heartbeat = started;
    let mut closing_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut durable = conn.durability_updates();
    let mut alarm = shared.gauge.subscribe();
    loop {
        // A memory alarm stops reading from publishers until it clears, and
        // tells them so when they asked.
        let paused = *alarm.borrow() && conn.is_publisher() && conn.is_open();
        conn.set_blocked(paused);
        tokio::select! {
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
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    last_read = Instant::now();
                    if conn.handle_input(&mut buf) == Outcome::Close {
                        break;
                    }
                }
            },
            _ = outbox.wait_drained() => conn.resume(),
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
            _ = tick.tick() => {
                let now = Instant::now();
                if conn.is_closing() {
                    let since = *closing_since.get_or_insert(now);
                    if now - since >= shared.config.close_timeout {
                        break;
                    }
                    continue;
                }
                if !conn.is_open() && now - started >= shared.config.handshake_timeout {
                    tracing::info!(conn = id, "handshake timed out");
                    break;
                }
                let hb = conn.heartbeat();
                if hb > 0 {
                    let interval = Duration::from_secs(hb as u64);
                    if now - last_read >= interval * 2 {
                        tracing::info!(conn = id, "missed heartbeats from client, closing");
                        break;
                    }
                    if now - last_heartbeat >= interval / 2 {
                        last_heartbeat = now;
                        outbox.push(codec::put_heartbeat);
                    }
                }
            }
        }
    }
    conn.release();
    shared.unregister(id);
    outbox.close();
    if abort {
        // Whatever was written stays written; the rest dies with the socket.
        tokio::task::yield_now().await;
        writer.abort();
    }
    let _ = writer.await;
    tracing::debug!(conn = id, "closed");
}

async fn write_loop<W: AsyncWrite>(writer: W, info: Arc<ConnInfo>) {
    let outbox = &info.outbox;
    tokio::pin!(writer);
    loop {
        let data = outbox.take();
        if info.trace.is_on() {
            trace_out(&info, &data);
        }
        if !data.is_empty() {
            let was_backed_up = data.len() > HIGH_WATER;
            if writer.write_all(&data).await.is_err() {
                return;
            }
            if was_backed_up {
                outbox.notify_drained();
            }
            continue;
        }
        if outbox.is_closed() {
            break;
        }
        outbox.wait_ready().await;
        // Let the reader finish the batch it is handling, so that the deliveries
        // a run of acks frees go out in one write rather than one each.
        tokio::task::yield_now().await;
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
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
