//! Opening, tuning and closing a connection; the handle that channels share.
//!
//! The handshake (protocol header, start/start-ok, tune/tune-ok, open/open-ok) runs
//! inline on the caller's task, step by step. Once it succeeds the stream is handed to
//! one background task (see [`crate::io`]) that owns it for the rest of the connection.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use amq_protocol::{
    protocol::{connection, AMQPClass},
    types::{AMQPValue, FieldTable, LongString},
};
use bytes::BytesMut;
use rustc_hash::FxHashMap;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
};

use crate::{
    channel::Channel,
    codec::{self, short, Frame},
    error::{close_reason, Error, Result},
    io,
    state::{BufPool, ConnState, Handle, Tuned, OUTGOING_QUEUE},
    url::ConnectionConfig,
};

/// Frame size proposed when neither side limits it (RabbitMQ's default too).
const DEFAULT_FRAME_MAX: u32 = 131_072;
/// Used when the config sets no `connection_timeout`, so that a broker that never
/// answers cannot hang a test forever.
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to an AMQP 0-9-1 broker. Clones share it.
///
/// Dropping every clone (and every channel, consumer and delivery) closes it politely.
#[derive(Clone)]
pub struct Connection {
    handle: Handle,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("tuned", &self.handle.conn.tuned)
            .field("closed", &*self.handle.conn.closed.borrow())
            .finish()
    }
}

impl Connection {
    /// Connect over TCP to an `amqp://` URL.
    pub async fn connect(url: &str) -> Result<Connection> {
        Self::connect_with(&url.parse()?).await
    }

    /// Connect over TCP with a parsed config.
    pub async fn connect_with(config: &ConnectionConfig) -> Result<Connection> {
        let limit = config
            .connection_timeout
            .unwrap_or(DEFAULT_CONNECTION_TIMEOUT);
        tokio::time::timeout(limit, async {
            let stream = TcpStream::connect((config.host.as_str(), config.port)).await?;
            stream.set_nodelay(true)?;
            Self::handshake(stream, config).await
        })
        .await
        .map_err(|_| Error::Timeout)?
    }

    /// Open a connection over an existing stream (a socket, or Warren's in-process
    /// stream) as guest/guest on vhost `/`.
    pub async fn open<S>(stream: S) -> Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::open_with(stream, &ConnectionConfig::default()).await
    }

    /// Open a connection over an existing stream with the credentials, vhost and tune
    /// proposals of `config` (its host and port are not used).
    pub async fn open_with<S>(stream: S, config: &ConnectionConfig) -> Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let limit = config
            .connection_timeout
            .unwrap_or(DEFAULT_CONNECTION_TIMEOUT);
        tokio::time::timeout(limit, Self::handshake(stream, config))
            .await
            .map_err(|_| Error::Timeout)?
    }

    async fn handshake<S>(mut stream: S, config: &ConnectionConfig) -> Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut out = BytesMut::new();
        let mut input = BytesMut::with_capacity(8192);
        codec::encode_protocol_header(&mut out);
        stream.write_all(&out).await?;
        out.clear();

        let start = match read_connection_method(&mut stream, &mut input).await? {
            connection::AMQPMethod::Start(start) => start,
            other => return Err(unexpected("connection.start", &other)),
        };
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
        if !mechanisms.split(' ').any(|m| m == "PLAIN") {
            return Err(Error::Protocol {
                code: 503,
                message: format!("broker offers no PLAIN authentication: {mechanisms}"),
            });
        }
        let response = format!("\0{}\0{}", config.username, config.password);
        send_method(
            &mut stream,
            &mut out,
            connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_properties(config),
                mechanism: "PLAIN".into(),
                response: LongString::from(response.into_bytes()),
                locale: "en_US".into(),
            }),
        )
        .await?;

        let tune = match read_connection_method(&mut stream, &mut input).await? {
            connection::AMQPMethod::Tune(tune) => tune,
            other => return Err(unexpected("connection.tune", &other)),
        };
        let tuned = negotiate(&tune, config, start.server_properties);
        send_method(
            &mut stream,
            &mut out,
            connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tuned.channel_max,
                frame_max: tuned.frame_max,
                heartbeat: tuned.heartbeat,
            }),
        )
        .await?;
        send_method(
            &mut stream,
            &mut out,
            connection::AMQPMethod::Open(connection::Open {
                virtual_host: short(&config.vhost)?,
            }),
        )
        .await?;
        match read_connection_method(&mut stream, &mut input).await? {
            connection::AMQPMethod::OpenOk(_) => {}
            other => return Err(unexpected("connection.open-ok", &other)),
        }

        let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
        let conn = Arc::new(ConnState {
            tuned,
            channels: Mutex::new(FxHashMap::default()),
            closed: watch::channel(None).0,
            blocked: watch::channel(false).0,
            closing: AtomicBool::new(false),
            close_timeout: config
                .connection_timeout
                .unwrap_or(DEFAULT_CONNECTION_TIMEOUT),
            task: Mutex::new(None),
            spare: BufPool::default(),
        });
        let task = tokio::spawn(io::run(stream, input, conn.clone(), out_rx));
        *conn.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        Ok(Connection {
            handle: Handle { out: out_tx, conn },
        })
    }

    /// Open a new channel.
    pub async fn create_channel(&self) -> Result<Channel> {
        if self.handle.conn.closing.load(Ordering::Acquire) {
            return Err(Error::ConnectionClosedByClient);
        }
        if let Some(err) = self.handle.conn.closed.borrow().clone() {
            return Err(err);
        }
        Channel::open(self.handle.clone()).await
    }

    /// Close the connection (`200 OK`) and wait for the broker's `close-ok`.
    ///
    /// Messages published before the call are written first. Returns the broker's error
    /// if the connection had already failed.
    pub async fn close(&self) -> Result<()> {
        self.close_with(200, "OK").await
    }

    /// Close with a chosen reply code and text.
    pub async fn close_with(&self, reply_code: u16, reply_text: &str) -> Result<()> {
        let mut buf = BytesMut::new();
        codec::encode_method(
            &mut buf,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code,
                reply_text: short(reply_text)?,
                class_id: 0,
                method_id: 0,
            })),
        )?;
        let first = !self.handle.conn.closing.swap(true, Ordering::AcqRel);
        if first && self.handle.conn.closed.borrow().is_none() {
            // A failed send means the task already ended; `closed()` says why.
            let _ = self.handle.out.send(buf).await;
        }
        let conn = &self.handle.conn;
        match tokio::time::timeout(conn.close_timeout, self.closed()).await {
            Ok(Error::ConnectionClosedByClient) => Ok(()),
            Ok(err) => Err(err),
            Err(_) => {
                // No close-ok (a broker that stopped reading, say): drop the socket so
                // nothing waits forever, and fail what still waits on the connection.
                tracing::warn!("no close-ok from the broker; dropping the connection");
                if let Some(task) = conn.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    task.abort();
                }
                conn.finish(Error::Timeout);
                Err(Error::Timeout)
            }
        }
    }

    /// Wait until the connection is closed, and say why.
    pub async fn closed(&self) -> Error {
        let mut rx = self.handle.conn.closed.subscribe();
        let closed = match rx.wait_for(|c| c.is_some()).await {
            Ok(c) => c.clone(),
            Err(_) => None,
        };
        closed.unwrap_or(Error::ConnectionClosedByClient)
    }

    /// True until the connection closes or fails.
    pub fn is_open(&self) -> bool {
        self.handle.conn.closed.borrow().is_none()
            && !self.handle.conn.closing.load(Ordering::Acquire)
    }

    /// True while the broker has blocked publishing (`connection.blocked`); publishes
    /// wait until it unblocks.
    pub fn is_blocked(&self) -> bool {
        *self.handle.conn.blocked.borrow()
    }

    /// Negotiated largest frame, in bytes.
    pub fn frame_max(&self) -> u32 {
        self.handle.conn.tuned.frame_max
    }

    /// Negotiated highest channel id.
    pub fn channel_max(&self) -> u16 {
        self.handle.conn.tuned.channel_max
    }

    /// Negotiated heartbeat interval in seconds (0: none).
    pub fn heartbeat(&self) -> u16 {
        self.handle.conn.tuned.heartbeat
    }

    /// What the broker said about itself in `connection.start` (product, version,
    /// capabilities).
    pub fn server_properties(&self) -> &FieldTable {
        &self.handle.conn.tuned.server_properties
    }
}

/// Pick each tune value: the lower of two limits where 0 means "no limit"; heartbeat is
/// the client's wish when it has one (0 disables), else the broker's proposal.
pub(crate) fn negotiate(
    tune: &connection::Tune,
    config: &ConnectionConfig,
    server_properties: FieldTable,
) -> Tuned {
    fn limit<T: Ord + Copy + Default>(server: T, client: Option<T>, none: T) -> T {
        let zero = T::default();
        match (server, client.unwrap_or(zero)) {
            (s, c) if s == zero && c == zero => none,
            (s, c) if s == zero => c,
            (s, c) if c == zero => s,
            (s, c) => s.min(c),
        }
    }
    Tuned {
        channel_max: limit(tune.channel_max, config.channel_max, u16::MAX),
        frame_max: limit(tune.frame_max, config.frame_max, DEFAULT_FRAME_MAX)
            .max(codec::FRAME_MIN_SIZE),
        heartbeat: config.heartbeat.unwrap_or(tune.heartbeat),
        server_properties,
    }
}

fn client_properties(config: &ConnectionConfig) -> FieldTable {
    let mut capabilities = FieldTable::default();
    // Only what this client implements: each one changes what the broker sends us.
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    props.insert("product".into(), text("warren-client"));
    props.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), text("Rust"));
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    if let Some(name) = &config.connection_name {
        props.insert("connection_name".into(), text(name));
    }
    props
}

fn unexpected(wanted: &str, got: &connection::AMQPMethod) -> Error {
    if let connection::AMQPMethod::Close(close) = got {
        return Error::ConnectionClosed(close_reason(close));
    }
    Error::Protocol {
        code: 503,
        message: format!("expected {wanted}, got {got:?}"),
    }
}

async fn send_method<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    method: connection::AMQPMethod,
) -> Result<()> {
    codec::encode_method(buf, 0, AMQPClass::Connection(method))?;
    stream.write_all(buf).await?;
    buf.clear();
    Ok(())
}

/// The next connection method of the handshake. A `connection.close` (bad credentials,
/// unknown vhost) is answered with `close-ok`, as the spec asks, and returned as the error.
async fn read_connection_method<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<connection::AMQPMethod> {
    loop {
        match codec::decode(buf, DEFAULT_FRAME_MAX)? {
            Some(Frame::Heartbeat) => continue,
            Some(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(close)))) => {
                let mut out = BytesMut::new();
                // Best effort: the broker may already have closed the socket.
                let _ = send_method(
                    stream,
                    &mut out,
                    connection::AMQPMethod::CloseOk(connection::CloseOk {}),
                )
                .await;
                return Err(Error::ConnectionClosed(close_reason(&close)));
            }
            Some(Frame::Method(0, AMQPClass::Connection(m))) => return Ok(m),
            Some(other) => {
                return Err(Error::Protocol {
                    code: 505,
                    message: format!("unexpected frame during handshake: {other:?}"),
                })
            }
            None => {}
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::Io(Arc::new(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the broker closed the socket during the handshake",
            ))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_negotiation() {
        let tune = |channel_max, frame_max, heartbeat| connection::Tune {
            channel_max,
            frame_max,
            heartbeat,
        };
        let mut config = ConnectionConfig::default();
        let t = negotiate(&tune(2047, 131072, 60), &config, FieldTable::default());
        assert_eq!(
            (t.channel_max, t.frame_max, t.heartbeat),
            (2047, 131072, 60)
        );
        let t = negotiate(&tune(0, 0, 0), &config, FieldTable::default());
        assert_eq!(
            (t.channel_max, t.frame_max, t.heartbeat),
            (u16::MAX, 131072, 0)
        );
        config.channel_max = Some(10);
        config.frame_max = Some(8192);
        config.heartbeat = Some(0);
        let t = negotiate(&tune(2047, 131072, 60), &config, FieldTable::default());
        assert_eq!((t.channel_max, t.frame_max, t.heartbeat), (10, 8192, 0));
        config.frame_max = Some(100);
        let t = negotiate(&tune(0, 0, 60), &config, FieldTable::default());
        assert_eq!(t.frame_max, codec::FRAME_MIN_SIZE);
    }

    proptest::proptest! {
        #[test]
        fn negotiation_never_exceeds_either_limit(
            server in (proptest::prelude::any::<u16>(), proptest::prelude::any::<u32>(), proptest::prelude::any::<u16>()),
            client in (proptest::option::of(proptest::prelude::any::<u16>()), proptest::option::of(proptest::prelude::any::<u32>()), proptest::option::of(proptest::prelude::any::<u16>())),
        ) {
            let mut config = ConnectionConfig::default();
            (config.channel_max, config.frame_max, config.heartbeat) = client;
            let tune = connection::Tune { channel_max: server.0, frame_max: server.1, heartbeat: server.2 };
            let t = negotiate(&tune, &config, FieldTable::default());
            for limit in [server.0, client.0.unwrap_or(0)] {
                proptest::prop_assert!(limit == 0 || t.channel_max <= limit);
            }
            proptest::prop_assert!(t.channel_max > 0);
            for limit in [server.1, client.1.unwrap_or(0)] {
                // Below the spec's minimum frame size the minimum wins.
                proptest::prop_assert!(limit == 0 || t.frame_max <= limit.max(codec::FRAME_MIN_SIZE));
            }
            proptest::prop_assert!(t.frame_max >= codec::FRAME_MIN_SIZE);
            proptest::prop_assert_eq!(t.heartbeat, client.2.unwrap_or(server.2));
        }
    }
}
