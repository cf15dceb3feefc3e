//! The memory alarm: above the configured high watermark a publishing connection
//! is told `connection.blocked` and not read from, until consumers bring the held
//! bytes back down and it is told `connection.unblocked`, as RabbitMQ does.

mod common;

use amq_protocol::protocol::{basic, connection, AMQPClass};
use common::{open1, unique, Target};
use warren_broker::Broker;

#[tokio::test]
async fn a_memory_alarm_blocks_publishers_until_consumers_drain() {
    let Some(t) = Target::start_with(Broker::builder().memory_high_watermark(1000)).await else {
        eprintln!("SKIPPED: the watermark is a Warren setting");
        return;
    };
    let mut publisher = open1(&t).await;
    let q = unique("q");
    publisher.declare_queue(1, &q).await;
    publisher.publish(1, "", &q, &[7u8; 2000]).await;
    match publisher.expect_method(0).await {
        AMQPClass::Connection(connection::AMQPMethod::Blocked(b)) => {
            assert_eq!(b.reason.as_str(), "low on memory")
        }
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    assert!(t.warren().unwrap().message_bytes() >= 2000);

    // Sent now, read only once the alarm clears.
    publisher.publish(1, "", &q, b"second").await;

    let mut consumer = open1(&t).await;
    let get = basic::Get {
        queue: q.as_str().into(),
        no_ack: true,
    };
    let reply = consumer.call(1, get.clone()).await;
    let first = consumer.content_after(1, reply).await;
    assert_eq!(first.body.len(), 2000);
    match publisher.expect_method(0).await {
        AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => {}
        other => panic!("expected connection.unblocked, got {other:?}"),
    }
    // The publish made while blocked was not lost: it is read and queued now.
    let declared = publisher.declare_queue(1, &q).await;
    assert_eq!(declared.message_count, 1);
    let reply = consumer.call(1, get).await;
    let second = consumer.content_after(1, reply).await;
    assert_eq!(second.body, b"second");
    t.stop().await;
}
