//! Integration tests of the client API against real brokers (see `common`).

mod common;

use std::time::Duration;

use common::{run, run_known_divergence, unique, Target};
use futures_util::{future::try_join_all, StreamExt};
use warren_client::*;

fn no_args() -> FieldTable {
    FieldTable::default()
}

async fn declare(ch: &Channel, name: &str) -> Queue {
    ch.queue_declare(name, QueueDeclareOptions::default(), no_args())
        .await
        .expect("queue.declare")
}

/// A server-named queue that goes away with the connection, so that a run
/// against a shared RabbitMQ leaves nothing behind.
async fn declare_temporary(ch: &Channel) -> Queue {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare("", options, no_args())
        .await
        .expect("queue.declare")
}

async fn ready_count(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .unwrap();
    ch.close().await.unwrap();
    q.message_count
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) -> Confirmation {
    ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm")
}

#[tokio::test]
async fn publish_get_consume_ack() {
    run("publish_get_consume_ack", |t: Target| async move {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = unique("hello");
        assert_eq!(declare(&ch, &q).await.name, q);
        ch.confirm_select().await.unwrap();
        assert_eq!(publish(&ch, "", &q, b"one").await, Confirmation::Ack);
        assert_eq!(publish(&ch, "", &q, b"two").await, Confirmation::Ack);

        let got = ch
            .basic_get(&q, BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(&got.delivery.body[..], b"one");
        assert_eq!(got.message_count, 1);
        assert!(!got.delivery.redelivered);
        got.delivery.ack(BasicAckOptions::default()).await.unwrap();

        let mut consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
            .await
            .unwrap();
        assert!(!consumer.tag().is_empty(), "the broker names the consumer");
        let d = consumer.next().await.unwrap().unwrap();
        assert_eq!(&d.body[..], b"two");
        assert_eq!(d.routing_key, q);
        assert_eq!(d.exchange, "");
        d.ack(BasicAckOptions::default()).await.unwrap();
        consumer.cancel().await.unwrap();
        assert!(consumer.next().await.is_none(), "cancelled stream ends");
        assert!(ch
            .basic_get(&q, BasicGetOptions::default())
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap(),
            0
        );
        ch.close().await.unwrap();
        assert!(!ch.is_open());
        conn.close().await.unwrap();
        assert!(!conn.is_open());
        assert!(conn.create_channel().await.is_err());
    })
    .await;
}

#[tokio::test]
async fn an_acker_keeps_its_channel_open_after_every_handle_is_dropped() {
    run("an_acker_keeps_its_channel", |t: Target| async move {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = unique("acker");
        declare(&ch, &q).await;
        ch.confirm_select().await.unwrap();
        assert_eq!(publish(&ch, "", &q, b"kept").await, Confirmation::Ack);
        let mut consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
            .await
            .unwrap();
        let acker = consumer.next().await.unwrap().unwrap().acker;
        // Were the channel closed now, the delivery would go back to the queue and
        // the ack below would fail.
        drop(consumer);
        drop(ch);
        acker.ack(BasicAckOptions::default()).await.unwrap();
        drop(acker);
        conn.close().await.unwrap();

        let conn = t.connect().await;
        assert_eq!(ready_count(&conn, &q).await, 0, "the ack settled it");
        let ch = conn.create_channel().await.unwrap();
        ch.queue_delete(&q, QueueDeleteOptions::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn fanout_to_exclusive_server_named_queues() {
    run(
        "fanout_to_exclusive_server_named_queues",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let ex = unique("logs");
            ch.exchange_declare(&ex, "fanout", ExchangeDeclareOptions::default(), no_args())
                .await
                .unwrap();
            let mut consumers = Vec::new();
            for _ in 0..2 {
                let q = ch
                    .queue_declare(
                        "",
                        QueueDeclareOptions {
                            exclusive: true,
                            ..Default::default()
                        },
                        no_args(),
                    )
                    .await
                    .unwrap();
                assert!(q.name.starts_with("amq.gen-"), "server-named: {}", q.name);
                ch.queue_bind(&q.name, &ex, "", no_args()).await.unwrap();
                consumers.push(
                    ch.basic_consume(
                        &q.name,
                        "",
                        BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        no_args(),
                    )
                    .await
                    .unwrap(),
                );
            }
            publish(&ch, &ex, "ignored", b"log line").await;
            for c in &mut consumers {
                let d = c.next().await.unwrap().unwrap();
                assert_eq!(&d.body[..], b"log line");
                assert!(
                    d.ack(BasicAckOptions::default()).await.is_err(),
                    "no_ack deliveries cannot be acked"
                );
            }
            ch.exchange_delete(&ex, ExchangeDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn pipelined_confirms() {
    run("pipelined_confirms", |t: Target| async move {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = unique("confirms");
        declare(&ch, &q).await;
        ch.confirm_select().await.unwrap();
        let mut confirms = Vec::new();
        for i in 0..5000u32 {
            confirms.push(
                ch.basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    &i.to_be_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap(),
            );
        }
        let outcomes = try_join_all(confirms).await.unwrap();
        assert!(outcomes.iter().all(|o| o.is_ack()));
        assert_eq!(ready_count(&conn, &q).await, 5000);
        // The same without keeping the futures: wait for the channel to settle.
        for _ in 0..1000 {
            drop(
                ch.basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    b"x",
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            );
        }
        assert!(ch.wait_for_confirms().await.unwrap());
        assert_eq!(ch.queue_purge(&q).await.unwrap(), 6000);
        ch.queue_delete(&q, QueueDeleteOptions::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn publish_without_confirm_mode_is_not_requested() {
    run(
        "publish_without_confirm_mode_is_not_requested",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("noconfirm");
            declare(&ch, &q).await;
            assert_eq!(publish(&ch, "", &q, b"x").await, Confirmation::NotRequested);
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn mandatory_unroutable_is_returned() {
    run("mandatory_unroutable_is_returned", |t: Target| async move {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let mut returns = ch.returns();
        ch.confirm_select().await.unwrap();
        let key = unique("nowhere");
        let confirm = ch
            .basic_publish(
                "",
                &key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"lost",
                BasicProperties::default().with_correlation_id("c-1".into()),
            )
            .await
            .unwrap();
        assert_eq!(confirm.await.unwrap(), Confirmation::Ack);
        let ret = returns
            .try_recv()
            .expect("the return arrives before the confirm");
        assert_eq!(ret.reply_code, 312);
        assert_eq!(ret.reply_text, "NO_ROUTE");
        assert_eq!(ret.routing_key, key);
        assert_eq!(&ret.body[..], b"lost");
        assert_eq!(
            ret.properties.correlation_id().as_ref().map(|s| s.as_str()),
            Some("c-1")
        );
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn channel_error_is_soft_and_carries_the_close() {
    run(
        "channel_error_is_soft_and_carries_the_close",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("missing");
            let err = ch
                .queue_declare(
                    &q,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    no_args(),
                )
                .await
                .unwrap_err();
            assert!(err.is_soft(), "{err:?}");
            let reason = err.close_reason().unwrap();
            assert_eq!(reason.reply_code, 404);
            assert_eq!(
                reason.reply_text,
                format!("NOT_FOUND - no queue '{q}' in vhost '/'")
            );
            assert_eq!((reason.class_id, reason.method_id), (50, 10));
            assert!(!ch.is_open());
            assert_eq!(ch.close_error().unwrap().reply_code(), Some(404));
            // Later calls on the channel fail with the same error; the connection lives on.
            let again = ch.queue_purge(&q).await.unwrap_err();
            assert_eq!(again.reply_code(), Some(404));
            assert_eq!(ch.close().await.unwrap_err().reply_code(), Some(404));
            assert!(conn.is_open());
            let ch2 = conn.create_channel().await.unwrap();
            let tmp = declare(&ch2, "").await;
            ch2.queue_delete(&tmp.name, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn connection_error_is_hard() {
    run("connection_error_is_hard", |t: Target| async move {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let other = conn.create_channel().await.unwrap();
        let ex = unique("badtype");
        let err = ch
            .exchange_declare(
                &ex,
                "no-such-type",
                ExchangeDeclareOptions::default(),
                no_args(),
            )
            .await
            .unwrap_err();
        assert!(err.is_hard(), "{err:?}");
        let reason = err.close_reason().unwrap();
        assert_eq!(reason.reply_code, 503);
        assert_eq!((reason.class_id, reason.method_id), (40, 10));
        assert!(reason.reply_text.starts_with("COMMAND_INVALID"), "{reason}");
        let closed = conn.closed().await;
        assert_eq!(closed.reply_code(), Some(503));
        assert!(!conn.is_open());
        assert_eq!(
            other.queue_purge("x").await.unwrap_err().reply_code(),
            Some(503)
        );
        assert_eq!(conn.close().await.unwrap_err().reply_code(), Some(503));
    })
    .await;
}

#[tokio::test]
async fn nack_requeue_redelivers() {
    run("nack_requeue_redelivers", |t: Target| async move {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = unique("nack");
        declare(&ch, &q).await;
        ch.confirm_select().await.unwrap();
        publish(&ch, "", &q, b"again").await;
        let mut consumer = ch
            .basic_consume(&q, "my-tag", BasicConsumeOptions::default(), no_args())
            .await
            .unwrap();
        assert_eq!(consumer.tag(), "my-tag");
        let d = consumer.next().await.unwrap().unwrap();
        assert!(!d.redelivered);
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let d = consumer.next().await.unwrap().unwrap();
        assert!(d.redelivered);
        d.reject(BasicRejectOptions { requeue: true })
            .await
            .unwrap();
        let d = consumer.next().await.unwrap().unwrap();
        assert!(d.redelivered);
        d.reject(BasicRejectOptions::default()).await.unwrap();
        consumer.cancel().await.unwrap();
        assert_eq!(ready_count(&conn, &q).await, 0);
        ch.queue_delete(&q, QueueDeleteOptions::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries() {
    run(
        "prefetch_limits_unacked_deliveries",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("prefetch");
            declare(&ch, &q).await;
            ch.confirm_select().await.unwrap();
            for i in 0..5u8 {
                publish(&ch, "", &q, &[i]).await;
            }
            ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
            let mut consumer = ch
                .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
                .await
                .unwrap();
            let first = consumer.next().await.unwrap().unwrap();
            let second = consumer.next().await.unwrap().unwrap();
            assert_eq!(
                (&first.body[..], &second.body[..]),
                (&[0u8][..], &[1u8][..])
            );
            // Two unacked: the broker holds the other three back.
            assert_eq!(ready_count(&conn, &q).await, 3);
            second
                .ack(BasicAckOptions { multiple: true })
                .await
                .unwrap();
            for i in 2..5u8 {
                let d = consumer.next().await.unwrap().unwrap();
                assert_eq!(&d.body[..], &[i]);
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            consumer.cancel().await.unwrap();
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn broker_cancel_ends_consumer_with_error() {
    run(
        "broker_cancel_ends_consumer_with_error",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("cancelled");
            declare(&ch, &q).await;
            let mut consumer = ch
                .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
                .await
                .unwrap();
            let admin = conn.create_channel().await.unwrap();
            admin
                .queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            match consumer.next().await {
                Some(Err(Error::ConsumerCancelled(tag))) => assert_eq!(tag, consumer.tag()),
                other => panic!("expected a broker cancel, got {other:?}"),
            }
            assert!(consumer.next().await.is_none());
            assert!(ch.is_open(), "a broker cancel does not close the channel");
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn channel_close_error_reaches_consumers_and_confirms() {
    run(
        "channel_close_error_reaches_consumers_and_confirms",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("closing");
            declare(&ch, &q).await;
            let mut consumer = ch
                .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
                .await
                .unwrap();
            // Acking an unknown delivery tag is a channel error (406).
            ch.basic_ack(999, BasicAckOptions::default()).await.unwrap();
            match consumer.next().await {
                Some(Err(err)) => assert_eq!(err.reply_code(), Some(406), "{err}"),
                other => panic!("expected the channel error, got {other:?}"),
            }
            assert!(consumer.next().await.is_none());
            let admin = conn.create_channel().await.unwrap();
            admin
                .queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn transactions_commit_and_rollback() {
    run("transactions_commit_and_rollback", |t: Target| async move {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = unique("tx");
        declare(&ch, &q).await;
        ch.tx_select().await.unwrap();
        publish(&ch, "", &q, b"rolled back").await;
        ch.tx_rollback().await.unwrap();
        assert_eq!(ready_count(&conn, &q).await, 0);
        publish(&ch, "", &q, b"committed").await;
        ch.tx_commit().await.unwrap();
        assert_eq!(ready_count(&conn, &q).await, 1);
        ch.queue_delete(&q, QueueDeleteOptions::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn unacked_deliveries_return_when_channel_closes_or_consumer_drops() {
    run("unacked_deliveries_return", |t: Target| async move {
        let conn = t.connect().await;
        let q = unique("unacked");
        let admin = conn.create_channel().await.unwrap();
        declare(&admin, &q).await;
        admin.confirm_select().await.unwrap();
        publish(&admin, "", &q, b"m").await;

        // Closed channel: the delivery goes back, marked redelivered.
        let ch = conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
            .await
            .unwrap();
        let d = consumer.next().await.unwrap().unwrap();
        assert!(!d.redelivered);
        ch.close().await.unwrap();
        assert!(
            consumer.next().await.is_none(),
            "client close ends the stream"
        );
        drop(d);

        // basic.recover: redelivered on the same channel.
        let ch = conn.create_channel().await.unwrap();
        let got = ch
            .basic_get(&q, BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert!(got.delivery.redelivered);
        ch.basic_recover(BasicRecoverOptions { requeue: true })
            .await
            .unwrap();
        let got = ch
            .basic_get(&q, BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert!(got.delivery.redelivered);
        got.delivery.ack(BasicAckOptions::default()).await.unwrap();
        ch.close().await.unwrap();
        admin
            .queue_delete(&q, QueueDeleteOptions::default())
            .await
            .unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn exchange_to_exchange_bindings_and_unbind() {
    run(
        "exchange_to_exchange_bindings_and_unbind",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let (src, dst) = (unique("src"), unique("dst"));
            for (name, kind) in [(&src, "topic"), (&dst, "direct")] {
                ch.exchange_declare(name, kind, ExchangeDeclareOptions::default(), no_args())
                    .await
                    .unwrap();
            }
            let q = declare_temporary(&ch).await.name;
            ch.exchange_bind(&dst, &src, "a.*", no_args())
                .await
                .unwrap();
            ch.queue_bind(&q, &dst, "a.b", no_args()).await.unwrap();
            ch.confirm_select().await.unwrap();
            publish(&ch, &src, "a.b", b"routed").await;
            let got = ch
                .basic_get(&q, BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got.delivery.body[..], b"routed");
            ch.exchange_unbind(&dst, &src, "a.*", no_args())
                .await
                .unwrap();
            ch.queue_unbind(&q, &dst, "a.b", no_args()).await.unwrap();
            publish(&ch, &src, "a.b", b"dropped").await;
            assert!(ch
                .basic_get(&q, BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .is_none());
            for name in [&src, &dst] {
                ch.exchange_delete(name, ExchangeDeleteOptions::default())
                    .await
                    .unwrap();
            }
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn tune_and_heartbeats() {
    run("tune_and_heartbeats", |t: Target| async move {
        let conn = t
            .connect_with(|c| {
                c.heartbeat = Some(1);
                c.frame_max = Some(8192);
                c.channel_max = Some(4);
            })
            .await
            .unwrap();
        assert_eq!(conn.heartbeat(), 1);
        assert_eq!(conn.frame_max(), 8192);
        assert_eq!(conn.channel_max(), 4);
        // Idle for several intervals: both sides' heartbeats keep it open.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(conn.is_open());
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(conn.create_channel().await.unwrap());
        }
        assert!(matches!(
            conn.create_channel().await,
            Err(Error::ChannelsExhausted)
        ));
        // A body bigger than frame_max is split and reassembled.
        let q = declare_temporary(&channels[0]).await.name;
        let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        channels[0].confirm_select().await.unwrap();
        publish(&channels[0], "", &q, &body).await;
        let got = channels[1]
            .basic_get(&q, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.delivery.body[..], &body[..]);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn bad_credentials_and_vhost_are_connection_errors() {
    run(
        "bad_credentials_and_vhost_are_connection_errors",
        |t: Target| async move {
            let err = t
                .connect_with(|c| c.password = "wrong".into())
                .await
                .unwrap_err();
            assert_eq!(err.reply_code(), Some(403), "{err:?}");
            let err = t
                .connect_with(|c| c.vhost = unique("no-vhost"))
                .await
                .unwrap_err();
            assert_eq!(err.reply_code(), Some(530), "{err:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_channel_id_reused_after_close_gets_its_deliveries() {
    // The connection task remembers the channel of the last delivery: it must not
    // deliver to the closed channel whose id a new one took.
    run(
        "a_channel_id_reused_after_close_gets_its_deliveries",
        |t: Target| async move {
            let conn = t.connect().await;
            let admin = conn.create_channel().await.unwrap();
            let q = declare_temporary(&admin).await.name;
            for round in 0..2u8 {
                let ch = conn.create_channel().await.unwrap();
                let mut consumer = ch
                    .basic_consume(&q, "reused", BasicConsumeOptions::default(), no_args())
                    .await
                    .unwrap();
                publish(&admin, "", &q, &[round]).await;
                let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                    .await
                    .expect("delivered to the channel that now has the id")
                    .unwrap()
                    .unwrap();
                assert_eq!(&d.body[..], &[round]);
                d.ack(BasicAckOptions::default()).await.unwrap();
                ch.close().await.unwrap();
            }
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn dropping_handles_closes_politely() {
    run("dropping_handles_closes_politely", |t: Target| async move {
        let conn = t.connect().await;
        let watcher = conn.clone();
        let q = unique("dropped");
        {
            let ch = conn.create_channel().await.unwrap();
            ch.queue_declare(
                &q,
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .unwrap();
        }
        drop(conn);
        // The connection is still referenced by `watcher`: it stays open.
        assert!(watcher.is_open());
        let ch = watcher.create_channel().await.unwrap();
        ch.queue_declare(
            &q,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .unwrap();
        watcher.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn slow_consumer_without_prefetch_can_still_cancel() {
    run(
        "slow_consumer_without_prefetch_can_still_cancel",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("slow");
            declare(&ch, &q).await;
            ch.confirm_select().await.unwrap();
            let body = vec![7u8; 1024];
            let mut confirms = Vec::new();
            for _ in 0..3000 {
                confirms.push(
                    ch.basic_publish(
                        "",
                        &q,
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap(),
                );
            }
            try_join_all(confirms).await.unwrap();
            // No prefetch: the broker pushes everything, more than the consumer buffers.
            let mut consumer = ch
                .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
                .await
                .unwrap();
            let first = consumer.next().await.unwrap().unwrap();
            // The cancel-ok sits behind deliveries the buffer cannot take; cancel must not
            // deadlock on it.
            tokio::time::timeout(Duration::from_secs(30), consumer.cancel())
                .await
                .expect("cancel completes")
                .unwrap();
            let mut seen = 1;
            let mut last = first;
            while let Some(d) = consumer.next().await {
                last = d.unwrap();
                seen += 1;
            }
            assert!(seen <= 3000);
            last.ack(BasicAckOptions { multiple: true }).await.unwrap();
            assert_eq!(ready_count(&conn, &q).await, 3000 - seen);
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn dropped_consumer_requeues_what_it_buffered() {
    run(
        "dropped_consumer_requeues_what_it_buffered",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("dropped-consumer");
            declare(&ch, &q).await;
            ch.confirm_select().await.unwrap();
            for i in 0..3u8 {
                publish(&ch, "", &q, &[i]).await;
            }
            ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
            let mut consumer = ch
                .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
                .await
                .unwrap();
            let held = consumer.next().await.unwrap().unwrap();
            // Wait until the other two are delivered (buffered) too: none left ready.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while ready_count(&conn, &q).await != 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "deliveries never left the queue"
                );
                tokio::task::yield_now().await;
            }
            drop(consumer);
            // The two buffered deliveries go back; the one still held stays unacked.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while ready_count(&conn, &q).await != 2 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "buffered deliveries were not requeued"
                );
                tokio::task::yield_now().await;
            }
            assert!(ch.is_open(), "the channel is still held by the delivery");
            held.ack(BasicAckOptions::default()).await.unwrap();
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn publish_to_missing_exchange_fails_its_confirm() {
    run(
        "publish_to_missing_exchange_fails_its_confirm",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select().await.unwrap();
            let ex = unique("no-exchange");
            let confirm = ch
                .basic_publish(
                    &ex,
                    "k",
                    BasicPublishOptions::default(),
                    b"x",
                    BasicProperties::default(),
                )
                .await
                .expect("publish is asynchronous: the error comes later");
            let err = confirm.await.unwrap_err();
            assert!(err.is_soft(), "{err:?}");
            let reason = err.close_reason().unwrap();
            assert_eq!(reason.reply_code, 404);
            assert_eq!(
                reason.reply_text,
                format!("NOT_FOUND - no exchange '{ex}' in vhost '/'")
            );
            assert_eq!((reason.class_id, reason.method_id), (60, 40));
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn precondition_and_resource_locked_errors() {
    run(
        "precondition_and_resource_locked_errors",
        |t: Target| async move {
            let conn = t.connect().await;
            let q = unique("locked");
            let ch = conn.create_channel().await.unwrap();
            ch.queue_declare(
                &q,
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .unwrap();

            // Another connection may not touch an exclusive queue: 405.
            let other = t.connect().await;
            let och = other.create_channel().await.unwrap();
            let err = och.queue_purge(&q).await.unwrap_err();
            assert_eq!(err.reply_code(), Some(405), "{err:?}");
            assert_eq!(
                err.close_reason().map(|r| (r.class_id, r.method_id)),
                Some((50, 30))
            );
            other.close().await.unwrap();

            // Redeclaring a (non-exclusive) queue with other flags: 406 PRECONDITION_FAILED.
        let plain = unique("plain");
        ch.queue_declare(
            &plain,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .unwrap();
        let err = ch
            .queue_declare(
                &plain,
                QueueDeclareOptions {
                    auto_delete: true,
                    durable: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.reply_code(), Some(406), "{err:?}");
        assert_eq!(
            err.close_reason().unwrap().reply_text,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{plain}' in vhost '/': \
                 received 'true' but current is 'false'"
            )
        );
        let admin = conn.create_channel().await.unwrap();
        admin.queue_delete(&plain, QueueDeleteOptions::default()).await.unwrap();

        // Deleting a non-empty queue with if_empty: 406.
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select().await.unwrap();
            publish(&ch, "", &q, b"x").await;
            let err = ch
                .queue_delete(
                    &q,
                    QueueDeleteOptions {
                        if_empty: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap_err();
            assert_eq!(err.reply_code(), Some(406), "{err:?}");
            assert_eq!(
                err.close_reason().map(|r| (r.class_id, r.method_id)),
                Some((50, 40))
            );
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn immediate_publish_is_not_implemented() {
    run(
        "immediate_publish_is_not_implemented",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            ch.basic_publish(
                "",
                "anything",
                BasicPublishOptions {
                    immediate: true,
                    ..Default::default()
                },
                b"x",
                BasicProperties::default(),
            )
            .await
            .unwrap();
            let err = conn.closed().await;
            assert!(err.is_hard(), "{err:?}");
            assert_eq!(err.reply_code(), Some(540), "{err:?}");
            assert_eq!(
                err.close_reason().map(|r| (r.class_id, r.method_id)),
                Some((60, 40))
            );
        },
    )
    .await;
}

#[tokio::test]
async fn exclusive_queues_are_never_durable() {
    run_known_divergence(
        "exclusive_queues_are_never_durable",
        "RabbitMQ 3.10 ignores durable=true on an exclusive queue (it is created \
         non-durable, and redeclaring it with either durable value is equivalent); Warren \
         keeps the flag and closes the channel with 406 'inequivalent arg durable'",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let exclusive = QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            };
            let exclusive_durable = QueueDeclareOptions {
                durable: true,
                ..exclusive
            };
            let (a, b) = (unique("excl-then-durable"), unique("durable-then-excl"));
            ch.queue_declare(&a, exclusive, no_args()).await.unwrap();
            ch.queue_declare(&a, exclusive_durable, no_args())
                .await
                .unwrap();
            ch.queue_declare(&b, exclusive_durable, no_args())
                .await
                .unwrap();
            ch.queue_declare(&b, exclusive, no_args()).await.unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn channel_flow_false_is_not_implemented() {
    run(
        "channel_flow_false_is_not_implemented",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            assert!(ch.channel_flow(true).await.unwrap());
            let err = ch.channel_flow(false).await.unwrap_err();
            assert!(err.is_hard());
            assert_eq!(
                err.close_reason().unwrap(),
                &CloseReason {
                    reply_code: 540,
                    reply_text: "NOT_IMPLEMENTED - active=false".into(),
                    class_id: 20,
                    method_id: 20,
                }
            );
        },
    )
    .await;
}

#[tokio::test]
async fn recover_without_requeue_is_not_implemented() {
    run(
        "recover_without_requeue_is_not_implemented",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let err = ch
                .basic_recover(BasicRecoverOptions::default())
                .await
                .unwrap_err();
            assert_eq!(err.reply_code(), Some(540));
            assert_eq!(
                err.close_reason().map(|r| (r.class_id, r.method_id)),
                Some((60, 110))
            );
        },
    )
    .await;
}

#[tokio::test]
async fn exclusive_consumer_refuses_a_second_one() {
    run(
        "exclusive_consumer_refuses_a_second_one",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("exclusive-consumer");
            declare(&ch, &q).await;
            let _first = ch
                .basic_consume(
                    &q,
                    "",
                    BasicConsumeOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    no_args(),
                )
                .await
                .unwrap();
            let other = conn.create_channel().await.unwrap();
            let err = other
                .basic_consume(&q, "", BasicConsumeOptions::default(), no_args())
                .await
                .unwrap_err();
            assert!(err.is_soft(), "{err:?}");
            assert_eq!(
                err.close_reason().unwrap(),
                &CloseReason {
                    reply_code: 403,
                    reply_text: format!(
                        "ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"
                    ),
                    class_id: 60,
                    method_id: 20,
                }
            );
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn concurrent_publishers_share_a_confirm_channel() {
    run(
        "concurrent_publishers_share_a_confirm_channel",
        |t: Target| async move {
            let conn = t.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = unique("concurrent");
            declare(&ch, &q).await;
            ch.confirm_select().await.unwrap();
            // Eight tasks publish at once on one channel: sequence numbers must follow
            // wire order, or confirms would resolve the wrong futures (or never).
            let tasks: Vec<_> = (0..8u8)
                .map(|task| {
                    let (ch, q) = (ch.clone(), q.clone());
                    tokio::spawn(async move {
                        let mut confirms = Vec::new();
                        for i in 0..500u16 {
                            let body = [task, (i >> 8) as u8, i as u8];
                            confirms.push(
                                ch.basic_publish(
                                    "",
                                    &q,
                                    BasicPublishOptions::default(),
                                    &body,
                                    BasicProperties::default(),
                                )
                                .await
                                .unwrap(),
                            );
                        }
                        try_join_all(confirms).await.unwrap()
                    })
                })
                .collect();
            for task in tasks {
                assert!(task.await.unwrap().iter().all(|c| c.is_ack()));
            }
            assert_eq!(ready_count(&conn, &q).await, 4000);
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .unwrap();
            conn.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn warren_shutdown_is_connection_forced() {
    // Warren only: RabbitMQ cannot be stopped from a test.
    let broker = warren_broker::Broker::start().await.unwrap();
    let conn = Connection::open(broker.connect_in_process()).await.unwrap();
    let tcp = Connection::connect(&broker.url()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            &declare(&ch, "").await.name,
            "",
            BasicConsumeOptions::default(),
            no_args(),
        )
        .await
        .unwrap();
    broker.shutdown().await;
    for c in [&conn, &tcp] {
        let err = c.closed().await;
        assert!(err.is_hard(), "{err:?}");
        assert_eq!(err.reply_code(), Some(320), "{err:?}");
        assert!(
            err.close_reason()
                .unwrap()
                .reply_text
                .starts_with("CONNECTION_FORCED"),
            "{err}"
        );
    }
    match consumer.next().await {
        Some(Err(err)) => assert_eq!(err.reply_code(), Some(320)),
        other => panic!("expected the connection error, got {other:?}"),
    }
    assert!(consumer.next().await.is_none());
}

#[tokio::test]
async fn warren_restart_keeps_only_durable_state() {
    // Warren only: what a RabbitMQ restart does, checked through the client.
    let broker = warren_broker::Broker::start().await.unwrap();
    let conn = Connection::connect(&broker.url()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("kept", durable, no_args()).await.unwrap();
    declare(&ch, "gone").await;
    ch.confirm_select().await.unwrap();
    for mode in [1u8, 2] {
        let c = ch
            .basic_publish(
                "",
                "kept",
                BasicPublishOptions::default(),
                &[mode],
                BasicProperties::default().with_delivery_mode(mode),
            )
            .await
            .unwrap();
        assert!(c.await.unwrap().is_ack());
    }
    broker.restart().await;
    assert_eq!(conn.closed().await.reply_code(), Some(320));

    let conn = Connection::connect(&broker.url()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "kept",
            QueueDeclareOptions {
                passive: true,
                ..durable
            },
            no_args(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count, 1, "only the persistent message survives");
    let got = ch
        .basic_get("kept", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got.delivery.body[..], &[2]);
    let err = ch
        .queue_declare(
            "gone",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(404));
    conn.close().await.unwrap();
    broker.shutdown().await;
}
