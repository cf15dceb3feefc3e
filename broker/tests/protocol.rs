//! The protocol's happy paths, frame by frame: what the handshake offers, how tune
//! values are negotiated, heartbeats, content split by frame_max, delivery tags,
//! confirms, returns, transactions, recover, consumer cancel notifications, and what
//! happens to unacked messages when a channel closes. Expectations are RabbitMQ
//! 3.10's, checked with `RAW_TARGET` (see `common`).

mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{
    basic, channel, connection, exchange, queue, tx, AMQPClass, BasicProperties,
};
use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use common::{exchange_decl, open1, queue_decl, unique, Content, Raw, Target};

fn basic_method(m: &AMQPClass) -> &basic::AMQPMethod {
    match m {
        AMQPClass::Basic(b) => b,
        other => panic!("expected a basic method, got {other:?}"),
    }
}

/// The next method on `ch` must be `basic.ack`; returns (delivery_tag, multiple).
async fn expect_confirm(c: &mut Raw, ch: u16) -> (u64, bool) {
    match c.expect_method(ch).await {
        AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => (a.delivery_tag, a.multiple),
        other => panic!("expected basic.ack, got {other:?}"),
    }
}

/// Waits for confirms until `tag` is covered, checking they arrive in order.
async fn confirmed_up_to(c: &mut Raw, ch: u16, tag: u64) {
    let mut covered = 0;
    while covered < tag {
        let (t, multiple) = expect_confirm(c, ch).await;
        assert!(t > covered, "confirm {t} after {covered}");
        assert!(
            multiple || t == covered + 1,
            "single confirm {t} skips {covered}+1"
        );
        covered = t;
    }
    assert_eq!(covered, tag);
}

#[tokio::test]
async fn connection_start_offers_0_9_plain_and_the_capabilities_clients_use() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    let start = c.start().await;
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms = start.mechanisms.to_string();
    let mechanisms: Vec<&str> = mechanisms.split(' ').collect();
    assert!(mechanisms.contains(&"PLAIN"), "{mechanisms:?}");
    assert!(mechanisms.contains(&"AMQPLAIN"), "{mechanisms:?}");
    assert!(start.locales.to_string().contains("en_US"));
    let props = start.server_properties.inner();
    for key in ["product", "version", "platform"] {
        assert!(
            matches!(props.get(key), Some(AMQPValue::LongString(_))),
            "server property {key}: {props:?}"
        );
    }
    let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else {
        panic!("no capabilities table: {props:?}");
    };
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "capability {cap}: {caps:?}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn tune_proposes_rabbitmq_defaults() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    let tune = c.tune().await;
    assert_eq!(
        (tune.channel_max, tune.frame_max, tune.heartbeat),
        (2047, 131_072, 60)
    );
    c.open_vhost(&t.vhost).await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn amqplain_login_works() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    // AMQPLAIN: a field table without its length prefix, LOGIN and PASSWORD as
    // long strings.
    let mut response = Vec::new();
    for (key, value) in [("LOGIN", &t.user), ("PASSWORD", &t.password)] {
        response.push(key.len() as u8);
        response.extend_from_slice(key.as_bytes());
        response.push(b'S');
        response.extend_from_slice(&(value.len() as u32).to_be_bytes());
        response.extend_from_slice(value.as_bytes());
    }
    c.start_ok_with("AMQPLAIN", &response).await;
    c.tune().await;
    c.open_vhost(&t.vhost).await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn smaller_client_frame_max_splits_bodies() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: p.channel_max,
        frame_max: 4096,
        heartbeat: 0,
    })
    .await;
    c.open_vhost(&t.vhost).await;
    c.open_channel(1).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    // The client must split by the negotiated frame_max too: 4096 - 8 per frame.
    c.send(
        1,
        basic::Publish {
            routing_key: q.as_str().into(),
            ..Default::default()
        },
    )
    .await;
    c.send_header(1, body.len() as u64, BasicProperties::default())
        .await;
    for chunk in body.chunks(4088) {
        c.send_body(1, chunk).await;
    }
    c.send(
        1,
        basic::Get {
            queue: q.as_str().into(),
            no_ack: true,
        },
    )
    .await;
    assert!(matches!(
        basic_method(&c.expect_method(1).await),
        basic::AMQPMethod::GetOk(_)
    ));
    assert!(matches!(c.recv().await, AMQPFrame::Header(1, _)));
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while got.len() < body.len() {
        match c.recv().await {
            AMQPFrame::Body(1, b) => {
                sizes.push(b.len());
                got.extend(b);
            }
            other => panic!("expected a body frame, got {other:?}"),
        }
    }
    assert_eq!(got, body);
    assert_eq!(sizes, [4088, 4088, 1824]);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn tune_ok_with_frame_max_below_4096_ends_the_connection() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: p.channel_max,
        frame_max: 1024,
        heartbeat: 0,
    })
    .await;
    c.send(
        0,
        connection::Open {
            virtual_host: t.vhost.as_str().into(),
        },
    )
    .await;
    // RabbitMQ drops the socket; a connection.close would do as well.
    c.expect_end().await;
    t.stop().await;
}

#[tokio::test]
async fn server_sends_heartbeats_at_the_negotiated_interval() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: p.channel_max,
        frame_max: p.frame_max,
        heartbeat: 1,
    })
    .await;
    c.open_vhost(&t.vhost).await;
    // Keep our side alive and wait for the server's heartbeat (bounded by the
    // reply timeout, far above the 1 s interval).
    c.send_raw(&common::raw_frame(8, 0, b"", common::FRAME_END))
        .await;
    match c.next_frame_or_heartbeat().await {
        Some(AMQPFrame::Heartbeat) => {}
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn silent_client_is_disconnected_after_missed_heartbeats() {
    let t = Target::start().await;
    let mut bystander = open1(&t).await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: p.channel_max,
        frame_max: p.frame_max,
        heartbeat: 1,
    })
    .await;
    c.open_vhost(&t.vhost).await;
    // Say nothing more: the server must give up on us (RabbitMQ closes the socket
    // after two missed intervals), sending only heartbeats until then.
    loop {
        match c.next_frame_or_heartbeat().await {
            Some(AMQPFrame::Heartbeat) => continue,
            None => break,
            Some(other) => panic!("expected heartbeats then a closed socket, got {other:?}"),
        }
    }
    bystander.assert_alive().await;
    bystander.close().await;
    t.stop().await;
}

#[tokio::test]
async fn server_named_queue_and_consumer_tag_prefixes() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let ok = c.declare_exclusive(1, "").await;
    assert!(ok.queue.as_str().starts_with("amq.gen-"), "{ok:?}");
    let tag = c.consume(1, ok.queue.as_str(), "", true).await;
    assert!(tag.starts_with("amq.ctag-"), "{tag}");
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn predeclared_exchanges_exist() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    for (name, kind) in [
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ] {
        c.exchange_declare(
            1,
            amq_protocol::protocol::exchange::Declare {
                exchange: name.into(),
                kind: kind.into(),
                passive: true,
                ..Default::default()
            },
        )
        .await;
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn declare_ok_purge_ok_and_delete_ok_count_messages() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    for i in 0..3 {
        c.put(&q, format!("{i}").as_bytes()).await;
    }
    let ok = c.declare_exclusive(1, &q).await;
    assert_eq!((ok.message_count, ok.consumer_count), (3, 0));
    match c
        .call(
            1,
            queue::Purge {
                queue: q.as_str().into(),
                nowait: false,
            },
        )
        .await
    {
        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(p)) => assert_eq!(p.message_count, 3),
        other => panic!("expected purge-ok, got {other:?}"),
    }
    c.put(&q, b"again").await;
    // Prefetch 1 keeps the next message ready while "again" is unacked.
    c.qos(1, 1, false).await;
    c.consume(1, &q, "watcher", false).await;
    let d = c.expect_content(1).await;
    assert_eq!(d.body, b"again");
    let ok = c.declare_exclusive(1, &q).await;
    // The delivered message is unacked, not ready: it does not count.
    assert_eq!((ok.message_count, ok.consumer_count), (0, 1));
    c.put(&q, b"ready").await;
    c.send(
        1,
        basic::Cancel {
            consumer_tag: "watcher".into(),
            nowait: false,
        },
    )
    .await;
    assert!(matches!(
        basic_method(&c.expect_method(1).await),
        basic::AMQPMethod::CancelOk(_)
    ));
    // Deleting counts the ready message (the unacked one is still held).
    assert_eq!(c.delete_queue(1, &q).await, 1);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn deleting_missing_entities_is_not_an_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    assert_eq!(c.delete_queue(1, &unique("q")).await, 0);
    c.delete_exchange(1, &unique("x")).await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn delivery_tags_count_per_channel() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    for i in 0..4 {
        c.put(&q, format!("{i}").as_bytes()).await;
    }
    let mut tags = Vec::new();
    for ch in [1, 2, 1, 2] {
        let got = c.get(ch, &q, false).await.expect("a message");
        tags.push((ch, got.get_ok().delivery_tag));
    }
    assert_eq!(tags, [(1, 1), (2, 1), (1, 2), (2, 2)]);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn publisher_confirms_count_from_one() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.confirm_select(1).await;
    for i in 0..5 {
        c.publish(1, "", &q, format!("{i}").as_bytes()).await;
    }
    confirmed_up_to(&mut c, 1, 5).await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn mandatory_unroutable_publish_is_returned_before_its_confirm() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.confirm_select(1).await;
    let key = unique("nobody");
    let publish = basic::Publish {
        exchange: "amq.direct".into(),
        routing_key: key.as_str().into(),
        mandatory: true,
        ..Default::default()
    };
    c.publish_with(1, publish, BasicProperties::default(), b"lost")
        .await;
    let returned = c.expect_content(1).await;
    match basic_method(&returned.method) {
        basic::AMQPMethod::Return(r) => {
            assert_eq!(r.reply_code, 312);
            assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(r.exchange.as_str(), "amq.direct");
            assert_eq!(r.routing_key.as_str(), key);
        }
        other => panic!("expected basic.return, got {other:?}"),
    }
    assert_eq!(returned.body, b"lost");
    assert_eq!(expect_confirm(&mut c, 1).await, (1, false));
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn transaction_publishes_and_acks_take_effect_on_commit_only() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(2, &q).await;
    c.put(&q, b"old").await;
    assert!(matches!(
        c.call(1, tx::Select {}).await,
        AMQPClass::Tx(tx::AMQPMethod::SelectOk(_))
    ));
    let old = c.get(1, &q, false).await.expect("old");
    c.send(
        1,
        basic::Ack {
            delivery_tag: old.get_ok().delivery_tag,
            multiple: false,
        },
    )
    .await;
    c.publish(1, "", &q, b"new").await;
    // Nothing happened yet: "old" is unacked, "new" not enqueued.
    let ok = c.declare_exclusive(2, &q).await;
    assert_eq!(ok.message_count, 0);
    assert!(matches!(
        c.call(1, tx::Rollback {}).await,
        AMQPClass::Tx(tx::AMQPMethod::RollbackOk(_))
    ));
    assert_eq!(c.declare_exclusive(2, &q).await.message_count, 0);
    // Again, committed this time.
    c.send(
        1,
        basic::Ack {
            delivery_tag: old.get_ok().delivery_tag,
            multiple: false,
        },
    )
    .await;
    c.publish(1, "", &q, b"new").await;
    assert!(matches!(
        c.call(1, tx::Commit {}).await,
        AMQPClass::Tx(tx::AMQPMethod::CommitOk(_))
    ));
    let got = c.get(2, &q, true).await.expect("new");
    assert_eq!(got.body, b"new");
    assert_eq!(got.get_ok().message_count, 0);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn recover_requeues_unacked_deliveries_as_redelivered() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    c.consume(1, &q, "c", false).await;
    let first = c.expect_content(1).await;
    assert!(!first.deliver().redelivered);
    c.send(1, basic::Recover { requeue: true }).await;
    // recover-ok and the redelivery may come in either order.
    let mut again: Option<Content> = None;
    let mut recovered = false;
    while again.is_none() || !recovered {
        match c.expect_method(1).await {
            AMQPClass::Basic(basic::AMQPMethod::RecoverOk(_)) => recovered = true,
            m @ AMQPClass::Basic(basic::AMQPMethod::Deliver(_)) => {
                again = Some(c.content_after(1, m).await)
            }
            other => panic!("expected recover-ok or a delivery, got {other:?}"),
        }
    }
    let again = again.unwrap();
    assert_eq!(again.body, b"m");
    assert!(again.deliver().redelivered);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn closing_a_channel_requeues_its_unacked_messages_in_order() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(2, &q).await;
    for body in ["a", "b", "c"] {
        c.put(&q, body.as_bytes()).await;
    }
    c.consume(1, &q, "c", false).await;
    for body in ["a", "b", "c"] {
        assert_eq!(c.expect_content(1).await.body, body.as_bytes());
    }
    c.close_channel(1).await;
    for body in ["a", "b", "c"] {
        let got = c.get(2, &q, true).await.expect("requeued");
        assert_eq!(got.body, body.as_bytes());
        assert!(got.get_ok().redelivered);
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn reject_without_requeue_drops_and_nack_multiple_requeues_all() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    for body in ["a", "b", "c"] {
        c.put(&q, body.as_bytes()).await;
    }
    let a = c.get(1, &q, false).await.expect("a");
    let b = c.get(1, &q, false).await.expect("b");
    let cc = c.get(1, &q, false).await.expect("c");
    c.send(
        1,
        basic::Reject {
            delivery_tag: a.get_ok().delivery_tag,
            requeue: false,
        },
    )
    .await;
    c.send(
        1,
        basic::Nack {
            delivery_tag: cc.get_ok().delivery_tag,
            multiple: true,
            requeue: true,
        },
    )
    .await;
    let _ = b;
    let mut left = Vec::new();
    while let Some(got) = c.get(1, &q, true).await {
        assert!(got.get_ok().redelivered);
        left.push(String::from_utf8(got.body).unwrap());
    }
    assert_eq!(left, ["b", "c"]);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn deleting_a_consumed_queue_sends_basic_cancel() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.consume(1, &q, "watcher", false).await;
    c.send(
        2,
        queue::Delete {
            queue: q.as_str().into(),
            ..Default::default()
        },
    )
    .await;
    // The cancel on channel 1 and delete-ok on channel 2 may come in either order.
    let (mut cancelled, mut deleted) = (false, false);
    while !(cancelled && deleted) {
        match c.recv().await {
            AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel))) => {
                assert_eq!(cancel.consumer_tag.as_str(), "watcher");
                cancelled = true;
            }
            AMQPFrame::Method(2, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))) => {
                deleted = true
            }
            other => panic!("expected basic.cancel and queue.delete-ok, got {other:?}"),
        }
    }
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn channel_flow_is_acknowledged() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    match c.call(1, channel::Flow { active: true }).await {
        AMQPClass::Channel(channel::AMQPMethod::FlowOk(ok)) => assert!(ok.active),
        other => panic!("expected channel.flow-ok, got {other:?}"),
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn queue_name_empty_means_the_last_declared_queue() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let ok = c.declare_exclusive(1, "").await;
    c.publish(1, "", ok.queue.as_str(), b"to the last queue")
        .await;
    let got = c.get(1, "", true).await.expect("a message");
    assert_eq!(got.body, b"to the last queue");
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn exclusive_queue_is_usable_from_every_channel_of_its_connection() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"from channel 2").await;
    let got = c.get(2, &q, true).await.expect("a message");
    assert_eq!(got.body, b"from channel 2");
    c.consume(2, &q, "c2", true).await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn another_connection_may_publish_to_an_exclusive_queue() {
    let t = Target::start().await;
    let mut owner = open1(&t).await;
    let q = unique("q");
    owner.declare_exclusive(1, &q).await;
    let mut other = open1(&t).await;
    other.publish(1, "", &q, b"hello owner").await;
    other.close().await;
    // The other connection's publish has been handled once its close-ok came.
    let got = owner.get(1, &q, true).await.expect("the message");
    assert_eq!(got.body, b"hello owner");
    owner.close().await;
    t.stop().await;
}

#[tokio::test]
async fn the_same_consumer_tag_may_be_used_on_two_channels() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    assert_eq!(c.consume(1, &q, "same", true).await, "same");
    assert_eq!(c.consume(2, &q, "same", true).await, "same");
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn confirm_select_twice_is_fine() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.confirm_select(1).await;
    c.confirm_select(1).await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn transaction_returns_unroutable_mandatory_publishes_at_commit() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.call(1, tx::Select {}).await;
    let publish = basic::Publish {
        exchange: "amq.direct".into(),
        routing_key: unique("nobody").as_str().into(),
        mandatory: true,
        ..Default::default()
    };
    c.publish_with(1, publish, BasicProperties::default(), b"back")
        .await;
    c.send(1, tx::Commit {}).await;
    let returned = c.expect_content(1).await;
    assert!(
        matches!(
            returned.method,
            AMQPClass::Basic(basic::AMQPMethod::Return(_))
        ),
        "{returned:?}"
    );
    assert!(matches!(
        c.expect_method(1).await,
        AMQPClass::Tx(tx::AMQPMethod::CommitOk(_))
    ));
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn passive_declares_ignore_type_flags_and_the_amq_prefix() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    c.declare_exchange(1, &x, "direct").await;
    c.exchange_declare(
        1,
        exchange::Declare {
            passive: true,
            durable: true,
            ..exchange_decl(&x, "fanout")
        },
    )
    .await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.queue_declare(
        1,
        queue::Declare {
            passive: true,
            durable: true,
            auto_delete: true,
            ..queue_decl(&q)
        },
    )
    .await;
    c.delete_exchange(1, &x).await;
    // A passive declare of a missing amq.* queue is a 404, not a 403.
    let missing = format!("amq.{}", unique("q"));
    c.send(
        1,
        queue::Declare {
            passive: true,
            ..queue_decl(&missing)
        },
    )
    .await;
    c.expect_channel_close(
        1,
        404,
        (50, 10),
        &format!("NOT_FOUND - no queue '{missing}' in vhost '/'"),
    )
    .await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn binds_are_idempotent_and_unbinding_nothing_is_fine() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.bind_queue(1, &q, "amq.direct", "k").await;
    c.bind_queue(1, &q, "amq.direct", "k").await;
    for (queue, exchange) in [
        (q.clone(), "amq.direct".to_owned()),
        (q.clone(), "amq.direct".to_owned()),
        (q.clone(), unique("x")),
        (unique("q"), "amq.direct".to_owned()),
    ] {
        let unbind = queue::Unbind {
            queue: queue.as_str().into(),
            exchange: exchange.as_str().into(),
            routing_key: "k".into(),
            ..Default::default()
        };
        match c.call(1, unbind).await {
            AMQPClass::Queue(queue::AMQPMethod::UnbindOk(_)) => {}
            other => panic!("expected queue.unbind-ok, got {other:?}"),
        }
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn recover_async_redelivers_without_a_reply() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    c.consume(1, &q, "c", false).await;
    let first = c.expect_content(1).await;
    assert!(!first.deliver().redelivered);
    c.send_raw(&common::method_frame(
        1,
        AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(basic::RecoverAsync {
            requeue: true,
        })),
    ))
    .await;
    let again = c.expect_content(1).await;
    assert!(again.deliver().redelivered);
    assert_eq!(again.body, b"m");
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn cancel_of_an_unknown_tag_is_answered() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let cancel = basic::Cancel {
        consumer_tag: "nobody".into(),
        nowait: false,
    };
    match c.call(1, cancel).await {
        AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)) => {
            assert_eq!(ok.consumer_tag.as_str(), "nobody")
        }
        other => panic!("expected basic.cancel-ok, got {other:?}"),
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn a_publish_right_before_the_socket_closes_is_kept() {
    let t = Target::start().await;
    let mut owner = open1(&t).await;
    let q = unique("q");
    owner.declare_exclusive(1, &q).await;
    let mut c = open1(&t).await;
    c.publish(1, "", &q, b"last words").await;
    drop(c);
    // No event tells when the broker has read the dropped connection's last bytes.
    let deadline = tokio::time::Instant::now() + common::REPLY_TIMEOUT;
    loop {
        if let Some(got) = owner.get(1, &q, true).await {
            assert_eq!(got.body, b"last words");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the publish was lost"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    owner.close().await;
    t.stop().await;
}

#[tokio::test]
async fn frame_max_has_rabbitmqs_eight_octet_slack() {
    // RabbitMQ takes a payload of exactly frame_max octets (a frame 8 longer).
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: p.channel_max,
        frame_max: 4096,
        heartbeat: 0,
    })
    .await;
    c.open_vhost(&t.vhost).await;
    c.open_channel(1).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let body = vec![7u8; 4096];
    let publish = basic::Publish {
        routing_key: q.as_str().into(),
        ..Default::default()
    };
    c.publish_with(1, publish, BasicProperties::default(), &body)
        .await;
    let got = c.get(1, &q, true).await;
    let got = match got {
        Some(got) => got,
        None => panic!("the 4096-octet body was not enqueued"),
    };
    assert_eq!(got.body, body);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn methods_after_client_connection_close_are_ignored() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(
        0,
        connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
    )
    .await;
    c.send(1, queue_decl("")).await;
    match c.recv().await {
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
    t.stop().await;
}

/// A header table with every field type RabbitMQ understands (`s` short strings are
/// not among them: RabbitMQ reads `s` as a short int and fails).
fn all_field_types() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("nested".into(), AMQPValue::LongString("yes".into()));
    let mut h = FieldTable::default();
    let values = [
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-5)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60000)),
        ("i32", AMQPValue::LongInt(-70000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-5_000_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        ("longstr", AMQPValue::LongString("long string".into())),
        (
            "array",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongInt(1),
                AMQPValue::LongString("two".into()),
            ])),
        ),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(inner)),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255])),
        ),
        ("void", AMQPValue::Void),
    ];
    for (k, v) in values {
        h.insert(k.into(), v);
    }
    h
}

#[tokio::test]
async fn message_properties_and_header_types_round_trip_unchanged() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(all_field_types())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("order.created".into())
        .with_user_id(t.user.as_str().into())
        .with_app_id("tests".into())
        .with_cluster_id("c1".into());
    let publish = basic::Publish {
        routing_key: q.as_str().into(),
        ..Default::default()
    };
    c.publish_with(1, publish, props.clone(), b"{}").await;
    let got = c.get(1, &q, true).await.expect("the message");
    assert_eq!(got.props, props);
    assert_eq!(got.body, b"{}");
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn exchange_to_exchange_bindings_route_and_make_the_source_in_use() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let (src, dst) = (unique("src"), unique("dst"));
    c.declare_exchange(1, &src, "fanout").await;
    c.declare_exchange(1, &dst, "fanout").await;
    let bind = exchange::Bind {
        destination: dst.as_str().into(),
        source: src.as_str().into(),
        routing_key: "".into(),
        ..Default::default()
    };
    match c.call(1, bind).await {
        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(_)) => {}
        other => panic!("expected exchange.bind-ok, got {other:?}"),
    }
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.bind_queue(1, &q, &dst, "").await;
    c.publish(1, &src, "any", b"through two exchanges").await;
    let got = c.get(1, &q, true).await;
    let got = match got {
        Some(got) => got,
        // The publish may still be on its way: a round trip on the channel settles it.
        None => {
            c.declare_exclusive(1, &q).await;
            c.get(1, &q, true).await.expect("the routed message")
        }
    };
    assert_eq!(got.body, b"through two exchanges");
    // The source of an e2e binding is in use ...
    c.open_channel(2).await;
    let del = |exchange: &str| exchange::Delete {
        exchange: exchange.into(),
        if_unused: true,
        nowait: false,
    };
    c.send(2, del(&src)).await;
    c.expect_channel_close(
        2,
        406,
        (40, 20),
        &format!("PRECONDITION_FAILED - exchange '{src}' in vhost '/' in use"),
    )
    .await;
    // ... its destination is not, once its queue is gone; deleting the destination
    // removes the binding, and then the source is unused too.
    c.delete_queue(1, &q).await;
    for x in [&dst, &src] {
        match c.call(1, del(x)).await {
            AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(_)) => {}
            other => panic!("expected exchange.delete-ok for {x}, got {other:?}"),
        }
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn old_0_9_protocol_header_is_accepted() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.send_raw(b"AMQP\x01\x01\x00\x09").await;
    match c.expect_method(0).await {
        AMQPClass::Connection(connection::AMQPMethod::Start(s)) => {
            assert_eq!((s.version_major, s.version_minor), (0, 9))
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
    c.start_ok(&t.user, &t.password).await;
    c.tune().await;
    c.open_vhost(&t.vhost).await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn cancel_leaves_unacked_deliveries_with_the_channel() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    c.consume(1, &q, "c", false).await;
    let d = c.expect_content(1).await;
    let cancel = basic::Cancel {
        consumer_tag: "c".into(),
        nowait: false,
    };
    assert!(matches!(
        c.call(1, cancel).await,
        AMQPClass::Basic(basic::AMQPMethod::CancelOk(_))
    ));
    // Still unacked: not ready for others ...
    assert_eq!(c.declare_exclusive(1, &q).await.message_count, 0);
    // ... and the channel can still ack it.
    c.send(
        1,
        basic::Ack {
            delivery_tag: d.deliver().delivery_tag,
            multiple: false,
        },
    )
    .await;
    c.close_channel(1).await;
    c.open_channel(2).await;
    assert_eq!(c.declare_exclusive(2, &q).await.message_count, 0);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn requeued_messages_go_back_in_their_original_order_ahead_of_newer_ones() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    for body in ["a", "b", "c"] {
        c.put(&q, body.as_bytes()).await;
    }
    let mut tags = Vec::new();
    for _ in 0..3 {
        tags.push(
            c.get(1, &q, false)
                .await
                .expect("a message")
                .get_ok()
                .delivery_tag,
        );
    }
    c.put(&q, b"d").await;
    // Requeue c first, then a: each goes back to its old place.
    for tag in [tags[2], tags[0]] {
        c.send(
            1,
            basic::Nack {
                delivery_tag: tag,
                multiple: false,
                requeue: true,
            },
        )
        .await;
    }
    let mut order = Vec::new();
    while let Some(got) = c.get(1, &q, true).await {
        order.push((
            String::from_utf8(got.body.clone()).unwrap(),
            got.get_ok().redelivered,
        ));
    }
    assert_eq!(
        order,
        [("a".into(), true), ("c".into(), true), ("d".into(), false)]
    );
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn get_takes_the_next_ready_message_beside_a_consumer() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.qos(1, 1, false).await;
    c.consume(1, &q, "c", false).await;
    for body in ["a", "b"] {
        c.put(&q, body.as_bytes()).await;
    }
    assert_eq!(c.expect_content(1).await.body, b"a");
    let got = c.get(2, &q, true).await.expect("b is ready");
    assert_eq!(got.body, b"b");
    assert_eq!(got.get_ok().message_count, 0);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn cancelling_an_exclusive_consumer_frees_the_queue() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let exclusive = basic::Consume {
        queue: q.as_str().into(),
        consumer_tag: "only".into(),
        exclusive: true,
        ..Default::default()
    };
    c.call(1, exclusive).await;
    let cancel = basic::Cancel {
        consumer_tag: "only".into(),
        nowait: false,
    };
    c.call(1, cancel).await;
    c.consume(1, &q, "next", true).await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn channel_ids_can_be_reused_after_close() {
    let t = Target::start().await;
    let mut c = t.open().await;
    for _ in 0..3 {
        c.open_channel(7).await;
        c.declare_exclusive(7, "").await;
        c.close_channel(7).await;
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn many_channels_on_one_connection() {
    let t = Target::start().await;
    let mut c = t.open().await;
    for ch in 1..=200 {
        c.open_channel(ch).await;
    }
    let q = unique("q");
    c.declare_exclusive(200, &q).await;
    for ch in 1..=200 {
        c.publish(ch, "", &q, format!("{ch}").as_bytes()).await;
    }
    for ch in 1..=200 {
        c.close_channel(ch).await;
    }
    c.open_channel(1).await;
    assert_eq!(c.declare_exclusive(1, &q).await.message_count, 200);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    c.declare_exchange(1, &x, "fanout").await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.bind_queue(1, &q, &x, "").await;
    let unbind = queue::Unbind {
        queue: q.as_str().into(),
        exchange: x.as_str().into(),
        routing_key: "".into(),
        ..Default::default()
    };
    c.call(1, unbind).await;
    c.send(
        1,
        exchange::Declare {
            passive: true,
            ..exchange_decl(&x, "fanout")
        },
    )
    .await;
    c.expect_channel_close(
        1,
        404,
        (40, 10),
        &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
    )
    .await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn declare_with_nowait_creates_without_a_reply() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.send(
        1,
        queue::Declare {
            exclusive: true,
            nowait: true,
            ..queue_decl(&q)
        },
    )
    .await;
    // The next reply on the channel is for the passive declare, not the first one.
    let ok = c
        .queue_declare(
            1,
            queue::Declare {
                passive: true,
                ..queue_decl(&q)
            },
        )
        .await;
    assert_eq!(ok.queue.as_str(), q);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn restart_keeps_durable_exchanges_queues_bindings_and_persistent_messages() {
    let t = Target::start().await;
    let Some(broker) = t.warren() else {
        eprintln!("note: RAW_TARGET set; restart is Warren's alone");
        return;
    };
    let mut c = open1(&t).await;
    let durable_x = exchange::Declare {
        durable: true,
        auto_delete: false,
        ..exchange_decl("dx", "direct")
    };
    c.exchange_declare(1, durable_x.clone()).await;
    c.declare_exchange(1, "tx", "direct").await;
    let durable_q = queue::Declare {
        durable: true,
        ..queue_decl("dq")
    };
    c.queue_declare(1, durable_q.clone()).await;
    c.declare_queue(1, "tq").await;
    c.bind_queue(1, "dq", "dx", "k").await;
    c.bind_queue(1, "tq", "tx", "k").await;
    let publish = basic::Publish {
        exchange: "dx".into(),
        routing_key: "k".into(),
        ..Default::default()
    };
    c.publish_with(
        1,
        publish.clone(),
        BasicProperties::default().with_delivery_mode(2),
        b"kept",
    )
    .await;
    c.publish_with(1, publish.clone(), BasicProperties::default(), b"transient")
        .await;
    c.confirm_select(1).await;
    c.publish(1, "", "dq", b"sync").await;
    // The confirm for the last publish says every earlier one is in too.
    confirmed_up_to(&mut c, 1, 1).await;
    let (_, ()) = tokio::join!(broker.restart(), async {
        c.expect_connection_close(320, (0, 0), "CONNECTION_FORCED - ")
            .await;
    });

    let mut c = open1(&t).await;
    c.exchange_declare(
        1,
        exchange::Declare {
            passive: true,
            ..durable_x
        },
    )
    .await;
    let ok = c
        .queue_declare(
            1,
            queue::Declare {
                passive: true,
                ..durable_q
            },
        )
        .await;
    // "sync" was not persistent either.
    assert_eq!(ok.message_count, 1);
    // The binding survived: a new publish is routed.
    c.publish_with(1, publish, BasicProperties::default(), b"after")
        .await;
    let mut bodies = Vec::new();
    while let Some(got) = c.get(1, "dq", true).await {
        bodies.push(String::from_utf8(got.body).unwrap());
    }
    assert_eq!(bodies, ["kept", "after"]);
    for (class_method, passive) in [
        (
            (40, 10),
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                passive: true,
                ..exchange_decl("tx", "direct")
            })),
        ),
        (
            (50, 10),
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                passive: true,
                ..queue_decl("tq")
            })),
        ),
    ] {
        c.send(1, passive).await;
        c.expect_channel_close(1, 404, class_method, "NOT_FOUND - ")
            .await;
        c.open_channel(1).await;
    }
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn client_heartbeats_keep_a_quiet_connection_open() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: p.channel_max,
        frame_max: p.frame_max,
        heartbeat: 1,
    })
    .await;
    c.open_vhost(&t.vhost).await;
    // Beat for four intervals, twice as often as agreed: the time is the behaviour
    // under test here, not a wait for something else.
    for _ in 0..8 {
        c.send_raw(&common::raw_frame(8, 0, b"", common::FRAME_END))
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    c.open_channel(1).await;
    c.declare_exclusive(1, "").await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn any_locale_is_accepted() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.locale = "xx_XX".into();
    c.start_ok(&t.user, &t.password).await;
    c.tune().await;
    c.open_vhost(&t.vhost).await;
    c.close().await;
    t.stop().await;
}
