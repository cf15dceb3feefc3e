//! The fuzz targets' bodies, shared by libFuzzer (`libfuzzer/`) and the robustness
//! property tests: each takes arbitrary bytes and panics when Warren breaks one of
//! its promises about bad input, so that both harnesses report it as a crash.
//!
//! The promises checked: no panic; whatever the broker writes is well-formed frames;
//! every `connection.close` and `channel.close` carries a code from the AMQP set with
//! RabbitMQ's text prefix; nothing follows a `connection.close` but its `close-ok`,
//! and nothing follows a `connection.close-ok`;
//! input held back waiting for the rest of a frame never exceeds frame_max; and once
//! the hostile connection is done, another connection on the same broker still works.

use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};
use bytes::BytesMut;
use warren_broker::codec::{self, Frame};
use warren_broker::error::{code_name, Scope};
use warren_broker::testing::{Core, CoreConnection};
use warren_broker::Config;

use crate::wire::{self, Event};

/// Reply codes a `connection.close` may carry.
const CONNECTION_CODES: &[u16] = &[320, 402, 403, 501, 502, 503, 504, 505, 506, 530, 540, 541];
/// Reply codes a `channel.close` may carry.
const CHANNEL_CODES: &[u16] = &[403, 404, 405, 406];

/// Target `frame_decode`: Warren's frame decoder on arbitrary bytes. The first two
/// bytes pick frame_max; every frame Warren accepts must be one amq-protocol
/// accepts too, and a method re-encoded by Warren must decode to the same bytes.
/// The batch decoder (`split_frames`, `frame_at`) must agree with `decode`.
pub fn frame_decode(data: &[u8]) {
    let (frame_max, rest) = match data {
        [a, b, rest @ ..] => (4096 + u32::from(u16::from_be_bytes([*a, *b])), rest),
        _ => return,
    };
    check_batch_agrees(rest, frame_max);
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.clone();
        match codec::decode(&mut buf, frame_max) {
            Ok(None) => {
                assert!(
                    buf.len() < frame_max as usize + codec::FRAME_OVERHEAD,
                    "waiting for more with {} bytes held (frame_max {frame_max})",
                    buf.len()
                );
                return;
            }
            Err(e) => {
                // A socket-scope error closes without a word, so it has no code.
                assert!(
                    e.scope == Scope::Socket || CONNECTION_CODES.contains(&e.code),
                    "{e:?}"
                );
                return;
            }
            Ok(Some(frame)) => {
                let used = before.len() - buf.len();
                let size = u32::from_be_bytes([before[3], before[4], before[5], before[6]]);
                assert_eq!(used, size as usize + codec::FRAME_OVERHEAD);
                check_decoded(&before[..used], frame, frame_max);
            }
        }
    }
}

/// `split_frames` takes exactly the frames `decode` would take one by one, up to
/// the first it would wait for or refuse, and `frame_at` reads each the same way.
fn check_batch_agrees(input: &[u8], frame_max: u32) {
    let mut batch_buf = BytesMut::from(input);
    let frames = codec::split_frames(&mut batch_buf, frame_max);
    let mut one_by_one = BytesMut::from(input);
    let mut at = 0;
    while at < frames.len() {
        let (batched, next) = codec::frame_at(&frames, at);
        let single = codec::decode(&mut one_by_one, frame_max);
        match (batched, single) {
            (Ok(a), Ok(Some(b))) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
            (Err(a), Err(b)) => assert_eq!(a.reply_text(), b.reply_text()),
            (a, b) => panic!("batch read {a:?}, decode read {b:?}"),
        }
        at = next;
    }
    assert_eq!(at, frames.len());
    assert_eq!(&batch_buf[..], &one_by_one[..], "both leave the same bytes");
}

fn check_decoded(bytes: &[u8], frame: Frame, frame_max: u32) {
    let theirs = amq_protocol::frame::parse_frame(bytes);
    // A publish read in place is compared as the method it is.
    match frame.general() {
        Frame::Method(ch, m) => {
            let Ok((_, amq_protocol::frame::AMQPFrame::Method(their_ch, their_m))) = theirs else {
                panic!("Warren decoded {m:?}, amq-protocol did not: {theirs:?}");
            };
            assert_eq!(ch, their_ch);
            // Floats in tables may be NaN, which equals nothing: compare encodings.
            let ours = encode(ch, m);
            assert_eq!(ours, encode(ch, their_m));
            let mut again = BytesMut::from(&ours[..]);
            match codec::decode(&mut again, frame_max.max(ours.len() as u32)) {
                Ok(Some(f)) => match f.general() {
                    Frame::Method(_, m2) => assert_eq!(encode(ch, m2), ours),
                    other => panic!("re-encoded method decodes as {other:?}"),
                },
                other => panic!("re-encoded method does not decode: {other:?}"),
            }
        }
        Frame::Header {
            raw, properties, ..
        } => {
            assert_eq!(&raw[..], &bytes[7..bytes.len() - 1]);
            match theirs {
                Ok((_, amq_protocol::frame::AMQPFrame::Header(_, h))) => {
                    assert_eq!(
                        wire::frame(&amq_protocol::frame::AMQPFrame::Header(
                            0,
                            amq_protocol::frame::AMQPContentHeader {
                                class_id: h.class_id,
                                body_size: h.body_size,
                                properties: properties.map_or_else(
                                    || warren_broker::codec::no_properties().clone(),
                                    |p| *p,
                                ),
                            }
                        )),
                        wire::frame(&amq_protocol::frame::AMQPFrame::Header(0, h))
                    )
                }
                other => panic!("Warren decoded a header, amq-protocol did not: {other:?}"),
            }
        }
        Frame::Body(_, body) => assert_eq!(&body[..], &bytes[7..bytes.len() - 1]),
        Frame::Heartbeat(_) => assert_eq!(bytes.len(), codec::FRAME_OVERHEAD),
        Frame::Publish(..) => unreachable!("general() turns a publish into a method"),
    }
}

fn encode(ch: u16, m: AMQPClass) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::put_method(&mut out, ch, m);
    out.to_vec()
}

/// What is known about one connection's output so far.
#[derive(Debug, Default)]
pub struct Watch {
    /// The broker sent `connection.close`: only its `close-ok` may follow.
    pub close_sent: bool,
    /// The broker sent `connection.close-ok`: nothing may follow but another
    /// `close-ok`, the answer to another `connection.close` (RabbitMQ's reader
    /// answers every `connection.close` while closing or closed: `rabbit_reader`,
    /// `handle_method0` for `connection.close` when `?IS_STOPPING`).
    pub close_ok_sent: bool,
    /// The broker sent the protocol header back (a refused header).
    pub header_refused: bool,
    pub events: Vec<Event>,
}

impl Watch {
    /// Takes the connection's output and checks it against the promises above.
    pub fn take(&mut self, conn: &mut CoreConnection) -> Vec<Event> {
        assert!(
            conn.buffered_input() <= wire::FRAME_MAX as usize + codec::FRAME_OVERHEAD,
            "{} bytes of input held back, frame_max is {}",
            conn.buffered_input(),
            wire::FRAME_MAX
        );
        let out = conn.take_output();
        let events = match wire::parse_events(&out) {
            Ok(events) => events,
            Err(e) => panic!("broker wrote bytes a client cannot parse: {e}"),
        };
        for e in &events {
            self.check(e);
        }
        self.events.extend(events.iter().cloned());
        events
    }

    fn check(&mut self, e: &Event) {
        let close_ok = matches!(
            e,
            Event::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
        );
        assert!(
            !self.close_ok_sent || close_ok,
            "{e:?} after connection.close-ok"
        );
        if self.close_sent {
            assert!(
                matches!(
                    e,
                    Event::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
                ),
                "{e:?} after connection.close"
            );
        }
        match e {
            Event::ProtocolHeader => {
                assert!(self.events.is_empty(), "protocol header after other output");
                self.header_refused = true;
            }
            Event::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                assert!(
                    CONNECTION_CODES.contains(&c.reply_code),
                    "connection.close with code {}",
                    c.reply_code
                );
                assert!(
                    c.reply_text.as_str().starts_with(code_name(c.reply_code)),
                    "reply text {:?} for code {}",
                    c.reply_text,
                    c.reply_code
                );
                self.close_sent = true;
            }
            Event::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                self.close_ok_sent = true;
            }
            Event::Method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                assert_ne!(*ch, 0, "channel.close on channel 0");
                assert!(
                    CHANNEL_CODES.contains(&c.reply_code),
                    "channel.close with code {}",
                    c.reply_code
                );
                assert!(
                    c.reply_text.as_str().starts_with(code_name(c.reply_code)),
                    "reply text {:?} for code {}",
                    c.reply_text,
                    c.reply_code
                );
            }
            _ => {}
        }
    }
}

/// Feeds bytes and checks the promises; returns whether the socket is still open.
pub fn feed(conn: &mut CoreConnection, watch: &mut Watch, bytes: &[u8]) -> bool {
    let was_open = !conn.is_closed();
    let open = conn.feed(bytes);
    if !was_open {
        assert!(!open, "a closed connection came back to life");
    }
    watch.take(conn);
    open
}

/// Target `connection`: one connection fed arbitrary bytes from its very first
/// byte, in two pieces (so that frames cut across reads are seen too).
pub fn connection(data: &[u8]) {
    let core = Core::new(Config::default());
    let mut conn = core.connect();
    let mut watch = Watch::default();
    let cut = data.len() / 2;
    feed(&mut conn, &mut watch, &data[..cut]);
    feed(&mut conn, &mut watch, &data[cut..]);
    check_healthy(&core);
    drop(conn);
    check_healthy(&core);
}

/// Target `session`: two connections already open, each with channel 1 open, then
/// fed records from `data`: one byte picks the connection (low bit) and a length
/// byte says how many of the following bytes go to it. Exercises what one
/// connection's input does to another's queues and consumers.
pub fn session(data: &[u8]) {
    let core = Core::new(Config::default());
    let mut conns = [open_connection(&core), open_connection(&core)];
    let mut watches = [Watch::default(), Watch::default()];
    let mut rest = data;
    while let [which, len, tail @ ..] = rest {
        let i = usize::from(which & 1);
        let n = usize::from(*len).min(tail.len());
        let (chunk, after) = tail.split_at(n);
        feed(&mut conns[i], &mut watches[i], chunk);
        rest = after;
    }
    if !rest.is_empty() {
        feed(&mut conns[0], &mut watches[0], rest);
    }
    check_healthy(&core);
    let [a, b] = conns;
    drop(a);
    check_healthy(&core);
    drop(b);
    check_healthy(&core);
}

/// A connection through its handshake with channel 1 open; its output so far is
/// checked and dropped.
pub fn open_connection(core: &Core) -> CoreConnection {
    let mut conn = core.connect();
    let mut bytes = wire::handshake();
    bytes.extend(wire::channel_open(1));
    assert!(conn.feed(&bytes), "handshake refused");
    let events = Watch::default().take(&mut conn);
    assert!(
        matches!(
            events.last(),
            Some(Event::Method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
            ))
        ),
        "handshake answered with {events:?}"
    );
    conn
}

/// A fresh connection declares a server-named queue, publishes to it and gets the
/// message back: the broker is still serving.
pub fn check_healthy(core: &Core) {
    let mut conn = open_connection(core);
    let mut watch = Watch::default();
    let declare = wire::method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    );
    assert!(feed(&mut conn, &mut watch, &declare));
    let name = match watch.events.as_slice() {
        [Event::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))] => {
            ok.queue.to_string()
        }
        other => panic!("queue.declare answered with {other:?}"),
    };
    let mut bytes = wire::publish(1, "", &name, b"still here");
    bytes.extend(wire::method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: name.as_str().into(),
            no_ack: true,
        })),
    ));
    assert!(feed(&mut conn, &mut watch, &bytes));
    match watch.events.last() {
        Some(Event::Content { body, method, .. })
            if body == b"still here"
                && matches!(method, AMQPClass::Basic(basic::AMQPMethod::GetOk(_))) => {}
        other => panic!("basic.get answered with {other:?}"),
    }
}
