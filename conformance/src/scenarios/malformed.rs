//! Malformed input: bad protocol headers, broken frames, frames out of order, unknown
//! methods. Each must get a defined close, and other connections must not notice.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, connection, queue, AMQPClass};

use crate::driver::encode;
use crate::*;

/// Frame bytes from a list of frames.
fn frames(list: &[AMQPFrame]) -> Vec<u8> {
    list.iter().flat_map(encode).collect()
}

/// A raw frame: type, channel, payload, and the end octet given.
fn raw(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(channel.to_be_bytes());
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(payload);
    out.push(end);
    out
}

fn publish(q: &str) -> AMQPFrame {
    AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: q.into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

fn header(size: u64) -> AMQPFrame {
    AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: size,
            properties: Default::default(),
        },
    )
}

/// Opens a connection and channel 1, sends `bytes`, and expects a connection close
/// with `code`; then checks that a second connection still works.
async fn expect_connection_error(cx: &Ctx, bytes: Vec<u8>, code: u16) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    conn.send_raw(&bytes).await?;
    let close = conn.wait_closed().await?;
    match close {
        Some(c) if c.code == code => {}
        other => {
            return Err(Fail::msg(format!(
                "expected connection close {code}, got {other:?}"
            )))
        }
    }
    let other = cx.connect().await?;
    other.channel().await?.sync().await?;
    other.close().await
}

/// Opens a connection and channel 1, sends `bytes`, and expects the server to drop the
/// socket without a close; then checks that a second connection still works.
async fn expect_dropped(cx: &Ctx, bytes: Vec<u8>) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    conn.send_raw(&bytes).await?;
    if let Some(c) = conn.wait_closed().await? {
        return Err(Fail::msg(format!(
            "expected the socket to be dropped, got {c}"
        )));
    }
    let other = cx.connect().await?;
    other.channel().await?.sync().await?;
    other.close().await
}

/// Expects the server to answer a bad protocol header with its own and hang up.
async fn expect_protocol_header_reply(cx: &Ctx, header: &[u8]) -> R {
    let conn = cx.raw().await?;
    conn.send_raw(header).await?;
    let reply = conn.read_to_eof().await?;
    cx.note(format!("server replied {reply:?}"));
    expect_eq(
        "reply",
        reply.as_slice(),
        b"AMQP\x00\x00\x09\x01".as_slice(),
    )
}

/// Garbage instead of a protocol header: the server names the version it speaks.
pub async fn garbage_instead_of_header(cx: Ctx) -> R {
    expect_protocol_header_reply(&cx, b"HELLO WORLD!").await
}

/// An AMQP 0-10 header is refused the same way.
pub async fn wrong_protocol_version(cx: Ctx) -> R {
    expect_protocol_header_reply(&cx, b"AMQP\x00\x00\x0a\x00").await
}

/// An AMQP 1.0 header is refused the same way.
pub async fn amqp_1_0_header(cx: Ctx) -> R {
    expect_protocol_header_reply(&cx, b"AMQP\x00\x01\x00\x00").await
}

/// A frame whose end octet is not 0xCE is a frame error.
pub async fn bad_frame_end(cx: Ctx) -> R {
    let mut bytes = frames(&[publish("q")]);
    if let Some(last) = bytes.last_mut() {
        *last = 0x00;
    }
    expect_connection_error(&cx, bytes, 501).await
}

/// An unknown frame type is a frame error.
pub async fn unknown_frame_type(cx: Ctx) -> R {
    expect_connection_error(&cx, raw(9, 1, b"abc", 0xCE), 501).await
}

/// A content header with no method before it is an unexpected frame.
pub async fn header_without_method(cx: Ctx) -> R {
    expect_connection_error(&cx, frames(&[header(3)]), 505).await
}

/// A body frame with no header before it is an unexpected frame.
pub async fn body_without_header(cx: Ctx) -> R {
    expect_connection_error(&cx, frames(&[AMQPFrame::Body(1, b"abc".to_vec())]), 505).await
}

/// A body frame right after basic.publish, skipping the header, is an unexpected frame.
pub async fn body_before_header(cx: Ctx) -> R {
    let bytes = frames(&[publish(&cx.name("q")), AMQPFrame::Body(1, b"abc".to_vec())]);
    expect_connection_error(&cx, bytes, 505).await
}

/// A method arriving where a body was due is an unexpected frame.
pub async fn method_during_content(cx: Ctx) -> R {
    let declare = AMQPFrame::Method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: cx.name("q").into(),
            ..Default::default()
        })),
    );
    let bytes = frames(&[publish(&cx.name("q")), header(5), declare]);
    expect_connection_error(&cx, bytes, 505).await
}

/// A body longer than its header declared: the content is not complete until more
/// body frames come, so the next method is an unexpected frame.
pub async fn body_longer_than_declared(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.open_channel(1).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    conn.send_raw(&frames(&[
        publish(&q),
        header(3),
        AMQPFrame::Body(1, b"abcdef".to_vec()),
    ]))
    .await?;
    // RabbitMQ keeps waiting for body frames and fails on the next other frame.
    ch.get(&q, true).await.connection_closed_at(505, (60, 40))?;
    Ok(())
}

/// A frame declaring a size far above frame_max is refused before it is read.
pub async fn huge_declared_frame_size(cx: Ctx) -> R {
    let mut bytes = vec![1u8, 0, 1];
    bytes.extend(0xFFFF_FF00u32.to_be_bytes());
    bytes.extend([0u8; 64]);
    expect_connection_error(&cx, bytes, 501).await
}

/// The client's `connection.close`, as raw frame bytes.
fn client_close() -> Vec<u8> {
    frames(&[AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )])
}

/// The frames the server sends next, as names, until it closes the socket or
/// `wait` passes.
async fn frames_until_eof(conn: &Conn, wait: std::time::Duration) -> R<Vec<String>> {
    let mut seen = Vec::new();
    while let Some(frame) = conn.next_raw_frame_within(wait).await? {
        seen.push(frame_name(&frame));
    }
    Ok(seen)
}

fn frame_name(frame: &AMQPFrame) -> String {
    match frame {
        AMQPFrame::Method(ch, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
            format!("ch{ch} connection.close {}", c.reply_code)
        }
        AMQPFrame::Method(ch, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
            format!("ch{ch} connection.close-ok")
        }
        AMQPFrame::Method(ch, m) => format!("ch{ch} {m:?}"),
        other => format!("{other:?}"),
    }
}

/// After a frame it cannot delimit (one announced larger than frame_max) RabbitMQ
/// has lost its place in the stream and reads nothing more: `fatal_frame_error`
/// sends the close, sleeps 3 s and ends the connection (rabbit_reader.erl:857-864
/// at v3.10.8). A `connection.close` the client sends after the server's own goes
/// unanswered.
pub async fn nothing_read_after_frame_too_large(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    let mut bytes = vec![3u8, 0, 1];
    bytes.extend((conn.tune.frame_max + 1000).to_be_bytes());
    conn.send_raw(&bytes).await?;
    let first = conn
        .next_raw_frame_within(crate::driver::REPLY_TIMEOUT)
        .await?
        .map(|f| frame_name(&f));
    expect_eq(
        "the server's answer",
        first.as_deref(),
        Some("ch0 connection.close 501"),
    )?;
    conn.send_raw(&client_close()).await?;
    let after = frames_until_eof(&conn, std::time::Duration::from_secs(10)).await?;
    cx.note(format!(
        "after the server's close, the client's close got {after:?}, then the socket closed"
    ));
    ensure!(after.is_empty(), "expected nothing more, got {after:?}");
    Ok(())
}

/// After a frame it could delimit but not parse (an unknown frame type), RabbitMQ
/// reads on: it sends its close, and a `connection.close` in the same write is
/// answered with close-ok, as any close while closing is (rabbit_reader.erl:946-951
/// and 1255-1261 at v3.10.8).
pub async fn close_after_unknown_frame_is_answered(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    let mut bytes = raw(9, 1, b"abc", 0xCE);
    bytes.extend(client_close());
    conn.send_raw(&bytes).await?;
    let mut seen = Vec::new();
    for _ in 0..2 {
        match conn
            .next_raw_frame_within(crate::driver::REPLY_TIMEOUT)
            .await?
        {
            Some(frame) => seen.push(frame_name(&frame)),
            None => break,
        }
    }
    cx.note(format!("the server sent {seen:?}"));
    expect_eq(
        "frames",
        seen.as_slice(),
        ["ch0 connection.close 501", "ch0 connection.close-ok"]
            .map(String::from)
            .as_slice(),
    )?;
    // The server still waits for close-ok to its own close, then hangs up.
    conn.send_raw(&frames(&[AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )]))
    .await?;
    let after = frames_until_eof(&conn, crate::driver::REPLY_TIMEOUT).await?;
    ensure!(
        after.is_empty(),
        "expected the socket to close, got {after:?}"
    );
    Ok(())
}

/// An unknown method id in a known class: RabbitMQ drops the connection outright.
pub async fn unknown_method(cx: Ctx) -> R {
    expect_dropped(&cx, raw(1, 1, &[0, 60, 0, 250], 0xCE)).await
}

/// An unknown class id: RabbitMQ drops the connection outright.
pub async fn unknown_class(cx: Ctx) -> R {
    expect_dropped(&cx, raw(1, 1, &[0, 99, 0, 10], 0xCE)).await
}

/// Method arguments cut short: RabbitMQ reports a frame error naming the method.
pub async fn truncated_method_arguments(cx: Ctx) -> R {
    // queue.declare: reserved short, then a short string that claims 20 bytes but has 3.
    let bytes = raw(1, 1, &[0, 50, 0, 10, 0, 0, 20, b'a', b'b', b'c'], 0xCE);
    expect_connection_error(&cx, bytes, 501).await
}

/// A heartbeat frame on a channel other than 0 is an unexpected frame.
pub async fn heartbeat_on_channel(cx: Ctx) -> R {
    expect_connection_error(&cx, raw(8, 1, &[], 0xCE), 505).await
}

/// A content header with a class other than basic.
pub async fn header_with_wrong_class(cx: Ctx) -> R {
    let mut bytes = frames(&[publish(&cx.name("q"))]);
    bytes.extend(raw(
        2,
        1,
        &[0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        0xCE,
    ));
    expect_connection_error(&cx, bytes, 505).await
}

/// A method on channel 0 that belongs on a channel.
pub async fn channel_method_on_channel_zero(cx: Ctx) -> R {
    let declare = AMQPFrame::Method(
        0,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: cx.name("q").into(),
            ..Default::default()
        })),
    );
    expect_connection_error(&cx, frames(&[declare]), 504).await
}

/// connection.open again on an open connection.
pub async fn second_connection_open(cx: Ctx) -> R {
    let open = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    );
    expect_connection_error(&cx, frames(&[open]), 504).await
}

/// A method on a channel the client just closed is a channel error.
pub async fn method_on_closed_channel(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.open_channel(1).await?;
    ch.close().await?;
    ch.queue_declare(&cx.name("q"))
        .await
        .connection_closed(504)?;
    Ok(())
}

/// Frames split into single bytes are reassembled.
pub async fn frames_split_into_bytes(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.open_channel(1).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let bytes = frames(&[
        publish(&q),
        header(5),
        AMQPFrame::Body(1, b"bytes".to_vec()),
    ]);
    for b in bytes {
        conn.send_raw(&[b]).await?;
    }
    ch.get_expect(&q, true, "bytes").await?;
    conn.close().await
}

/// A body split into several body frames of odd sizes is reassembled.
pub async fn body_in_many_frames(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.open_channel(1).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let mut list = vec![publish(&q), header(10)];
    for piece in [&b"a"[..], b"bc", b"def", b"ghij"] {
        list.push(AMQPFrame::Body(1, piece.to_vec()));
    }
    conn.send_raw(&frames(&list)).await?;
    ch.get_expect(&q, true, "abcdefghij").await?;
    conn.close().await
}

/// A zero-length body needs no body frame at all.
pub async fn zero_body_without_body_frame(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.open_channel(1).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    conn.send_raw(&frames(&[publish(&q), header(0)])).await?;
    ch.get_expect(&q, true, "").await?;
    conn.close().await
}
