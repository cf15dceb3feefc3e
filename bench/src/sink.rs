//! A peer that does no broker work: it completes the AMQP handshake, counts the
//! publishes it reads per queue (a passive `queue.declare` answers with that count),
//! and serves a consumer from an endless supply of 16 B deliveries, as many
//! unacked as its prefetch allows; a consumer of a queue bound to an exchange gets
//! as many as the exchange was sent (the fan-out loads). The bench's own loads run
//! against it unchanged, and what they reach is the client's ceiling: the most any
//! broker could show with that client.
//!
//! It runs on plain threads with blocking sockets, one per connection, so that it
//! never waits for the bench's async runtime: the figure is the client's alone.
//! After a read that did not fill its buffer it sleeps a millisecond before the
//! next: a reader parked on the socket makes every write of the client pay for
//! waking it, which is a cost of the reader, not of the client (Warren batches its
//! reads while a client streams for the same reason; see the broker's `pacing`
//! module). A read waits a millisecond at most, and a consumer's window is
//! refilled after each, so a prefetch of 1000 keeps a client below a million
//! deliveries a second fed. A channel in confirm mode is answered once per read,
//! with one `basic.ack` (multiple) for every publish that read brought: the fewest
//! frames a broker could confirm with.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::procs::Result;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_END: u8 = 0xCE;
/// A consumer with no prefetch limit gets this many unacked deliveries at most.
const UNLIMITED_WINDOW: usize = 1000;

/// What every connection has seen, shared between them.
#[derive(Default)]
struct Book {
    /// Publishes read so far, per routing key (the queue's name through the
    /// default exchange).
    depths: HashMap<String, u64>,
    /// Publishes read so far, per exchange other than the default.
    published: HashMap<String, u64>,
    /// The exchange each queue is bound to.
    bound: HashMap<String, String>,
}

type Depths = Arc<Mutex<Book>>;

/// Listens on a free port and serves every connection until the process ends.
pub fn start() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr()?;
    let depths = Depths::default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let depths = depths.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &depths);
            });
        }
    });
    Ok(format!("amqp://guest:guest@{addr}/%2f"))
}

fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

fn method(out: &mut Vec<u8>, channel: u16, class: u16, method: u16, args: &[u8]) {
    let mut p = Vec::with_capacity(4 + args.len());
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(out, FRAME_METHOD, channel, &p);
}

fn long_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn short_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// A method's arguments, read front to back; a short read yields empty values,
/// which only a malformed client would see.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u16(&mut self) -> u16 {
        self.take(2).iter().fold(0, |v, b| v << 8 | u16::from(*b))
    }
    fn u64(&mut self) -> u64 {
        self.take(8).iter().fold(0, |v, b| v << 8 | u64::from(*b))
    }
    fn short_str(&mut self) -> &'a [u8] {
        let n = self.take(1).first().copied().unwrap_or(0);
        self.take(n.into())
    }
}

/// One consumer: what it is called, on which queue, and what it holds unacked.
struct Consumer {
    channel: u16,
    tag: Vec<u8>,
    queue: Vec<u8>,
    window: usize,
    unacked: HashSet<u64>,
    /// Deliveries so far, and the most it may have: what its queue's exchange
    /// was sent, or no bound through the default exchange.
    sent: u64,
    limit: u64,
}

/// Per connection: the last delivery tag per channel, the channels' prefetch, and
/// the consumers being fed.
#[derive(Default)]
struct Conn {
    prefetch: HashMap<u16, usize>,
    tags: HashMap<u16, u64>,
    consumers: Vec<Consumer>,
    generated: u64,
    /// Publishes read so far on each channel in confirm mode.
    confirming: HashMap<u16, u64>,
    /// Channels in confirm mode that published since their last ack.
    unconfirmed: Vec<u16>,
}

impl Conn {
    /// Tops every consumer's window up with deliveries.
    fn deliver(&mut self, out: &mut Vec<u8>) {
        let mut header = Vec::with_capacity(14);
        header.extend_from_slice(&60u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&16u64.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        for c in &mut self.consumers {
            let tag = self.tags.entry(c.channel).or_default();
            while c.unacked.len() < c.window && c.sent < c.limit {
                c.sent += 1;
                *tag += 1;
                c.unacked.insert(*tag);
                let mut args = Vec::with_capacity(32 + c.tag.len() + c.queue.len());
                short_str(&mut args, &c.tag);
                args.extend_from_slice(&tag.to_be_bytes());
                args.push(0);
                short_str(&mut args, b"");
                short_str(&mut args, &c.queue);
                method(out, c.channel, 60, 60, &args);
                frame(out, FRAME_HEADER, c.channel, &header);
                frame(out, FRAME_BODY, c.channel, &[b'x'; 16]);
            }
        }
    }

    /// One `basic.ack` with multiple set per channel that published since the last.
    fn confirm(&mut self, out: &mut Vec<u8>) {
        for channel in self.unconfirmed.drain(..) {
            let mut args = self.confirming[&channel].to_be_bytes().to_vec();
            args.push(1);
            method(out, channel, 60, 80, &args);
        }
    }

    fn ack(&mut self, channel: u16, tag: u64, multiple: bool) {
        for c in self.consumers.iter_mut().filter(|c| c.channel == channel) {
            if multiple {
                c.unacked.retain(|t| *t > tag);
            } else {
                c.unacked.remove(&tag);
            }
        }
    }
}

fn serve(mut stream: TcpStream, depths: &Depths) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(std::time::Duration::from_millis(1)))?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    // connection.start: 0-9, no server properties, PLAIN, en_US.
    let mut start = vec![0, 9];
    long_str(&mut start, b"");
    long_str(&mut start, b"PLAIN");
    long_str(&mut start, b"en_US");
    let mut hello = Vec::new();
    method(&mut hello, 0, 10, 10, &start);
    stream.write_all(&hello)?;

    let mut conn = Conn::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(512 * 1024);
    loop {
        // A consumer that waits for a fan-out's publishes sends nothing meanwhile:
        // its connection must not wait for it to, or it would never be fed.
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(e) => return Err(e.into()),
        };
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        let mut replies = Vec::new();
        while pending.len() - at >= 7 {
            let size = u32::from_be_bytes(pending[at + 3..at + 7].try_into()?) as usize;
            if pending.len() - at < 8 + size {
                break;
            }
            let kind = pending[at];
            let channel = u16::from_be_bytes([pending[at + 1], pending[at + 2]]);
            let payload = &pending[at + 7..at + 7 + size];
            at += 8 + size;
            if kind != FRAME_METHOD || size < 4 {
                continue;
            }
            let mut a = Args(payload);
            let (class, id) = (a.u16(), a.u16());
            match (class, id) {
                // start-ok -> tune: 2047 channels, 128 KiB frames, no heartbeat.
                (10, 11) => {
                    let mut tune = Vec::new();
                    tune.extend_from_slice(&2047u16.to_be_bytes());
                    tune.extend_from_slice(&131_072u32.to_be_bytes());
                    tune.extend_from_slice(&0u16.to_be_bytes());
                    method(&mut replies, 0, 10, 30, &tune);
                }
                (10, 40) => method(&mut replies, 0, 10, 41, &[0]),
                (10, 50) => {
                    method(&mut replies, 0, 10, 51, &[]);
                    stream.write_all(&replies)?;
                    return Ok(());
                }
                (20, 10) => method(&mut replies, channel, 20, 11, &[0, 0, 0, 0]),
                // exchange.declare: declare-ok unless no-wait.
                (40, 10) => {
                    a.u16();
                    a.short_str();
                    a.short_str();
                    if !a.take(1).first().is_some_and(|bits| bits & 0x10 != 0) {
                        method(&mut replies, channel, 40, 11, &[]);
                    }
                }
                (20, 40) => {
                    conn.consumers.retain(|c| c.channel != channel);
                    method(&mut replies, channel, 20, 41, &[]);
                }
                // queue.declare -> declare-ok with the publishes read for that name.
                (50, 10) => {
                    a.u16();
                    let queue = a.short_str();
                    let no_wait = a.take(1).first().is_some_and(|bits| bits & 0x10 != 0);
                    let count = depths
                        .lock()
                        .map_err(|_| "depths poisoned")?
                        .depths
                        .get(&*String::from_utf8_lossy(queue))
                        .copied()
                        .unwrap_or(0);
                    if !no_wait {
                        let mut ok = Vec::new();
                        short_str(&mut ok, queue);
                        ok.extend_from_slice(&(count.min(u32::MAX.into()) as u32).to_be_bytes());
                        ok.extend_from_slice(&0u32.to_be_bytes());
                        method(&mut replies, channel, 50, 11, &ok);
                    }
                }
                // queue.bind: bind-ok unless no-wait. The queue's consumers get
                // no more than the exchange was sent.
                (50, 20) => {
                    a.u16();
                    let queue = String::from_utf8_lossy(a.short_str()).into_owned();
                    let exchange = String::from_utf8_lossy(a.short_str()).into_owned();
                    a.short_str();
                    depths
                        .lock()
                        .map_err(|_| "depths poisoned")?
                        .bound
                        .insert(queue, exchange);
                    if !a.take(1).first().is_some_and(|bits| bits & 1 != 0) {
                        method(&mut replies, channel, 50, 21, &[]);
                    }
                }
                // basic.qos: prefetch-size, prefetch-count.
                (60, 10) => {
                    a.take(4);
                    conn.prefetch.insert(channel, a.u16().into());
                    method(&mut replies, channel, 60, 11, &[]);
                }
                // basic.consume: its tag is the client's, or one made up.
                (60, 20) => {
                    a.u16();
                    let queue = a.short_str().to_vec();
                    let mut tag = a.short_str().to_vec();
                    if tag.is_empty() {
                        conn.generated += 1;
                        tag = format!("amq.ctag-sink-{}", conn.generated).into_bytes();
                    }
                    let no_wait = a.take(1).first().is_some_and(|bits| bits & 0x08 != 0);
                    if !no_wait {
                        let mut ok = Vec::new();
                        short_str(&mut ok, &tag);
                        method(&mut replies, channel, 60, 21, &ok);
                    }
                    let window = match conn.prefetch.get(&channel) {
                        Some(&p) if p > 0 => p,
                        _ => UNLIMITED_WINDOW,
                    };
                    conn.consumers.push(Consumer {
                        channel,
                        tag,
                        queue,
                        window,
                        unacked: HashSet::new(),
                        sent: 0,
                        limit: u64::MAX,
                    });
                }
                // basic.cancel: no more deliveries, and cancel-ok unless no-wait.
                (60, 30) => {
                    let tag = a.short_str().to_vec();
                    conn.consumers.retain(|c| c.tag != tag);
                    if !a.take(1).first().is_some_and(|bits| bits & 1 != 0) {
                        let mut ok = Vec::new();
                        short_str(&mut ok, &tag);
                        method(&mut replies, channel, 60, 31, &ok);
                    }
                }
                (60, 40) => {
                    a.u16();
                    let exchange = String::from_utf8_lossy(a.short_str()).into_owned();
                    let queue = String::from_utf8_lossy(a.short_str()).into_owned();
                    let mut book = depths.lock().map_err(|_| "depths poisoned")?;
                    if exchange.is_empty() {
                        *book.depths.entry(queue).or_default() += 1;
                    } else {
                        *book.published.entry(exchange).or_default() += 1;
                    }
                    drop(book);
                    if let Some(count) = conn.confirming.get_mut(&channel) {
                        *count += 1;
                        if !conn.unconfirmed.contains(&channel) {
                            conn.unconfirmed.push(channel);
                        }
                    }
                }
                // confirm.select: select-ok unless no-wait.
                (85, 10) => {
                    conn.confirming.entry(channel).or_default();
                    if !a.take(1).first().is_some_and(|bits| bits & 1 != 0) {
                        method(&mut replies, channel, 85, 11, &[]);
                    }
                }
                (60, 80) => {
                    let tag = a.u64();
                    let multiple = a.take(1).first().is_some_and(|bits| bits & 1 != 0);
                    conn.ack(channel, tag, multiple);
                }
                _ => {}
            }
        }
        pending.drain(..at);
        conn.confirm(&mut replies);
        if !conn.consumers.is_empty() {
            let book = depths.lock().map_err(|_| "depths poisoned")?;
            for c in &mut conn.consumers {
                if let Some(exchange) = book.bound.get(&*String::from_utf8_lossy(&c.queue)) {
                    c.limit = book.published.get(exchange).copied().unwrap_or(0);
                }
            }
        }
        conn.deliver(&mut replies);
        if !replies.is_empty() {
            stream.write_all(&replies)?;
        }
        // A full buffer means more is waiting: read it before sleeping, or a client
        // sending large messages would be held to one buffer a millisecond.
        if n > 0 && n < buf.len() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
