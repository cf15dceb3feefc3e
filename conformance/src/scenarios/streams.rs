//! Stream queues (`x-queue-type: stream`) as an AMQP 0-9-1 client sees them in
//! RabbitMQ 3.10: declaration checks, offsets, non-destructive reads, and the
//! methods a stream refuses.
//!
//! RabbitMQ groups the messages it writes together into chunks and serves
//! `last` and prefetch credit chunk by chunk, so scenarios that depend on them
//! publish one message at a time, each confirmed before the next, which keeps
//! one message per chunk. Declare-ok counts of a stream come from metrics that
//! RabbitMQ refreshes every few seconds; no scenario reads them after a publish.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::exchange::{open, open_c};
use crate::*;

fn ls(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn stream() -> QueueOpts {
    QueueOpts::default()
        .durable()
        .arg("x-queue-type", ls("stream"))
}

/// Consume options with `x-stream-offset` set to `offset`.
fn from(offset: AMQPValue) -> ConsumeOpts {
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    ConsumeOpts {
        args,
        ..Default::default()
    }
}

/// Declares a stream holding `bodies`, each published and confirmed on its own.
async fn stream_with(cx: &Ctx, ch: &Channel, bodies: &[&str]) -> R<String> {
    let q = cx.name("stream");
    ch.queue_declare_with(&q, stream()).await?;
    for b in bodies {
        ch.publish("", &q, b).await?;
        ch.settle().await?;
    }
    Ok(q)
}

fn offset_of(d: &Delivery) -> Option<AMQPValue> {
    d.props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-stream-offset").cloned())
}

/// A stream must be durable, not exclusive, not auto-delete; each refusal is a
/// 406 naming the property.
pub async fn stream_declare_properties(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let cases = [
        (
            "non-durable",
            QueueOpts::default().arg("x-queue-type", ls("stream")),
        ),
        ("exclusive", stream().exclusive()),
        ("auto-delete", stream().auto_delete()),
        (
            "all-three",
            QueueOpts::default()
                .exclusive()
                .auto_delete()
                .arg("x-queue-type", ls("stream")),
        ),
    ];
    for (what, opts) in cases {
        let ch = conn.channel().await?;
        let q = cx.name(&format!("stream-{what}"));
        ch.queue_declare_with(&q, opts).await.channel_closed(406)?;
    }
    conn.close().await
}

/// A stream takes its retention arguments and refuses the classic queue
/// arguments RabbitMQ 3.10 refuses on it, and bad retention values.
pub async fn stream_declare_arguments(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("stream-retention");
    ch.queue_declare_with(
        &q,
        stream()
            .arg("x-max-age", ls("7D"))
            .arg("x-max-length-bytes", AMQPValue::LongLongInt(1_000_000))
            .arg(
                "x-stream-max-segment-size-bytes",
                AMQPValue::LongInt(100_000),
            )
            .arg("x-initial-cluster-size", AMQPValue::LongInt(1))
            .arg("x-queue-leader-locator", ls("balanced")),
    )
    .await?;
    // RabbitMQ's integers are unbounded: an age past 2^64 ms is still an age.
    let q = cx.name("stream-age-huge");
    ch.queue_declare_with(&q, stream().arg("x-max-age", ls("99999999999999999999s")))
        .await?;
    let refused = [
        ("ttl", "x-message-ttl", AMQPValue::LongInt(1000)),
        ("dlx", "x-dead-letter-exchange", ls("dlx")),
        ("max-priority", "x-max-priority", AMQPValue::LongInt(5)),
        ("max-length", "x-max-length", AMQPValue::LongInt(10)),
        ("overflow", "x-overflow", ls("reject-publish")),
        ("expires", "x-expires", AMQPValue::LongInt(10_000)),
        ("sac", "x-single-active-consumer", AMQPValue::Boolean(true)),
        ("delivery-limit", "x-delivery-limit", AMQPValue::LongInt(3)),
        ("age-zero", "x-max-age", ls("0s")),
        ("age-unit", "x-max-age", ls("1d")),
        ("age-no-unit", "x-max-age", ls("10")),
        ("age-integer", "x-max-age", AMQPValue::LongInt(10)),
        (
            "segment-negative",
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongInt(-5),
        ),
        (
            "cluster-zero",
            "x-initial-cluster-size",
            AMQPValue::LongInt(0),
        ),
        ("locator", "x-queue-leader-locator", ls("nearest")),
    ];
    for (what, key, value) in refused {
        let ch = conn.channel().await?;
        let q = cx.name(&format!("stream-{what}"));
        ch.queue_declare_with(&q, stream().arg(key, value))
            .await
            .channel_closed(406)?;
    }
    conn.close().await
}

/// An `x-max-age` that does not start with a digit crashes RabbitMQ's parser:
/// 541 INTERNAL_ERROR closes the connection.
pub async fn stream_max_age_garbage(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("stream-age");
    ch.queue_declare_with(&q, stream().arg("x-max-age", ls("bad")))
        .await
        .connection_closed_at(541, (0, 0))?;
    Ok(())
}

/// Classic and quorum queues refuse the stream-only arguments.
pub async fn stream_arguments_refused_elsewhere(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let classic = QueueOpts::default;
    let quorum = || {
        QueueOpts::default()
            .durable()
            .arg("x-queue-type", ls("quorum"))
    };
    let cases = [
        ("classic-age", classic().arg("x-max-age", ls("1h"))),
        (
            "classic-segment",
            classic().arg("x-stream-max-segment-size-bytes", AMQPValue::LongInt(10)),
        ),
        (
            "classic-locator",
            classic().arg("x-queue-leader-locator", ls("balanced")),
        ),
        ("quorum-age", quorum().arg("x-max-age", ls("1h"))),
        (
            "quorum-cluster",
            quorum().arg("x-initial-cluster-size", AMQPValue::LongInt(1)),
        ),
    ];
    for (what, opts) in cases {
        let ch = conn.channel().await?;
        let q = cx.name(&format!("q-{what}"));
        ch.queue_declare_with(&q, opts).await.channel_closed(406)?;
    }
    conn.close().await
}

/// A redeclaration is compared with the stream as declared: a missing or
/// different argument, or no queue type, is inequivalent.
pub async fn stream_redeclare_equivalence(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("stream");
    let aged = || stream().arg("x-max-age", ls("1h"));
    ch.queue_declare_with(&q, aged()).await?;
    ch.queue_declare_with(&q, aged()).await?;
    let cases = [
        ("no-age", stream()),
        ("other-age", stream().arg("x-max-age", ls("2h"))),
        ("classic", QueueOpts::default().durable()),
        (
            "non-durable",
            QueueOpts::default()
                .arg("x-queue-type", ls("stream"))
                .arg("x-max-age", ls("1h")),
        ),
    ];
    for (_, opts) in cases {
        let ch = conn.channel().await?;
        ch.queue_declare_with(&q, opts).await.channel_closed(406)?;
    }
    conn.close().await
}

/// Every delivery from a stream carries its offset in `x-stream-offset`, next to
/// the publisher's own headers; the default start is `next`.
pub async fn stream_offsets(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["m0", "m1", "m2"]).await?;
    let starts = [
        ("first", ls("first"), vec!["m0", "m1", "m2"]),
        ("numeric", AMQPValue::LongLongInt(1), vec!["m1", "m2"]),
        ("negative", AMQPValue::LongInt(-1), vec!["m0", "m1", "m2"]),
        ("last", ls("last"), vec!["m2"]),
        (
            "old-timestamp",
            AMQPValue::Timestamp(946_684_800),
            vec!["m0", "m1", "m2"],
        ),
        ("interval", ls("1h"), vec!["m0", "m1", "m2"]),
    ];
    for (what, start, bodies) in starts {
        let c = conn.channel().await?;
        c.qos(10, false).await?;
        c.consume_with(&q, from(start)).await?;
        let got = c.expect_bodies(&bodies).await?;
        let first = 3 - bodies.len() as i64;
        for (i, d) in got.iter().enumerate() {
            expect_eq(
                &format!("{what}: x-stream-offset"),
                offset_of(d),
                Some(AMQPValue::LongLongInt(first + i as i64)),
            )?;
            ensure!(!d.redelivered, "{what}: first delivery marked redelivered");
        }
        c.expect_no_delivery().await?;
        c.close().await?;
    }
    // "next", explicit or by default, sees only what comes later.
    let mut readers = Vec::new();
    for opts in [from(ls("next")), ConsumeOpts::default()] {
        let c = conn.channel().await?;
        c.qos(10, false).await?;
        c.consume_with(&q, opts).await?;
        c.expect_no_delivery().await?;
        readers.push(c);
    }
    ch.publish("", &q, "m3").await?;
    ch.settle().await?;
    for c in &readers {
        let d = c.expect_deliver("m3").await?;
        expect_eq(
            "next: x-stream-offset",
            offset_of(&d),
            Some(AMQPValue::LongLongInt(3)),
        )?;
    }
    conn.close().await
}

/// Acks remove nothing from a stream: another consumer from `first` reads every
/// message again, and what a closed channel left unacked is not redelivered.
pub async fn stream_reads_are_not_destructive(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["a", "b", "c"]).await?;
    let reader = conn.channel().await?;
    reader.qos(10, false).await?;
    let tag = reader.consume_with(&q, from(ls("first"))).await?;
    let got = reader.expect_bodies(&["a", "b", "c"]).await?;
    reader.ack(got[0].delivery_tag, false).await?;
    reader.ack(got[2].delivery_tag, true).await?;
    reader.cancel(&tag).await?;
    let unacked = conn.channel().await?;
    unacked.qos(10, false).await?;
    unacked.consume_with(&q, from(ls("first"))).await?;
    unacked.expect_bodies(&["a", "b", "c"]).await?;
    unacked.close().await?;
    let again = conn.channel().await?;
    again.qos(10, false).await?;
    again.consume_with(&q, from(ls("first"))).await?;
    for d in again.expect_bodies(&["a", "b", "c"]).await? {
        ensure!(!d.redelivered, "a stream never redelivers");
    }
    again.expect_no_delivery().await?;
    conn.close().await
}

/// A stream consumer gets no more than its prefetch unacked; each ack lets the
/// next message through.
pub async fn stream_prefetch_credit(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["a", "b", "c"]).await?;
    let c = conn.channel().await?;
    c.qos(1, false).await?;
    c.consume_with(&q, from(ls("first"))).await?;
    let a = c.expect_deliver("a").await?;
    c.expect_no_delivery().await?;
    c.ack(a.delivery_tag, false).await?;
    let b = c.expect_deliver("b").await?;
    c.expect_no_delivery().await?;
    c.ack(b.delivery_tag, false).await?;
    c.expect_deliver("c").await?;
    conn.close().await
}

/// A stream consumer needs a consumer prefetch: none, or only a global one, is
/// 406; a global one beside it is 540.
pub async fn stream_consume_needs_prefetch(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("stream");
    ch.queue_declare_with(&q, stream()).await?;
    ch.consume(&q).await.channel_closed(406)?;
    let ch = conn.channel().await?;
    ch.qos(10, true).await?;
    ch.consume(&q).await.channel_closed(406)?;
    let ch = conn.channel().await?;
    ch.qos(1, false).await?;
    ch.qos(5, true).await?;
    ch.consume(&q).await.connection_closed(540)?;
    Ok(())
}

/// Automatic acknowledgement is refused with 540, after the prefetch check.
pub async fn stream_consume_no_ack_refused(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("stream");
    ch.queue_declare_with(&q, stream()).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack())
        .await
        .channel_closed(406)?;
    let ch = conn.channel().await?;
    ch.qos(1, false).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack())
        .await
        .connection_closed(540)?;
    Ok(())
}

/// Consumer arguments: a stream refuses `x-priority` and a malformed
/// `x-stream-offset` with 406; classic and quorum queues refuse `x-stream-offset`.
pub async fn stream_consumer_arguments(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("stream");
    ch.queue_declare_with(&q, stream()).await?;
    let classic = cx.name("classic");
    ch.queue_declare(&classic).await?;
    let quorum = cx.name("quorum");
    ch.queue_declare_with(
        &quorum,
        QueueOpts::default()
            .durable()
            .arg("x-queue-type", ls("quorum")),
    )
    .await?;
    let mut priority = FieldTable::default();
    priority.insert("x-priority".into(), AMQPValue::LongInt(1));
    let cases = [
        (
            q.as_str(),
            ConsumeOpts {
                args: priority,
                ..Default::default()
            },
        ),
        (q.as_str(), from(ls("2"))),
        (q.as_str(), from(ls("1x"))),
        (classic.as_str(), from(ls("first"))),
        (quorum.as_str(), from(ls("first"))),
    ];
    for (queue, opts) in cases {
        let ch = conn.channel().await?;
        ch.qos(1, false).await?;
        ch.consume_with(queue, opts).await.channel_closed(406)?;
    }
    conn.close().await
}

/// An `x-stream-offset` of the wrong type or an unparsable text crashes
/// RabbitMQ's stream code: 541 INTERNAL_ERROR.
pub async fn stream_offset_garbage(cx: Ctx) -> R {
    for value in [ls("foo"), AMQPValue::Boolean(true)] {
        let (_conn, ch) = open(&cx).await?;
        let q = cx.name("stream");
        ch.queue_declare_with(&q, stream()).await?;
        ch.qos(1, false).await?;
        ch.consume_with(&q, from(value))
            .await
            .connection_closed_at(541, (0, 0))?;
    }
    Ok(())
}

/// basic.get is not implemented for streams: 540 closes the connection.
pub async fn stream_get_refused(cx: Ctx) -> R {
    let (_conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["m"]).await?;
    ch.get(&q, false).await.connection_closed(540)?;
    Ok(())
}

/// queue.purge is not implemented for streams: 540.
pub async fn stream_purge_refused(cx: Ctx) -> R {
    let (_conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["m"]).await?;
    ch.queue_purge(&q).await.connection_closed(540)?;
    Ok(())
}

/// basic.nack and basic.reject of a stream delivery are not implemented (540),
/// with or without requeue; an unknown tag is still 406.
pub async fn stream_nack_refused(cx: Ctx) -> R {
    for (requeue, reject) in [(true, false), (false, false), (true, true)] {
        let (_conn, ch) = open_c(&cx).await?;
        let q = stream_with(&cx, &ch, &["m"]).await?;
        ch.qos(1, false).await?;
        ch.consume_with(&q, from(ls("first"))).await?;
        let d = ch.expect_deliver("m").await?;
        let method = if reject {
            ch.reject(d.delivery_tag, requeue).await?;
            (60, 90)
        } else {
            ch.nack(d.delivery_tag, false, requeue).await?;
            (60, 120)
        };
        ch.sync().await.connection_closed_at(540, method)?;
    }
    let (_conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["m"]).await?;
    ch.qos(1, false).await?;
    ch.consume_with(&q, from(ls("first"))).await?;
    ch.expect_deliver("m").await?;
    ch.nack(99, false, true).await?;
    ch.sync().await.channel_closed_at(406, (60, 120))?;
    Ok(())
}

/// basic.recover with a stream delivery unacked crashes RabbitMQ 3.10 (541);
/// with nothing unacked it is answered as usual.
pub async fn stream_recover(cx: Ctx) -> R {
    let (_conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["m"]).await?;
    ch.qos(1, false).await?;
    ch.consume_with(&q, from(ls("next"))).await?;
    ch.recover(true).await?;
    let c = ch.conn.channel().await?;
    c.qos(1, false).await?;
    c.consume_with(&q, from(ls("first"))).await?;
    c.expect_deliver("m").await?;
    c.recover(true).await.connection_closed_at(541, (0, 0))?;
    Ok(())
}

/// Exclusive consumers are not enforced on a stream: others attach beside one.
pub async fn stream_exclusive_consumer_not_enforced(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &["m"]).await?;
    let a = conn.channel().await?;
    a.qos(1, false).await?;
    a.consume_with(&q, from(ls("first")).exclusive()).await?;
    let b = conn.channel().await?;
    b.qos(1, false).await?;
    b.consume_with(&q, from(ls("first"))).await?;
    b.consume_with(&q, from(ls("first")).exclusive()).await?;
    a.expect_deliver("m").await?;
    b.expect_deliver("m").await?;
    conn.close().await
}

/// A stream reports no consumers, and delete's if-empty and if-unused do not
/// hold it back: RabbitMQ 3.10 reads both counts as 0.
pub async fn stream_delete_ignores_counts(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = stream_with(&cx, &ch, &[]).await?;
    let c = conn.channel().await?;
    c.qos(1, false).await?;
    c.consume_with(&q, ConsumeOpts::default()).await?;
    let ok = ch.queue_declare_with(&q, stream()).await?;
    expect_eq("consumer count", ok.consumers, 0)?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    c.expect_deliver("m").await?;
    let n = ch.queue_delete_with(&q, true, true).await?;
    expect_eq("delete-ok message count", n, 0)?;
    conn.close().await
}
