//! The memory alarm: while it is raised a publishing connection is told
//! `connection.blocked` and not read from, while consumers are still served,
//! until it clears and the connection is told `connection.unblocked`, as
//! RabbitMQ does. The alarm is raised by hand here; `resource_alarms.rs` raises
//! it with real memory in a memory-limited cgroup.

mod common;

use amq_protocol::protocol::{basic, connection, AMQPClass};
use common::{open1, unique, Target};
use warren_broker::Broker;

#[tokio::test]
async fn a_memory_alarm_blocks_publishers_and_serves_consumers_until_it_clears() {
    let Some(t) = Target::start_with(Broker::builder()).await else {
        eprintln!("SKIPPED: the alarm is raised through Warren's API");
        return;
    };
    t.warren().unwrap().set_memory_alarm(true);
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
    t.warren().unwrap().set_memory_alarm(false);
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
