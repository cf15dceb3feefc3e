//! What only a test double can do, each shown in a test of the kind an application
//! needs: looking inside queues, waiting for a condition instead of sleeping,
//! seeding a queue, and injecting faults (a nacked confirm, a channel closed on
//! the 3rd publish, a dropped connection, a broker-side cancel, a forced close,
//! confirm faults scoped to a queue or a channel, a crash that loses what no
//! confirm waited for), with a frame trace to print when something goes wrong; and time:
//! consumer timeouts on the virtual clock, heartbeats and TTLs under
//! `tokio::time::pause()`.

mod common;

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren_broker::{Broker, Direction, Fault, TraceEntry, TraceValue};

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

#[tokio::test]
async fn the_trace_orders_every_connection_s_frames_and_marks_the_fault_that_fired() {
    let broker = Broker::start().await.unwrap();
    broker.set_tracing(true);
    let (publisher, ch) = open(&broker).await;
    declare(&ch, "orders").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    broker.inject(Fault::on_publish_to("").times(1).nack_confirm());
    assert_eq!(within(publish_order(&ch, "order-1")).await, Ok(2));
    let (_consumer, ch2) = open(&broker).await;
    let got = within(ch2.basic_get("orders".into(), BasicGetOptions::default()))
        .await
        .unwrap()
        .expect("a message");
    within(got.delivery.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    broker.wait_until_idle().await;
    let first = broker.connections()[0].id;
    within(publisher.close(200, "bye".into())).await.unwrap();
    broker.wait_until_idle().await;

    // The publisher's frames stay after it closed, in one order with the consumer's.
    let all = broker.trace_all();
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let methods: Vec<(u64, &str)> = all
        .iter()
        .filter(|e| e.channel != 0)
        .map(|e| (e.connection, e.method.as_str()))
        .collect();
    let at = |c: u64, m: &str| {
        methods
            .iter()
            .position(|x| *x == (c, m))
            .unwrap_or_else(|| panic!("no {m} on {c}:\n{}", broker.trace_dump()))
    };
    let second = first + 1;
    assert!(at(first, "basic.publish") < at(first, "basic.nack"));
    assert!(at(first, "basic.nack") < at(second, "basic.get"));
    assert!(at(second, "basic.get-ok") < at(second, "basic.ack"));

    let publish = all.iter().find(|e| e.method == "basic.publish").unwrap();
    assert_eq!(
        publish.field("routing_key"),
        Some(&TraceValue::Text("orders".into()))
    );
    assert_eq!(publish.direction, Direction::In);
    // The fault fired on the frame that completed the first message: its body.
    let marked: Vec<&TraceEntry> = all.iter().filter(|e| !e.faults.is_empty()).collect();
    assert_eq!(marked.len(), 1, "{}", broker.trace_dump());
    assert_eq!(marked[0].method, "content-body");
    assert_eq!(
        marked[0].field("body"),
        Some(&TraceValue::Text("order-1".into()))
    );
    assert_eq!(marked[0].faults[0].action, "nack_confirm");
    let nack = all.iter().find(|e| e.method == "basic.nack").unwrap();
    assert_eq!(nack.field("delivery_tag"), Some(&TraceValue::Number(1)));
    let json = nack.to_json();
    assert_eq!(json["direction"], "out");
    assert_eq!(json["fields"]["delivery_tag"], 1);
    assert_eq!(
        json["summary"],
        "basic.nack delivery_tag=1 multiple=false requeue=false"
    );
    assert!(broker
        .trace_dump()
        .contains(&format!("connection {first} (closed):")));
    let mermaid = broker.trace_mermaid();
    assert!(mermaid.starts_with("sequenceDiagram\n"), "{mermaid}");
    let publish =
        format!("C{first}->>B: ch1 basic.publish exchange=#34;#34; routing_key=#34;orders#34;");
    assert!(mermaid.contains(&publish), "{mermaid}");
    assert!(
        mermaid.contains("Note over B: fault fired#58; nack_confirm"),
        "{mermaid}"
    );
    broker.shutdown().await;
}

// ---- scoped confirm faults --------------------------------------------------------

#[tokio::test]
async fn a_confirm_fault_scoped_to_a_queue_nacks_only_what_reaches_it() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    declare(&ch, "orders").await;
    declare(&ch, "audit").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    broker.inject(Fault::on_publish_routed_to("audit").nack_confirm());
    let confirmed = |queue: &'static str| {
        let ch = ch.clone();
        async move {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    b"m",
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            within(confirm).await.unwrap().is_ack()
        }
    };
    assert!(
        confirmed("orders").await,
        "orders is out of the fault's scope"
    );
    assert!(!confirmed("audit").await, "audit is in it");
    assert!(confirmed("orders").await);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_confirm_fault_scoped_to_a_channel_spares_the_others() {
    let broker = Broker::start().await.unwrap();
    let (conn, first) = open(&broker).await;
    let second = within(conn.create_channel()).await.unwrap();
    declare(&first, "orders").await;
    for ch in [&first, &second] {
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .unwrap();
    }
    let id = broker.connections()[0].id;
    broker.inject(
        Fault::on_any_publish()
            .on_connection(id)
            .on_channel(second.id())
            .nack_confirm(),
    );
    assert_eq!(within(publish_order(&first, "a")).await, Ok(1));
    assert_eq!(
        within(publish_order(&second, "b")).await,
        Err("nacked 3 times".to_owned())
    );
    // A channel of the same number on another connection is out of scope.
    let (_other_conn, other) = open(&broker).await;
    let other2 = within(_other_conn.create_channel()).await.unwrap();
    assert_eq!(other2.id(), second.id());
    within(other2.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    assert_eq!(within(publish_order(&other2, "c")).await, Ok(1));
    drop(other);
    broker.shutdown().await;
}

// ---- consumer timeouts ------------------------------------------------------------

/// RabbitMQ 3.10's text, for a channel `ch` and a timeout of `ms`.
fn ack_timeout_text(ch: u16, ms: u64) -> String {
    format!(
        "PRECONDITION_FAILED - delivery acknowledgement on channel {ch} timed out. \
         Timeout value used: {ms} ms. This timeout value can be configured, see \
         consumers doc guide to learn more"
    )
}

async fn raw_in_process(broker: &Broker) -> common::Raw {
    let mut raw = common::Raw::new(Box::new(broker.connect_in_process()));
    within(raw.handshake("guest", "guest", "/")).await;
    raw
}

#[tokio::test]
async fn a_delivery_unacked_past_the_consumer_timeout_closes_its_channel() {
    let broker = Broker::builder()
        .no_listener()
        .virtual_clock()
        .start()
        .await
        .unwrap();
    let mut raw = raw_in_process(&broker).await;
    raw.open_channel(1).await;
    raw.declare_queue(1, "tasks").await;
    broker
        .seed("tasks", "job", BasicProperties::default())
        .unwrap();
    raw.consume(1, "tasks", "worker", false).await;
    let got = raw.expect_content(1).await;
    assert!(!got.deliver().redelivered);
    // Thirty minutes is RabbitMQ 3.10's default, and not yet too long.
    broker.advance(Duration::from_secs(30 * 60));
    raw.assert_alive().await;
    broker.advance(Duration::from_secs(60));
    raw.expect_channel_close(1, 406, (0, 0), &ack_timeout_text(1, 1_800_000))
        .await;
    // The close requeued the job, marked redelivered, for the next worker.
    raw.open_channel(2).await;
    let again = raw.get(2, "tasks", true).await.expect("the job again");
    assert!(again.get_ok().redelivered);
    broker.shutdown().await;
}

#[tokio::test]
async fn an_ack_in_time_keeps_the_channel_and_the_timeout_is_configurable() {
    let broker = Broker::builder()
        .no_listener()
        .virtual_clock()
        .consumer_timeout(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let mut raw = raw_in_process(&broker).await;
    raw.open_channel(1).await;
    raw.declare_queue(1, "tasks").await;
    raw.put("tasks", b"one").await;
    raw.put("tasks", b"two").await;
    // basic.get deliveries count too, as in RabbitMQ.
    let one = raw.get(1, "tasks", false).await.expect("one");
    broker.advance(Duration::from_secs(4));
    raw.send(
        1,
        amq_protocol::protocol::basic::Ack {
            delivery_tag: one.get_ok().delivery_tag,
            multiple: false,
        },
    )
    .await;
    // A round trip on the same connection: the ack was handled before it.
    let _two = raw.get(1, "tasks", false).await.expect("two");
    broker.advance(Duration::from_secs(4));
    raw.assert_alive().await;
    broker.advance(Duration::from_secs(1));
    raw.assert_alive().await;
    broker.advance(Duration::from_millis(1));
    raw.expect_channel_close(1, 406, (0, 0), &ack_timeout_text(1, 5_000))
        .await;
    broker.queue("tasks").assert_bodies(&["two"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn no_consumer_timeout_lets_a_delivery_wait_forever() {
    let broker = Broker::builder()
        .no_listener()
        .virtual_clock()
        .no_consumer_timeout()
        .start()
        .await
        .unwrap();
    let mut raw = raw_in_process(&broker).await;
    raw.open_channel(1).await;
    raw.declare_queue(1, "tasks").await;
    raw.put("tasks", b"slow").await;
    raw.get(1, "tasks", false).await.expect("slow");
    broker.advance(Duration::from_secs(24 * 3600));
    raw.assert_alive().await;
    // Channel 1 still works and still holds the delivery.
    assert!(raw.get(1, "tasks", false).await.is_none());
    assert_eq!(broker.queue("tasks").unacked.len(), 1);
    broker.shutdown().await;
}

// ---- crash ------------------------------------------------------------------------

fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warren-test-double-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn declare_durable(ch: &Channel, name: &str) {
    within(ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
}

/// Publishes `body` to "orders" as a persistent message; returns its confirm
/// (which resolves at once on a channel not in confirm mode).
async fn publish_persistent(ch: &Channel, body: &[u8]) -> lapin::PublisherConfirm {
    within(ch.basic_publish(
        "".into(),
        "orders".into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    ))
    .await
    .unwrap()
}

/// Takes the next message of "orders" with `basic.get` and acks it.
async fn get_and_ack(ch: &Channel) {
    let got = within(ch.basic_get("orders".into(), BasicGetOptions::default()))
        .await
        .unwrap()
        .expect("a message");
    within(got.delivery.acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
}

/// The application code under test: a publisher that treats a message as sent
/// only once its confirm came, and publishes again whatever was not confirmed
/// when its connection died.
struct ReliablePublisher {
    unconfirmed: Vec<String>,
}

impl ReliablePublisher {
    /// Publishes every unconfirmed message on `ch`; false when the connection
    /// died before all were confirmed (what was confirmed is forgotten).
    async fn flush(&mut self, ch: &Channel) -> bool {
        let mut pending = Vec::new();
        for body in &self.unconfirmed {
            let sent = ch
                .basic_publish(
                    "".into(),
                    "orders".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await;
            match sent {
                Ok(confirm) => pending.push((body.clone(), confirm)),
                Err(_) => break,
            }
        }
        let mut confirmed = Vec::new();
        for (body, confirm) in pending {
            if matches!(confirm.await, Ok(c) if c.is_ack()) {
                confirmed.push(body);
            }
        }
        self.unconfirmed.retain(|b| !confirmed.contains(b));
        self.unconfirmed.is_empty()
    }
}

#[tokio::test]
async fn a_publisher_that_republishes_what_was_not_confirmed_survives_a_crash() {
    let dir = data_dir("republish");
    let broker = Broker::builder().data_dir(&dir).start().await.unwrap();
    let (conn, ch) = open(&broker).await;
    declare_durable(&ch, "orders").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let mut publisher = ReliablePublisher {
        unconfirmed: vec!["order-1".into()],
    };
    assert!(within(publisher.flush(&ch)).await, "order-1 is confirmed");
    // The disk stops syncing: order-2 is routed, but its confirm must wait...
    broker.stall_storage(true);
    publisher.unconfirmed.push("order-2".into());
    let flushing = tokio::spawn({
        let ch = ch.clone();
        let mut publisher = ReliablePublisher {
            unconfirmed: publisher.unconfirmed.clone(),
        };
        async move {
            let done = publisher.flush(&ch).await;
            (done, publisher)
        }
    });
    broker
        .wait_for(TIMEOUT, |s| {
            s.queue("orders").is_some_and(|q| q.messages.len() == 2)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // ...and the power goes out before it came.
    broker.crash().await;
    let (done, publisher) = within(flushing).await.unwrap();
    assert!(!done, "the connection died before order-2 was confirmed");
    assert_eq!(publisher.unconfirmed, ["order-2"]);
    assert!(!conn.status().connected());
    // What was confirmed is there; what was not never reached the disk.
    broker.queue("orders").assert_bodies(&["order-1"]);
    // The publisher reconnects and sends again what was not confirmed.
    let mut publisher = publisher;
    let (_conn, ch) = open(&broker).await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    assert!(within(publisher.flush(&ch)).await);
    broker
        .queue("orders")
        .assert_bodies(&["order-1", "order-2"]);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn every_confirmed_message_survives_a_crash_in_mid_stream() {
    let dir = data_dir("midstream");
    let broker = Broker::builder().data_dir(&dir).start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    declare_durable(&ch, "orders").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..300 {
        confirms.push(publish_persistent(&ch, format!("m{i}").as_bytes()).await);
    }
    // Crash as soon as the first confirm is in: the rest are in every state
    // from "not yet read" to "on disk, confirm on its way".
    let mut confirms = confirms.into_iter();
    let first = within(confirms.next().unwrap()).await.unwrap();
    assert!(first.is_ack());
    broker.crash().await;
    let mut confirmed = vec!["m0".to_owned()];
    for (i, confirm) in confirms.enumerate() {
        if matches!(within(confirm).await, Ok(c) if c.is_ack()) {
            confirmed.push(format!("m{}", i + 1));
        }
    }
    let q = broker.queue("orders");
    let kept: Vec<String> = q
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    for body in &confirmed {
        assert!(kept.contains(body), "confirmed {body} was lost:\n{q}");
    }
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// As with RabbitMQ, the disk is synced only for what a client waits on (a
/// confirm, a commit-ok): a power cut keeps every confirmed message and loses
/// an unconfirmed publish and an ack that nothing synced since, so the acked
/// message comes back.
#[tokio::test]
async fn a_crash_loses_what_no_confirm_waited_for() {
    let dir = data_dir("unconfirmed");
    let broker = Broker::builder().data_dir(&dir).start().await.unwrap();
    let (conn, ch) = open(&broker).await;
    declare_durable(&ch, "orders").await;
    let confirming = within(conn.create_channel()).await.unwrap();
    within(confirming.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    for order in ["order-1", "order-2"] {
        let confirm = publish_persistent(&confirming, order.as_bytes()).await;
        assert!(within(confirm).await.unwrap().is_ack());
    }
    get_and_ack(&ch).await;
    publish_persistent(&ch, b"order-3").await;
    broker
        .wait_for(TIMEOUT, |s| {
            s.queue("orders")
                .is_some_and(|q| q.unacked.is_empty() && q.bodies() == ["order-2", "order-3"])
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    broker.crash().await;
    broker
        .queue("orders")
        .assert_bodies(&["order-1", "order-2"]);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A crash while compaction rewrites the log, wherever it falls (before the
/// snapshot, in the middle of writing it, or after): nothing confirmed and not
/// acked is lost (an ack not yet on disk may be undone, as in RabbitMQ), and
/// what is published after the crash survives a restart.
#[tokio::test]
async fn a_crash_during_compaction_loses_nothing() {
    let dir = data_dir("compaction");
    let broker = Broker::builder().data_dir(&dir).start().await.unwrap();
    // Names of the messages that must be in the queue; the bodies are padded
    // after the name, so that a snapshot takes several writes.
    let mut kept: Vec<String> = Vec::new();
    let present = |broker: &Broker| -> Vec<String> {
        let q = broker.queue("orders");
        q.messages
            .iter()
            .map(|m| String::from_utf8_lossy(m.body.get(..6).unwrap_or(&m.body)).into_owned())
            .collect()
    };
    for round in 0..4 {
        let (_conn, ch) = open(&broker).await;
        declare_durable(&ch, "orders").await;
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for i in 0..500 {
            let name = format!("r{round}-{i:03}");
            let body = format!("{name}{}", " ".repeat(1000));
            confirms.push((name, publish_persistent(&ch, body.as_bytes()).await));
        }
        for (name, confirm) in confirms {
            assert!(within(confirm).await.unwrap().is_ack());
            kept.push(name);
        }
        // Acked messages give compaction something to reclaim.
        for _ in 0..200 {
            get_and_ack(&ch).await;
        }
        // basic.get takes from the head of the queue: the acked are the first.
        let confirmed_unacked = kept.split_off(200);
        within(async { tokio::join!(broker.compact_storage(), broker.crash()) }).await;
        let now = present(&broker);
        let lost: Vec<&String> = confirmed_unacked
            .iter()
            .filter(|n| !now.contains(n))
            .collect();
        assert!(lost.is_empty(), "round {round}: lost {lost:?}");
        kept = now;
    }
    within(broker.restart()).await;
    assert_eq!(present(&broker), kept);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// On channel 1: declares the durable queue "orders", selects tx, stalls the
/// disk, publishes one persistent message and sends tx.commit, unanswered yet.
async fn commit_with_the_disk_stalled(broker: &Broker, c: &mut common::Raw) {
    use amq_protocol::protocol::{basic, queue, tx, BasicProperties};
    within(c.open_channel(1)).await;
    let declare = queue::Declare {
        queue: "orders".into(),
        durable: true,
        ..Default::default()
    };
    within(c.call(1, declare)).await;
    within(c.call(1, tx::Select {})).await;
    broker.stall_storage(true);
    let publish = basic::Publish {
        routing_key: "orders".into(),
        ..Default::default()
    };
    let persistent = BasicProperties::default().with_delivery_mode(2);
    within(c.publish_with(1, publish, persistent, b"order-1")).await;
    within(c.send(1, tx::Commit {})).await;
}

/// With a data directory, commit-ok means the transaction's persistent messages
/// are on disk, as in RabbitMQ: a stalled disk holds it back, and with it what
/// the client sent on that channel after the commit, but not the connection's
/// other channels. Released, commit-ok comes, then the answers that queued
/// behind it.
#[tokio::test]
async fn tx_commit_ok_waits_until_the_transaction_is_on_disk() {
    use amq_protocol::protocol::{queue, tx, AMQPClass};
    let dir = data_dir("tx");
    let broker = Broker::builder().data_dir(&dir).start().await.unwrap();
    let mut c = raw_in_process(&broker).await;
    within(c.open_channel(2)).await;
    let declare = |passive| queue::Declare {
        queue: "orders".into(),
        durable: true,
        passive,
        ..Default::default()
    };
    commit_with_the_disk_stalled(&broker, &mut c).await;
    within(c.send(1, declare(true))).await;
    // Channel 2 is answered, and its answer is the next frame: nothing was
    // sent on channel 1 before it, though the commit was handled (its message
    // is in the queue).
    match within(c.call(2, declare(true))).await {
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => assert_eq!(ok.message_count, 1),
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    broker.stall_storage(false);
    let commit_ok = within(c.expect_method(1)).await;
    assert!(
        matches!(commit_ok, AMQPClass::Tx(tx::AMQPMethod::CommitOk(_))),
        "{commit_ok:?}"
    );
    let declare_ok = within(c.expect_method(1)).await;
    assert!(
        matches!(
            declare_ok,
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
        ),
        "{declare_ok:?}"
    );
    // What commit-ok promised survives the power going out.
    broker.crash().await;
    broker.queue("orders").assert_bodies(&["order-1"]);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that gives up waiting for commit-ok can still close the channel.
#[tokio::test]
async fn a_channel_waiting_for_commit_ok_can_be_closed() {
    use amq_protocol::protocol::{channel, AMQPClass};
    let dir = data_dir("tx-close");
    let broker = Broker::builder().data_dir(&dir).start().await.unwrap();
    let mut c = raw_in_process(&broker).await;
    commit_with_the_disk_stalled(&broker, &mut c).await;
    let close = channel::Close {
        reply_code: 200,
        reply_text: "".into(),
        class_id: 0,
        method_id: 0,
    };
    let reply = within(c.call(1, close)).await;
    assert!(
        matches!(reply, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))),
        "{reply:?}"
    );
    broker.stall_storage(false);
    within(c.open_channel(1)).await;
    drop(c);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_crash_drops_connections_without_a_close_and_keeps_durable_state_in_memory() {
    let broker = Broker::builder().no_listener().start().await.unwrap();
    let mut raw = raw_in_process(&broker).await;
    raw.open_channel(1).await;
    raw.queue_declare(
        1,
        amq_protocol::protocol::queue::Declare {
            queue: "durable".into(),
            durable: true,
            ..Default::default()
        },
    )
    .await;
    raw.declare_queue(1, "transient").await;
    broker
        .seed(
            "durable",
            "persistent",
            BasicProperties::default().with_delivery_mode(2),
        )
        .unwrap();
    broker
        .seed("durable", "transient message", BasicProperties::default())
        .unwrap();
    broker.crash().await;
    // The socket just dies: no connection.close, as from a dying broker.
    within(raw.expect_closed()).await;
    assert!(broker.try_queue("transient").is_none());
    broker.queue("durable").assert_bodies(&["persistent"]);
    let mut raw = raw_in_process(&broker).await;
    raw.assert_alive().await;
    raw.close().await;
    broker.shutdown().await;
}

// ---- time under tokio::time::pause() ----------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_two_heartbeats_of_paused_time() {
    let broker = Broker::builder().no_listener().start().await.unwrap();
    let mut raw = common::Raw::new(Box::new(broker.connect_in_process()));
    raw.start().await;
    raw.start_ok("guest", "guest").await;
    let tune = raw.tune().await;
    assert_eq!(tune.heartbeat, 60, "RabbitMQ's default, taken as is");
    raw.open_vhost("/").await;
    let silent_since = tokio::time::Instant::now();
    // 119 s of silence: the broker still sends its heartbeats and waits.
    tokio::time::advance(Duration::from_secs(119)).await;
    match raw.next_frame_or_heartbeat().await {
        Some(amq_protocol::frame::AMQPFrame::Heartbeat) => {}
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    assert_eq!(broker.connection_count(), 1);
    // Past two intervals it closes the socket, without a connection.close.
    tokio::time::advance(Duration::from_secs(2)).await;
    loop {
        match raw.next_frame_or_heartbeat().await {
            Some(amq_protocol::frame::AMQPFrame::Heartbeat) => continue,
            None => break,
            Some(other) => panic!("expected the socket to close, got {other:?}"),
        }
    }
    let silent = silent_since.elapsed();
    assert!(
        silent >= Duration::from_secs(120),
        "closed after {silent:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn message_ttl_follows_paused_tokio_time() {
    let broker = Broker::builder().no_listener().start().await.unwrap();
    let mut raw = raw_in_process(&broker).await;
    raw.open_channel(1).await;
    let mut args = amq_protocol::types::FieldTable::default();
    args.insert(
        "x-message-ttl".into(),
        amq_protocol::types::AMQPValue::LongInt(60_000),
    );
    raw.queue_declare(
        1,
        amq_protocol::protocol::queue::Declare {
            queue: "ttl".into(),
            arguments: args,
            ..Default::default()
        },
    )
    .await;
    raw.put("ttl", b"short-lived").await;
    tokio::time::advance(Duration::from_secs(59)).await;
    broker.queue("ttl").assert_bodies(&["short-lived"]);
    tokio::time::advance(Duration::from_secs(2)).await;
    broker
        .wait_for(TIMEOUT, |s| {
            s.queue("ttl").is_some_and(|q| q.messages.is_empty())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    raw.close().await;
    broker.shutdown().await;
}
