//! A frame-level AMQP 0-9-1 client: it sends exact methods and reports exact replies.
//!
//! A general-purpose client hides what the suite must see (it acks closes for us, merges
//! confirms, retries), so scenarios talk through this thin driver instead. One task owns
//! the socket; frames are read only while a scenario waits for something, and each
//! channel keeps its own inbox so that replies on one channel never reorder another's.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::AtomicU16;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, connection, AMQPClass, BasicProperties};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};

use crate::transcript::Shared;

/// How long any single wait may take before it counts as a missing reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a wait on channel 0 (handshake, connection close) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A close sent by the server: `channel.close` or `connection.close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// True for `connection.close`, false for `channel.close`.
    pub connection: bool,
    /// The reply code, e.g. 404.
    pub code: u16,
    /// The reply text, e.g. `NOT_FOUND - no queue 'q' in vhost '/'`.
    pub text: String,
    /// The class id of the method that caused the close.
    pub class_id: u16,
    /// The method id of the method that caused the close.
    pub method_id: u16,
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.connection {
            "connection"
        } else {
            "channel"
        };
        write!(
            f,
            "{what} close {} '{}' ({}.{})",
            self.code, self.text, self.class_id, self.method_id
        )
    }
}

/// Why an operation did not give what the scenario wanted.
#[derive(Clone, Debug)]
pub enum Fail {
    /// The server closed the channel or connection; `during` names the method that was
    /// awaiting its reply, if any, so that a check can compare class and method ids.
    Closed {
        /// The close as received.
        close: Close,
        /// Class and method id of the method whose reply was awaited.
        during: Option<(u16, u16)>,
    },
    /// Anything else: a timeout, an unexpected reply, a failed assertion.
    Other(String),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Closed { close, .. } => write!(f, "got {close}"),
            Fail::Other(msg) => f.write_str(msg),
        }
    }
}

impl Fail {
    /// A failure described by a message.
    pub fn msg(msg: impl Into<String>) -> Self {
        Fail::Other(msg.into())
    }
}

/// The result every scenario helper returns.
pub type R<T = ()> = Result<T, Fail>;

/// Checks on the outcome of an operation that should have been refused.
pub trait Expect<T> {
    /// The operation must have closed its channel with `code`, naming its own method.
    fn channel_closed(self, code: u16) -> R<Close>;
    /// The operation must have closed the connection with `code`, naming its own method.
    fn connection_closed(self, code: u16) -> R<Close>;
    /// The operation must have closed the channel with `code`, naming `class.method`.
    fn channel_closed_at(self, code: u16, class_method: (u16, u16)) -> R<Close>;
    /// The operation must have closed the connection with `code`, naming `class.method`
    /// (0.0 when the server names no method, as for a refused login).
    fn connection_closed_at(self, code: u16, class_method: (u16, u16)) -> R<Close>;
    /// The server must have dropped the socket without a `connection.close`.
    fn dropped(self) -> R<()>;
}

impl<T: fmt::Debug> Expect<T> for R<T> {
    fn channel_closed(self, code: u16) -> R<Close> {
        expect_close(self, false, code)
    }
    fn connection_closed(self, code: u16) -> R<Close> {
        expect_close(self, true, code)
    }
    fn channel_closed_at(self, code: u16, class_method: (u16, u16)) -> R<Close> {
        expect_close(redirect(self, class_method), false, code)
    }
    fn connection_closed_at(self, code: u16, class_method: (u16, u16)) -> R<Close> {
        expect_close(redirect(self, class_method), true, code)
    }
    fn dropped(self) -> R<()> {
        match self {
            Err(Fail::Other(m)) if m.contains(DROPPED) => Ok(()),
            Err(e) => Err(Fail::msg(format!(
                "expected the socket to be dropped, got {e}"
            ))),
            Ok(v) => Err(Fail::msg(format!(
                "expected the socket to be dropped, got {v:?}"
            ))),
        }
    }
}

/// How a dropped socket is reported.
const DROPPED: &str = "connection closed by the server without connection.close";

/// Replaces the method a close is checked against.
fn redirect<T>(res: R<T>, class_method: (u16, u16)) -> R<T> {
    res.map_err(|e| match e {
        Fail::Closed { close, .. } => Fail::Closed {
            close,
            during: Some(class_method),
        },
        other => other,
    })
}

fn expect_close<T: fmt::Debug>(res: R<T>, connection: bool, code: u16) -> R<Close> {
    let what = if connection { "connection" } else { "channel" };
    match res {
        Ok(v) => Err(Fail::msg(format!(
            "expected {what} close {code}, got {v:?}"
        ))),
        Err(Fail::Closed { close, during }) => {
            if close.connection != connection || close.code != code {
                return Err(Fail::msg(format!(
                    "expected {what} close {code}, got {close}"
                )));
            }
            if let Some((class, method)) = during {
                if (close.class_id, close.method_id) != (class, method) {
                    return Err(Fail::msg(format!(
                        "expected {what} close {code} naming {class}.{method}, got {close}"
                    )));
                }
            }
            Ok(close)
        }
        Err(other) => Err(Fail::msg(format!(
            "expected {what} close {code}, got {other}"
        ))),
    }
}

/// A message carried by `basic.deliver`, `basic.get-ok` or `basic.return`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Content {
    /// The content header properties.
    pub props: BasicProperties,
    /// The reassembled body.
    pub body: Vec<u8>,
}

/// Something the server sent on a channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A method without content.
    Method(AMQPClass),
    /// A method followed by a content header and body frames (boxed: bodies are big).
    Content(AMQPClass, Box<Content>),
}

impl Event {
    /// The method of the event.
    pub fn method(&self) -> &AMQPClass {
        match self {
            Event::Method(m) | Event::Content(m, _) => m,
        }
    }

    /// Events the server sends on its own initiative rather than as a reply.
    fn is_async(&self) -> bool {
        matches!(
            self.method(),
            AMQPClass::Basic(
                basic::AMQPMethod::Deliver(_)
                    | basic::AMQPMethod::Return(_)
                    | basic::AMQPMethod::Ack(_)
                    | basic::AMQPMethod::Nack(_)
                    | basic::AMQPMethod::Cancel(_)
            )
        )
    }
}

/// A content-bearing method whose header or body frames are still arriving.
struct Partial {
    method: AMQPClass,
    header: Option<AMQPContentHeader>,
    body: Vec<u8>,
}

/// Options for opening a connection.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    /// Login; `None` takes the URL's.
    pub user: Option<String>,
    /// Password; `None` takes the URL's.
    pub password: Option<String>,
    /// Virtual host; `None` takes the URL's.
    pub vhost: Option<String>,
    /// channel-max sent in tune-ok; `None` echoes the server's.
    pub channel_max: Option<u16>,
    /// frame-max sent in tune-ok; `None` echoes the server's.
    pub frame_max: Option<u32>,
    /// heartbeat sent in tune-ok (0 disables heartbeats, the default here).
    pub heartbeat: u16,
    /// Advertise `authentication_failure_close` so that a bad login gets a close.
    pub auth_failure_close: bool,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        ConnectOpts {
            user: None,
            password: None,
            vhost: None,
            channel_max: None,
            frame_max: None,
            heartbeat: 0,
            auth_failure_close: true,
        }
    }
}

/// Values the server proposed in `connection.tune`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tune {
    /// Proposed channel-max.
    pub channel_max: u16,
    /// Proposed frame-max.
    pub frame_max: u32,
    /// Proposed heartbeat.
    pub heartbeat: u16,
}

/// The state behind one connection; only one waiter holds it at a time.
struct Inner {
    stream: TcpStream,
    rbuf: Vec<u8>,
    inbox: HashMap<u16, VecDeque<Event>>,
    partial: HashMap<u16, Partial>,
    /// A `connection.close` from the server, once seen; every later wait reports it.
    closed: Option<Close>,
    eof: bool,
    /// Whether the connection close has gone into the transcript (it is logged once).
    close_logged: bool,
    frame_max: u32,
    /// Heartbeat frames received so far.
    heartbeats: usize,
    /// The largest frame received so far, in bytes including header and end octet.
    largest_frame: usize,
    /// Channels the server closed, or whose close the server confirmed, since their
    /// last open-ok.
    closed_channels: std::collections::HashSet<u16>,
}

/// One AMQP connection. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct Conn {
    // A tokio mutex because a waiter holds it across socket reads.
    inner: Arc<Mutex<Inner>>,
    shared: Arc<Shared>,
    /// The next channel id `Conn::channel` hands out.
    pub(crate) next_channel: Arc<AtomicU16>,
    /// What the server proposed in `connection.tune`.
    pub tune: Tune,
    /// What the server sent in `connection.start`.
    pub start: Option<connection::Start>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Conn")
    }
}

/// The parts of an AMQP URL the suite needs.
#[derive(Clone, Debug)]
pub struct Url {
    /// host:port
    pub addr: String,
    /// Login.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host, decoded.
    pub vhost: String,
    /// The broker's management HTTP API (`http://host:port`), for the
    /// `http::` scenarios; `None` when there is none to compare.
    pub management: Option<String>,
    /// The RabbitMQ release the broker at this URL is (or imitates), and the
    /// deprecated features permitted or denied on it: what the `versions::`
    /// scenarios expect. 3.10 until [`crate::ctx::detect_version`] says otherwise.
    pub profile: warren_broker::Profile,
}

impl Url {
    /// Parses `amqp://user:pass@host:port/vhost`.
    pub fn parse(url: &str) -> R<Url> {
        let uri: amq_protocol::uri::AMQPUri = url
            .parse()
            .map_err(|e| Fail::msg(format!("bad URL {url}: {e}")))?;
        Ok(Url {
            addr: format!("{}:{}", uri.authority.host, uri.authority.port),
            user: uri.authority.userinfo.username,
            password: uri.authority.userinfo.password,
            vhost: uri.vhost,
            management: None,
            profile: warren_broker::Profile::default(),
        })
    }
}

/// Encodes one frame to bytes (the one encoder every test shares; kept here so
/// that scenarios can go on calling `driver::encode`).
pub use warren_frames::encode;

impl Conn {
    /// Opens a TCP connection and sends nothing yet.
    pub(crate) async fn tcp(url: &Url, shared: Arc<Shared>) -> R<Conn> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(&url.addr))
            .await
            .map_err(|_| Fail::msg(format!("timeout connecting to {}", url.addr)))?
            .map_err(|e| Fail::msg(format!("cannot connect to {}: {e}", url.addr)))?;
        stream.set_nodelay(true).ok();
        Ok(Conn {
            inner: Arc::new(Mutex::new(Inner {
                stream,
                rbuf: Vec::new(),
                inbox: HashMap::new(),
                partial: HashMap::new(),
                closed: None,
                eof: false,
                close_logged: false,
                heartbeats: 0,
                largest_frame: 0,
                closed_channels: Default::default(),
                frame_max: 131_072,
            })),
            shared,
            next_channel: Arc::new(AtomicU16::new(1)),
            tune: Tune::default(),
            start: None,
        })
    }

    /// Runs the handshake: protocol header, start/start-ok, tune/tune-ok, open/open-ok.
    pub(crate) async fn handshake(&mut self, url: &Url, opts: &ConnectOpts) -> R<()> {
        self.send_raw(b"AMQP\x00\x00\x09\x01").await?;
        let start = match self.call_reply(0, None, true).await? {
            Event::Method(AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s,
            other => return Err(unexpected("connection.start", &other)),
        };
        self.start = Some(start);
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "consumer_cancel_notify",
            "basic.nack",
            "exchange_exchange_bindings",
            "per_consumer_qos",
            "connection.blocked",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        if opts.auth_failure_close {
            caps.insert(
                "authentication_failure_close".into(),
                AMQPValue::Boolean(true),
            );
        }
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString("warren-conformance".into()),
        );
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let user = opts.user.clone().unwrap_or_else(|| url.user.clone());
        let password = opts
            .password
            .clone()
            .unwrap_or_else(|| url.password.clone());
        let response = format!("\0{user}\0{password}");
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = match self.call_reply(0, Some((10, 11)), true).await? {
            Event::Method(AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => return Err(unexpected("connection.tune", &other)),
        };
        self.tune = Tune {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: tune.heartbeat,
        };
        let frame_max = opts.frame_max.unwrap_or(tune.frame_max);
        self.inner.lock().await.frame_max = if frame_max == 0 { 131_072 } else { frame_max };
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: opts.channel_max.unwrap_or(tune.channel_max),
                frame_max,
                heartbeat: opts.heartbeat,
            })),
        )
        .await?;
        let vhost = opts.vhost.clone().unwrap_or_else(|| url.vhost.clone());
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: vhost.into(),
            })),
        )
        .await?;
        match self.call_reply(0, Some((10, 40)), true).await? {
            Event::Method(AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => Ok(()),
            other => Err(unexpected("connection.open-ok", &other)),
        }
    }

    /// The transcript and registry this connection reports to.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Writes raw bytes, for malformed-frame scenarios.
    pub async fn send_raw(&self, bytes: &[u8]) -> R<()> {
        let mut inner = self.inner.lock().await;
        write_all(&mut inner, bytes).await
    }

    /// Sends one method frame.
    pub async fn send(&self, channel: u16, method: AMQPClass) -> R<()> {
        self.send_raw(&encode(&AMQPFrame::Method(channel, method)))
            .await
    }

    /// Sends a method with content, splitting the body by the negotiated frame-max.
    pub async fn send_content(
        &self,
        channel: u16,
        method: AMQPClass,
        props: BasicProperties,
        body: &[u8],
    ) -> R<()> {
        let mut inner = self.inner.lock().await;
        let mut bytes = warren_frames::method(channel, method);
        bytes.extend(warren_frames::content(
            channel,
            props,
            body,
            inner.frame_max,
        ));
        write_all(&mut inner, &bytes).await
    }

    /// Waits for the next reply on `channel`, skipping (and keeping) asynchronous events.
    /// `during` names the method awaiting the reply, for close checks.
    pub async fn call_reply(
        &self,
        channel: u16,
        during: Option<(u16, u16)>,
        log: bool,
    ) -> R<Event> {
        // RabbitMQ takes its time to drop a connection that failed its handshake.
        let wait = if channel == 0 {
            HANDSHAKE_TIMEOUT
        } else {
            REPLY_TIMEOUT
        };
        let deadline = Instant::now() + wait;
        let mut inner = self.inner.lock().await;
        loop {
            if let Some(queue) = inner.inbox.get_mut(&channel) {
                if let Some(pos) = queue.iter().position(|e| !e.is_async()) {
                    let event = queue.remove(pos).unwrap_or_else(|| unreachable!());
                    return self.surface(channel, event, during, log);
                }
            }
            if let Some(close) = self.take_close(&mut inner) {
                return Err(Fail::Closed { close, during });
            }
            if inner.eof {
                return Err(Fail::msg(DROPPED));
            }
            read_more(&mut inner, deadline, channel).await?;
        }
    }

    /// Waits for the next asynchronous event accepted by `filter` on `channel`. A channel
    /// or connection close arriving instead is reported as such.
    pub async fn next_async(
        &self,
        channel: u16,
        filter: impl Fn(&Event) -> bool,
        log: bool,
    ) -> R<Event> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut inner = self.inner.lock().await;
        loop {
            if let Some(queue) = inner.inbox.get_mut(&channel) {
                if let Some(pos) = queue.iter().position(|e| {
                    (e.is_async() && filter(e))
                        || matches!(
                            e.method(),
                            AMQPClass::Channel(channel::AMQPMethod::Close(_))
                        )
                }) {
                    let event = queue.remove(pos).unwrap_or_else(|| unreachable!());
                    return self.surface(channel, event, None, log);
                }
            }
            if let Some(close) = self.take_close(&mut inner) {
                return Err(Fail::Closed {
                    close,
                    during: None,
                });
            }
            if inner.eof {
                return Err(Fail::msg(DROPPED));
            }
            read_more(&mut inner, deadline, channel).await?;
        }
    }

    /// Waits for the next event of any kind on `channel`, in the order the server
    /// sent them, for scenarios about that order. A close is reported as such.
    pub async fn next_event(&self, channel: u16) -> R<Event> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut inner = self.inner.lock().await;
        loop {
            if let Some(event) = inner.inbox.get_mut(&channel).and_then(|q| q.pop_front()) {
                return self.surface(channel, event, None, true);
            }
            if let Some(close) = self.take_close(&mut inner) {
                return Err(Fail::Closed {
                    close,
                    during: None,
                });
            }
            if inner.eof {
                return Err(Fail::msg(DROPPED));
            }
            read_more(&mut inner, deadline, channel).await?;
        }
    }

    /// Asynchronous events accepted by `filter` already received on `channel`.
    pub async fn pending(&self, channel: u16, filter: impl Fn(&Event) -> bool) -> usize {
        let inner = self.inner.lock().await;
        inner.inbox.get(&channel).map_or(0, |q| {
            q.iter().filter(|e| e.is_async() && filter(e)).count()
        })
    }

    /// The largest frame received so far (header and end octet included).
    pub async fn largest_frame(&self) -> usize {
        self.inner.lock().await.largest_frame
    }

    /// Waits until the server closes the socket, reporting any `connection.close`.
    pub async fn wait_closed(&self) -> R<Option<Close>> {
        self.wait_closed_within(REPLY_TIMEOUT).await
    }

    /// Like [`Conn::wait_closed`], with a longer or shorter limit.
    pub async fn wait_closed_within(&self, within: Duration) -> R<Option<Close>> {
        let deadline = Instant::now() + within;
        let mut inner = self.inner.lock().await;
        while !inner.eof {
            if let Err(e) = read_more(&mut inner, deadline, 0).await {
                // A connection.close alone settles it even if the socket lingers.
                if inner.closed.is_some() {
                    break;
                }
                return Err(e);
            }
        }
        let close = self.take_close(&mut inner);
        if close.is_none() {
            self.shared.log("socket closed".to_string());
        }
        Ok(close)
    }

    /// The server's connection.close, if any, logged the first time it is reported.
    fn take_close(&self, inner: &mut Inner) -> Option<Close> {
        let close = inner.closed.clone()?;
        if !inner.close_logged {
            inner.close_logged = true;
            self.shared.log(format!("{close}"));
        }
        Some(close)
    }

    /// Waits (up to `within`) for a heartbeat frame from the server.
    pub async fn wait_heartbeat(&self, within: Duration) -> R<()> {
        let deadline = Instant::now() + within;
        let mut inner = self.inner.lock().await;
        let seen = inner.heartbeats;
        while inner.heartbeats == seen {
            if inner.eof || inner.closed.is_some() {
                return Err(Fail::msg("connection closed while waiting for a heartbeat"));
            }
            read_more(&mut inner, deadline, 0).await?;
        }
        Ok(())
    }

    /// Reads raw bytes until the server closes the socket (bounded), for scenarios
    /// where the server answers with something other than frames.
    pub async fn read_to_eof(&self) -> R<Vec<u8>> {
        self.read_to_eof_within(REPLY_TIMEOUT).await
    }

    /// As [`Conn::read_to_eof`], waiting up to `wait`.
    pub async fn read_to_eof_within(&self, wait: Duration) -> R<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut inner = self.inner.lock().await;
        let mut out = std::mem::take(&mut inner.rbuf);
        loop {
            out.reserve(4096);
            match timeout_at(deadline, inner.stream.read_buf(&mut out)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => return Err(Fail::msg("timeout: the server kept the socket open")),
            }
        }
        inner.eof = true;
        Ok(out)
    }

    /// The next frame the server sends, as it comes: nothing is answered (the
    /// driver otherwise answers a `connection.close` with close-ok), and `None`
    /// means the server closed the socket.
    pub async fn next_raw_frame_within(&self, wait: Duration) -> R<Option<AMQPFrame>> {
        let deadline = Instant::now() + wait;
        let mut inner = self.inner.lock().await;
        loop {
            if let Some((frame, _)) = take_frame(&mut inner.rbuf)? {
                return Ok(Some(frame));
            }
            if inner.eof {
                return Ok(None);
            }
            inner.rbuf.reserve(16 * 1024);
            let Inner { stream, rbuf, .. } = &mut *inner;
            match timeout_at(deadline, stream.read_buf(rbuf)).await {
                // A reset counts as the server going away.
                Ok(Ok(0)) | Ok(Err(_)) => inner.eof = true,
                Ok(Ok(_)) => {}
                Err(_) => return Err(Fail::msg("timeout: no frame and the socket still open")),
            }
        }
    }

    /// Takes and logs every event already received on `channel`, the server's
    /// channel.close included, without waiting for more.
    pub async fn drain(&self, channel: u16) -> usize {
        let events: Vec<Event> = {
            let mut inner = self.inner.lock().await;
            inner
                .inbox
                .get_mut(&channel)
                .map(|q| q.drain(..).collect())
                .unwrap_or_default()
        };
        for event in &events {
            // A close comes back as an error; it is logged all the same.
            let _ = self.surface(channel, event.clone(), None, true);
        }
        events.len()
    }

    /// True once channel `id` was closed (by either side) and not reopened.
    pub async fn channel_closed(&self, id: u16) -> bool {
        self.inner.lock().await.closed_channels.contains(&id)
    }

    /// True once the server sent `connection.close` or closed the socket.
    pub async fn is_closed(&self) -> bool {
        let inner = self.inner.lock().await;
        inner.closed.is_some() || inner.eof
    }

    /// Logs a received event and turns closes into failures.
    fn surface(
        &self,
        channel: u16,
        event: Event,
        during: Option<(u16, u16)>,
        log: bool,
    ) -> R<Event> {
        let is_close = matches!(
            event.method(),
            AMQPClass::Channel(channel::AMQPMethod::Close(_))
        );
        if log || is_close {
            self.shared.log(format!("ch{channel} {}", describe(&event)));
        }
        if let AMQPClass::Channel(channel::AMQPMethod::Close(c)) = event.method() {
            return Err(Fail::Closed {
                close: Close {
                    connection: false,
                    code: c.reply_code,
                    text: c.reply_text.to_string(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                },
                during,
            });
        }
        Ok(event)
    }

    /// Closes the connection politely, waiting for close-ok (bounded).
    pub async fn close(&self) -> R<()> {
        if self.is_closed().await {
            return Ok(());
        }
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        )
        .await?;
        match self.call_reply(0, Some((10, 50)), true).await? {
            Event::Method(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                // The side that sent close closes the socket once close-ok arrives.
                let mut inner = self.inner.lock().await;
                inner.eof = true;
                let _ = inner.stream.shutdown().await;
                Ok(())
            }
            other => Err(unexpected("connection.close-ok", &other)),
        }
    }
}

async fn write_all(inner: &mut Inner, bytes: &[u8]) -> R<()> {
    match tokio::time::timeout(REPLY_TIMEOUT, inner.stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            if let Some(close) = inner.closed.clone() {
                return Err(Fail::Closed {
                    close,
                    during: None,
                });
            }
            Err(Fail::msg(format!("write failed: {e}")))
        }
        Err(_) => Err(Fail::msg("timeout writing to the server")),
    }
}

/// Reads at least one frame (or EOF) and files it into the inboxes.
async fn read_more(inner: &mut Inner, deadline: Instant, waiting_on: u16) -> R<()> {
    loop {
        if let Some((frame, size)) = take_frame(&mut inner.rbuf)? {
            inner.largest_frame = inner.largest_frame.max(size);
            return file_frame(inner, frame).await;
        }
        // read_buf appends to the heap buffer; a stack array would bloat every future.
        inner.rbuf.reserve(16 * 1024);
        let Inner { stream, rbuf, .. } = &mut *inner;
        let n = match timeout_at(deadline, stream.read_buf(rbuf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0, // a reset counts as the server going away
            Err(_) => {
                return Err(Fail::msg(format!(
                    "timeout waiting for a reply on channel {waiting_on}"
                )))
            }
        };
        if n == 0 {
            inner.eof = true;
            return Ok(());
        }
    }
}

/// Cuts one complete frame off the front of `rbuf`, if there is one, with its size.
fn take_frame(rbuf: &mut Vec<u8>) -> R<Option<(AMQPFrame, usize)>> {
    let before = rbuf.len();
    match warren_frames::take_frame(rbuf) {
        Ok(frame) => Ok(frame.map(|f| (f, before - rbuf.len()))),
        // The server answered our protocol header with its own: it refuses the version.
        Err(warren_frames::TakeError::ProtocolHeader(header)) => {
            Err(Fail::msg(format!("server sent protocol header {header:?}")))
        }
        Err(warren_frames::TakeError::Unparsable { error, .. }) => Err(Fail::msg(format!(
            "server sent an unparsable frame: {error}"
        ))),
    }
}

async fn file_frame(inner: &mut Inner, frame: AMQPFrame) -> R<()> {
    match frame {
        AMQPFrame::Method(ch, method) => {
            if warren_frames::carries_content(&method) {
                inner.partial.insert(
                    ch,
                    Partial {
                        method,
                        header: None,
                        body: Vec::new(),
                    },
                );
                return Ok(());
            }
            match &method {
                AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                    inner.closed = Some(Close {
                        connection: true,
                        code: c.reply_code,
                        text: c.reply_text.to_string(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    });
                    let ok = AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                        connection::CloseOk {},
                    ));
                    // The server may already have gone; the close itself is what counts.
                    let _ = write_all(inner, &encode(&AMQPFrame::Method(0, ok))).await;
                    return Ok(());
                }
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => {
                    inner.closed_channels.remove(&ch);
                }
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    inner.closed_channels.insert(ch);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    inner.closed_channels.insert(ch);
                    let ok = AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}));
                    write_all(inner, &encode(&AMQPFrame::Method(ch, ok))).await?;
                }
                _ => {}
            }
            inner
                .inbox
                .entry(ch)
                .or_default()
                .push_back(Event::Method(method));
        }
        AMQPFrame::Header(ch, header) => {
            let Some(p) = inner.partial.get_mut(&ch) else {
                return Err(Fail::msg(format!(
                    "server sent a content header on channel {ch} with no method"
                )));
            };
            p.header = Some(header);
            complete(inner, ch);
        }
        AMQPFrame::Body(ch, data) => {
            let Some(p) = inner.partial.get_mut(&ch) else {
                return Err(Fail::msg(format!(
                    "server sent a body frame on channel {ch} with no method"
                )));
            };
            p.body.extend(data);
            complete(inner, ch);
        }
        AMQPFrame::Heartbeat | AMQPFrame::InvalidHeartbeat(_) => inner.heartbeats += 1,
        AMQPFrame::ProtocolHeader(_) => {
            return Err(Fail::msg("server sent a protocol header"));
        }
    }
    Ok(())
}

fn complete(inner: &mut Inner, ch: u16) {
    let done = match inner.partial.get(&ch) {
        Some(Partial {
            header: Some(h),
            body,
            ..
        }) => body.len() as u64 >= h.body_size,
        _ => false,
    };
    if done {
        if let Some(p) = inner.partial.remove(&ch) {
            let props = p.header.map(|h| h.properties).unwrap_or_default();
            let event = Event::Content(
                p.method,
                Box::new(Content {
                    props,
                    body: p.body,
                }),
            );
            inner.inbox.entry(ch).or_default().push_back(event);
        }
    }
}

/// A failure for a reply that was not the one awaited.
pub fn unexpected(wanted: &str, got: &Event) -> Fail {
    Fail::msg(format!("expected {wanted}, got {}", describe(got)))
}

fn s(v: &ShortString) -> &str {
    v.as_str()
}

/// One transcript line for an event.
pub fn describe(event: &Event) -> String {
    use amq_protocol::protocol::{confirm, exchange, queue, tx};
    let m = match event.method() {
        AMQPClass::Connection(connection::AMQPMethod::Start(_)) => "connection.start".into(),
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => format!(
            "connection.tune channel_max={} frame_max={} heartbeat={}",
            t.channel_max, t.frame_max, t.heartbeat
        ),
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => "connection.open-ok".into(),
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => "connection.close-ok".into(),
        AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => "channel.open-ok".into(),
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => "channel.close-ok".into(),
        AMQPClass::Channel(channel::AMQPMethod::FlowOk(f)) => format!("channel.flow-ok active={}", f.active),
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => format!(
            "channel.close {} '{}' ({}.{})",
            c.reply_code, c.reply_text, c.class_id, c.method_id
        ),
        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)) => "exchange.declare-ok".into(),
        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(_)) => "exchange.delete-ok".into(),
        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(_)) => "exchange.bind-ok".into(),
        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(_)) => "exchange.unbind-ok".into(),
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(d)) => format!(
            "queue.declare-ok queue={} messages={} consumers={}",
            s(&d.queue),
            d.message_count,
            d.consumer_count
        ),
        AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => "queue.bind-ok".into(),
        AMQPClass::Queue(queue::AMQPMethod::UnbindOk(_)) => "queue.unbind-ok".into(),
        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(p)) => {
            format!("queue.purge-ok messages={}", p.message_count)
        }
        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(d)) => {
            format!("queue.delete-ok messages={}", d.message_count)
        }
        AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => "basic.qos-ok".into(),
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(c)) => {
            format!("basic.consume-ok tag={}", s(&c.consumer_tag))
        }
        AMQPClass::Basic(basic::AMQPMethod::CancelOk(c)) => {
            format!("basic.cancel-ok tag={}", s(&c.consumer_tag))
        }
        AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
            format!("basic.cancel tag={} nowait={}", s(&c.consumer_tag), c.nowait)
        }
        AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => format!(
            "basic.deliver tag={} delivery_tag={} redelivered={} exchange={} routing_key={}",
            s(&d.consumer_tag),
            d.delivery_tag,
            d.redelivered,
            s(&d.exchange),
            s(&d.routing_key)
        ),
        AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) => format!(
            "basic.get-ok delivery_tag={} redelivered={} exchange={} routing_key={} message_count={}",
            g.delivery_tag,
            g.redelivered,
            s(&g.exchange),
            s(&g.routing_key),
            g.message_count
        ),
        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_)) => "basic.get-empty".into(),
        AMQPClass::Basic(basic::AMQPMethod::Return(r)) => format!(
            "basic.return {} '{}' exchange={} routing_key={}",
            r.reply_code,
            r.reply_text,
            s(&r.exchange),
            s(&r.routing_key)
        ),
        AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
            format!("basic.ack delivery_tag={} multiple={}", a.delivery_tag, a.multiple)
        }
        AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => format!(
            "basic.nack delivery_tag={} multiple={} requeue={}",
            n.delivery_tag, n.multiple, n.requeue
        ),
        AMQPClass::Basic(basic::AMQPMethod::RecoverOk(_)) => "basic.recover-ok".into(),
        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => "confirm.select-ok".into(),
        AMQPClass::Tx(tx::AMQPMethod::SelectOk(_)) => "tx.select-ok".into(),
        AMQPClass::Tx(tx::AMQPMethod::CommitOk(_)) => "tx.commit-ok".into(),
        AMQPClass::Tx(tx::AMQPMethod::RollbackOk(_)) => "tx.rollback-ok".into(),
        other => format!(
            "method {}.{}",
            other.get_amqp_class_id(),
            other.get_amqp_method_id()
        ),
    };
    match event {
        Event::Method(_) => m,
        Event::Content(_, c) => format!("{m} body={}{}", body(&c.body), props(&c.props)),
    }
}

/// A body as text, or its size and a checksum when it is too long to read.
fn body(bytes: &[u8]) -> String {
    if bytes.len() <= 64 {
        return format!("{:?}", String::from_utf8_lossy(bytes));
    }
    // FNV-1a: enough to tell two large bodies apart in a transcript.
    let sum = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("<{} bytes fnv={sum:016x}>", bytes.len())
}

/// The properties that were set, in a stable order.
fn props(p: &BasicProperties) -> String {
    let mut out = String::new();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push_str(&format!(" {k}={v}"));
        }
    };
    add(
        "content_type",
        p.content_type().as_ref().map(|v| v.to_string()),
    );
    add(
        "content_encoding",
        p.content_encoding().as_ref().map(|v| v.to_string()),
    );
    add("headers", p.headers().as_ref().map(fmt_table));
    add("delivery_mode", p.delivery_mode().map(|v| v.to_string()));
    add("priority", p.priority().map(|v| v.to_string()));
    add(
        "correlation_id",
        p.correlation_id().as_ref().map(|v| v.to_string()),
    );
    add("reply_to", p.reply_to().as_ref().map(|v| v.to_string()));
    add("expiration", p.expiration().as_ref().map(|v| v.to_string()));
    add("message_id", p.message_id().as_ref().map(|v| v.to_string()));
    add("timestamp", p.timestamp().map(|v| v.to_string()));
    add("type", p.kind().as_ref().map(|v| v.to_string()));
    add("user_id", p.user_id().as_ref().map(|v| v.to_string()));
    add("app_id", p.app_id().as_ref().map(|v| v.to_string()));
    add("cluster_id", p.cluster_id().as_ref().map(|v| v.to_string()));
    out
}

/// A field table as text, keys in sorted order, strings readable (so that names in them
/// are normalized like the rest of a transcript line): `{k: "text", n: LongLongInt(1)}`.
pub fn fmt_table(t: &amq_protocol::types::FieldTable) -> String {
    let items: Vec<String> = t
        .inner()
        .iter()
        .map(|(k, v)| format!("{}: {}", k.as_str(), fmt_value(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// A field value as text: strings quoted (long strings with an `S` before the quote),
/// arrays and tables recursively, everything else as its Debug form.
pub fn fmt_value(v: &amq_protocol::types::AMQPValue) -> String {
    use amq_protocol::types::AMQPValue as V;
    match v {
        V::LongString(s) => format!("S{:?}", String::from_utf8_lossy(s.as_bytes())),
        V::ShortString(s) => format!("s{:?}", s.as_str()),
        V::FieldTable(t) => fmt_table(t),
        V::FieldArray(a) => {
            let items: Vec<String> = a.as_slice().iter().map(fmt_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => format!("{other:?}"),
    }
}
