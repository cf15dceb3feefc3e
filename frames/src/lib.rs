//! The test side of the wire: AMQP 0-9-1 frames built and read with amq-protocol (an
//! implementation independent of Warren's hand-written codec paths), for every test
//! that talks to a broker in frames: `broker/tests/common`, the conformance driver,
//! the fuzzers' `wire` module and the client's scripted peer.
//!
//! Only frames: what a test does with them (waits, timeouts, how it reports a
//! surprise) stays with the test. Nothing here panics on input read from a peer;
//! encoding panics only on values a test built wrong (a short string over 255 bytes).

use amq_protocol::{
    frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext},
    protocol::{basic, channel, connection, AMQPClass, BasicProperties},
};

/// What a client sends first: AMQP 0-9-1.
pub const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// The frame-end octet.
pub const FRAME_END: u8 = 0xCE;

/// Bytes a frame adds around its payload: type, channel, size, frame-end.
pub const FRAME_OVERHEAD: usize = 8;

/// One frame as bytes.
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    match gen_frame(frame)(WriteContext::from(Vec::new())) {
        Ok(ctx) => ctx.into_inner().0,
        Err(e) => panic!("cannot encode {frame:?}: {e:?}"),
    }
}

/// A method frame as bytes.
pub fn method(channel: u16, method: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(channel, method))
}

/// A content header frame (class 60) announcing `body_size` bytes.
pub fn header(channel: u16, body_size: u64, properties: BasicProperties) -> Vec<u8> {
    encode(&AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: 60,
            body_size,
            properties,
        },
    ))
}

/// A body frame.
pub fn body(channel: u16, bytes: &[u8]) -> Vec<u8> {
    encode(&AMQPFrame::Body(channel, bytes.to_vec()))
}

/// A content header and its body, cut into body frames that fit `frame_max`.
pub fn content(channel: u16, properties: BasicProperties, bytes: &[u8], frame_max: u32) -> Vec<u8> {
    let mut out = header(channel, bytes.len() as u64, properties);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for piece in bytes.chunks(chunk) {
        out.extend(body(channel, piece));
    }
    out
}

/// A frame with any type, channel and payload; `end` is the frame-end octet
/// ([`FRAME_END`] when well formed): for malformed input on purpose.
pub fn raw_frame(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(end);
    out
}

/// Why [`take_frame`] could not read a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeError {
    /// The peer sent a protocol header (a broker does so to refuse our version).
    ProtocolHeader(Vec<u8>),
    /// A complete frame (its bytes, taken off the buffer) that amq-protocol refuses.
    Unparsable { bytes: Vec<u8>, error: String },
}

/// Cuts one complete frame off the front of `buf`: `Ok(None)` until one is there.
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<AMQPFrame>, TakeError> {
    if buf.first() == Some(&b'A') {
        if buf.len() < PROTOCOL_HEADER.len() {
            return Ok(None);
        }
        return Err(TakeError::ProtocolHeader(
            buf.drain(..PROTOCOL_HEADER.len()).collect(),
        ));
    }
    if buf.len() < 7 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size.saturating_add(FRAME_OVERHEAD);
    if buf.len() < total {
        return Ok(None);
    }
    let bytes: Vec<u8> = buf.drain(..total).collect();
    match parse_frame(bytes.as_slice()) {
        Ok((_, frame)) => Ok(Some(frame)),
        Err(e) => Err(TakeError::Unparsable {
            bytes,
            error: format!("{e:?}"),
        }),
    }
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

/// RabbitMQ quotes the offending octets of a bad frame in its reply text, which then
/// is not UTF-8 and amq-protocol refuses to parse it: decode such a `channel.close`
/// or `connection.close` frame by hand, with the text made lossy.
pub fn parse_close_lossy(bytes: &[u8]) -> Option<AMQPFrame> {
    let u16_at = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]))
    };
    if bytes.first() != Some(&1) {
        return None;
    }
    let ch = u16_at(1)?;
    let (class, method) = (u16_at(7)?, u16_at(9)?);
    let code = u16_at(11)?;
    let len = *bytes.get(13)? as usize;
    let text = String::from_utf8_lossy(bytes.get(14..14 + len)?).into_owned();
    let (class_id, method_id) = (u16_at(14 + len)?, u16_at(16 + len)?);
    let m = match (class, method) {
        (10, 50) => AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: code,
            reply_text: text.into(),
            class_id,
            method_id,
        })),
        (20, 40) => AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: code,
            reply_text: text.into(),
            class_id,
            method_id,
        })),
        _ => return None,
    };
    Some(AMQPFrame::Method(ch, m))
}

/// Whether a method the broker sends is followed by a content header and body.
pub fn carries_content(method: &AMQPClass) -> bool {
    matches!(
        method,
        AMQPClass::Basic(
            basic::AMQPMethod::Deliver(_)
                | basic::AMQPMethod::GetOk(_)
                | basic::AMQPMethod::Return(_)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_are_read_back_one_at_a_time() {
        let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
        let mut buf = method(1, open.clone());
        buf.extend(content(1, BasicProperties::default(), &[7; 10], 12));
        let whole = buf.clone();
        assert_eq!(take_frame(&mut buf[..3].to_vec()), Ok(None));
        assert_eq!(take_frame(&mut buf), Ok(Some(AMQPFrame::Method(1, open))));
        assert!(matches!(
            take_frame(&mut buf),
            Ok(Some(AMQPFrame::Header(1, _)))
        ));
        // 10 bytes of body in frames of at most 12 - 8 = 4.
        let bodies = parse_frames(&buf).unwrap();
        assert_eq!(bodies.len(), 3);
        assert_eq!(parse_frames(&whole).unwrap().len(), 5);
    }

    #[test]
    fn a_protocol_header_and_a_bad_frame_are_errors_not_panics() {
        let mut buf = PROTOCOL_HEADER.to_vec();
        assert!(matches!(
            take_frame(&mut buf),
            Err(TakeError::ProtocolHeader(_))
        ));
        let mut buf = raw_frame(1, 0, &[0, 10], 0);
        assert!(matches!(
            take_frame(&mut buf),
            Err(TakeError::Unparsable { .. })
        ));
        assert!(buf.is_empty(), "the bad frame left the buffer");
    }

    #[test]
    fn a_close_with_a_text_that_is_not_utf8_is_read_lossily() {
        let mut payload = vec![0, 20, 0, 40, 1, 245, 2, b'a', 0xff, 0, 60, 0, 40];
        let frame = raw_frame(1, 3, &payload, FRAME_END);
        let Some(AMQPFrame::Method(3, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) =
            parse_close_lossy(&frame)
        else {
            panic!("not read");
        };
        assert_eq!((c.reply_code, c.class_id, c.method_id), (501, 60, 40));
        payload[1] = 99;
        assert_eq!(
            parse_close_lossy(&raw_frame(1, 3, &payload, FRAME_END)),
            None
        );
    }
}
