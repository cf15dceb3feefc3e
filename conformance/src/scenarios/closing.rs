//! Closes that cross, and what a closing channel or connection makes of the frames
//! that follow. RabbitMQ sets the rules in two places: its channel process, once
//! closing, answers `close`, ends on `close-ok` and drops everything else
//! (rabbit_channel.erl:1237-1247), while its reader still assembles the channel's
//! frames; its reader, once a `connection.close` went either way, answers every
//! `close` and waits for the client to hang up (rabbit_reader.erl:1257-1268).
//! Every frame list here goes out in one write, as a client's pipelined frames do.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};

use crate::driver::{encode, unexpected, Event};
use crate::*;

fn method(ch: u16, m: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(ch, m))
}

/// A publish with its header and a body in two frames.
fn publish(ch: u16, exchange: &str, key: &str) -> Vec<u8> {
    let mut out = method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    out.extend(encode(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id: 60,
            body_size: 4,
            properties: Default::default(),
        },
    )));
    out.extend(encode(&AMQPFrame::Body(ch, b"ab".to_vec())));
    out.extend(encode(&AMQPFrame::Body(ch, b"cd".to_vec())));
    out
}

fn channel_close(ch: u16) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
}

fn connection_close() -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
}

fn declare(ch: u16, q: &str) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: q.into(),
            ..Default::default()
        })),
    )
}

fn qos(ch: u16) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 5,
            ..Default::default()
        })),
    )
}

/// The next event on `ch` must be `channel.close-ok`.
async fn expect_close_ok(conn: &Conn, ch: u16) -> R {
    match conn.next_event(ch).await? {
        Event::Method(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => Ok(()),
        other => Err(unexpected("channel.close-ok", &other)),
    }
}

/// The next event on channel 0 must be `connection.close-ok`.
async fn expect_connection_close_ok(conn: &Conn) -> R {
    match conn.next_event(0).await? {
        Event::Method(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => Ok(()),
        other => Err(unexpected("connection.close-ok", &other)),
    }
}

/// Channel 1 publishes to a missing exchange and at once closes (Go's amqp091 does
/// this): the server's `channel.close` crosses the client's. The server answers
/// the client's close, takes the client's `close-ok` for its own, and the
/// connection's other channels never notice.
pub async fn channel_close_crosses_server_close(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch1 = conn.open_channel(1).await?;
    let ch2 = conn.open_channel(2).await?;
    let mut bytes = publish(1, &cx.name("missing"), "k");
    bytes.extend(channel_close(1));
    conn.send_raw(&bytes).await?;
    // The driver answers the server's close with close-ok as it reads it.
    let close = ch1.wait_close().await?;
    expect_eq("server close", close.code, 404)?;
    expect_close_ok(&conn, 1).await?;
    ch2.exchange_declare(&cx.name("x"), "fanout").await?;
    conn.open_channel(1).await?.sync().await?;
    conn.close().await
}

/// Until the client's `close-ok`, a channel the server closed drops methods and
/// whole messages, its own close answered with `close-ok` in between.
pub async fn closing_channel_drops_what_follows(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch1 = conn.open_channel(1).await?;
    let ch2 = conn.open_channel(2).await?;
    let q = cx.name("q");
    ch2.queue_declare(&q).await?;
    let dropped = cx.name("dropped");
    let mut bytes = publish(1, &cx.name("missing"), "k");
    bytes.extend(qos(1));
    bytes.extend(publish(1, "", &q));
    bytes.extend(declare(1, &dropped));
    bytes.extend(channel_close(1));
    conn.send_raw(&bytes).await?;
    let close = ch1.wait_close().await?;
    expect_eq("server close", close.code, 404)?;
    expect_close_ok(&conn, 1).await?;
    expect_eq("messages", ch2.queue_passive(&q).await?.messages, 0)?;
    let refused = ch2.queue_passive(&dropped).await.channel_closed(404)?;
    cx.note(format!(
        "passive declare of the dropped queue: {}",
        refused.code
    ));
    conn.open_channel(1).await?.sync().await?;
    conn.close().await
}

/// Frames that follow the client's own `channel.close` in the same write reach a
/// closing channel and are dropped; the channel number is free again after
/// `close-ok`.
pub async fn frames_after_client_close_are_dropped(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    let ch2 = conn.open_channel(2).await?;
    let dropped = cx.name("dropped");
    let mut bytes = channel_close(1);
    bytes.extend(qos(1));
    bytes.extend(publish(1, "", "nowhere"));
    bytes.extend(declare(1, &dropped));
    conn.send_raw(&bytes).await?;
    expect_close_ok(&conn, 1).await?;
    ch2.queue_passive(&dropped).await.channel_closed(404)?;
    conn.open_channel(1).await?.sync().await?;
    conn.close().await
}

/// A second `channel.open` on a channel the server is closing is a connection error.
pub async fn open_on_closing_channel(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    let mut bytes = publish(1, &cx.name("missing"), "k");
    bytes.extend(method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ));
    conn.send_raw(&bytes).await?;
    let close = conn.wait_closed().await?;
    match close {
        Some(c) if c.connection && c.code == 504 => Ok(()),
        other => Err(Fail::msg(format!(
            "expected connection close 504, got {other:?}"
        ))),
    }
}

/// A closing channel's frames are still checked: a content header with no method
/// before it is a connection error there too.
pub async fn closing_channel_checks_frames(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    let mut bytes = publish(1, &cx.name("missing"), "k");
    bytes.extend(encode(&AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: 0,
            properties: Default::default(),
        },
    )));
    conn.send_raw(&bytes).await?;
    let close = conn.wait_closed().await?;
    match close {
        Some(c) if c.connection && c.code == 505 => Ok(()),
        other => Err(Fail::msg(format!(
            "expected connection close 505, got {other:?}"
        ))),
    }
}

/// A `close-ok` for a channel that is closed already (its close-ok was sent) is
/// a frame for a channel that was never opened.
pub async fn late_close_ok_is_a_connection_error(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch1 = conn.open_channel(1).await?;
    let ch2 = conn.open_channel(2).await?;
    conn.send_raw(&publish(1, &cx.name("missing"), "k")).await?;
    ch1.wait_close().await?;
    ch2.sync().await?;
    conn.send_raw(&method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    ))
    .await?;
    let close = conn.wait_closed().await?;
    match close {
        Some(c) if c.connection && c.code == 504 => Ok(()),
        other => Err(Fail::msg(format!(
            "expected connection close 504, got {other:?}"
        ))),
    }
}

/// Each of several `connection.close` (a client whose threads all close) gets
/// its `close-ok`, and frames after the first close are dropped: the server
/// keeps the socket until the client hangs up.
pub async fn every_connection_close_is_answered(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch1 = conn.open_channel(1).await?;
    let q = cx.name("q");
    ch1.queue_declare(&q).await?;
    let dropped = cx.name("dropped");
    let mut bytes = connection_close();
    bytes.extend(connection_close());
    bytes.extend(declare(1, &dropped));
    bytes.extend(publish(1, "", &q));
    conn.send_raw(&bytes).await?;
    expect_connection_close_ok(&conn).await?;
    expect_connection_close_ok(&conn).await?;
    // Sent after the first close-ok was read: the socket is still there.
    conn.send_raw(&connection_close()).await?;
    expect_connection_close_ok(&conn).await?;
    let events = conn.drain(1).await;
    expect_eq("events on channel 1", events, 0)?;
    let other = cx.connect().await?;
    let ch = other.channel().await?;
    expect_eq("messages", ch.queue_passive(&q).await?.messages, 0)?;
    ch.queue_passive(&dropped).await.channel_closed(404)?;
    other.close().await
}

/// The server closes the connection (a channel method on channel 0, refused by
/// the reader itself) while the client's `connection.close` is on its way: the
/// server answers the client's close, and ends on the client's `close-ok`.
/// (An error found by a channel process reaches RabbitMQ's reader as a message,
/// after the rest of the read: the client's close would be handled first.)
pub async fn connection_close_crosses_server_close(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let mut bytes = qos(0);
    bytes.extend(connection_close());
    conn.send_raw(&bytes).await?;
    // The driver answers the server's close with close-ok as it reads it.
    let close = conn.wait_closed().await?;
    match close {
        Some(c) if c.connection && c.code == 504 => {}
        other => {
            return Err(Fail::msg(format!(
                "expected connection close 504, got {other:?}"
            )))
        }
    }
    expect_eq("close-oks received", conn.drain(0).await, 1)
}
