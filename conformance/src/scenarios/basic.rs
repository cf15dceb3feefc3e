//! basic.* scenarios: publish, consume, get, acknowledgements, prefetch, recover,
//! returns, cancel, exclusive consumers, properties, transactions.

use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use amq_protocol::types::{AMQPValue, FieldTable};

use super::exchange::{open, open_c};
use crate::*;

/// A channel with a fresh queue declared on it.
async fn with_queue(cx: &Ctx) -> R<(Conn, Channel, String)> {
    let (conn, ch) = open(cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    Ok((conn, ch, q))
}

/// Publishes `bodies` to `q` through the default exchange.
async fn fill(ch: &Channel, q: &str, bodies: &[&str]) -> R {
    for b in bodies {
        ch.publish("", q, b).await?;
    }
    Ok(())
}

/// Consumers see messages in publish order, with delivery tags 1, 2, 3 …
pub async fn consume_order_and_tags(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let bodies: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    fill(&ch, &q, &refs).await?;
    let tag = ch.consume(&q).await?;
    let ds = ch.expect_bodies(&refs).await?;
    for (i, d) in ds.iter().enumerate() {
        expect_eq("delivery tag", d.delivery_tag, i as u64 + 1)?;
        expect_eq("consumer tag", d.consumer_tag.as_str(), tag.as_str())?;
        ensure!(!d.redelivered, "first delivery marked redelivered");
    }
    conn.close().await
}

/// Messages published while a consumer is active arrive in order.
pub async fn publish_while_consuming(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    fill(&ch, &q, &["a", "b", "c"]).await?;
    ch.expect_bodies(&["a", "b", "c"]).await?;
    conn.close().await
}

/// A consumer with a client-chosen tag gets it back in consume-ok and deliveries.
pub async fn consume_with_own_tag(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let tag = ch
        .consume_with(&q, ConsumeOpts::default().tag("my-tag"))
        .await?;
    expect_eq("consume-ok tag", tag.as_str(), "my-tag")?;
    ch.publish("", &q, "m").await?;
    expect_eq(
        "deliver tag",
        ch.deliver().await?.consumer_tag.as_str(),
        "my-tag",
    )?;
    conn.close().await
}

/// A server-chosen consumer tag starts with amq.ctag-.
pub async fn server_consumer_tag(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let tag = ch.consume(&q).await?;
    ensure!(
        tag.starts_with("amq.ctag-"),
        "consumer tag {tag:?} lacks amq.ctag-"
    );
    conn.close().await
}

/// Two consumers on one channel take turns.
pub async fn round_robin_one_channel(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let t1 = ch
        .consume_with(&q, ConsumeOpts::default().tag("c1").no_ack())
        .await?;
    let t2 = ch
        .consume_with(&q, ConsumeOpts::default().tag("c2").no_ack())
        .await?;
    fill(&ch, &q, &["m1", "m2", "m3", "m4"]).await?;
    let ds = ch.expect_bodies(&["m1", "m2", "m3", "m4"]).await?;
    let tags: Vec<&str> = ds.iter().map(|d| d.consumer_tag.as_str()).collect();
    expect_eq(
        "consumers in turn",
        tags,
        vec![t1.as_str(), t2.as_str(), t1.as_str(), t2.as_str()],
    )?;
    conn.close().await
}

/// Consumers on different channels of one connection take turns.
pub async fn round_robin_two_channels(cx: Ctx) -> R {
    let (conn, a, q) = with_queue(&cx).await?;
    let b = conn.channel().await?;
    a.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    b.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    fill(&a, &q, &["m1", "m2", "m3", "m4"]).await?;
    a.expect_bodies(&["m1", "m3"]).await?;
    b.expect_bodies(&["m2", "m4"]).await?;
    conn.close().await
}

/// Per-consumer prefetch stops deliveries at the limit until an ack.
pub async fn prefetch_per_consumer(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.qos(2, false).await?;
    fill(&ch, &q, &["m1", "m2", "m3", "m4"]).await?;
    ch.consume(&q).await?;
    let ds = ch.expect_bodies(&["m1", "m2"]).await?;
    ch.expect_no_delivery().await?;
    ch.ack(ds[0].delivery_tag, false).await?;
    ch.expect_deliver("m3").await?;
    ch.expect_no_delivery().await?;
    conn.close().await
}

/// Per-consumer prefetch applies to each consumer separately.
pub async fn prefetch_each_consumer(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.qos(1, false).await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("c1"))
        .await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("c2"))
        .await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    let ds = ch.expect_bodies(&["m1", "m2"]).await?;
    expect_eq("first consumer", ds[0].consumer_tag.as_str(), "c1")?;
    expect_eq("second consumer", ds[1].consumer_tag.as_str(), "c2")?;
    ch.settle().await?;
    ch.expect_no_delivery().await?;
    expect_eq("ready", ch.queue_passive(&q).await?.messages, 1)?;
    conn.close().await
}

/// Global prefetch (RabbitMQ: per channel) caps all consumers of the channel together.
pub async fn prefetch_global_shared(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.qos(3, true).await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("c1"))
        .await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("c2"))
        .await?;
    fill(&ch, &q, &["m1", "m2", "m3", "m4", "m5"]).await?;
    let ds = ch.expect_bodies(&["m1", "m2", "m3"]).await?;
    ch.expect_no_delivery().await?;
    ch.ack(ds[2].delivery_tag, true).await?;
    ch.expect_bodies(&["m4", "m5"]).await?;
    conn.close().await
}

/// A per-consumer and a global limit both apply.
pub async fn prefetch_global_and_per_consumer(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.qos(3, true).await?;
    ch.qos(1, false).await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("c1"))
        .await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    let d = ch.expect_deliver("m1").await?;
    ch.expect_no_delivery().await?;
    ch.ack(d.delivery_tag, false).await?;
    ch.expect_deliver("m2").await?;
    conn.close().await
}

/// Prefetch 0 means unlimited.
pub async fn prefetch_zero_unlimited(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.qos(0, false).await?;
    fill(&ch, &q, &["m1", "m2", "m3", "m4", "m5"]).await?;
    ch.consume(&q).await?;
    ch.expect_bodies(&["m1", "m2", "m3", "m4", "m5"]).await?;
    conn.close().await
}

/// basic.qos applies to consumers started after it, not before.
pub async fn prefetch_applies_to_later_consumers(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("before"))
        .await?;
    ch.qos(1, false).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    ch.expect_bodies(&["m1", "m2", "m3"]).await?;
    conn.close().await
}

/// Raising prefetch releases more deliveries at once.
pub async fn prefetch_raised_global(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.qos(1, true).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    ch.consume(&q).await?;
    ch.expect_deliver("m1").await?;
    ch.expect_no_delivery().await?;
    ch.qos(3, true).await?;
    ch.expect_bodies(&["m2", "m3"]).await?;
    conn.close().await
}

/// Prefetch does not limit no-ack consumers.
pub async fn prefetch_ignored_for_no_ack(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.qos(1, false).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.expect_bodies(&["m1", "m2", "m3"]).await?;
    conn.close().await
}

/// ack with multiple acknowledges everything up to the tag.
pub async fn ack_multiple(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2", "m3", "m4"]).await?;
    ch.consume(&q).await?;
    let ds = ch.expect_bodies(&["m1", "m2", "m3", "m4"]).await?;
    ch.ack(ds[2].delivery_tag, true).await?;
    ch.sync().await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    let d = ch.get_expect(&q, true, "m4").await?;
    ensure!(d.redelivered, "m4 not marked redelivered");
    ch.get_empty(&q).await?;
    conn.close().await
}

/// Acks may come out of order.
pub async fn ack_out_of_order(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    ch.consume(&q).await?;
    let ds = ch.expect_bodies(&["m1", "m2", "m3"]).await?;
    ch.ack(ds[2].delivery_tag, false).await?;
    ch.ack(ds[0].delivery_tag, false).await?;
    ch.sync().await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    ch.get_expect(&q, true, "m2").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// ack of tag 0 with multiple acknowledges everything outstanding.
pub async fn ack_zero_multiple_acks_all(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    ch.consume(&q).await?;
    ch.expect_bodies(&["m1", "m2"]).await?;
    ch.ack(0, true).await?;
    ch.sync().await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// Acking an unknown delivery tag closes the channel with 406.
pub async fn ack_unknown_tag(cx: Ctx) -> R {
    let (_conn, ch, _q) = with_queue(&cx).await?;
    ch.ack(99, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}

/// Acking the same tag twice is an unknown tag the second time.
pub async fn ack_twice(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.ack(d.delivery_tag, false).await?;
    ch.ack(d.delivery_tag, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}

/// Acking a no-ack delivery is an unknown tag.
pub async fn ack_of_no_ack_delivery(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.get_expect(&q, true, "m").await?;
    ch.ack(d.delivery_tag, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}

/// ack of tag 0 without multiple is an unknown tag.
pub async fn ack_zero_single(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.get_expect(&q, false, "m").await?;
    ch.ack(0, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}

/// Delivery tags belong to their channel: another channel's tag is unknown.
pub async fn ack_on_wrong_channel(cx: Ctx) -> R {
    let (conn, a, q) = with_queue(&cx).await?;
    let b = conn.channel().await?;
    a.publish("", &q, "m").await?;
    let d = a.get_expect(&q, false, "m").await?;
    b.ack(d.delivery_tag, false).await?;
    b.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}

/// A delivery tag from before a channel closed is unknown on the reopened channel.
pub async fn ack_after_reopen(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.get_expect(&q, false, "m").await?;
    ch.close().await?;
    let ch = conn.open_channel(ch.id).await?;
    ch.ack(1, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}

/// nack with requeue puts the message back at the head, marked redelivered.
pub async fn nack_requeue(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    let d = ch.get_expect(&q, false, "m1").await?;
    ch.nack(d.delivery_tag, false, true).await?;
    let again = ch.get_expect(&q, true, "m1").await?;
    ensure!(again.redelivered, "requeued message not marked redelivered");
    let next = ch.get_expect(&q, true, "m2").await?;
    ensure!(!next.redelivered, "untouched message marked redelivered");
    conn.close().await
}

/// nack without requeue drops the message.
pub async fn nack_drop(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    let d = ch.get_expect(&q, false, "m1").await?;
    ch.nack(d.delivery_tag, false, false).await?;
    ch.get_expect(&q, true, "m2").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// nack with multiple and requeue returns all, in their original order.
pub async fn nack_multiple_requeue_order(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2", "m3", "m4"]).await?;
    ch.consume(&q).await?;
    let ds = ch.expect_bodies(&["m1", "m2", "m3", "m4"]).await?;
    ch.cancel(&ds[0].consumer_tag).await?;
    ch.nack(ds[2].delivery_tag, true, true).await?;
    for m in ["m1", "m2", "m3"] {
        let d = ch.get_expect(&q, false, m).await?;
        ensure!(d.redelivered, "{m} not marked redelivered");
    }
    // m4 is still unacked, so the queue has nothing else.
    ch.get_empty(&q).await?;
    conn.close().await
}

/// nack with multiple and no requeue drops everything up to the tag.
pub async fn nack_multiple_drop(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    for m in ["m1", "m2"] {
        ch.get_expect(&q, false, m).await?;
    }
    ch.nack(2, true, false).await?;
    ch.get_expect(&q, true, "m3").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// nack of an unknown tag closes the channel with 406 naming basic.nack.
pub async fn nack_unknown_tag(cx: Ctx) -> R {
    let (_conn, ch, _q) = with_queue(&cx).await?;
    ch.nack(5, false, true).await?;
    ch.sync().await.channel_closed_at(406, (60, 120))?;
    Ok(())
}

/// reject with requeue puts the message back, marked redelivered.
pub async fn reject_requeue(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, true).await?;
    let again = ch.get_expect(&q, false, "m").await?;
    ensure!(again.redelivered, "not marked redelivered");
    expect_eq("new delivery tag", again.delivery_tag, 2)?;
    conn.close().await
}

/// reject without requeue drops the message.
pub async fn reject_drop(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, false).await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// reject of an unknown tag closes the channel with 406 naming basic.reject.
pub async fn reject_unknown_tag(cx: Ctx) -> R {
    let (_conn, ch, _q) = with_queue(&cx).await?;
    ch.reject(7, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 90))?;
    Ok(())
}

/// A rejected message goes back to the head of the queue, before older ready ones.
pub async fn requeue_goes_to_head(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    let d2 = {
        ch.get_expect(&q, false, "m1").await?;
        ch.get_expect(&q, false, "m2").await?
    };
    ch.reject(d2.delivery_tag, true).await?;
    ch.get_expect(&q, true, "m2").await?;
    ch.get_expect(&q, true, "m3").await?;
    conn.close().await
}

/// A requeued message is redelivered to a consumer with the redelivered flag.
pub async fn requeue_redelivers_to_consumer(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.consume(&q).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.expect_deliver("m").await?;
    ch.reject(d.delivery_tag, true).await?;
    let again = ch.expect_deliver("m").await?;
    ensure!(again.redelivered, "not marked redelivered");
    ensure!(
        again.delivery_tag > d.delivery_tag,
        "delivery tag did not grow"
    );
    ch.ack(again.delivery_tag, false).await?;
    ch.expect_no_delivery().await?;
    conn.close().await
}

/// basic.get returns messages with the count of those left.
pub async fn get_with_counts(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    for (m, left) in [("m1", 2), ("m2", 1), ("m3", 0)] {
        let d = ch.get_expect(&q, true, m).await?;
        expect_eq("message count", d.message_count, left)?;
        expect_eq("routing key", d.routing_key.as_str(), q.as_str())?;
    }
    ch.get_empty(&q).await?;
    conn.close().await
}

/// basic.get on an empty queue is get-empty.
pub async fn get_empty(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// basic.get on a missing queue is 404.
pub async fn get_missing_queue(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.get(&cx.name("q"), true).await.channel_closed(404)?;
    Ok(())
}

/// basic.get and deliveries share one sequence of delivery tags per channel.
pub async fn get_and_deliver_share_tags(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let q2 = cx.name("q2");
    ch.queue_declare(&q2).await?;
    ch.publish("", &q, "got").await?;
    expect_eq(
        "get tag",
        ch.get_expect(&q, false, "got").await?.delivery_tag,
        1,
    )?;
    ch.consume(&q2).await?;
    ch.publish("", &q2, "delivered").await?;
    expect_eq(
        "deliver tag",
        ch.expect_deliver("delivered").await?.delivery_tag,
        2,
    )?;
    conn.close().await
}

/// Unacked basic.get messages are requeued when the channel closes.
pub async fn get_unacked_requeued_on_close(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.get_expect(&q, false, "m").await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    let d = ch.get_expect(&q, true, "m").await?;
    ensure!(d.redelivered, "not marked redelivered");
    conn.close().await
}

/// basic.recover with requeue redelivers unacked messages, marked redelivered.
pub async fn recover_requeue(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    ch.consume(&q).await?;
    ch.expect_bodies(&["m1", "m2"]).await?;
    ch.recover(true).await?;
    for m in ["m1", "m2"] {
        let d = ch.expect_deliver(m).await?;
        ensure!(d.redelivered, "{m} not marked redelivered");
    }
    conn.close().await
}

/// basic.recover without requeue is not implemented: a connection error 540.
pub async fn recover_no_requeue(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m1").await?;
    ch.consume(&q).await?;
    ch.expect_deliver("m1").await?;
    ch.recover(false).await.connection_closed(540)?;
    Ok(())
}

/// basic.recover with nothing unacked just answers recover-ok.
pub async fn recover_nothing(cx: Ctx) -> R {
    let (conn, ch, _q) = with_queue(&cx).await?;
    ch.recover(true).await?;
    ch.expect_no_delivery().await?;
    conn.close().await
}

/// A mandatory message with no route comes back with basic.return 312 NO_ROUTE.
pub async fn mandatory_unroutable_returned(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "direct").await?;
    let props = BasicProperties::default().with_message_id("id-1".into());
    ch.publish_with(
        &x,
        "nowhere",
        b"lost",
        PublishOpts::default().mandatory().props(props),
    )
    .await?;
    let r = ch.returned().await?;
    expect_eq("return", (r.code, r.text.as_str()), (312, "NO_ROUTE"))?;
    expect_eq("returned body", r.body.as_str(), "lost")?;
    expect_eq("exchange", r.exchange.as_str(), x.as_str())?;
    conn.close().await
}

/// A mandatory message that is routed is not returned.
pub async fn mandatory_routed_not_returned(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish_with("", &q, b"m", PublishOpts::default().mandatory())
        .await?;
    ch.expect_no_return().await?;
    ch.get_expect(&q, true, "m").await?;
    conn.close().await
}

/// A non-mandatory unroutable message vanishes silently.
pub async fn unroutable_dropped_silently(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    ch.publish("amq.direct", &cx.name("nowhere"), "m").await?;
    ch.expect_no_return().await?;
    conn.close().await
}

/// immediate=true is not implemented: a connection error 540.
pub async fn immediate_not_implemented(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish_with("", &q, b"m", PublishOpts::default().immediate())
        .await?;
    ch.sync().await.connection_closed_at(540, (60, 40))?;
    ensure!(conn.is_closed().await, "connection still open");
    Ok(())
}

/// Cancel stops deliveries; the queue keeps the rest.
pub async fn cancel_stops_deliveries(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let tag = ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.publish("", &q, "before").await?;
    ch.expect_deliver("before").await?;
    ch.cancel(&tag).await?;
    ch.publish("", &q, "after").await?;
    ch.expect_no_delivery().await?;
    ch.get_expect(&q, true, "after").await?;
    conn.close().await
}

/// Unacked deliveries stay unacked after cancel and can still be acked.
pub async fn cancel_keeps_unacked(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    let tag = ch.consume(&q).await?;
    let ds = ch.expect_bodies(&["m1", "m2"]).await?;
    ch.cancel(&tag).await?;
    ch.ack(ds[0].delivery_tag, false).await?;
    ch.sync().await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    let d = ch.get_expect(&q, true, "m2").await?;
    ensure!(d.redelivered, "m2 not marked redelivered");
    ch.get_empty(&q).await?;
    conn.close().await
}

/// Cancelling an unknown consumer tag is answered with cancel-ok.
pub async fn cancel_unknown_tag(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    ch.cancel("no-such-consumer").await?;
    conn.close().await
}

/// A second consumer on a queue with an exclusive consumer is refused with 403.
pub async fn exclusive_consumer_blocks_others(cx: Ctx) -> R {
    let (conn, a, q) = with_queue(&cx).await?;
    a.consume_with(&q, ConsumeOpts::default().exclusive())
        .await?;
    let b = conn.channel().await?;
    b.consume(&q).await.channel_closed(403)?;
    Ok(())
}

/// An exclusive consumer is refused on a queue that already has a consumer.
pub async fn exclusive_consumer_needs_empty_queue(cx: Ctx) -> R {
    let (conn, a, q) = with_queue(&cx).await?;
    a.consume(&q).await?;
    let b = conn.channel().await?;
    b.consume_with(&q, ConsumeOpts::default().exclusive())
        .await
        .channel_closed(403)?;
    Ok(())
}

/// After an exclusive consumer cancels, others may consume.
pub async fn exclusive_consumer_released_on_cancel(cx: Ctx) -> R {
    let (conn, a, q) = with_queue(&cx).await?;
    let tag = a
        .consume_with(&q, ConsumeOpts::default().exclusive())
        .await?;
    a.cancel(&tag).await?;
    let b = conn.channel().await?;
    b.consume(&q).await?;
    conn.close().await
}

/// The exclusive consumer gets every message.
pub async fn exclusive_consumer_gets_all(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.consume_with(&q, ConsumeOpts::default().exclusive().no_ack())
        .await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    ch.expect_bodies(&["m1", "m2", "m3"]).await?;
    conn.close().await
}

/// Reusing a consumer tag on the same channel is a connection error 530.
pub async fn duplicate_consumer_tag(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("dup"))
        .await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("dup"))
        .await
        .connection_closed(530)?;
    Ok(())
}

/// The same consumer tag on two channels is fine.
pub async fn same_consumer_tag_two_channels(cx: Ctx) -> R {
    let (conn, a, q) = with_queue(&cx).await?;
    let b = conn.channel().await?;
    a.consume_with(&q, ConsumeOpts::default().tag("same"))
        .await?;
    b.consume_with(&q, ConsumeOpts::default().tag("same"))
        .await?;
    conn.close().await
}

/// A consumer tag can be reused after cancel.
pub async fn consumer_tag_reusable_after_cancel(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("again"))
        .await?;
    ch.cancel("again").await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("again"))
        .await?;
    conn.close().await
}

/// Consuming from a missing queue is 404 naming basic.consume.
pub async fn consume_missing_queue(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.consume(&cx.name("q")).await.channel_closed(404)?;
    Ok(())
}

/// no-ack consumers are not redelivered anything when the channel closes.
pub async fn no_ack_not_redelivered(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.expect_bodies(&["m1", "m2"]).await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// RabbitMQ ignores no-local: a consumer gets its own connection's messages.
pub async fn no_local_ignored(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let opts = ConsumeOpts {
        no_local: true,
        no_ack: true,
        ..Default::default()
    };
    ch.consume_with(&q, opts).await?;
    ch.publish("", &q, "mine").await?;
    ch.expect_deliver("mine").await?;
    conn.close().await
}

/// Every basic property and header survives the trip.
pub async fn properties_preserved(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let mut headers = FieldTable::default();
    headers.insert("s".into(), AMQPValue::LongString("text".into()));
    headers.insert("i".into(), AMQPValue::LongInt(-5));
    headers.insert("b".into(), AMQPValue::Boolean(true));
    let mut inner = FieldTable::default();
    inner.insert("n".into(), AMQPValue::LongLongInt(1 << 40));
    headers.insert("t".into(), AMQPValue::FieldTable(inner));
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr".into())
        .with_reply_to("reply".into())
        .with_expiration("60000".into())
        .with_message_id("mid".into())
        .with_timestamp(1_700_000_000)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("app".into());
    ch.publish_with(
        "",
        &q,
        b"props",
        PublishOpts::default().props(props.clone()),
    )
    .await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    let d = ch.expect_deliver("props").await?;
    expect_eq("properties", d.props, props)?;
    conn.close().await
}

/// A user-id other than the login is refused with 406.
pub async fn wrong_user_id_refused(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    let props = BasicProperties::default().with_user_id("someone-else".into());
    ch.publish_with("", &q, b"m", PublishOpts::default().props(props))
        .await?;
    ch.sync().await.channel_closed_at(406, (60, 40))?;
    Ok(())
}

/// An empty body is a message like any other.
pub async fn empty_body(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "").await?;
    let d = ch.get_expect(&q, true, "").await?;
    expect_eq("message count", d.message_count, 0)?;
    conn.close().await
}

/// A 1 MB body crosses many frames and arrives intact.
pub async fn large_body(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let body: String = (0..1_048_576)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    ch.publish("", &q, &body).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    let d = ch.deliver().await?;
    ensure!(d.body == body, "body of {} bytes differs", d.body.len());
    conn.close().await
}

/// A body exactly one frame long, and one byte more.
pub async fn body_at_frame_boundary(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let exact = "e".repeat(131_072 - 8);
    let over = "o".repeat(131_072 - 7);
    ch.publish("", &q, &exact).await?;
    ch.publish("", &q, &over).await?;
    ch.get_expect(&q, true, &exact).await?;
    ch.get_expect(&q, true, &over).await?;
    conn.close().await
}

/// Deliveries report the exchange and routing key the message was published with.
pub async fn delivery_reports_exchange_and_key(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.queue_bind(&q, "amq.direct", "rk").await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.publish("amq.direct", "rk", "m").await?;
    let d = ch.expect_deliver("m").await?;
    expect_eq(
        "exchange and key",
        (d.exchange.as_str(), d.routing_key.as_str()),
        ("amq.direct", "rk"),
    )?;
    conn.close().await
}

/// Consumer count in declare-ok follows consume and cancel.
pub async fn consumer_count_follows(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let tag = ch.consume(&q).await?;
    expect_eq("consumers", ch.queue_passive(&q).await?.consumers, 1)?;
    ch.cancel(&tag).await?;
    expect_eq("consumers", ch.queue_passive(&q).await?.consumers, 0)?;
    conn.close().await
}

/// A message published with confirms is counted in declare-ok.
pub async fn ready_count_after_publish(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    ch.settle().await?;
    expect_eq("messages", ch.queue_passive(&q).await?.messages, 2)?;
    ch.get_expect(&q, false, "m1").await?;
    expect_eq(
        "messages after get",
        ch.queue_passive(&q).await?.messages,
        1,
    )?;
    conn.close().await
}

/// A consume with nowait gets no consume-ok but deliveries flow.
pub async fn consume_nowait(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let opts = ConsumeOpts {
        tag: "quiet".into(),
        nowait: true,
        no_ack: true,
        ..Default::default()
    };
    ch.consume_with(&q, opts).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.expect_deliver("m").await?;
    expect_eq("consumer tag", d.consumer_tag.as_str(), "quiet")?;
    conn.close().await
}

/// A cancel with nowait gets no cancel-ok but deliveries stop.
pub async fn cancel_nowait(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    let tag = ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.send(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
        consumer_tag: tag.as_str().into(),
        nowait: true,
    })))
    .await?;
    ch.publish("", &q, "m").await?;
    ch.expect_no_delivery().await?;
    ch.get_expect(&q, true, "m").await?;
    conn.close().await
}

/// Transactions: published messages appear only on commit.
pub async fn tx_commit_publishes(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.tx_select().await?;
    ch.publish("", &q, "m").await?;
    let other = conn.channel().await?;
    other.get_empty(&q).await?;
    ch.tx_commit().await?;
    other.get_expect(&q, true, "m").await?;
    conn.close().await
}

/// Transactions: rollback discards published messages.
pub async fn tx_rollback_discards(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.tx_select().await?;
    ch.publish("", &q, "m").await?;
    ch.tx_rollback().await?;
    ch.tx_commit().await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// Transactions: acks take effect on commit.
pub async fn tx_ack_on_commit(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.tx_select().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.ack(d.delivery_tag, false).await?;
    ch.tx_commit().await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// tx.commit without tx.select is 406.
pub async fn tx_commit_without_select(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.tx_commit().await.channel_closed(406)?;
    Ok(())
}

/// basic.get is not limited by prefetch.
pub async fn get_ignores_prefetch(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.qos(1, false).await?;
    ch.qos(1, true).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    for m in ["m1", "m2", "m3"] {
        ch.get_expect(&q, false, m).await?;
    }
    conn.close().await
}

/// nack of tag 0 with multiple rejects everything outstanding.
pub async fn nack_zero_multiple_all(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    fill(&ch, &q, &["m1", "m2"]).await?;
    ch.get_expect(&q, false, "m1").await?;
    ch.get_expect(&q, false, "m2").await?;
    ch.nack(0, true, true).await?;
    for m in ["m1", "m2"] {
        let d = ch.get_expect(&q, true, m).await?;
        ensure!(d.redelivered, "{m} not marked redelivered");
    }
    conn.close().await
}

/// A message requeued by a closing channel goes to the other consumer, redelivered.
pub async fn requeued_to_other_consumer(cx: Ctx) -> R {
    let (conn, a, q) = with_queue(&cx).await?;
    let b = conn.channel().await?;
    a.qos(1, false).await?;
    a.consume(&q).await?;
    a.publish("", &q, "m1").await?;
    a.expect_deliver("m1").await?;
    b.consume(&q).await?;
    a.close().await?;
    let d = b.expect_deliver("m1").await?;
    ensure!(d.redelivered, "not marked redelivered");
    conn.close().await
}

/// A full prefetch window leaves new messages ready in the queue.
pub async fn prefetch_full_leaves_ready(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.qos(1, false).await?;
    ch.consume(&q).await?;
    fill(&ch, &q, &["m1", "m2", "m3"]).await?;
    ch.settle().await?;
    ch.expect_deliver("m1").await?;
    ch.expect_no_delivery().await?;
    let ok = ch.queue_passive(&q).await?;
    expect_eq("ready and consumers", (ok.messages, ok.consumers), (2, 1))?;
    conn.close().await
}

/// basic.recover after cancel returns the unacked messages to the queue.
pub async fn recover_after_cancel_requeues(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m1").await?;
    let tag = ch.consume(&q).await?;
    ch.expect_deliver("m1").await?;
    ch.cancel(&tag).await?;
    ch.recover(true).await?;
    let d = ch.get_expect(&q, true, "m1").await?;
    ensure!(d.redelivered, "not marked redelivered");
    conn.close().await
}

/// A prefetch size other than 0 is not implemented.
pub async fn qos_prefetch_size_not_implemented(cx: Ctx) -> R {
    let (conn, _ch) = open(&cx).await?;
    // amq-protocol has no prefetch-size field: class 60, method 10, size 1, count 0, global 0.
    let payload = [0, 60, 0, 10, 0, 0, 0, 1, 0, 0, 0];
    let mut frame = vec![1, 0, 1];
    frame.extend((payload.len() as u32).to_be_bytes());
    frame.extend(payload);
    frame.push(0xCE);
    conn.send_raw(&frame).await?;
    let close = conn
        .wait_closed()
        .await?
        .ok_or_else(|| Fail::msg("no connection.close"))?;
    expect_eq(
        "close",
        (close.code, close.class_id, close.method_id),
        (540, 60, 10),
    )
}

/// RabbitMQ 3.10 has no exchange named "amq.default" to publish to.
pub async fn publish_to_amq_default(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.publish("amq.default", &q, "m").await?;
    ch.sync().await.channel_closed_at(404, (60, 40))?;
    Ok(())
}

/// After basic.recover, the old delivery tags are unknown.
pub async fn ack_old_tag_after_recover(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.consume(&q).await?;
    let first = ch.expect_deliver("m").await?;
    ch.recover(true).await?;
    let again = ch.expect_deliver("m").await?;
    ensure!(
        again.delivery_tag != first.delivery_tag,
        "redelivery kept its tag"
    );
    ch.ack(again.delivery_tag, false).await?;
    ch.ack(first.delivery_tag, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}

/// A message fetched with basic.get and recovered comes back redelivered.
pub async fn get_then_recover(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.get_expect(&q, false, "m").await?;
    ch.recover(true).await?;
    let d = ch.get_expect(&q, true, "m").await?;
    ensure!(d.redelivered, "not marked redelivered");
    conn.close().await
}

/// tx.rollback forgets acks: the message stays unacked and can be acked again.
pub async fn tx_rollback_forgets_acks(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.tx_select().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.ack(d.delivery_tag, false).await?;
    ch.tx_rollback().await?;
    ch.ack(d.delivery_tag, false).await?;
    ch.tx_commit().await?;
    ch.close().await?;
    let ch = conn.channel().await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// In a transaction, an unroutable mandatory message is returned at commit.
pub async fn tx_mandatory_return_at_commit(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    ch.tx_select().await?;
    ch.publish_with(
        "amq.direct",
        &cx.name("nowhere"),
        b"m",
        PublishOpts::default().mandatory(),
    )
    .await?;
    ch.expect_no_return().await?;
    ch.tx_commit().await?;
    expect_eq("return code", ch.returned().await?.code, 312)?;
    conn.close().await
}

/// basic.recover-async (deprecated) redelivers without a reply.
pub async fn recover_async_redelivers(cx: Ctx) -> R {
    let (conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.consume(&q).await?;
    ch.expect_deliver("m").await?;
    ch.send(AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(
        basic::RecoverAsync { requeue: true },
    )))
    .await?;
    let d = ch.expect_deliver("m").await?;
    ensure!(d.redelivered, "not marked redelivered");
    conn.close().await
}

/// nack with multiple of a tag never delivered is an unknown tag too.
pub async fn nack_multiple_unknown_tag(cx: Ctx) -> R {
    let (_conn, ch, _q) = with_queue(&cx).await?;
    ch.nack(5, true, false).await?;
    ch.sync().await.channel_closed_at(406, (60, 120))?;
    Ok(())
}

/// ack with multiple of a tag never delivered is an unknown tag.
pub async fn ack_multiple_unknown_tag(cx: Ctx) -> R {
    let (_conn, ch, q) = with_queue(&cx).await?;
    ch.publish("", &q, "m").await?;
    ch.get_expect(&q, false, "m").await?;
    ch.ack(3, true).await?;
    ch.sync().await.channel_closed_at(406, (60, 80))?;
    Ok(())
}
