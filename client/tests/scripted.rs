//! The client against a scripted peer over an in-memory stream: what no real broker does
//! on demand (blocking, going silent, sending garbage, nacking, closing mid-flight).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use warren_client::amq_protocol::{
    frame::{AMQPFrame, ProtocolVersion},
    protocol::{basic, channel, confirm, connection, queue, AMQPClass},
    types::{FieldTable, LongString},
};
use warren_client::*;

/// The broker side of a connection, driven step by step by the test.
struct Peer {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Peer {
    async fn send(&mut self, frame: AMQPFrame) {
        self.io
            .write_all(&warren_frames::encode(&frame))
            .await
            .unwrap();
    }

    async fn method(&mut self, channel: u16, m: AMQPClass) {
        self.send(AMQPFrame::Method(channel, m)).await;
    }

    /// The next frame from the client, skipping heartbeats; `None` at end of stream.
    async fn recv(&mut self) -> Option<AMQPFrame> {
        loop {
            let taken = match warren_frames::take_frame(&mut self.buf) {
                Ok(frame) => frame,
                // What a client opens with; a broker's peer expects it.
                Err(warren_frames::TakeError::ProtocolHeader(_)) => {
                    Some(AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()))
                }
                Err(e) => panic!("client sent garbage: {e:?}"),
            };
            if let Some(frame) = taken {
                if frame == AMQPFrame::Heartbeat {
                    continue;
                }
                return Some(frame);
            }
            if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    async fn expect_method(&mut self) -> (u16, AMQPClass) {
        match self.recv().await {
            Some(AMQPFrame::Method(ch, m)) => (ch, m),
            other => panic!("expected a method, got {other:?}"),
        }
    }

    /// Accept a client: start, tune with `heartbeat`, open.
    async fn accept(io: DuplexStream, heartbeat: u16) -> Peer {
        let mut peer = Peer {
            io,
            buf: Vec::new(),
        };
        assert!(matches!(
            peer.recv().await,
            Some(AMQPFrame::ProtocolHeader(_))
        ));
        peer.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::default(),
                mechanisms: LongString::from(b"PLAIN AMQPLAIN".to_vec()),
                locales: LongString::from(b"en_US".to_vec()),
            })),
        )
        .await;
        match peer.expect_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::StartOk(ok))) => {
                assert_eq!(ok.mechanism.as_str(), "PLAIN");
                assert_eq!(ok.response.as_bytes(), b"\0guest\0guest");
            }
            other => panic!("{other:?}"),
        }
        peer.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: 16,
                frame_max: 4096,
                heartbeat,
            })),
        )
        .await;
        match peer.expect_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(ok))) => {
                assert_eq!(
                    (ok.channel_max, ok.frame_max, ok.heartbeat),
                    (16, 4096, heartbeat)
                );
            }
            other => panic!("{other:?}"),
        }
        match peer.expect_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Open(open))) => {
                assert_eq!(open.virtual_host.as_str(), "/")
            }
            other => panic!("{other:?}"),
        }
        peer.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        )
        .await;
        peer
    }

    /// Answer the client's channel.open.
    async fn open_channel(&mut self) -> u16 {
        match self.expect_method().await {
            (id, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                self.method(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                )
                .await;
                id
            }
            other => panic!("{other:?}"),
        }
    }

    async fn confirm_select(&mut self, id: u16) {
        match self.expect_method().await {
            (ch, AMQPClass::Confirm(confirm::AMQPMethod::Select(_))) if ch == id => {
                self.method(
                    id,
                    AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                )
                .await
            }
            other => panic!("{other:?}"),
        }
    }

    /// Read one publish (method, header, bodies) and return its body.
    async fn expect_publish(&mut self) -> Vec<u8> {
        match self.expect_method().await {
            (_, AMQPClass::Basic(basic::AMQPMethod::Publish(_))) => {}
            other => panic!("{other:?}"),
        }
        let size = match self.recv().await {
            Some(AMQPFrame::Header(_, h)) => h.body_size as usize,
            other => panic!("{other:?}"),
        };
        let mut body = Vec::new();
        while body.len() < size {
            match self.recv().await {
                Some(AMQPFrame::Body(_, b)) => body.extend_from_slice(&b),
                other => panic!("{other:?}"),
            }
        }
        body
    }
}

async fn pair(heartbeat: u16) -> (Connection, Peer) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (conn, peer) = tokio::join!(Connection::open(client), Peer::accept(server, heartbeat));
    (conn.unwrap(), peer)
}

async fn publish(ch: &Channel, body: &[u8]) -> PublisherConfirm {
    ch.basic_publish(
        "",
        "q",
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn confirms_multiple_ack_nack_and_failure_on_channel_close() {
    let (conn, mut peer) = pair(0).await;
    let (ch, id) = tokio::join!(conn.create_channel(), peer.open_channel());
    let ch = ch.unwrap();
    let (r, _) = tokio::join!(ch.confirm_select(), peer.confirm_select(id));
    r.unwrap();
    let mut confirms = Vec::new();
    for i in 0..5u8 {
        confirms.push(publish(&ch, &[i]).await);
    }
    for i in 0..5u8 {
        assert_eq!(peer.expect_publish().await, vec![i]);
    }
    let ack = |tag, multiple| {
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple,
        }))
    };
    peer.method(id, ack(2, true)).await;
    peer.method(
        id,
        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 4,
            multiple: false,
            requeue: false,
        })),
    )
    .await;
    let mut confirms = confirms.into_iter();
    assert_eq!(confirms.next().unwrap().await.unwrap(), Confirmation::Ack);
    assert_eq!(confirms.next().unwrap().await.unwrap(), Confirmation::Ack);
    let third = confirms.next().unwrap();
    assert_eq!(confirms.next().unwrap().await.unwrap(), Confirmation::Nack);
    let fifth = confirms.next().unwrap();
    // The broker closes the channel: confirms still outstanding fail with its reason.
    peer.method(
        id,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 406,
            reply_text: "PRECONDITION_FAILED - test".into(),
            class_id: 60,
            method_id: 40,
        })),
    )
    .await;
    for c in [third, fifth] {
        let err = c.await.unwrap_err();
        assert!(err.is_soft());
        assert_eq!(err.close_reason().unwrap().reply_code, 406);
        assert_eq!(
            (
                err.close_reason().unwrap().class_id,
                err.close_reason().unwrap().method_id
            ),
            (60, 40)
        );
    }
    // The client answered with close-ok.
    match peer.expect_method().await {
        (ch_id, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => assert_eq!(ch_id, id),
        other => panic!("{other:?}"),
    }
    assert!(conn.is_open());
}

#[tokio::test]
async fn connection_blocked_holds_publishes_until_unblocked() {
    let (conn, mut peer) = pair(0).await;
    let (ch, _) = tokio::join!(conn.create_channel(), peer.open_channel());
    let ch = ch.unwrap();
    peer.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
            reason: "low on memory".into(),
        })),
    )
    .await;
    while !conn.is_blocked() {
        tokio::task::yield_now().await;
    }
    let publisher = tokio::spawn(async move {
        publish(&ch, b"held").await;
        ch
    });
    // Nothing may arrive while blocked: the next frame must come after the unblock.
    let nothing = tokio::time::timeout(Duration::from_millis(100), peer.recv()).await;
    assert!(
        nothing.is_err(),
        "publish went out while blocked: {nothing:?}"
    );
    peer.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
    )
    .await;
    assert_eq!(peer.expect_publish().await, b"held");
    publisher.await.unwrap();
    assert!(!conn.is_blocked());
}

#[tokio::test(start_paused = true)]
async fn silent_broker_is_detected_by_heartbeats() {
    let (conn, mut peer) = pair(2).await;
    // The client sends heartbeats while idle...
    let started = tokio::time::Instant::now();
    let mut raw = [0u8; 8];
    peer.io.read_exact(&mut raw).await.unwrap();
    assert_eq!(raw, [8, 0, 0, 0, 0, 0, 0, 0xCE]);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // ...and gives up after two silent intervals.
    let err = conn.closed().await;
    assert!(matches!(err, Error::MissedHeartbeats), "{err:?}");
    assert!(err.is_hard());
    drop(peer);
}

#[tokio::test]
async fn broker_connection_close_fails_everything_and_gets_close_ok() {
    let (conn, mut peer) = pair(0).await;
    let (ch, id) = tokio::join!(conn.create_channel(), peer.open_channel());
    let ch = ch.unwrap();
    let declare = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.queue_declare("q", QueueDeclareOptions::default(), FieldTable::default())
                .await
        }
    });
    match peer.expect_method().await {
        (c, AMQPClass::Queue(queue::AMQPMethod::Declare(_))) => assert_eq!(c, id),
        other => panic!("{other:?}"),
    }
    peer.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 320,
            reply_text: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    let err = declare.await.unwrap().unwrap_err();
    assert!(err.is_hard());
    assert_eq!(err.reply_code(), Some(320));
    assert!(matches!(
        peer.expect_method().await,
        (0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
    ));
    assert_eq!(conn.closed().await.reply_code(), Some(320));
    assert_eq!(
        ch.queue_purge("q").await.unwrap_err().reply_code(),
        Some(320)
    );
}

#[tokio::test]
async fn oversized_frame_is_a_frame_error() {
    let (conn, mut peer) = pair(0).await;
    // A body frame announcing 1 MB on a connection tuned to 4096-byte frames.
    peer.io.write_all(&[3, 0, 1, 0, 0x10, 0, 0]).await.unwrap();
    let err = conn.closed().await;
    assert_eq!(err.reply_code(), Some(501), "{err:?}");
    match peer.expect_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Close(close))) => {
            assert_eq!(close.reply_code, 501)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn client_close_waits_for_close_ok() {
    let (conn, mut peer) = pair(0).await;
    let closing = tokio::spawn({
        let conn = conn.clone();
        async move { conn.close().await }
    });
    match peer.expect_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Close(close))) => {
            assert_eq!(close.reply_code, 200)
        }
        other => panic!("{other:?}"),
    }
    assert!(!closing.is_finished());
    peer.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )
    .await;
    closing.await.unwrap().unwrap();
    assert!(!conn.is_open());
}

#[tokio::test]
async fn garbage_from_the_broker_closes_with_frame_error() {
    let (conn, mut peer) = pair(0).await;
    peer.io
        .write_all(&[9, 0, 0, 0, 0, 0, 1, 0xAB, 0xCE])
        .await
        .unwrap();
    let err = conn.closed().await;
    assert!(err.is_hard(), "{err:?}");
    assert_eq!(err.reply_code(), Some(501), "{err:?}");
    match peer.expect_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Close(close))) => {
            assert_eq!(close.reply_code, 501)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn body_longer_than_its_header_is_unexpected_frame() {
    let (conn, mut peer) = pair(0).await;
    let (ch, id) = tokio::join!(conn.create_channel(), peer.open_channel());
    let _ch = ch.unwrap();
    peer.method(
        id,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "t".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        })),
    )
    .await;
    peer.send(AMQPFrame::Header(
        id,
        warren_client::amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size: 2,
            properties: BasicProperties::default(),
        },
    ))
    .await;
    peer.send(AMQPFrame::Body(id, b"abc".to_vec())).await;
    let err = conn.closed().await;
    assert_eq!(err.reply_code(), Some(505), "{err:?}");
}

#[tokio::test]
async fn broker_flow_pauses_publishes_and_cancel_gets_cancel_ok() {
    let (conn, mut peer) = pair(0).await;
    let (ch, id) = tokio::join!(conn.create_channel(), peer.open_channel());
    let ch = ch.unwrap();

    // channel.flow(false) from the broker: answered, and publishing waits.
    peer.method(
        id,
        AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: false })),
    )
    .await;
    match peer.expect_method().await {
        (c, AMQPClass::Channel(channel::AMQPMethod::FlowOk(ok))) => {
            assert_eq!((c, ok.active), (id, false))
        }
        other => panic!("{other:?}"),
    }
    let publisher = tokio::spawn({
        let ch = ch.clone();
        async move {
            publish(&ch, b"after flow").await;
        }
    });
    let nothing = tokio::time::timeout(Duration::from_millis(100), peer.recv()).await;
    assert!(
        nothing.is_err(),
        "published while flow was off: {nothing:?}"
    );
    peer.method(
        id,
        AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: true })),
    )
    .await;
    assert!(matches!(
        peer.expect_method().await,
        (_, AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)))
    ));
    assert_eq!(peer.expect_publish().await, b"after flow");
    publisher.await.unwrap();

    // A consumer, then a basic.cancel from the broker that asks for an answer.
    let consume = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.basic_consume(
                "q",
                "ctag",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    });
    match peer.expect_method().await {
        (_, AMQPClass::Basic(basic::AMQPMethod::Consume(c))) => {
            assert_eq!(c.consumer_tag.as_str(), "ctag")
        }
        other => panic!("{other:?}"),
    }
    peer.method(
        id,
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
            consumer_tag: "ctag".into(),
        })),
    )
    .await;
    let mut consumer = consume.await.unwrap().unwrap();
    peer.method(
        id,
        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "ctag".into(),
            nowait: false,
        })),
    )
    .await;
    match peer.expect_method().await {
        (_, AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok))) => {
            assert_eq!(ok.consumer_tag.as_str(), "ctag")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        consumer.recv().await,
        Some(Err(Error::ConsumerCancelled(tag))) if tag == "ctag"
    ));
    assert!(consumer.recv().await.is_none());
}

#[tokio::test]
async fn wait_for_confirms_reports_nacks_once() {
    let (conn, mut peer) = pair(0).await;
    let (ch, id) = tokio::join!(conn.create_channel(), peer.open_channel());
    let ch = ch.unwrap();
    let (r, _) = tokio::join!(ch.confirm_select(), peer.confirm_select(id));
    r.unwrap();
    assert!(ch.wait_for_confirms().await.unwrap(), "nothing outstanding");
    for i in 0..3u8 {
        // The individual confirms are not needed: wait_for_confirms covers them.
        drop(publish(&ch, &[i]).await);
        peer.expect_publish().await;
    }
    let waiter = tokio::spawn({
        let ch = ch.clone();
        async move { ch.wait_for_confirms().await }
    });
    peer.method(
        id,
        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 2,
            multiple: false,
            requeue: false,
        })),
    )
    .await;
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "1 and 3 are still outstanding");
    peer.method(
        id,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 3,
            multiple: true,
        })),
    )
    .await;
    assert!(!waiter.await.unwrap().unwrap(), "a nack was seen");
    assert!(ch.wait_for_confirms().await.unwrap(), "reported once");
}

/// Frames with a valid envelope (type, channel, size, end octet) around random payloads,
/// mixed with raw garbage: reaches the method parser, content reassembly and routing.
fn hostile_input() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::{collection::vec, prelude::*};
    let framed = (
        prop_oneof![Just(1u8), Just(2), Just(3), Just(8), any::<u8>()],
        0u16..3,
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, channel, payload)| {
            let mut f = vec![kind];
            f.extend_from_slice(&channel.to_be_bytes());
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            f.extend_from_slice(&payload);
            f.push(0xCE);
            f
        });
    let chunk = prop_oneof![4 => framed, 1 => vec(any::<u8>(), 0..16)];
    vec(chunk, 1..8).prop_map(|chunks| chunks.concat())
}

#[test]
fn hostile_bytes_end_the_connection_cleanly() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config)
        .run(&hostile_input(), |bytes| {
            rt.block_on(async {
                let (conn, mut peer) = pair(0).await;
                let (ch, _) = tokio::join!(conn.create_channel(), peer.open_channel());
                let ch = ch.unwrap();
                let _ = peer.io.write_all(&bytes).await;
                // Then the peer goes away: whatever the bytes did, the connection must
                // end with an error (no panic, no hang), and the channel must see it.
                drop(peer);
                let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
                    .await
                    .expect("the connection ends");
                assert!(
                    err.is_hard() || err.is_io() || matches!(err, Error::ConnectionClosed(_)),
                    "{err:?}"
                );
                assert!(ch.queue_purge("q").await.is_err());
            });
            Ok(())
        })
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_gives_up_when_the_broker_never_answers() {
    let (conn, mut peer) = pair(0).await;
    let (ch, _) = tokio::join!(conn.create_channel(), peer.open_channel());
    let ch = ch.unwrap();
    let closing = tokio::spawn({
        let conn = conn.clone();
        async move { conn.close().await }
    });
    assert!(matches!(
        peer.expect_method().await,
        (0, AMQPClass::Connection(connection::AMQPMethod::Close(_)))
    ));
    // No close-ok, ever: after the timeout the client lets go.
    assert!(matches!(closing.await.unwrap(), Err(Error::Timeout)));
    assert!(!conn.is_open());
    assert!(ch.queue_purge("q").await.is_err());
    assert!(peer.recv().await.is_none(), "the socket was dropped");
}
