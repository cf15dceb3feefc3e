//! Frames in and out: splits the byte stream into frames (checking size and frame-end
//! before any parsing), and writes methods, content headers and bodies into a buffer.

use std::cell::RefCell;

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic::AMQPProperties, parse_class, AMQPClass};
use amq_protocol::types::parsing::{parse_long_long_uint, parse_short_uint};
use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{code, AmqpError};

/// The 8 bytes a client opens with, and what the broker answers to any other.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Type, channel and size in front of every payload, and the frame-end octet after it.
pub const FRAME_OVERHEAD: usize = 8;

/// One frame read from a client.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "frames are short-lived values; boxing would cost an allocation per message"
)]
pub enum Frame {
    Method(u16, AMQPClass),
    /// A content header: the raw payload is kept so that deliveries can send it on
    /// untouched, without encoding the properties again.
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        /// Boxed: inline, its ~300 bytes made every frame that size, and a frame is
        /// moved several times between decoding and handling (about 1,100
        /// instructions of `memcpy` per published message). None when the header
        /// carries no property (most do not): no allocation then.
        properties: Option<Box<AMQPProperties>>,
        raw: Bytes,
    },
    Body(u16, Bytes),
    Heartbeat(u16),
    /// `basic.publish`, which comes with every message: its names stay in the
    /// frame's payload instead of a `String` each.
    Publish(u16, Publish),
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method(ch, _)
            | Frame::Body(ch, _)
            | Frame::Heartbeat(ch)
            | Frame::Publish(ch, _) => *ch,
            Frame::Header { channel, .. } => *channel,
        }
    }
}

/// Takes one frame off the front of `buf`: `Ok(None)` means more bytes are needed.
///
/// `frame_max` bounds what is buffered, so a peer announcing a huge frame is refused
/// before its payload arrives.
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, AmqpError> {
    let Some(len) = frame_len(buf, frame_max)? else {
        if let Some(size) = announced_size(buf) {
            buf.reserve(size + FRAME_OVERHEAD - buf.len());
        }
        return Ok(None);
    };
    let frame = buf.split_to(len).freeze();
    frame_at(&frame, 0).0.map(Some)
}

/// Splits off every complete, well-delimited frame at the front of `buf` in one
/// piece (empty when there is none): each frame's payload is then a slice of it
/// (see `frame_at`), which costs less than splitting the buffer three times per
/// frame. What is left, an incomplete frame or one `decode` will refuse, stays.
pub fn split_frames(buf: &mut BytesMut, frame_max: u32) -> Bytes {
    let mut end = 0;
    while let Ok(Some(len)) = frame_len(&buf[end..], frame_max) {
        end += len;
    }
    if end == 0 {
        return Bytes::new();
    }
    buf.split_to(end).freeze()
}

/// The frame at `at` in `frames` (whole frames, as `split_frames` returns them),
/// and where the next one starts.
pub fn frame_at(frames: &Bytes, at: usize) -> (Result<Frame, AmqpError>, usize) {
    let head = &frames[at..at + 7];
    let kind = head[0];
    let channel = u16::from_be_bytes([head[1], head[2]]);
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let payload = frames.slice(at + 7..at + 7 + size);
    (
        parse_frame(kind, channel, payload),
        at + size + FRAME_OVERHEAD,
    )
}

fn announced_size(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..7)?;
    Some(u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize)
}

/// The length of the whole frame at the front of `buf` once it has all arrived,
/// checking its size against `frame_max` and its frame-end octet. An error here
/// means the frame cannot be delimited, so where the next one starts is unknown;
/// an error from `decode` otherwise concerns one whole frame, which it took.
pub fn frame_len(buf: &[u8], frame_max: u32) -> Result<Option<usize>, AmqpError> {
    let Some(size) = announced_size(buf) else {
        return Ok(None);
    };
    let kind = buf[0];
    // RabbitMQ allows a payload of up to frame_max bytes, though it names
    // frame_max - 8 as the limit when refusing one.
    if size > frame_max as usize {
        return Err(frame_error(
            kind,
            &[],
            &format!(
                "{{frame_too_large,{size},{}}}",
                (frame_max as usize).saturating_sub(FRAME_OVERHEAD)
            ),
        ));
    }
    if buf.len() < size + FRAME_OVERHEAD {
        return Ok(None);
    }
    if buf[7 + size] != FRAME_END {
        return Err(frame_error(
            kind,
            &buf[7..7 + size],
            &format!("{{invalid_frame_end_marker,{}}}", buf[7 + size]),
        ));
    }
    Ok(Some(size + FRAME_OVERHEAD))
}

fn parse_frame(kind: u8, channel: u16, payload: Bytes) -> Result<Frame, AmqpError> {
    let size = payload.len();
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) || (kind == FRAME_HEARTBEAT && size != 0)
        || (kind == FRAME_METHOD && size < 4)
    {
        return Err(frame_error(kind, &payload, "unknown_frame"));
    }
    Ok(match kind {
        FRAME_METHOD => match Publish::parse(&payload) {
            Some(publish) => Frame::Publish(channel, publish),
            None => Frame::Method(channel, parse_method(&payload)?),
        },
        FRAME_HEADER => parse_header(channel, payload)?,
        FRAME_BODY => Frame::Body(channel, payload),
        _ => Frame::Heartbeat(channel),
    })
}

fn parse_method(payload: &[u8]) -> Result<AMQPClass, AmqpError> {
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if (class_id, method_id) == (60, 10) && payload.len() >= 8 {
        // amq-protocol drops basic.qos's prefetch-size; RabbitMQ refuses any but 0.
        let size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if size != 0 {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                format!("prefetch_size!=0 ({size})"),
            )
            .on_method(60, 10));
        }
    }
    if let Some(class) = parse_hot_method(class_id, method_id, &payload[4..]) {
        return Ok(class);
    }
    match parse_class(payload) {
        Ok((&[], class)) => Ok(class),
        _ if !known_method(class_id, method_id) => Err(AmqpError::socket(format!(
            "unknown method {class_id}.{method_id}"
        ))),
        // amq-protocol's only `map_res` in method arguments is its UTF-8 check of
        // short strings; truncation shows as `Incomplete` instead.
        Err(nom::Err::Error(e)) if e.to_string().contains("MapRes") => Err(AmqpError::connection(
            code::FRAME_ERROR,
            "Malformed UTF-8 in shortstr",
        )),
        _ => Err(AmqpError::connection(
            code::FRAME_ERROR,
            format!("cannot decode {}", erlang_binary(&payload[4..])),
        )
        .on_method(class_id, method_id)),
    }
}

/// `basic.ack` decoded by hand: it comes once per message, and amq-protocol's
/// general parser costs it about 1,800 instructions. Anything unusual is left to
/// that parser, which produces the right error.
fn parse_hot_method(class_id: u16, method_id: u16, args: &[u8]) -> Option<AMQPClass> {
    use amq_protocol::protocol::basic;
    match (class_id, method_id) {
        (60, 80) if args.len() == 9 => {
            let delivery_tag = u64::from_be_bytes(args[..8].try_into().ok()?);
            Some(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple: args[8] & 1 != 0,
            })))
        }
        _ => None,
    }
}

/// The arguments of a `basic.publish`, read in place from its frame's payload.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The method payload: class, method, reserved short, then the two names.
    payload: Bytes,
    exchange_len: u8,
    routing_key_len: u8,
    pub mandatory: bool,
    pub immediate: bool,
}

impl Publish {
    const EXCHANGE_AT: usize = 7;

    /// A well-formed `basic.publish`; anything unusual (bad UTF-8, trailing bytes)
    /// is left to amq-protocol's parser, which produces the right error.
    fn parse(payload: &Bytes) -> Option<Publish> {
        if payload.get(..4)? != [0, 60, 0, 40] {
            return None;
        }
        let (exchange, rest) = short_bytes(payload.get(Self::EXCHANGE_AT - 1..)?)?;
        let (routing_key, rest) = short_bytes(rest)?;
        let [bits] = rest else { return None };
        Some(Publish {
            payload: payload.clone(),
            exchange_len: exchange.len() as u8,
            routing_key_len: routing_key.len() as u8,
            mandatory: bits & 1 != 0,
            immediate: bits & 2 != 0,
        })
    }

    /// Exchange and routing key, checked to be UTF-8 but still bytes: turning
    /// them into `&str` checks them again (no `unsafe` here), which a publisher
    /// repeating the same names need not pay (see `RouteCache::get_raw`).
    pub fn names(&self) -> (&[u8], &[u8]) {
        let at = Self::EXCHANGE_AT;
        let exchange = &self.payload[at..at + self.exchange_len as usize];
        let at = at + exchange.len() + 1;
        (
            exchange,
            &self.payload[at..at + self.routing_key_len as usize],
        )
    }

    pub fn exchange(&self) -> &str {
        std::str::from_utf8(self.names().0).expect("checked when decoded")
    }

    pub fn routing_key(&self) -> &str {
        std::str::from_utf8(self.names().1).expect("checked when decoded")
    }

    /// As amq-protocol's type, for the paths that handle any method alike.
    pub fn to_method(&self) -> AMQPClass {
        use amq_protocol::protocol::basic;
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: self.exchange().into(),
            routing_key: self.routing_key().into(),
            mandatory: self.mandatory,
            immediate: self.immediate,
        }))
    }
}

impl Frame {
    /// Class and method id, for a method frame.
    pub fn method_id(&self) -> Option<(u16, u16)> {
        match self {
            Frame::Method(_, m) => Some((m.get_amqp_class_id(), m.get_amqp_method_id())),
            Frame::Publish(..) => Some((60, 40)),
            _ => None,
        }
    }

    /// The frame with a `basic.publish` as amq-protocol's type, like every
    /// other method: for the paths where a publish is not expected.
    pub fn general(self) -> Frame {
        match self {
            Frame::Publish(ch, p) => Frame::Method(ch, p.to_method()),
            f => f,
        }
    }
}

/// A short string's bytes and what follows, if they are UTF-8. Most names are
/// ASCII, which is checked far faster than `from_utf8` checks a short string.
fn short_bytes(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = input.split_first()?;
    let text = rest.get(..len as usize)?;
    (text.is_ascii() || std::str::from_utf8(text).is_ok()).then_some((text, &rest[text.len()..]))
}

/// RabbitMQ's FRAME_ERROR text: the frame type, the payload (or its first 16
/// octets) and the reason, as its Erlang formatting prints them.
pub fn frame_error(kind: u8, payload: &[u8], reason: &str) -> AmqpError {
    let (which, snippet) = if payload.len() <= 16 {
        ("all", payload)
    } else {
        ("first 16", &payload[..16])
    };
    AmqpError::connection(
        code::FRAME_ERROR,
        format!(
            "type {kind}, {which} octets = {}: {reason}",
            erlang_binary(snippet)
        ),
    )
}

/// A binary as Erlang's `~p` prints it: `<<"text">>` when every byte is printable,
/// else `<<1,2,3>>`.
pub fn erlang_binary(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|b| (32..=126).contains(b)) {
        let mut out = String::from("<<\"");
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(b as char);
        }
        out.push_str("\">>");
        out
    } else {
        let list: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
        format!("<<{}>>", list.join(","))
    }
}

fn known_method(class_id: u16, method_id: u16) -> bool {
    let methods: &[u16] = match class_id {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method_id)
}

fn parse_header(channel: u16, raw: Bytes) -> Result<Frame, AmqpError> {
    // Most messages carry no properties (flags 0): read those by hand, skipping
    // amq-protocol's property parser and its moves of the whole property struct.
    if raw.len() == 14 && raw[12..] == [0, 0] {
        return Ok(Frame::Header {
            channel,
            class_id: u16::from_be_bytes([raw[0], raw[1]]),
            body_size: u64::from_be_bytes(raw[4..12].try_into().expect("8 bytes")),
            properties: None,
            raw,
        });
    }
    let bad = || AmqpError::connection(code::FRAME_ERROR, "malformed content header");
    let (rest, class_id) = parse_short_uint(&raw[..]).map_err(|_| bad())?;
    let (rest, _weight) = parse_short_uint(rest).map_err(|_| bad())?;
    let (rest, body_size) = parse_long_long_uint(rest).map_err(|_| bad())?;
    // RabbitMQ fails inside its property decoder with a bare 541 (seen with a
    // table field of type 's', which it reads as a short int).
    let (rest, properties) = amq_protocol::protocol::basic::parse_properties(rest)
        .map_err(|_| AmqpError::connection(code::INTERNAL_ERROR, ""))?;
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(Frame::Header {
        channel,
        class_id,
        body_size,
        properties: Some(Box::new(properties)),
        raw,
    })
}

/// What a content header without properties stands for.
pub fn no_properties() -> &'static AMQPProperties {
    static NONE: std::sync::LazyLock<AMQPProperties> =
        std::sync::LazyLock::new(AMQPProperties::default);
    &NONE
}

/// A content header payload for a body of `body_size` bytes with `properties`:
/// for messages the broker rewrites (dead-lettering, direct reply-to).
pub fn encode_header(body_size: u64, properties: &AMQPProperties) -> Bytes {
    let header = amq_protocol::frame::AMQPContentHeader {
        class_id: 60,
        body_size,
        properties: properties.clone(),
    };
    let payload = method_like_payload(AMQPFrame::Header(0, header));
    Bytes::from(payload)
}

fn method_like_payload(frame: AMQPFrame) -> Vec<u8> {
    let (vec, _) = gen_frame(&frame)(WriteContext::from(Vec::new()))
        .expect("encoding into a Vec")
        .into_inner();
    vec[7..vec.len() - 1].to_vec()
}

/// The properties in a content header payload.
pub fn header_properties(raw: &[u8]) -> Option<AMQPProperties> {
    parse_properties(raw.get(12..)?)
}

/// The properties from their flags and list (a header payload past its first
/// 12 bytes, as stored with a message).
pub fn parse_properties(props: &[u8]) -> Option<AMQPProperties> {
    let (_, properties) = amq_protocol::protocol::basic::parse_properties(props).ok()?;
    Some(properties)
}

thread_local! {
    /// amq-protocol's generator writes into a `Vec`; one per thread saves an
    /// allocation per method sent.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Appends a method frame.
pub fn put_method(out: &mut BytesMut, channel: u16, method: AMQPClass) {
    let frame = AMQPFrame::Method(channel, method);
    SCRATCH.with(|scratch| {
        let mut vec = std::mem::take(&mut *scratch.borrow_mut());
        vec.clear();
        // Generation into a Vec cannot fail: it grows as needed.
        let (vec, _) = gen_frame(&frame)(WriteContext::from(vec))
            .expect("encoding into a Vec")
            .into_inner();
        out.extend_from_slice(&vec);
        *scratch.borrow_mut() = vec;
    });
}

/// A method's payload as it goes on the wire (class id, method id, arguments).
pub fn method_payload(channel: u16, method: AMQPClass) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_method(&mut out, channel, method);
    out[7..out.len() - 1].to_vec()
}

/// Appends a heartbeat frame.
pub fn put_heartbeat(out: &mut BytesMut) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Appends `basic.deliver` by hand: it is the one method on the per-message path,
/// and writing it directly avoids building owned strings for every delivery.
pub fn put_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let size = 4 + 1 + consumer_tag.len() + 8 + 1 + 1 + exchange.len() + 1 + routing_key.len();
    out.reserve(size + FRAME_OVERHEAD);
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(size as u32);
    out.put_u16(60);
    out.put_u16(60);
    put_short_str(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    out.put_u8(FRAME_END);
}

fn put_short_str(out: &mut BytesMut, s: &str) {
    // Names are checked to fit a short string when they come in.
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
}

/// Appends a content header (its payload as received from the publisher) and the
/// body cut into frames no larger than `frame_max`.
pub fn put_content(out: &mut BytesMut, channel: u16, header: &[u8], body: &[u8], frame_max: u32) {
    out.reserve(header.len() + body.len() + FRAME_OVERHEAD * 2);
    out.put_u8(FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32(header.len() as u32);
    out.put_slice(header);
    out.put_u8(FRAME_END);
    put_body(out, channel, body, frame_max);
}

/// Appends a message's content frames from its property bytes (flags and list,
/// as stored with a queued message) and body: class 60, weight 0.
pub fn put_message(out: &mut BytesMut, channel: u16, props: &[u8], body: &[u8], frame_max: u32) {
    out.reserve(12 + props.len() + body.len() + FRAME_OVERHEAD * 2);
    // Frame header, class 60, weight 0 and body size in one copy.
    let mut start = [0u8; 19];
    start[0] = FRAME_HEADER;
    start[1..3].copy_from_slice(&channel.to_be_bytes());
    start[3..7].copy_from_slice(&(12 + props.len() as u32).to_be_bytes());
    start[7..9].copy_from_slice(&60u16.to_be_bytes());
    start[11..19].copy_from_slice(&(body.len() as u64).to_be_bytes());
    out.put_slice(&start);
    out.put_slice(props);
    out.put_u8(FRAME_END);
    put_body(out, channel, body, frame_max);
}

fn put_body(out: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for piece in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(piece.len() as u32);
        out.put_slice(piece);
        out.put_u8(FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parse_frame;
    use amq_protocol::protocol::basic;

    #[test]
    fn deliver_written_by_hand_parses_as_deliver() {
        let mut out = BytesMut::new();
        put_deliver(&mut out, 7, "ctag", 42, true, "ex", "rk");
        let (rest, frame) = parse_frame(&out[..]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            frame,
            AMQPFrame::Method(
                7,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: "ctag".into(),
                    delivery_tag: 42,
                    redelivered: true,
                    exchange: "ex".into(),
                    routing_key: "rk".into(),
                }))
            )
        );
    }

    #[test]
    fn hand_decoded_publish_and_ack_agree_with_amq_protocol() {
        for method in [
            publish("ex", "a.b", true, false),
            publish("", "", false, true),
            publish("x".repeat(255).as_str(), "ключ", true, true),
        ] {
            let payload = Bytes::from(method_payload(1, method.clone()));
            let fast = Publish::parse(&payload).expect("read by hand");
            assert_eq!(fast.to_method(), method);
            assert_eq!(parse_class(&payload[..]).unwrap().1, method);
        }
        let ack = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: u64::MAX - 7,
            multiple: true,
        }));
        let payload = method_payload(1, ack.clone());
        let (class, id) = payload_ids(&payload);
        assert_eq!(
            parse_hot_method(class, id, &payload[4..]),
            Some(ack.clone())
        );
        assert_eq!(parse_class(&payload[..]).unwrap().1, ack);
    }

    #[test]
    fn unusual_publishes_are_left_to_the_general_parser() {
        let good = method_payload(1, publish("ex", "rk", false, false));
        let mut trailing = good.clone();
        trailing.push(0);
        let mut bad_utf8 = good.clone();
        bad_utf8[7] = 0xFF;
        let truncated = good[..good.len() - 1].to_vec();
        for payload in [trailing, bad_utf8, truncated] {
            assert!(Publish::parse(&Bytes::from(payload.clone())).is_none());
            assert!(
                parse_method(&payload).is_err(),
                "the general parser refuses it"
            );
        }
        let mut buf = BytesMut::new();
        put_method(&mut buf, 3, publish("ex", "rk", true, false));
        match decode(&mut buf, 4096).unwrap() {
            Some(Frame::Publish(3, p)) => {
                assert_eq!(
                    (p.exchange(), p.routing_key(), p.mandatory),
                    ("ex", "rk", true)
                );
            }
            other => panic!("expected a hand-read publish, got {other:?}"),
        }
    }

    #[test]
    fn header_without_properties_read_by_hand_agrees_with_amq_protocol() {
        let raw = encode_header(1234, &AMQPProperties::default());
        assert_eq!(raw.len(), 14, "the hand-read shape");
        let Frame::Header {
            class_id,
            body_size,
            properties,
            ..
        } = parse_header(3, raw.clone()).unwrap()
        else {
            panic!("a header");
        };
        assert_eq!((class_id, body_size), (60, 1234));
        assert_eq!(properties, None);
        assert_eq!(header_properties(&raw).as_ref(), Some(no_properties()));
    }

    fn publish(exchange: &str, routing_key: &str, mandatory: bool, immediate: bool) -> AMQPClass {
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory,
            immediate,
        }))
    }

    fn payload_ids(p: &[u8]) -> (u16, u16) {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    }

    #[test]
    fn split_frames_takes_whole_frames_and_leaves_the_rest_to_decode() {
        let mut buf = BytesMut::new();
        put_method(&mut buf, 1, publish("", "q", false, false));
        put_message(&mut buf, 1, &[0, 0], b"hello", 4096);
        let whole = buf.len();
        put_heartbeat(&mut buf);
        let partial = buf.len() - 3;
        buf.truncate(partial);
        let frames = split_frames(&mut buf, 4096);
        assert_eq!(frames.len(), whole, "the cut heartbeat stays behind");
        assert_eq!(buf.len(), partial - whole);
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < frames.len() {
            let (frame, next) = frame_at(&frames, at);
            kinds.push(match frame.unwrap() {
                Frame::Publish(1, p) => format!("publish {}", p.routing_key()),
                Frame::Header { body_size, .. } => format!("header {body_size}"),
                Frame::Body(1, body) => format!("body {}", String::from_utf8_lossy(&body)),
                other => panic!("unexpected {other:?}"),
            });
            at = next;
        }
        assert_eq!(kinds, ["publish q", "header 5", "body hello"]);
        assert!(
            decode(&mut buf, 4096).unwrap().is_none(),
            "still incomplete"
        );

        // A frame with a bad end octet is not taken: decode reports it.
        let mut buf = BytesMut::new();
        put_heartbeat(&mut buf);
        put_heartbeat(&mut buf);
        let last = buf.len() - 1;
        buf[last] = 0;
        assert_eq!(split_frames(&mut buf, 4096).len(), 8);
        assert!(decode(&mut buf, 4096).is_err());
    }

    #[test]
    fn oversized_frame_is_refused_before_its_payload_arrives() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 1, 0, 0][..]);
        let err = decode(&mut buf, 4096).unwrap_err();
        assert_eq!(err.code, code::FRAME_ERROR);
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut out = BytesMut::new();
        put_heartbeat(&mut out);
        let mut part = BytesMut::from(&out[..5]);
        assert!(decode(&mut part, 4096).unwrap().is_none());
        let mut whole = out.clone();
        assert!(matches!(
            decode(&mut whole, 4096).unwrap(),
            Some(Frame::Heartbeat(0))
        ));
        assert!(whole.is_empty());
    }

    #[test]
    fn body_is_split_by_frame_max() {
        let mut out = BytesMut::new();
        put_content(
            &mut out,
            1,
            &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0],
            &[7; 10],
            12,
        );
        let mut frames = Vec::new();
        while let Some(f) = decode(&mut out, 100).unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 1 + 3);
        let body: Vec<u8> = frames[1..]
            .iter()
            .flat_map(|f| match f {
                Frame::Body(_, b) => b.to_vec(),
                other => panic!("expected body, got {other:?}"),
            })
            .collect();
        assert_eq!(body, vec![7; 10]);
    }
}
