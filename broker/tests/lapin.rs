//! Happy paths through lapin, a third-party client: if lapin can do the seed
//! tutorial's work (hello world, work queues, publish/subscribe) and the everyday
//! extras (confirms, returns, get, nack, qos) against Warren, the wire is compatible.
//! Run with `RAW_TARGET=amqp://guest:guest@127.0.0.1:5672/%2f` to check the same
//! expectations against RabbitMQ (see `common`).

mod common;

use std::time::Duration;

use common::{unique, within, Target, REPLY_TIMEOUT};
use lapin::message::{Delivery, DeliveryResult};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};
use tokio::sync::mpsc;

async fn connect(t: &Target) -> Connection {
    within(Connection::connect(&t.url, ConnectionProperties::default()))
        .await
        .expect("lapin connects")
}

/// What a consumer delegate forwards: the consumer tag it was registered with (lapin's
/// `Delivery` does not carry one) and the delivery.
type Tagged = (String, DeliveryResult);

/// Deliveries of one or more consumers, in the order lapin received them. Fed by
/// delegates that forward synchronously, so the order is the wire order.
struct Deliveries(mpsc::UnboundedReceiver<Tagged>);

impl Deliveries {
    async fn next(&mut self) -> Delivery {
        self.next_tagged().await.1
    }

    /// The next delivery with the tag of the consumer that got it.
    async fn next_tagged(&mut self) -> (String, Delivery) {
        match within(self.0.recv()).await {
            Some((tag, Ok(Some(d)))) => (tag, d),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    /// Waits until the consumer ends because its connection went away. lapin ends
    /// a consumer without an error when the server closed the connection with
    /// `connection.close` (it keeps the reply code for calls still in flight), so an
    /// error, when there is one, must carry `code`.
    async fn ended(&mut self, code: u16) {
        match within(self.0.recv()).await {
            None | Some((_, Ok(None))) => {}
            Some((_, Err(e))) => assert_eq!(code_of(&e), Some(code), "{e}"),
            Some((_, Ok(Some(d)))) => panic!("expected the consumer to end, got {d:?}"),
        }
    }
}

fn deliveries() -> (mpsc::UnboundedSender<Tagged>, Deliveries) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Deliveries(rx))
}

async fn consume_into(
    ch: &Channel,
    queue: &str,
    tag: &str,
    no_ack: bool,
    tx: mpsc::UnboundedSender<Tagged>,
) {
    let opts = BasicConsumeOptions {
        no_ack,
        ..Default::default()
    };
    let consumer = within(ch.basic_consume(queue.into(), tag.into(), opts, FieldTable::default()))
        .await
        .expect("basic.consume");
    let tag = consumer.tag().to_string();
    consumer.set_delegate(move |d: DeliveryResult| {
        let _ = tx.send((tag.clone(), d));
        std::future::ready(())
    });
}

async fn consume(ch: &Channel, queue: &str, tag: &str, no_ack: bool) -> Deliveries {
    let (tx, rx) = deliveries();
    consume_into(ch, queue, tag, no_ack, tx).await;
    rx
}

async fn declare(ch: &Channel, name: &str, opts: QueueDeclareOptions) -> lapin::Queue {
    within(ch.queue_declare(name.into(), opts, FieldTable::default()))
        .await
        .expect("queue.declare")
}

/// A passive declare: the queue's counts, or the error when it is gone.
async fn inspect(conn: &Connection, name: &str) -> lapin::Result<lapin::Queue> {
    let ch = within(conn.create_channel()).await.expect("channel");
    let res = within(ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default().passive(),
        FieldTable::default(),
    ))
    .await;
    if res.is_ok() {
        let _ = within(ch.close(200, "bye".into())).await;
    }
    res
}

/// Waits until a passive declare of `name` fails with 404. RabbitMQ deletes exclusive
/// and auto-delete queues asynchronously after the close or cancel was answered, and
/// no event announces it, so this polls (bounded) instead of sleeping.
async fn gone(conn: &Connection, name: &str) {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        match inspect(conn, name).await {
            Err(e) => {
                assert_eq!(code_of(&e), Some(404), "expected 404 for '{name}', got {e}");
                return;
            }
            Ok(q) => assert!(
                tokio::time::Instant::now() < deadline,
                "queue '{name}' still exists: {q:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn code_of(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// Publishes and, on a channel in confirm mode, waits for the broker's ack.
async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    let confirm = within(ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    ))
    .await
    .expect("basic.publish");
    let confirmation = within(confirm).await.expect("publish confirmation");
    assert!(
        !matches!(confirmation, Confirmation::Nack(_)),
        "publish nacked: {confirmation:?}"
    );
}

/// Publishes the bodies "0", "1", … up to `n`, plain, to `queue`.
async fn publish_numbered(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        publish(
            ch,
            "",
            queue,
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn ack(d: &Delivery) {
    within(d.ack(BasicAckOptions::default()))
        .await
        .expect("basic.ack");
}

async fn delete_queue(ch: &Channel, name: &str) {
    within(ch.queue_delete(name.into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete");
}

#[tokio::test]
async fn hello_world() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("hello");
    declare(&ch, &q, QueueDeclareOptions::default().auto_delete()).await;
    publish(&ch, "", &q, b"Hello World!", BasicProperties::default()).await;
    let mut got = consume(&ch, &q, "", true).await;
    let d = got.next().await;
    assert_eq!(d.data, b"Hello World!");
    assert_eq!(d.routing_key.as_str(), q);
    assert_eq!(d.exchange.as_str(), "");
    assert!(!d.redelivered);
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

/// A consumer that holds many deliveries unacked and acks them one at a time gets
/// every message, in order: on a runtime with two workers Warren polls the socket
/// and lets the refills of such a window wait briefly for each other
/// (`Outbox::push_delivery`), which must hold none back for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_window_acked_one_at_a_time_gets_every_message_in_order() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("window");
    declare(&ch, &q, QueueDeclareOptions::default()).await;
    const N: usize = 2_000;
    publish_numbered(&ch, &q, N).await;
    let cch = within(conn.create_channel()).await.unwrap();
    within(cch.basic_qos(200, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut got = consume(&cch, &q, "window", false).await;
    for i in 0..N {
        let d = got.next().await;
        assert_eq!(d.data, format!("{i}").as_bytes());
        ack(&d).await;
    }
    let left = inspect(&conn, &q).await.expect("queue exists");
    assert_eq!(left.message_count(), 0);
    delete_queue(&ch, &q).await;
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn work_queue_with_prefetch_one_gives_the_idle_worker_the_rest() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let setup = within(conn.create_channel()).await.unwrap();
    let q = unique("task_queue");
    declare(&setup, &q, QueueDeclareOptions::durable()).await;
    let (a, b) = (
        within(conn.create_channel()).await.unwrap(),
        within(conn.create_channel()).await.unwrap(),
    );
    for ch in [&a, &b] {
        within(ch.basic_qos(1, BasicQosOptions::default()))
            .await
            .unwrap();
    }
    let (tx, mut got) = deliveries();
    consume_into(&a, &q, "worker-a", false, tx.clone()).await;
    consume_into(&b, &q, "worker-b", false, tx).await;
    for i in 0..4 {
        publish(&setup, "", &q, format!("task {i}").as_bytes(), persistent()).await;
    }
    // Prefetch 1: the first two tasks go one to each worker, and nothing more comes
    // until one of them acks.
    let first = got.next_tagged().await;
    let second = got.next_tagged().await;
    assert_ne!(first.0, second.0, "one task per worker with prefetch 1");
    let mut bodies = [first.1.data.clone(), second.1.data.clone()];
    bodies.sort();
    assert_eq!(bodies, [b"task 0".to_vec(), b"task 1".to_vec()]);
    assert_eq!(first.1.properties.delivery_mode(), &Some(2));
    // One worker stays busy with its task; the idle one gets all the rest.
    let ((busy, held), (idle, done)) = (first, second);
    ack(&done).await;
    for i in 2..4 {
        let (worker, d) = got.next_tagged().await;
        assert_eq!(worker, idle, "the busy worker ({busy}) got a second task");
        assert_eq!(d.data, format!("task {i}").as_bytes());
        ack(&d).await;
    }
    ack(&held).await;
    let left = inspect(&conn, &q).await.expect("queue exists");
    assert_eq!(left.message_count(), 0);
    delete_queue(&setup, &q).await;
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn two_consumers_get_messages_round_robin() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("rr");
    declare(&ch, &q, QueueDeclareOptions::exclusive()).await;
    let (tx, mut got) = deliveries();
    consume_into(&ch, &q, "a", true, tx.clone()).await;
    consume_into(&ch, &q, "b", true, tx).await;
    publish_numbered(&ch, &q, 6).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let (tag, d) = got.next_tagged().await;
        order.push(format!("{tag}:{}", String::from_utf8(d.data).unwrap()));
    }
    assert_eq!(order, ["a:0", "b:1", "a:2", "b:3", "a:4", "b:5"]);
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn unacked_message_goes_to_the_other_consumer_when_a_connection_closes() {
    let t = Target::start().await;
    let first = connect(&t).await;
    let second = connect(&t).await;
    let ch1 = within(first.create_channel()).await.unwrap();
    let ch2 = within(second.create_channel()).await.unwrap();
    let q = unique("task_queue");
    declare(&ch1, &q, QueueDeclareOptions::durable()).await;
    let mut got1 = consume(&ch1, &q, "", false).await;
    publish(&ch2, "", &q, b"work", persistent()).await;
    let d = got1.next().await;
    assert!(!d.redelivered);
    let mut got2 = consume(&ch2, &q, "", false).await;
    // The first worker dies with the message unacked.
    within(first.close(200, "bye".into())).await.unwrap();
    let again = got2.next().await;
    assert_eq!(again.data, b"work");
    assert!(
        again.redelivered,
        "a requeued message is marked redelivered"
    );
    ack(&again).await;
    delete_queue(&ch2, &q).await;
    within(second.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn fanout_reaches_every_exclusive_server_named_queue() {
    let t = Target::start().await;
    let x = unique("logs");
    let publisher = connect(&t).await;
    let pch = within(publisher.create_channel()).await.unwrap();
    within(pch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let conn = connect(&t).await;
        let ch = within(conn.create_channel()).await.unwrap();
        let q = declare(&ch, "", QueueDeclareOptions::exclusive()).await;
        assert!(q.name().as_str().starts_with("amq.gen-"), "{q:?}");
        within(ch.queue_bind(
            q.name().clone(),
            x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .await
        .unwrap();
        let got = consume(&ch, q.name().as_str(), "", true).await;
        subscribers.push((conn, got));
    }
    publish(&pch, &x, "", b"info: one", BasicProperties::default()).await;
    publish(
        &pch,
        &x,
        "ignored key",
        b"info: two",
        BasicProperties::default(),
    )
    .await;
    for (conn, got) in &mut subscribers {
        assert_eq!(got.next().await.data, b"info: one");
        assert_eq!(got.next().await.data, b"info: two");
        within(conn.close(200, "bye".into())).await.unwrap();
    }
    within(pch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .unwrap();
    within(publisher.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn exclusive_queue_goes_with_its_connection() {
    let t = Target::start().await;
    let owner = connect(&t).await;
    let other = connect(&t).await;
    let ch = within(owner.create_channel()).await.unwrap();
    let q = declare(&ch, "", QueueDeclareOptions::exclusive()).await;
    let name = q.name().to_string();
    // While the owner lives, others see it as locked.
    let err = inspect(&other, &name).await.expect_err("exclusive queue");
    assert_eq!(code_of(&err), Some(405), "{err}");
    within(owner.close(200, "bye".into())).await.unwrap();
    gone(&other, &name).await;
    within(other.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn auto_delete_queue_goes_after_its_last_consumer_cancels() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("auto");
    declare(&ch, &q, QueueDeclareOptions::default().auto_delete()).await;
    let _a = consume(&ch, &q, "a", true).await;
    let _b = consume(&ch, &q, "b", true).await;
    within(ch.basic_cancel("a".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    let still = inspect(&conn, &q).await.expect("one consumer left");
    assert_eq!(still.consumer_count(), 1);
    within(ch.basic_cancel("b".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    gone(&conn, &q).await;
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn publisher_confirms_ack_every_publish() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let q = unique("confirms");
    declare(&ch, &q, QueueDeclareOptions::exclusive()).await;
    let mut pending = Vec::new();
    for i in 0..50u32 {
        let confirm = within(ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            persistent(),
        ))
        .await
        .unwrap();
        pending.push(confirm);
    }
    for confirm in pending {
        assert_eq!(within(confirm).await.unwrap(), Confirmation::Ack(None));
    }
    // Unroutable without mandatory: still acked (nothing to lose).
    let confirm = within(ch.basic_publish(
        "amq.direct".into(),
        unique("nobody").as_str().into(),
        BasicPublishOptions::default(),
        b"void",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    assert_eq!(within(confirm).await.unwrap(), Confirmation::Ack(None));
    assert!(within(ch.wait_for_confirms()).await.unwrap().is_empty());
    assert_eq!(inspect(&conn, &q).await.unwrap().message_count(), 50);
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn mandatory_unroutable_message_is_returned() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let key = unique("nobody");
    let confirm = within(ch.basic_publish(
        "amq.direct".into(),
        key.as_str().into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"lost?",
        BasicProperties::default().with_message_id("m-1".into()),
    ))
    .await
    .unwrap();
    match within(confirm).await.unwrap() {
        Confirmation::Ack(Some(ret)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(ret.delivery.data, b"lost?");
            assert_eq!(ret.delivery.exchange.as_str(), "amq.direct");
            assert_eq!(ret.delivery.routing_key.as_str(), key);
            assert_eq!(
                ret.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str()),
                Some("m-1")
            );
        }
        other => panic!("expected an ack carrying the returned message, got {other:?}"),
    }
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn basic_get_counts_down_to_get_empty() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("get");
    declare(&ch, &q, QueueDeclareOptions::exclusive()).await;
    for body in ["a", "b", "c"] {
        publish(&ch, "", &q, body.as_bytes(), BasicProperties::default()).await;
    }
    for (body, left) in [("a", 2), ("b", 1), ("c", 0)] {
        let got = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(got.delivery.data, body.as_bytes());
        assert_eq!(got.message_count, left);
    }
    let empty = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap();
    assert!(empty.is_none(), "get-empty expected, got {empty:?}");
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn nack_with_requeue_puts_the_message_back_first_in_line() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("nack");
    declare(&ch, &q, QueueDeclareOptions::exclusive()).await;
    for body in ["first", "second"] {
        publish(&ch, "", &q, body.as_bytes(), BasicProperties::default()).await;
    }
    let got = within(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"first");
    assert!(!got.delivery.redelivered);
    within(got.delivery.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    }))
    .await
    .unwrap();
    let mut consumer = consume(&ch, &q, "", true).await;
    let again = consumer.next().await;
    assert_eq!(again.data, b"first");
    assert!(again.redelivered);
    let next = consumer.next().await;
    assert_eq!(next.data, b"second");
    assert!(!next.redelivered);
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

/// Fills two queues with three messages each and consumes both on one channel with
/// the given qos calls; returns how many messages stay ready once `expected`
/// deliveries have arrived. Prefetch limits stop further deliveries, so the counts
/// are exact once the deliveries are in.
async fn ready_after_qos(qos: &[(u16, bool)], expected: usize) -> (u32, u32) {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let setup = within(conn.create_channel()).await.unwrap();
    // Confirmed publishes: every message is in its queue before the consumers start,
    // so the ready counts below do not race with publishes in flight.
    within(setup.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let (q1, q2) = (unique("qos1"), unique("qos2"));
    for q in [&q1, &q2] {
        declare(&setup, q, QueueDeclareOptions::default().auto_delete()).await;
        publish_numbered(&setup, q, 3).await;
    }
    let ch = within(conn.create_channel()).await.unwrap();
    for &(count, global) in qos {
        within(ch.basic_qos(count, BasicQosOptions { global }))
            .await
            .unwrap();
    }
    let (tx, mut got) = deliveries();
    consume_into(&ch, &q1, "c1", false, tx.clone()).await;
    consume_into(&ch, &q2, "c2", false, tx).await;
    for _ in 0..expected {
        got.next().await;
    }
    let ready1 = inspect(&conn, &q1).await.unwrap().message_count();
    let ready2 = inspect(&conn, &q2).await.unwrap().message_count();
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
    (ready1, ready2)
}

#[tokio::test]
async fn qos_without_global_limits_each_consumer() {
    // RabbitMQ: global=false applies to every consumer started afterwards, each on
    // its own: two consumers with prefetch 2 hold two messages each.
    assert_eq!(ready_after_qos(&[(2, false)], 4).await, (1, 1));
}

#[tokio::test]
async fn qos_global_limits_the_whole_channel() {
    // RabbitMQ: global=true is shared by all consumers on the channel: three
    // unacked messages in all, however they are spread.
    let (r1, r2) = ready_after_qos(&[(3, true)], 3).await;
    assert_eq!(
        r1 + r2,
        3,
        "ready after a channel-wide prefetch of 3: {r1} + {r2}"
    );
}

#[tokio::test]
async fn qos_per_consumer_and_global_together() {
    // Both limits apply: one unacked per consumer, under a channel limit of 5.
    assert_eq!(ready_after_qos(&[(5, true), (1, false)], 2).await, (2, 2));
}

#[tokio::test]
async fn shutdown_closes_lapin_connections() {
    let t = Target::start().await;
    if t.warren().is_none() {
        eprintln!("note: RAW_TARGET set; shutdown is Warren's alone");
        return;
    }
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = declare(&ch, "", QueueDeclareOptions::exclusive()).await;
    let mut consumer = consume(&ch, q.name().as_str(), "", false).await;
    // The reply code itself is checked frame by frame in errors.rs; here lapin must
    // notice that the broker closed the connection.
    t.stop().await;
    consumer.ended(320).await;
    assert!(!conn.status().connected(), "{:?}", conn.status());
    assert!(
        within(conn.create_channel()).await.is_err(),
        "the connection is closed after shutdown"
    );
}

#[tokio::test]
async fn restart_keeps_durable_queues_and_persistent_messages_only() {
    let t = Target::start().await;
    let Some(broker) = t.warren() else {
        eprintln!("note: RAW_TARGET set; restart is Warren's alone");
        return;
    };
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "durable", QueueDeclareOptions::durable()).await;
    declare(&ch, "transient", QueueDeclareOptions::default()).await;
    publish(&ch, "", "durable", b"kept", persistent()).await;
    publish(&ch, "", "durable", b"dropped", BasicProperties::default()).await;
    publish(&ch, "", "transient", b"gone", persistent()).await;
    // An unacked persistent delivery is kept too: it was never acknowledged.
    publish(&ch, "", "durable", b"unacked", persistent()).await;
    let mut consumer = consume(&ch, "durable", "", false).await;
    for _ in 0..3 {
        consumer.next().await;
    }
    within(broker.restart()).await;
    consumer.ended(320).await;
    assert!(!conn.status().connected(), "{:?}", conn.status());

    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let err = inspect(&conn, "transient")
        .await
        .expect_err("transient queue");
    assert_eq!(code_of(&err), Some(404), "{err}");
    let mut bodies = Vec::new();
    while let Some(got) = within(ch.basic_get("durable".into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        bodies.push(String::from_utf8(got.delivery.data).unwrap());
    }
    bodies.sort();
    assert_eq!(bodies, ["kept", "unacked"]);
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn a_one_mib_message_round_trips() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("big");
    declare(&ch, &q, QueueDeclareOptions::exclusive()).await;
    let body: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    publish(&ch, "", &q, &body, BasicProperties::default()).await;
    let got = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(got.delivery.data.len(), body.len());
    assert!(got.delivery.data == body, "the body changed on the way");
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn a_thousand_messages_arrive_in_order() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("order");
    declare(&ch, &q, QueueDeclareOptions::exclusive()).await;
    let mut got = consume(&ch, &q, "", false).await;
    let publisher = within(conn.create_channel()).await.unwrap();
    for i in 0..1000u32 {
        publish(
            &publisher,
            "",
            &q,
            &i.to_be_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    for i in 0..1000u32 {
        let d = got.next().await;
        assert_eq!(d.data, i.to_be_bytes(), "message {i} out of order");
        assert_eq!(d.delivery_tag, u64::from(i) + 1);
        if i % 100 == 99 {
            // Acking in batches, as many consumers do.
            within(d.ack(BasicAckOptions { multiple: true }))
                .await
                .unwrap();
        }
    }
    assert_eq!(inspect(&conn, &q).await.unwrap().message_count(), 0);
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn a_channel_error_leaves_the_connection_usable() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("missing");
    let err = within(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default().passive(),
        FieldTable::default(),
    ))
    .await
    .expect_err("a missing queue");
    assert_eq!(code_of(&err), Some(404), "{err}");
    assert!(!ch.status().connected(), "the channel is closed");
    assert!(conn.status().connected(), "the connection is not");
    let again = within(conn.create_channel()).await.unwrap();
    declare(&again, "", QueueDeclareOptions::exclusive()).await;
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn many_connections_publish_at_once() {
    let t = Target::start().await;
    let conn = connect(&t).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("many");
    declare(&ch, &q, QueueDeclareOptions::default().auto_delete()).await;
    let mut consumer = consume(&ch, &q, "", true).await;
    let mut tasks = Vec::new();
    for n in 0..20u32 {
        let url = t.url.clone();
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let conn = within(Connection::connect(&url, ConnectionProperties::default()))
                .await
                .expect("connect");
            let ch = within(conn.create_channel()).await.unwrap();
            within(ch.confirm_select(ConfirmSelectOptions::default()))
                .await
                .unwrap();
            for i in 0..25u32 {
                let body = format!("{n}-{i}");
                publish(&ch, "", &q, body.as_bytes(), BasicProperties::default()).await;
            }
            within(conn.close(200, "bye".into())).await.unwrap();
        }));
    }
    for task in tasks {
        within(task).await.expect("publisher task");
    }
    let mut seen = std::collections::HashMap::<u32, u32>::new();
    for _ in 0..500 {
        let d = consumer.next().await;
        let body = String::from_utf8(d.data).unwrap();
        let (n, i) = body.split_once('-').unwrap();
        let (n, i): (u32, u32) = (n.parse().unwrap(), i.parse().unwrap());
        // Each publisher's messages stay in its own order.
        let next = seen.entry(n).or_default();
        assert_eq!(i, *next, "publisher {n} out of order");
        *next += 1;
    }
    assert!(seen.values().all(|&c| c == 25), "{seen:?}");
    within(conn.close(200, "bye".into())).await.unwrap();
    t.stop().await;
}
