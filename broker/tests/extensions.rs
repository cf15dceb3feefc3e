//! RabbitMQ's extensions as an application uses them, through lapin: TTLs and
//! queue expiry on a virtual clock (a 30-minute TTL tested in microseconds),
//! dead-lettering with `x-death`, length limits, priorities, consumer priorities,
//! single active consumer, direct reply-to and alternate exchanges.

use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use warren_broker::Broker;

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
    // Every publish waits for its confirm, so the broker has it before the test
    // moves the clock.
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    (conn, ch)
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

async fn queue(ch: &Channel, name: &str, arguments: FieldTable) {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::default(), arguments))
        .await
        .unwrap();
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str, props: BasicProperties) {
    let confirm = within(ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    ))
    .await
    .unwrap();
    // A channel the broker closed (invalid expiration) has no confirm to give.
    let _ = within(confirm).await;
}

async fn get(ch: &Channel, queue: &str) -> Option<BasicGetMessage> {
    within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
}

fn body(m: &BasicGetMessage) -> String {
    String::from_utf8_lossy(&m.delivery.data).into_owned()
}

/// A dead-letter exchange with one queue behind it.
async fn dead_letters(ch: &Channel) {
    within(ch.exchange_declare(
        "dlx".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    queue(ch, "dead", FieldTable::default()).await;
    within(ch.queue_bind(
        "dead".into(),
        "dlx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
}

fn death(m: &BasicGetMessage) -> FieldTable {
    let headers = m.properties.headers().as_ref().expect("headers");
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => match &a.as_slice()[0] {
            AMQPValue::FieldTable(t) => t.clone(),
            other => panic!("x-death entry {other:?}"),
        },
        other => panic!("x-death {other:?}"),
    }
}

fn field<'a>(t: &'a FieldTable, k: &str) -> &'a AMQPValue {
    t.inner()
        .get(k)
        .unwrap_or_else(|| panic!("no {k} in {t:?}"))
}

#[tokio::test]
async fn a_thirty_minute_ttl_on_a_virtual_clock() {
    let broker = Broker::builder().virtual_clock().start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    dead_letters(&ch).await;
    queue(
        &ch,
        "orders",
        args(&[
            ("x-message-ttl", AMQPValue::LongInt(30 * 60 * 1000)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    publish(&ch, "", "orders", "o1", BasicProperties::default()).await;
    broker.advance(Duration::from_secs(29 * 60));
    let q = within(ch.queue_declare(
        "orders".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert_eq!(q.message_count(), 1, "not expired after 29 minutes");
    broker.advance(Duration::from_secs(2 * 60));
    assert!(
        get(&ch, "orders").await.is_none(),
        "expired after 31 minutes"
    );
    let dead = get(&ch, "dead").await.expect("dead-lettered");
    assert_eq!(body(&dead), "o1");
    let d = death(&dead);
    assert_eq!(field(&d, "reason"), &text("expired"));
    assert_eq!(field(&d, "queue"), &text("orders"));
    assert_eq!(field(&d, "count"), &AMQPValue::LongLongInt(1));
    broker.shutdown().await;
}

#[tokio::test]
async fn per_message_expiration_and_invalid_expiration() {
    let broker = Broker::builder().virtual_clock().start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    queue(&ch, "q", FieldTable::default()).await;
    let short = BasicProperties::default().with_expiration("1000".into());
    publish(&ch, "", "q", "short", short).await;
    publish(&ch, "", "q", "forever", BasicProperties::default()).await;
    broker.advance(Duration::from_millis(1001));
    assert_eq!(body(&get(&ch, "q").await.unwrap()), "forever");

    let bad = BasicProperties::default().with_expiration("soon".into());
    let confirm = within(ch.basic_publish(
        "".into(),
        "q".into(),
        BasicPublishOptions::default(),
        b"x",
        bad,
    ))
    .await
    .unwrap();
    let err = within(confirm)
        .await
        .expect_err("the channel is closed with the reason");
    assert!(
        err.to_string()
            .contains("invalid expiration 'soon': no_integer"),
        "{err}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unused_queue_with_x_expires_is_deleted() {
    let broker = Broker::builder().virtual_clock().start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    queue(
        &ch,
        "tmp",
        args(&[("x-expires", AMQPValue::LongInt(60_000))]),
    )
    .await;
    broker.advance(Duration::from_secs(59));
    queue(
        &ch,
        "tmp",
        args(&[("x-expires", AMQPValue::LongInt(60_000))]),
    )
    .await;
    broker.advance(Duration::from_secs(59));
    assert!(get(&ch, "tmp").await.is_none(), "redeclaring counts as use");
    broker.advance(Duration::from_secs(61));
    let err = within(ch.basic_get("tmp".into(), BasicGetOptions::default()))
        .await
        .expect_err("the queue expired");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    broker.shutdown().await;
}

#[tokio::test]
async fn max_length_drops_the_oldest_into_the_dead_letter_exchange() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    dead_letters(&ch).await;
    queue(
        &ch,
        "q",
        args(&[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    for b in ["m1", "m2", "m3"] {
        publish(&ch, "", "q", b, BasicProperties::default()).await;
    }
    assert_eq!(body(&get(&ch, "q").await.unwrap()), "m2");
    assert_eq!(body(&get(&ch, "q").await.unwrap()), "m3");
    let dead = get(&ch, "dead").await.unwrap();
    assert_eq!(body(&dead), "m1");
    assert_eq!(field(&death(&dead), "reason"), &text("maxlen"));
    broker.shutdown().await;
}

#[tokio::test]
async fn reject_publish_nacks_the_publisher() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    queue(
        &ch,
        "full",
        args(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", text("reject-publish")),
        ]),
    )
    .await;
    let mut confirms = Vec::new();
    for b in ["first", "second"] {
        let c = within(ch.basic_publish(
            "".into(),
            "full".into(),
            BasicPublishOptions::default(),
            b.as_bytes(),
            BasicProperties::default(),
        ))
        .await
        .unwrap();
        confirms.push(within(c).await.unwrap());
    }
    assert!(confirms[0].is_ack());
    assert!(confirms[1].is_nack(), "{:?}", confirms[1]);
    assert_eq!(body(&get(&ch, "full").await.unwrap()), "first");
    assert!(get(&ch, "full").await.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_and_counted_each_time() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    dead_letters(&ch).await;
    let retry = args(&[
        ("x-dead-letter-exchange", text("dlx")),
        ("x-dead-letter-routing-key", text("retry")),
    ]);
    queue(&ch, "work", retry).await;
    publish(&ch, "", "work", "job", BasicProperties::default()).await;
    for round in 1..=2i64 {
        let m = within(ch.basic_get("work".into(), BasicGetOptions::default()))
            .await
            .unwrap()
            .expect("the job");
        within(m.delivery.acker.nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        }))
        .await
        .unwrap();
        let dead = get(&ch, "dead").await.expect("dead-lettered");
        assert_eq!(dead.delivery.routing_key.as_str(), "retry");
        let d = death(&dead);
        assert_eq!(field(&d, "reason"), &text("rejected"));
        assert_eq!(field(&d, "count"), &AMQPValue::LongLongInt(round));
        // Back into the work queue with its history, as a retry loop does.
        let headers = dead.properties.headers().clone().unwrap();
        publish(
            &ch,
            "",
            "work",
            "job",
            BasicProperties::default().with_headers(headers),
        )
        .await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn priority_queue_delivers_highest_first_then_in_order() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    queue(
        &ch,
        "pq",
        args(&[("x-max-priority", AMQPValue::LongInt(5))]),
    )
    .await;
    for (p, b) in [(1u8, "a"), (5, "b"), (3, "c"), (0, "d"), (5, "e"), (9, "f")] {
        publish(
            &ch,
            "",
            "pq",
            b,
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    let mut order = Vec::new();
    while let Some(m) = get(&ch, "pq").await {
        order.push(body(&m));
    }
    // 9 counts as the maximum, 5.
    assert_eq!(order, ["b", "e", "f", "c", "a", "d"]);
    broker.shutdown().await;
}

async fn consumer(ch: &Channel, queue: &str, tag: &str, arguments: FieldTable) -> lapin::Consumer {
    within(ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        arguments,
    ))
    .await
    .unwrap()
}

async fn next_tag(c: &mut lapin::Consumer) -> String {
    use futures_lite::StreamExt;
    let d = within(c.next()).await.expect("a delivery").unwrap();
    String::from_utf8_lossy(&d.data).into_owned()
}

#[tokio::test]
async fn single_active_consumer_serves_one_until_it_goes() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    queue(
        &ch,
        "sac",
        args(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let mut first = consumer(&ch, "sac", "first", FieldTable::default()).await;
    let (_conn2, ch2) = open(&broker).await;
    let mut second = consumer(&ch2, "sac", "second", FieldTable::default()).await;
    for b in ["1", "2", "3"] {
        publish(&ch, "", "sac", b, BasicProperties::default()).await;
    }
    for expected in ["1", "2", "3"] {
        assert_eq!(next_tag(&mut first).await, expected);
    }
    within(ch.basic_cancel("first".into(), Default::default()))
        .await
        .unwrap();
    publish(&ch, "", "sac", "4", BasicProperties::default()).await;
    assert_eq!(next_tag(&mut second).await, "4");
    broker.shutdown().await;
}

#[tokio::test]
async fn higher_priority_consumers_are_served_while_they_have_room() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    within(ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    queue(&ch, "q", FieldTable::default()).await;
    // Manual-ack consumers with prefetch 1: the high one takes one message, then
    // the low one gets the next.
    let opts = BasicConsumeOptions::default();
    let mut low = within(ch.basic_consume(
        "q".into(),
        "low".into(),
        opts,
        args(&[("x-priority", AMQPValue::LongInt(1))]),
    ))
    .await
    .unwrap();
    let mut high = within(ch.basic_consume(
        "q".into(),
        "high".into(),
        opts,
        args(&[("x-priority", AMQPValue::LongInt(10))]),
    ))
    .await
    .unwrap();
    publish(&ch, "", "q", "m1", BasicProperties::default()).await;
    publish(&ch, "", "q", "m2", BasicProperties::default()).await;
    assert_eq!(next_tag(&mut high).await, "m1");
    assert_eq!(next_tag(&mut low).await, "m2");
    broker.shutdown().await;
}

#[tokio::test]
async fn direct_reply_to_round_trip() {
    let broker = Broker::start().await.unwrap();
    let (_conn, client) = open(&broker).await;
    let (_conn2, server) = open(&broker).await;
    queue(&server, "rpc", FieldTable::default()).await;
    let mut replies = consumer(
        &client,
        "amq.rabbitmq.reply-to",
        "replies",
        FieldTable::default(),
    )
    .await;
    publish(
        &client,
        "",
        "rpc",
        "ping",
        BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("7".into()),
    )
    .await;
    let request = get(&server, "rpc").await.expect("the request");
    let reply_to = request.properties.reply_to().clone().unwrap();
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    publish(
        &server,
        "",
        reply_to.as_str(),
        "pong",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(next_tag(&mut replies).await, "pong");
    broker.shutdown().await;
}

#[tokio::test]
async fn unroutable_messages_go_to_the_alternate_exchange() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    dead_letters(&ch).await; // "dlx" → "dead" serves as the alternate here
    within(ch.exchange_declare(
        "orders".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        args(&[("alternate-exchange", text("dlx"))]),
    ))
    .await
    .unwrap();
    publish(&ch, "orders", "nobody", "lost?", BasicProperties::default()).await;
    assert_eq!(body(&get(&ch, "dead").await.unwrap()), "lost?");
    broker.shutdown().await;
}

#[tokio::test]
async fn quorum_queues_count_deliveries_and_refuse_what_rabbitmq_refuses() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    let quorum = || args(&[("x-queue-type", text("quorum"))]);
    let err = within(ch.queue_declare(
        "qq-transient".into(),
        QueueDeclareOptions::default(),
        quorum(),
    ))
    .await
    .expect_err("a quorum queue must be durable");
    assert!(
        err.to_string()
            .contains("invalid property 'non-durable' for queue 'qq-transient'"),
        "{err}"
    );
    let (_conn, ch) = open(&broker).await;
    within(ch.queue_declare(
        "qq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum(),
    ))
    .await
    .unwrap();
    publish(&ch, "", "qq", "job", BasicProperties::default()).await;
    for expected in 0..2i64 {
        let m = within(ch.basic_get("qq".into(), BasicGetOptions::default()))
            .await
            .unwrap()
            .expect("the job");
        let headers = m.properties.headers().clone().expect("headers");
        assert_eq!(
            headers.inner().get("x-delivery-count"),
            Some(&AMQPValue::LongLongInt(expected))
        );
        within(m.delivery.acker.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_quorum_queue_dead_letters_past_its_delivery_limit() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    dead_letters(&ch).await;
    within(ch.queue_declare(
        "limited".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args(&[
            ("x-queue-type", text("quorum")),
            ("x-delivery-limit", AMQPValue::LongInt(1)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    ))
    .await
    .unwrap();
    publish(&ch, "", "limited", "job", BasicProperties::default()).await;
    for _ in 0..2 {
        let m = within(ch.basic_get("limited".into(), BasicGetOptions::default()))
            .await
            .unwrap()
            .expect("the job, within its limit");
        within(m.delivery.acker.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    assert!(
        get(&ch, "limited").await.is_none(),
        "returned twice, over a limit of 1"
    );
    let dead = get(&ch, "dead").await.expect("dead-lettered");
    assert_eq!(field(&death(&dead), "reason"), &text("delivery_limit"));
    broker.shutdown().await;
}

/// A stream consumer's deliveries as (body, x-stream-offset), acking each.
async fn read_stream(ch: &Channel, queue: &str, offset: AMQPValue, n: usize) -> Vec<(String, i64)> {
    use futures_lite::StreamExt;
    within(ch.basic_qos(100, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c = within(ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions::default(),
        args(&[("x-stream-offset", offset)]),
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = within(c.next()).await.expect("a delivery").unwrap();
        let headers = d.properties.headers().clone().expect("headers");
        let offset = match headers.inner().get("x-stream-offset") {
            Some(AMQPValue::LongLongInt(n)) => *n,
            other => panic!("x-stream-offset {other:?}"),
        };
        out.push((String::from_utf8_lossy(&d.data).into_owned(), offset));
        within(d.acker.ack(Default::default())).await.unwrap();
    }
    within(ch.basic_cancel(c.tag().as_str().into(), Default::default()))
        .await
        .unwrap();
    out
}

fn stream_options() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn expected(bodies: &[&str], first: i64) -> Vec<(String, i64)> {
    (first..)
        .zip(bodies)
        .map(|(o, b)| (b.to_string(), o))
        .collect()
}

#[tokio::test]
async fn a_stream_is_read_by_offset_and_acks_remove_nothing() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    within(ch.queue_declare(
        "events".into(),
        stream_options(),
        args(&[("x-queue-type", text("stream"))]),
    ))
    .await
    .unwrap();
    for b in ["e0", "e1", "e2"] {
        publish(&ch, "", "events", b, BasicProperties::default()).await;
    }
    let all = read_stream(&ch, "events", text("first"), 3).await;
    assert_eq!(all, expected(&["e0", "e1", "e2"], 0));
    // Acked, yet every message is still there for the next reader.
    let (_c2, ch2) = open(&broker).await;
    let tail = read_stream(&ch2, "events", AMQPValue::LongLongInt(1), 2).await;
    assert_eq!(tail, expected(&["e1", "e2"], 1));
    // basic.get is refused as RabbitMQ 3.10 refuses it: the connection closes.
    let err = within(ch2.basic_get("events".into(), BasicGetOptions::default()))
        .await
        .expect_err("basic.get on a stream");
    assert!(
        err.to_string()
            .contains("basic.get not supported by stream queues"),
        "{err}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_stream_snapshot_shows_its_whole_log_read_or_not() {
    let broker = Broker::start().await.unwrap();
    let (_conn, ch) = open(&broker).await;
    within(ch.queue_declare(
        "audit".into(),
        stream_options(),
        args(&[("x-queue-type", text("stream"))]),
    ))
    .await
    .unwrap();
    for b in ["a0", "a1"] {
        publish(&ch, "", "audit", b, BasicProperties::default()).await;
    }
    let read = read_stream(&ch, "audit", text("first"), 2).await;
    assert_eq!(read, expected(&["a0", "a1"], 0));
    // Read and acked, both are still in the stream, and a test can see them.
    broker
        .queue("audit")
        .assert_bodies(&["a0", "a1"])
        .assert_no_unacked();
    broker.shutdown().await;
}

/// Fills a small-segment stream past its byte limit, restarts the broker, and
/// checks that readers see the same messages at the same offsets.
async fn stream_survives(broker: &Broker) {
    let (_conn, ch) = open(broker).await;
    within(ch.queue_declare(
        "log".into(),
        stream_options(),
        args(&[
            ("x-queue-type", text("stream")),
            ("x-max-length-bytes", AMQPValue::LongInt(300)),
            ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(100)),
        ]),
    ))
    .await
    .unwrap();
    let bodies: Vec<String> = (0..40).map(|i| format!("message-{i:02}")).collect();
    for (i, b) in bodies.iter().enumerate() {
        // Transient or persistent, a stream keeps every message.
        let props = BasicProperties::default().with_delivery_mode(if i % 2 == 0 { 1 } else { 2 });
        publish(&ch, "", "log", b, props).await;
    }
    let before = read_stream(&ch, "log", text("first"), 1).await;
    let first = before[0].1;
    assert!(first > 0, "retention kept all 40 messages");
    let kept = (40 - first) as usize;
    let before = read_stream(&ch, "log", text("first"), kept).await;
    assert_eq!(before.last(), Some(&("message-39".to_string(), 39)));

    broker.restart().await;
    let (_conn, ch) = open(broker).await;
    let after = read_stream(&ch, "log", text("first"), kept).await;
    assert_eq!(after, before, "the log and its offsets survive a restart");
    publish(&ch, "", "log", "later", BasicProperties::default()).await;
    let next = read_stream(&ch, "log", text("last"), 1).await;
    assert_eq!(next, vec![("later".to_string(), 40)]);
}

#[tokio::test]
async fn a_stream_keeps_its_log_and_offsets_across_an_in_memory_restart() {
    let broker = Broker::start().await.unwrap();
    stream_survives(&broker).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_stream_keeps_its_log_and_offsets_across_a_restart_from_disk() {
    let dir = std::env::temp_dir().join(format!(
        "warren-stream-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let broker = Broker::builder().data_dir(&dir).start().await.unwrap();
    stream_survives(&broker).await;
    // Compaction writes the stream's live part and where it starts.
    broker.compact_storage().await;
    broker.restart().await;
    let (_conn, ch) = open(&broker).await;
    let last = read_stream(&ch, "log", text("last"), 1).await;
    assert_eq!(last, vec![("later".to_string(), 40)]);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
