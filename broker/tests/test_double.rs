//! What only a test double can do, each shown in a test of the kind an application
//! needs: looking inside queues, waiting for a condition instead of sleeping,
//! seeding a queue, and injecting faults (a nacked confirm, a channel closed on
//! the 3rd publish, a dropped connection, a broker-side cancel, a forced close),
//! with a frame trace to print when something goes wrong.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren_broker::{Broker, Direction, Fault};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .expect("no answer within 10 s")
}

async fn open(broker: &Broker) -> (Connection, Channel) {
    let conn = within(Connection::connect(
        &broker.url(),
        ConnectionProperties::default(),
    ))
    .await
    .unwrap();
    let ch = within(conn.create_channel()).await.unwrap();
    (conn, ch)
}

async fn declare(ch: &Channel, name: &str) {
    within(ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
}

/// The application code under test in these examples: publishes an order and
/// retries (up to 3 times) when the broker nacks it.
async fn publish_order(ch: &Channel, order: &str) -> Result<u32, String> {
    for attempt in 1..=3 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "orders".into(),
                BasicPublishOptions::default(),
                order.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        match confirm.await.map_err(|e| e.to_string())? {
            c if c.is_ack() => return Ok(attempt),
            _ => continue,
        }
    }
    Err("nacked 3 times".into())
}

#[tokio::test]
async fn a_publisher_retries_when_its_confirm_is_nacked() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    declare(&ch, "orders").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    broker.inject(Fault::on_publish_to("").times(2).nack_confirm());
    let attempts = within(publish_order(&ch, "order-1")).await.unwrap();
    assert_eq!(attempts, 3, "two nacks, then an ack");
    // The broker did enqueue the nacked copies: exactly what RabbitMQ may do, and
    // why consumers must be idempotent.
    broker
        .queue("orders")
        .assert_bodies(&["order-1", "order-1", "order-1"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_third_publish_closes_the_channel_with_406() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    declare(&ch, "orders").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    broker.inject(
        Fault::on_publish_to("")
            .nth(3)
            .close_channel(406, "orders are closed"),
    );
    assert_eq!(within(publish_order(&ch, "a")).await, Ok(1));
    assert_eq!(within(publish_order(&ch, "b")).await, Ok(1));
    let err = within(publish_order(&ch, "c")).await.unwrap_err();
    assert!(
        err.contains("PRECONDITION_FAILED - orders are closed"),
        "{err}"
    );
    broker.queue("orders").assert_bodies(&["a", "b"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn seeded_messages_reach_the_consumer_and_the_queue_drains() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    declare(&ch, "tasks").await;
    for task in ["resize 1.png", "resize 2.png"] {
        broker
            .seed(
                "tasks",
                task,
                BasicProperties::default().with_delivery_mode(2),
            )
            .unwrap();
    }
    broker
        .queue("tasks")
        .assert_bodies(&["resize 1.png", "resize 2.png"]);
    // The code under test: a worker that acks what it processed.
    let mut consumer = within(ch.basic_consume(
        "tasks".into(),
        "worker".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    for _ in 0..2 {
        let d = within(consumer.next()).await.unwrap().unwrap();
        within(d.ack(BasicAckOptions::default())).await.unwrap();
    }
    // No sleep: wait for the state the test expects.
    let snapshot = broker
        .wait_for(TIMEOUT, |s| {
            s.queue("tasks")
                .is_some_and(|q| q.messages.is_empty() && q.unacked.is_empty())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snapshot.queue("tasks").unwrap().consumers.len(), 1);
    broker.queue("tasks").assert_empty().assert_no_unacked();
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unacked_task_survives_its_workers_dropped_connection() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    declare(&ch, "tasks").await;
    broker
        .seed("tasks", "job", BasicProperties::default())
        .unwrap();
    let (_worker_conn, worker) = open(&broker).await;
    let got = within(worker.basic_get("tasks".into(), BasicGetOptions::default()))
        .await
        .unwrap()
        .expect("the job");
    assert!(!got.delivery.redelivered);
    let q = broker.queue("tasks");
    assert_eq!(q.unacked.len(), 1, "{q}");
    let worker_id = q.unacked[0].connection;
    // The network drops the worker: no close, the socket just dies.
    assert!(broker.drop_connection(worker_id));
    broker
        .wait_for(TIMEOUT, |s| {
            s.queue("tasks").is_some_and(|q| q.messages.len() == 1)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = within(ch.basic_get("tasks".into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .expect("the job again");
    assert!(
        again.delivery.redelivered,
        "it comes back marked redelivered"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_forced_close_and_a_broker_side_cancel_reach_the_client() {
    let broker = Broker::start().await.unwrap();
    let (conn, ch) = open(&broker).await;
    declare(&ch, "events").await;
    let mut consumer = within(ch.basic_consume(
        "events".into(),
        "listener".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert!(broker.cancel_consumer("events", "listener"));
    assert!(
        within(consumer.next()).await.is_none(),
        "lapin ends a consumer the broker cancelled"
    );
    broker
        .queue("events")
        .consumers
        .is_empty()
        .then_some(())
        .unwrap();

    let id = broker.connections()[0].id;
    assert!(broker.close_connection(id, 320, "broker forced connection closure"));
    broker
        .wait_for(TIMEOUT, |s| s.connections.is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!conn.status().connected());
    broker.shutdown().await;
}

#[tokio::test]
async fn the_frame_trace_shows_what_a_client_sent_and_got() {
    let broker = Broker::start().await.unwrap();
    broker.set_tracing(true);
    let (_conn, ch) = open(&broker).await;
    declare(&ch, "traced").await;
    broker.wait_until_idle().await;
    let id = broker.connections()[0].id;
    let trace = broker.trace(id);
    let sent = trace.iter().any(|e| {
        e.direction == Direction::In && e.frame.contains("Declare") && e.frame.contains("traced")
    });
    let got = trace
        .iter()
        .any(|e| e.direction == Direction::Out && e.frame.contains("DeclareOk"));
    assert!(sent && got, "{}", broker.trace_dump());
    broker.shutdown().await;
}
