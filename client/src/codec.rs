//! Frames to bytes and back, with no I/O: the wire layer the connection task drives.
//!
//! Method and header frames go through amq-protocol's generator and parser, except the
//! few that come once per message (`basic.publish`, `basic.ack`, `basic.deliver`, and
//! content headers without properties): those are written and read by hand here, as
//! amq-protocol's general path costs a few thousand instructions and several
//! allocations each. Body frames are cut and framed here by hand so that a message body
//! is copied once on the way out and not at all on the way in (a received body is a
//! slice of the read buffer).

use amq_protocol::{
    frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, ProtocolVersion, WriteContext},
    protocol::{
        basic::{self, AMQPProperties},
        constants, AMQPClass,
    },
    types::ShortString,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;

/// Bytes a frame adds around its payload: type, channel, size, and the end octet.
pub(crate) const FRAME_OVERHEAD: usize = 8;
/// Smallest frame_max the spec allows; used until tune says otherwise.
pub(crate) const FRAME_MIN_SIZE: u32 = 4096;
const FRAME_END: u8 = 0xCE;

/// One decoded frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame {
    Method(u16, AMQPClass),
    /// `basic.deliver`, apart from other methods: it comes with every message.
    Deliver(u16, Deliver),
    Header(u16, Header),
    Body(u16, Bytes),
    Heartbeat,
}

/// A content header as received.
#[derive(Debug, PartialEq)]
pub(crate) struct Header {
    pub(crate) class_id: u16,
    pub(crate) body_size: u64,
    /// `None` when the header carries no properties, as most do. Boxed otherwise:
    /// the properties are large (about 300 bytes) and every frame and message that
    /// held them inline would copy them at each move on the way to the consumer.
    pub(crate) properties: Option<Box<AMQPProperties>>,
}

/// `basic.deliver` as this client uses it.
#[derive(Debug, PartialEq)]
pub(crate) struct Deliver {
    /// Only serves to find the consumer, so it stays the bytes of the frame it came
    /// in (no allocation). It is checked to be UTF-8 all the same, as the general
    /// parser would.
    pub(crate) consumer_tag: Bytes,
    pub(crate) args: DeliverArgs,
}

/// What a consumer gets of a `basic.deliver`: the tag has found it by then.
#[derive(Debug, PartialEq)]
pub(crate) struct DeliverArgs {
    pub(crate) delivery_tag: u64,
    pub(crate) redelivered: bool,
    /// Already the `String`s a `Delivery` carries: built once, never converted.
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
}

impl From<basic::Deliver> for Deliver {
    fn from(d: basic::Deliver) -> Self {
        Deliver {
            consumer_tag: Bytes::from(String::from(d.consumer_tag).into_bytes()),
            args: DeliverArgs {
                delivery_tag: d.delivery_tag,
                redelivered: d.redelivered,
                exchange: d.exchange.into(),
                routing_key: d.routing_key.into(),
            },
        }
    }
}

impl From<AMQPContentHeader> for Header {
    fn from(h: AMQPContentHeader) -> Self {
        Header {
            class_id: h.class_id,
            body_size: h.body_size,
            properties: (h.properties.bitmask() != 0).then(|| Box::new(h.properties)),
        }
    }
}

fn frame_error(message: impl Into<String>) -> Error {
    Error::Protocol {
        code: 501,
        message: message.into(),
    }
}

fn gen_into(buf: &mut BytesMut, frame: &AMQPFrame) -> Result<(), Error> {
    let ctx = gen_frame(frame)(WriteContext::from(Vec::with_capacity(128)))
        .map_err(|e| Error::InvalidArgument(format!("cannot serialize frame: {e}")))?;
    buf.extend_from_slice(&ctx.into_inner().0);
    Ok(())
}

/// The `AMQP 0 0 9 1` greeting a client sends first.
pub(crate) fn encode_protocol_header(buf: &mut BytesMut) {
    // Infallible: the header has a fixed shape.
    let _ = gen_into(
        buf,
        &AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()),
    );
}

pub(crate) fn encode_heartbeat(buf: &mut BytesMut) {
    buf.extend_from_slice(&[constants::FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

pub(crate) fn encode_method(
    buf: &mut BytesMut,
    channel: u16,
    method: AMQPClass,
) -> Result<(), Error> {
    match &method {
        AMQPClass::Basic(basic::AMQPMethod::Ack(ack)) => {
            put_method_start(buf, channel, 13, 60, 80);
            buf.put_u64(ack.delivery_tag);
            buf.put_u8(ack.multiple as u8);
            buf.put_u8(FRAME_END);
            Ok(())
        }
        AMQPClass::Basic(basic::AMQPMethod::Publish(publish)) => {
            encode_publish(
                buf,
                channel,
                publish.exchange.as_str(),
                publish.routing_key.as_str(),
                publish.mandatory,
                publish.immediate,
            );
            Ok(())
        }
        _ => gen_into(buf, &AMQPFrame::Method(channel, method)),
    }
}

/// `basic.publish`, from names already checked to fit a short string (255 bytes).
pub(crate) fn encode_publish(
    buf: &mut BytesMut,
    channel: u16,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    immediate: bool,
) {
    let size = 4 + 2 + 1 + exchange.len() + 1 + routing_key.len() + 1;
    put_method_start(buf, channel, size, 60, 40);
    // Callers check the 255-byte limit of short strings (`ShortString` does, or
    // `check_short`). Fixed-size pieces go in as arrays: one capacity check and a
    // few stores each, where every `put_u8` checks capacity on its own.
    buf.extend_from_slice(&[0, 0, exchange.len() as u8]);
    buf.extend_from_slice(exchange.as_bytes());
    buf.extend_from_slice(&[routing_key.len() as u8]);
    buf.extend_from_slice(routing_key.as_bytes());
    buf.extend_from_slice(&[mandatory as u8 | (immediate as u8) << 1, FRAME_END]);
}

/// A method frame's header and class/method ids, for a payload of `size` bytes.
fn put_method_start(buf: &mut BytesMut, channel: u16, size: usize, class: u16, method: u16) {
    buf.reserve(size + FRAME_OVERHEAD);
    let [c0, c1] = channel.to_be_bytes();
    let [s0, s1, s2, s3] = (size as u32).to_be_bytes();
    let [k0, k1] = class.to_be_bytes();
    let [m0, m1] = method.to_be_bytes();
    buf.extend_from_slice(&[
        constants::FRAME_METHOD,
        c0,
        c1,
        s0,
        s1,
        s2,
        s3,
        k0,
        k1,
        m0,
        m1,
    ]);
}

/// A content header frame and as many body frames as `frame_max` requires.
/// `properties` by reference: they are large (about 300 bytes) and only read.
pub(crate) fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    properties: &AMQPProperties,
    body: &[u8],
    frame_max: u32,
) -> Result<(), Error> {
    let [c0, c1] = channel.to_be_bytes();
    if properties.bitmask() == 0 {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = (body.len() as u64).to_be_bytes();
        buf.extend_from_slice(&[
            constants::FRAME_HEADER,
            c0,
            c1,
            0,
            0,
            0,
            14,
            0,
            60,
            0,
            0,
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
            0,
            0,
            FRAME_END,
        ]);
    } else {
        gen_into(
            buf,
            &AMQPFrame::Header(
                channel,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: properties.clone(),
                },
            ),
        )?;
    }
    let max_payload = (frame_max.max(FRAME_MIN_SIZE) as usize) - FRAME_OVERHEAD;
    buf.reserve(body.len() + body.len().div_ceil(max_payload) * FRAME_OVERHEAD);
    for chunk in body.chunks(max_payload) {
        let [s0, s1, s2, s3] = (chunk.len() as u32).to_be_bytes();
        buf.extend_from_slice(&[constants::FRAME_BODY, c0, c1, s0, s1, s2, s3]);
        buf.extend_from_slice(chunk);
        buf.extend_from_slice(&[FRAME_END]);
    }
    Ok(())
}

/// Take one frame off the front of `buf`, or `None` if more bytes are needed.
///
/// `frame_max` bounds what is buffered for a frame: a peer announcing a larger frame
/// gets FRAME_ERROR instead of making this client allocate whatever it claims.
pub(crate) fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, Error> {
    if buf.len() < 7 {
        return Ok(None);
    }
    if &buf[..4] == b"AMQP" {
        // The broker answers an unsupported protocol header with its own.
        return Err(Error::Protocol {
            code: 501,
            message: format!(
                "broker rejected the protocol version, offers {:?}",
                &buf[..]
            ),
        });
    }
    let frame_type = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if frame_max > 0 && size + FRAME_OVERHEAD > frame_max as usize {
        return Err(frame_error(format!(
            "frame of {} bytes exceeds frame_max {frame_max}",
            size + FRAME_OVERHEAD
        )));
    }
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(frame_error(format!(
            "frame end octet is {:#x}",
            buf[total - 1]
        )));
    }
    let frame = match frame_type {
        constants::FRAME_BODY => {
            let mut raw = buf.split_to(total);
            raw.advance(7);
            raw.truncate(size);
            return Ok(Some(Frame::Body(channel, raw.freeze())));
        }
        constants::FRAME_HEARTBEAT => Ok(Some(Frame::Heartbeat)),
        constants::FRAME_METHOD | constants::FRAME_HEADER => {
            if let Some(frame) = decode_hot(buf, frame_type, channel, total) {
                return Ok(Some(frame));
            }
            match parse_frame(&buf[..total]) {
                Ok((_, AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))))) => {
                    Ok(Some(Frame::Deliver(ch, d.into())))
                }
                Ok((_, AMQPFrame::Method(ch, m))) => Ok(Some(Frame::Method(ch, m))),
                Ok((_, AMQPFrame::Header(ch, h))) => Ok(Some(Frame::Header(ch, h.into()))),
                Ok((_, other)) => Err(frame_error(format!("unexpected frame {other}"))),
                Err(e) => Err(Error::Protocol {
                    code: 502,
                    message: format!("cannot parse frame: {e}"),
                }),
            }
        }
        other => Err(frame_error(format!("unknown frame type {other}"))),
    };
    // Other frames are read in place: splitting a frame off the buffer (a reference
    // count and its release) only pays when part of it outlives the buffer.
    buf.advance(total);
    frame
}

/// `basic.deliver` and a content header without properties, read by hand: they come
/// with every message. On success the frame (`total` bytes) is taken off `buf`.
/// Anything else, or anything unusual (bad UTF-8, trailing bytes), is left in `buf`
/// (`None`) for amq-protocol's parser, which produces the right error.
fn decode_hot(buf: &mut BytesMut, frame_type: u8, channel: u16, total: usize) -> Option<Frame> {
    let payload = &buf[7..total - 1];
    match frame_type {
        constants::FRAME_METHOD if payload.starts_with(&[0, 60, 0, 60]) => {
            let (tag_len, args) = decode_deliver(&payload[4..])?;
            // Frame header (7), class and method (4), the tag's length (1).
            buf.advance(12);
            let consumer_tag = buf.split_to(tag_len).freeze();
            buf.advance(total - 12 - tag_len);
            Some(Frame::Deliver(channel, Deliver { consumer_tag, args }))
        }
        constants::FRAME_HEADER if payload.len() == 14 && payload[12..] == [0, 0] => {
            let header = Header {
                class_id: u16::from_be_bytes([payload[0], payload[1]]),
                body_size: u64::from_be_bytes([
                    payload[4],
                    payload[5],
                    payload[6],
                    payload[7],
                    payload[8],
                    payload[9],
                    payload[10],
                    payload[11],
                ]),
                properties: None,
            };
            buf.advance(total);
            Some(Frame::Header(channel, header))
        }
        _ => None,
    }
}

/// The arguments of `basic.deliver`, and the consumer tag's length (the tag is left
/// in the frame).
fn decode_deliver(args: &[u8]) -> Option<(usize, DeliverArgs)> {
    let (&tag_len, rest) = args.split_first()?;
    let tag_len = tag_len as usize;
    let tag = rest.get(..tag_len)?;
    if !(tag.is_ascii() || std::str::from_utf8(tag).is_ok()) {
        return None;
    }
    let rest = &rest[tag_len..];
    let delivery_tag = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let redelivered = *rest.get(8)? & 1 != 0;
    let (exchange, rest) = short_string(&rest[9..])?;
    let (routing_key, rest) = short_string(rest)?;
    if !rest.is_empty() {
        return None;
    }
    Some((
        tag_len,
        DeliverArgs {
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
        },
    ))
}

/// A short string as an owned `String`: the empty one (the default exchange) costs
/// no allocation.
fn short_string(input: &[u8]) -> Option<(String, &[u8])> {
    let (&len, rest) = input.split_first()?;
    let len = len as usize;
    let text = rest.get(..len)?;
    let text = if text.is_empty() {
        String::new()
    } else {
        std::str::from_utf8(text).ok()?.to_owned()
    };
    Some((text, &rest[len..]))
}

/// A `ShortString`, or an error instead of amq-protocol's panic on > 255 bytes.
pub(crate) fn short(s: &str) -> crate::error::Result<ShortString> {
    check_short(s)?;
    Ok(ShortString::from(s))
}

/// The error `short` gives, without building the string (for names written by hand).
pub(crate) fn check_short(s: &str) -> crate::error::Result<()> {
    if s.len() <= 255 {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{:?}… is longer than 255 bytes",
        s.chars().take(32).collect::<String>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    #[test]
    fn content_round_trip_splits_bodies() {
        let mut buf = BytesMut::new();
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let props = AMQPProperties::default().with_correlation_id("c1".into());
        encode_method(
            &mut buf,
            3,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "q".into(),
                mandatory: true,
                immediate: false,
            })),
        )
        .unwrap();
        encode_content(&mut buf, 3, &props, &body, 4096).unwrap();
        // Feed one byte at a time: partial frames must wait, never error.
        let wire = buf.split().freeze();
        let mut input = BytesMut::new();
        let mut frames = Vec::new();
        for b in wire.iter() {
            input.put_u8(*b);
            while let Some(f) = decode(&mut input, 4096).unwrap() {
                frames.push(f);
            }
        }
        assert!(matches!(frames[0], Frame::Method(3, _)));
        match &frames[1] {
            Frame::Header(3, h) => {
                assert_eq!(h.body_size, 10_000);
                assert_eq!(h.properties.as_deref(), Some(&props));
            }
            f => panic!("{f:?}"),
        }
        let mut got = Vec::new();
        for f in &frames[2..] {
            match f {
                Frame::Body(3, b) => {
                    assert!(b.len() <= 4096 - FRAME_OVERHEAD);
                    got.extend_from_slice(b)
                }
                f => panic!("{f:?}"),
            }
        }
        assert_eq!(got, body);
    }

    #[test]
    fn hand_written_frames_agree_with_amq_protocol() {
        let methods = [
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: u64::MAX - 3,
                multiple: true,
            })),
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "ex".into(),
                routing_key: "a.b".into(),
                mandatory: true,
                immediate: true,
            })),
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish::default())),
        ];
        for method in methods {
            let mut fast = BytesMut::new();
            encode_method(&mut fast, 9, method.clone()).unwrap();
            let mut general = BytesMut::new();
            gen_into(&mut general, &AMQPFrame::Method(9, method)).unwrap();
            assert_eq!(fast, general);
        }
        for props in [
            AMQPProperties::default(),
            AMQPProperties::default().with_delivery_mode(2),
        ] {
            let mut fast = BytesMut::new();
            encode_content(&mut fast, 4, &props, b"", 4096).unwrap();
            let mut general = BytesMut::new();
            let header = AMQPContentHeader {
                class_id: 60,
                body_size: 0,
                properties: props,
            };
            gen_into(&mut general, &AMQPFrame::Header(4, header.clone())).unwrap();
            assert_eq!(fast, general);
            assert_eq!(
                decode(&mut fast, 4096).unwrap(),
                Some(Frame::Header(4, header.into()))
            );
        }
    }

    /// A method frame around `payload`, as it comes off the wire.
    fn method_frame(channel: u16, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u8(constants::FRAME_METHOD);
        buf.put_u16(channel);
        buf.put_u32(payload.len() as u32);
        buf.put_slice(payload);
        buf.put_u8(FRAME_END);
        buf
    }

    /// What `decode` must return for `frame`: amq-protocol's reading of it.
    fn general(frame: &[u8]) -> Result<Frame, String> {
        match parse_frame(frame) {
            Ok((_, AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))))) => {
                Ok(Frame::Deliver(ch, d.into()))
            }
            Ok((_, AMQPFrame::Method(ch, m))) => Ok(Frame::Method(ch, m)),
            Ok((_, other)) => Err(format!("unexpected frame {other}")),
            Err(e) => Err(format!("cannot parse frame: {e}")),
        }
    }

    /// The fast path's reading of one whole frame, which it consumes if it reads it.
    fn hot(frame: &BytesMut) -> Option<Frame> {
        let mut buf = frame.clone();
        let channel = u16::from_be_bytes([frame[1], frame[2]]);
        let decoded = decode_hot(&mut buf, frame[0], channel, frame.len());
        assert_eq!(buf.is_empty(), decoded.is_some());
        decoded
    }

    fn decoded(mut frame: BytesMut) -> Result<Frame, String> {
        let result = decode(&mut frame, 4096).map(Option::unwrap);
        assert!(frame.is_empty(), "the whole frame is consumed");
        result.map_err(|e| match e {
            Error::Protocol { message, .. } => message,
            e => panic!("{e:?}"),
        })
    }

    #[test]
    fn hand_read_deliver_agrees_with_amq_protocol() {
        for (tag, exchange, routing_key, redelivered) in [
            ("ctag", "x", "rk", true),
            ("amq.ctag-Qx9", "", "amq.gen-4bd1e0", false),
            ("", "", "", false),
            ("étiquette", "échange", "clé.", true),
        ] {
            let deliver = basic::Deliver {
                consumer_tag: tag.into(),
                delivery_tag: u64::MAX - 7,
                redelivered,
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            };
            let mut wire = BytesMut::new();
            let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver.clone()));
            gen_into(&mut wire, &AMQPFrame::Method(2, method)).unwrap();
            let fast = hot(&wire).expect("a well-formed deliver takes the fast path");
            assert_eq!(fast, Frame::Deliver(2, deliver.into()));
            assert_eq!(Ok(fast), general(&wire));
            assert_eq!(decoded(wire.clone()), general(&wire));
        }
    }

    #[test]
    fn malformed_deliver_gets_the_general_parsers_error() {
        fn payload(tag: &[u8], exchange: &[u8], routing_key: &[u8], trailing: &[u8]) -> Vec<u8> {
            let mut p = vec![0, 60, 0, 60];
            p.push(tag.len() as u8);
            p.extend_from_slice(tag);
            p.extend_from_slice(&42u64.to_be_bytes());
            p.push(0);
            for s in [exchange, routing_key] {
                p.push(s.len() as u8);
                p.extend_from_slice(s);
            }
            p.extend_from_slice(trailing);
            p
        }
        let bad = b"\xffa";
        let good = payload(b"t", b"x", b"rk", b"");
        assert!(hot(&method_frame(1, &good)).is_some());
        let malformed = [
            payload(bad, b"x", b"rk", b""),
            payload(b"t", bad, b"rk", b""),
            payload(b"t", b"x", bad, b""),
            payload(b"t", b"x", b"rk", b"!"),
            // Cut short: in the routing key, in the delivery tag.
            good[..good.len() - 1].to_vec(),
            good[..9].to_vec(),
        ];
        for p in malformed {
            let frame = method_frame(1, &p);
            assert!(hot(&frame).is_none());
            let expected = general(&frame);
            assert!(expected.is_err(), "{p:?} is malformed: {expected:?}");
            assert_eq!(decoded(frame), expected);
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(decode(&mut buf, 4096).unwrap_err().reply_code(), Some(501));
        let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf, 4096).unwrap_err().reply_code(), Some(501));
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert!(decode(&mut buf, 4096).is_err());
        let mut buf = BytesMut::new();
        encode_heartbeat(&mut buf);
        assert_eq!(decode(&mut buf, 4096).unwrap(), Some(Frame::Heartbeat));
    }
}
