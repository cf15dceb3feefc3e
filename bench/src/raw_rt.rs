//! The broker's own round trip: one task on one socket writes a 16 B publish and
//! reads its delivery back (consumed with no-ack on the same connection), with no
//! client library between, so that the figure less the loopback floor is what the
//! broker adds.

use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass, BasicProperties};
use amq_protocol::types::{FieldTable, LongString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procs::Result;

/// One connection's socket and what was read from it but not yet taken as frames.
struct Raw {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn next(&mut self) -> Result<AMQPFrame> {
        loop {
            match warren_frames::take_frame(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(format!("unreadable frame: {e:?}").into()),
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).await?;
            if n == 0 {
                return Err("the broker closed the socket".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next method frame, heartbeats skipped.
    async fn method(&mut self) -> Result<AMQPClass> {
        loop {
            match self.next().await? {
                AMQPFrame::Method(_, m) => return Ok(m),
                AMQPFrame::Heartbeat => {}
                other => return Err(format!("expected a method, got {other:?}").into()),
            }
        }
    }

    async fn call(&mut self, channel: u16, m: AMQPClass) -> Result<AMQPClass> {
        self.sock
            .write_all(&warren_frames::method(channel, m))
            .await?;
        self.method().await
    }
}

/// The p50 of `n` round trips (after `n / 10` not counted), on a queue named `queue`
/// that the connection declares exclusive, so that it goes with the connection.
pub async fn round_trip(url: &str, queue: &str, n: usize) -> Result<Duration> {
    let config = warren_client::ConnectionConfig::from_url(url)?;
    let (user, password, vhost) = (&config.username, &config.password, &config.vhost);
    let sock = TcpStream::connect((config.host.as_str(), config.port)).await?;
    sock.set_nodelay(true)?;
    let mut c = Raw {
        sock,
        buf: Vec::new(),
    };
    c.sock.write_all(warren_frames::PROTOCOL_HEADER).await?;
    match c.method().await? {
        AMQPClass::Connection(connection::AMQPMethod::Start(_)) => {}
        other => return Err(format!("expected connection.start, got {other:?}").into()),
    }
    let tune = match c
        .call(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(format!("\0{user}\0{password}")),
                locale: "en_US".into(),
            })),
        )
        .await?
    {
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
        other => return Err(format!("expected connection.tune, got {other:?}").into()),
    };
    c.sock
        .write_all(&warren_frames::method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            })),
        ))
        .await?;
    let requests = [
        (
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: vhost.as_str().into(),
            })),
        ),
        (
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
        (
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: queue.into(),
                exclusive: true,
                ..Default::default()
            })),
        ),
        (
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: queue.into(),
                no_ack: true,
                ..Default::default()
            })),
        ),
    ];
    for (channel, m) in requests {
        let asked = format!("{m:?}");
        let reply = c.call(channel, m).await?;
        if matches!(
            reply,
            AMQPClass::Connection(connection::AMQPMethod::Close(_))
                | AMQPClass::Channel(channel::AMQPMethod::Close(_))
        ) {
            return Err(format!("{asked} refused: {reply:?}").into());
        }
    }
    let mut publish = warren_frames::method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            routing_key: queue.into(),
            ..Default::default()
        })),
    );
    publish.extend(warren_frames::content(
        1,
        BasicProperties::default(),
        &[b'x'; 16],
        tune.frame_max,
    ));
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let start = Instant::now();
        c.sock.write_all(&publish).await?;
        loop {
            match c.next().await? {
                AMQPFrame::Body(..) => break,
                AMQPFrame::Method(_, m @ AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    return Err(format!("channel closed: {m:?}").into())
                }
                _ => {}
            }
        }
        if i >= n / 10 {
            samples.push(start.elapsed());
        }
    }
    let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: 200,
        reply_text: "OK".into(),
        class_id: 0,
        method_id: 0,
    }));
    let _ = c.call(0, close).await;
    samples.sort();
    Ok(samples[samples.len() / 2])
}
