//! Frames to bytes and back, with no I/O: the wire layer the connection task drives.
//!
//! Method and header frames go through amq-protocol's generator and parser. Body frames
//! are cut and framed here by hand so that a message body is copied once on the way out
//! and not at all on the way in (a received body is a slice of the read buffer).

use amq_protocol::{
    frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, ProtocolVersion, WriteContext},
    protocol::{basic::AMQPProperties, constants, AMQPClass},
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
    Header(u16, AMQPContentHeader),
    Body(u16, Bytes),
    Heartbeat,
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
    gen_into(buf, &AMQPFrame::Method(channel, method))
}

/// A content header frame and as many body frames as `frame_max` requires.
pub(crate) fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    properties: AMQPProperties,
    body: &[u8],
    frame_max: u32,
) -> Result<(), Error> {
    gen_into(
        buf,
        &AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties,
            },
        ),
    )?;
    let max_payload = (frame_max.max(FRAME_MIN_SIZE) as usize) - FRAME_OVERHEAD;
    buf.reserve(body.len() + body.len().div_ceil(max_payload) * FRAME_OVERHEAD);
    for chunk in body.chunks(max_payload) {
        buf.put_u8(constants::FRAME_BODY);
        buf.put_u16(channel);
        buf.put_u32(chunk.len() as u32);
        buf.extend_from_slice(chunk);
        buf.put_u8(FRAME_END);
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
    let mut raw = buf.split_to(total);
    match frame_type {
        constants::FRAME_BODY => {
            raw.advance(7);
            raw.truncate(size);
            Ok(Some(Frame::Body(channel, raw.freeze())))
        }
        constants::FRAME_HEARTBEAT => Ok(Some(Frame::Heartbeat)),
        constants::FRAME_METHOD | constants::FRAME_HEADER => match parse_frame(&raw[..]) {
            Ok((_, AMQPFrame::Method(ch, m))) => Ok(Some(Frame::Method(ch, m))),
            Ok((_, AMQPFrame::Header(ch, h))) => Ok(Some(Frame::Header(ch, h))),
            Ok((_, other)) => Err(frame_error(format!("unexpected frame {other}"))),
            Err(e) => Err(Error::Protocol {
                code: 502,
                message: format!("cannot parse frame: {e}"),
            }),
        },
        other => Err(frame_error(format!("unknown frame type {other}"))),
    }
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
        encode_content(&mut buf, 3, props.clone(), &body, 4096).unwrap();
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
                assert_eq!(h.properties, props);
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
