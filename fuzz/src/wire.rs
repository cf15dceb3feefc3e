//! The client's side of the wire: frames written with amq-protocol's generator (an
//! implementation independent of Warren's hand-written paths, through `warren-frames`,
//! which every test shares) and the broker's output parsed back with amq-protocol's
//! parser, grouped into whole messages.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

/// The frame_max every helper here negotiates: the broker's default.
pub const FRAME_MAX: u32 = 131_072;

/// One frame as bytes.
pub use warren_frames::encode as frame;
/// A method frame as bytes; a content header and its body cut into frames of at
/// most `frame_max` bytes; every frame of a byte string that holds whole frames.
pub use warren_frames::{content, method, parse_frames};

/// `basic.publish` with its content.
pub fn publish(channel: u16, exchange: &str, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut out = method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    out.extend(content(channel, AMQPProperties::default(), body, FRAME_MAX));
    out
}

/// Everything a client sends to open a connection to vhost `/` as guest, written
/// in one go: the broker reads it as a pipelined handshake.
pub fn handshake() -> Vec<u8> {
    let mut caps = FieldTable::default();
    caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
    caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props.insert(
        "product".into(),
        AMQPValue::LongString(LongString::from("warren-fuzz")),
    );
    let mut out = b"AMQP\x00\x00\x09\x01".to_vec();
    out.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    ));
    out.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: FRAME_MAX,
            heartbeat: 0,
        })),
    ));
    out.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    ));
    out
}

/// `channel.open` on `channel`.
pub fn channel_open(channel: u16) -> Vec<u8> {
    method(
        channel,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
}

/// The client's `connection.close` (reply 200) with `text`.
pub fn connection_close(text: &str) -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: text.into(),
            class_id: 0,
            method_id: 0,
        })),
    )
}

/// What a client sees: methods, with the content that follows a delivery, a get-ok
/// or a return gathered into the method's event.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "test-side values, compared whole; boxing would only add noise to patterns"
)]
pub enum Event {
    Method(u16, AMQPClass),
    Content {
        channel: u16,
        method: AMQPClass,
        properties: AMQPProperties,
        body: Vec<u8>,
    },
    Heartbeat,
    ProtocolHeader,
}

/// Groups frames into events; fails on a content frame out of place or a body
/// longer or shorter than its header said.
pub fn events(frames: Vec<AMQPFrame>) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    let mut it = frames.into_iter().peekable();
    while let Some(f) = it.next() {
        match f {
            AMQPFrame::Method(ch, m) if warren_frames::carries_content(&m) => {
                let Some(AMQPFrame::Header(hch, header)) = it.next() else {
                    return Err(format!("{m:?} on channel {ch} without a content header"));
                };
                if hch != ch || header.class_id != 60 {
                    return Err(format!("content header on {hch} after method on {ch}"));
                }
                let mut body = Vec::new();
                while (body.len() as u64) < header.body_size {
                    match it.next() {
                        Some(AMQPFrame::Body(bch, b)) if bch == ch && !b.is_empty() => {
                            body.extend(b)
                        }
                        other => return Err(format!("expected body on {ch}, got {other:?}")),
                    }
                }
                if body.len() as u64 != header.body_size {
                    return Err(format!(
                        "body of {} bytes, header said {}",
                        body.len(),
                        header.body_size
                    ));
                }
                out.push(Event::Content {
                    channel: ch,
                    method: m,
                    properties: header.properties,
                    body,
                });
            }
            AMQPFrame::Method(ch, m) => out.push(Event::Method(ch, m)),
            AMQPFrame::Heartbeat => out.push(Event::Heartbeat),
            AMQPFrame::ProtocolHeader(_) => out.push(Event::ProtocolHeader),
            other => return Err(format!("frame out of place: {other:?}")),
        }
    }
    Ok(out)
}

/// Parses a connection's output into events.
pub fn parse_events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    events(parse_frames(bytes)?)
}
