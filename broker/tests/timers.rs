//! The connection's timers (heartbeats both ways, the handshake and close
//! timeouts) stepped through `testing::Core`: no socket, no sleeping; each
//! connection's clock moves only when the test advances it.

use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{channel, connection, AMQPClass};
use warren_broker::testing::{Core, CoreConnection};
use warren_frames::{encode, method, parse_frames, PROTOCOL_HEADER};

const SECOND: Duration = Duration::from_secs(1);

fn start_ok() -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: Default::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    )
}

/// A connection opened on vhost `/` with the heartbeat interval the client
/// asked for in `tune-ok`; the handshake's replies are taken.
fn open(core: &Core, heartbeat: u16) -> CoreConnection {
    let mut conn = core.connect();
    let mut input = PROTOCOL_HEADER.to_vec();
    input.extend(start_ok());
    input.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat,
        })),
    ));
    input.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    ));
    assert!(conn.feed(&input));
    let replies = frames(&mut conn);
    assert!(
        matches!(
            replies.last(),
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
            ))
        ),
        "the handshake ends in open-ok: {replies:?}"
    );
    conn
}

fn frames(conn: &mut CoreConnection) -> Vec<AMQPFrame> {
    parse_frames(&conn.take_output()).expect("whole frames")
}

fn heartbeats(conn: &mut CoreConnection) -> usize {
    let out = frames(conn);
    assert!(
        out.iter().all(|f| matches!(f, AMQPFrame::Heartbeat)),
        "only heartbeats: {out:?}"
    );
    out.len()
}

#[test]
fn the_broker_sends_a_heartbeat_every_half_interval() {
    let core = Core::new(Default::default());
    let mut conn = open(&core, 10);
    assert_eq!(conn.next_timer(), Some(5 * SECOND));
    assert!(conn.advance(5 * SECOND - Duration::from_millis(1)));
    assert_eq!(heartbeats(&mut conn), 0, "none before half an interval");
    assert!(conn.advance(Duration::from_millis(1)));
    assert_eq!(heartbeats(&mut conn), 1);
    // The client keeps talking, so it is never dropped: 60 s bring 12 heartbeats.
    for _ in 0..12 {
        assert!(conn.feed(&encode(&AMQPFrame::Heartbeat)));
        assert!(conn.advance(5 * SECOND));
    }
    assert_eq!(heartbeats(&mut conn), 12);
    assert!(!conn.is_closed());
}

#[test]
fn a_silent_client_is_dropped_after_two_intervals_without_a_close() {
    let core = Core::new(Default::default());
    let mut conn = open(&core, 10);
    assert!(conn.advance(20 * SECOND - Duration::from_millis(1)));
    assert_eq!(heartbeats(&mut conn), 3, "at 5, 10 and 15 s");
    assert!(!conn.advance(Duration::from_millis(1)), "dropped at 20 s");
    assert!(conn.is_closed());
    assert_eq!(
        heartbeats(&mut conn),
        0,
        "no connection.close, no heartbeat"
    );
    assert_eq!(conn.next_timer(), None);
}

#[test]
fn any_frame_from_the_client_counts_as_a_sign_of_life() {
    let core = Core::new(Default::default());
    let mut conn = open(&core, 10);
    assert!(conn.advance(15 * SECOND));
    let open = method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    assert!(conn.feed(&open));
    // 15 s after the channel.open, 30 s after the last other frame.
    assert!(conn.advance(15 * SECOND));
    assert!(!conn.is_closed());
    assert!(!conn.advance(5 * SECOND), "20 s after the channel.open");
}

#[test]
fn heartbeat_zero_disables_both_directions() {
    let core = Core::new(Default::default());
    let mut conn = open(&core, 0);
    assert_eq!(conn.next_timer(), None);
    assert!(conn.advance(Duration::from_secs(24 * 3600)));
    assert_eq!(heartbeats(&mut conn), 0);
}

#[test]
fn a_handshake_that_stalls_is_dropped_after_the_handshake_timeout() {
    let core = Core::new(Default::default());
    let mut conn = core.connect();
    assert!(conn.feed(PROTOCOL_HEADER));
    let start = frames(&mut conn);
    assert!(matches!(
        start.as_slice(),
        [AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(_))
        )]
    ));
    // Config's default handshake timeout, 10 s like RabbitMQ's, counted from the
    // socket's start whatever the client has sent since.
    assert!(conn.advance(5 * SECOND));
    assert!(conn.feed(&start_ok()));
    assert_eq!(conn.next_timer(), Some(5 * SECOND));
    assert!(conn.advance(5 * SECOND - Duration::from_millis(1)));
    assert!(!conn.advance(Duration::from_millis(1)));
    assert!(conn.is_closed());
    let said: Vec<_> = frames(&mut conn)
        .into_iter()
        .filter(|f| {
            !matches!(
                f,
                AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))
            )
        })
        .collect();
    assert!(said.is_empty(), "nothing but tune, no close: {said:?}");
}

#[test]
fn an_open_connection_has_no_handshake_deadline() {
    let core = Core::new(Default::default());
    let mut conn = open(&core, 0);
    assert!(conn.advance(60 * SECOND));
    assert!(!conn.is_closed());
}

/// A broker-side `connection.close` (here a frame on a channel never opened,
/// 504) that the client never answers.
fn closed_by_the_broker(core: &Core) -> CoreConnection {
    let mut conn = open(core, 10);
    assert!(conn.feed(&method(
        3,
        AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: true })),
    )));
    let out = frames(&mut conn);
    assert!(
        matches!(
            out.as_slice(),
            [AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                    reply_code: 504,
                    ..
                }))
            )]
        ),
        "{out:?}"
    );
    assert!(conn.is_closing());
    conn
}

#[test]
fn an_unanswered_close_ends_after_the_close_timeout() {
    let core = Core::new(Default::default());
    let mut conn = closed_by_the_broker(&core);
    // Config's default close timeout, 3 s; no heartbeats while closing.
    assert_eq!(conn.next_timer(), Some(3 * SECOND));
    assert!(conn.advance(3 * SECOND - Duration::from_millis(1)));
    assert_eq!(heartbeats(&mut conn), 0);
    assert!(!conn.advance(Duration::from_millis(1)));
    assert!(conn.is_closed());
}

#[test]
fn a_close_ok_within_the_close_timeout_ends_the_connection_at_once() {
    let core = Core::new(Default::default());
    let mut conn = closed_by_the_broker(&core);
    assert!(conn.advance(2 * SECOND));
    let close_ok = method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    );
    assert!(!conn.feed(&close_ok));
    assert_eq!(conn.next_timer(), None);
}
