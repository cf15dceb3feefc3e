//! The client's side of the wire: frames written with amq-protocol's generator (an
//! implementation independent of Warren's hand-written paths) and the broker's
//! output parsed back with amq-protocol's parser, grouped into whole messages.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

/// The frame_max every helper here negotiates: the broker's default.
pub const FRAME_MAX: u32 = 131_072;

/// One frame as bytes.
pub fn frame(frame: &AMQPFrame) -> Vec<u8> {
    let (vec, _) = gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("writing into a Vec cannot fail")
        .into_inner();
    vec
}

/// A method frame as bytes.
pub fn method(channel: u16, m: AMQPClass) -> Vec<u8> {
    frame(&AMQPFrame::Method(channel, m))
}

/// A content header and its body, cut into frames of at most `frame_max` bytes.
pub fn content(channel: u16, properties: AMQPProperties, body: &[u8], frame_max: u32) -> Vec<u8> {
    let mut out = frame(&AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties,
        },
    ));
    let chunk = (frame_max as usize - 8).max(1);
    for piece in body.chunks(chunk) {
        out.extend(frame(&AMQPFrame::Body(channel, piece.to_vec())));
    }
    out
}

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

/// Every frame in `bytes`, which must hold whole frames only.
pub fn parse_frames(mut bytes: &[u8]) -> Result<Vec<AMQPFrame>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        match parse_frame(bytes) {
            Ok((rest, f)) => {
                frames.push(f);
                bytes = rest;
            }
            Err(e) => {
                return Err(format!(
                    "unparsable output after {} frames: {e:?} at {:?}",
                    frames.len(),
                    &bytes[..bytes.len().min(64)]
                ))
            }
        }
    }
    Ok(frames)
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
            AMQPFrame::Method(ch, m) if carries_content(&m) => {
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

fn carries_content(m: &AMQPClass) -> bool {
    matches!(
        m,
        AMQPClass::Basic(
            basic::AMQPMethod::Deliver(_)
                | basic::AMQPMethod::GetOk(_)
                | basic::AMQPMethod::Return(_)
        )
    )
}

/// Parses a connection's output into events.
pub fn parse_events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    events(parse_frames(bytes)?)
}
