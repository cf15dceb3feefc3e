//! Queue scenarios: declare, server names, passive, equivalence, exclusivity,
//! auto-delete, purge, delete, bind and unbind.

use amq_protocol::types::AMQPValue;

use super::exchange::{open, open_c};
use crate::*;

/// A declare returns the name and zero counts; a redeclare returns the same.
pub async fn declare_and_redeclare(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    let ok = ch.queue_declare(&q).await?;
    expect_eq(
        "declare-ok",
        (ok.queue.as_str(), ok.messages, ok.consumers),
        (q.as_str(), 0, 0),
    )?;
    let again = ch.queue_declare(&q).await?;
    expect_eq("redeclare-ok", again, ok)?;
    conn.close().await
}

/// A redeclare reports the messages and consumers the queue has.
pub async fn redeclare_reports_counts(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m1").await?;
    ch.publish("", &q, "m2").await?;
    ch.settle().await?;
    let other = conn.channel().await?;
    other.consume(&q).await?;
    other.expect_bodies(&["m1", "m2"]).await?;
    ch.publish("", &q, "m3").await?;
    ch.settle().await?;
    let ok = ch.queue_declare(&q).await?;
    expect_eq(
        "counts (unacked are not counted)",
        (ok.messages, ok.consumers),
        (0, 1),
    )?;
    conn.close().await
}

/// An empty name gets a server-generated amq.gen-* name.
pub async fn server_named(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let ok = ch
        .queue_declare_with("", QueueOpts::default().exclusive())
        .await?;
    ensure!(
        ok.queue.starts_with("amq.gen-"),
        "server name {:?} lacks amq.gen-",
        ok.queue
    );
    ch.publish("", &ok.queue, "m").await?;
    ch.get_expect(&ok.queue, true, "m").await?;
    conn.close().await
}

/// Each empty-name declare makes a new queue.
pub async fn server_named_are_distinct(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let a = ch
        .queue_declare_with("", QueueOpts::default().exclusive())
        .await?;
    let b = ch
        .queue_declare_with("", QueueOpts::default().exclusive())
        .await?;
    ensure!(
        a.queue != b.queue,
        "two declares gave the same name {}",
        a.queue
    );
    conn.close().await
}

/// A passive declare of a missing queue is 404.
pub async fn passive_missing(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.queue_passive(&cx.name("q")).await.channel_closed(404)?;
    Ok(())
}

/// A passive declare reports the counts.
pub async fn passive_reports_counts(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    for m in ["a", "b", "c"] {
        ch.publish("", &q, m).await?;
    }
    ch.settle().await?;
    let ok = ch.queue_passive(&q).await?;
    expect_eq("counts", (ok.messages, ok.consumers), (3, 0))?;
    conn.close().await
}

/// A passive declare ignores the other flags.
pub async fn passive_ignores_flags(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let opts = QueueOpts::default().passive().durable().auto_delete();
    ch.queue_declare_with(&q, opts).await?;
    conn.close().await
}

/// Redeclaring with another durable flag is 406.
pub async fn equivalence_durable(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_declare_with(&q, QueueOpts::default().durable())
        .await
        .channel_closed(406)?;
    Ok(())
}

/// Redeclaring with another auto-delete flag is 406.
pub async fn equivalence_auto_delete(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_declare_with(&q, QueueOpts::default().auto_delete())
        .await
        .channel_closed(406)?;
    Ok(())
}

/// Redeclaring with another argument is 406.
pub async fn equivalence_arguments(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    let with = |n| QueueOpts::default().arg("x-max-length", AMQPValue::LongInt(n));
    ch.queue_declare_with(&q, with(10)).await?;
    ch.queue_declare_with(&q, with(20))
        .await
        .channel_closed(406)?;
    Ok(())
}

/// Redeclaring without an argument the queue was declared with is 406.
pub async fn equivalence_missing_argument(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    let opts = QueueOpts::default().arg("x-max-length", AMQPValue::LongInt(10));
    ch.queue_declare_with(&q, opts).await?;
    ch.queue_declare(&q).await.channel_closed(406)?;
    Ok(())
}

/// Redeclaring a durable queue durable is fine.
pub async fn durable_redeclare(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().durable())
        .await?;
    ch.queue_declare_with(&q, QueueOpts::default().durable())
        .await?;
    conn.close().await
}

/// Names starting with amq. are reserved.
pub async fn amq_prefix_reserved(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.queue_declare(&format!("amq.{}", cx.name("q")))
        .await
        .channel_closed(403)?;
    Ok(())
}

/// A passive declare of an amq.* name that does not exist is 404, not 403.
pub async fn amq_prefix_passive(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.queue_passive(&format!("amq.{}", cx.name("q")))
        .await
        .channel_closed(404)?;
    Ok(())
}

/// Helper: a connection owning an exclusive queue, and a second connection.
async fn exclusive_pair(cx: &Ctx, q: &str) -> R<(Conn, Channel)> {
    let (owner, och) = open(cx).await?;
    och.queue_declare_with(q, QueueOpts::default().exclusive())
        .await?;
    let (_other, ch) = open(cx).await?;
    Ok((owner, ch))
}

/// Declaring another connection's exclusive queue is 405.
pub async fn exclusive_declare_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (_owner, ch) = exclusive_pair(&cx, &q).await?;
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await
        .channel_closed(405)?;
    Ok(())
}

/// Even a passive declare of another connection's exclusive queue is 405.
pub async fn exclusive_passive_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (_owner, ch) = exclusive_pair(&cx, &q).await?;
    ch.queue_passive(&q).await.channel_closed(405)?;
    Ok(())
}

/// Consuming from another connection's exclusive queue is 405.
pub async fn exclusive_consume_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (_owner, ch) = exclusive_pair(&cx, &q).await?;
    ch.consume(&q).await.channel_closed(405)?;
    Ok(())
}

/// basic.get on another connection's exclusive queue is 405.
pub async fn exclusive_get_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (_owner, ch) = exclusive_pair(&cx, &q).await?;
    ch.get(&q, true).await.channel_closed(405)?;
    Ok(())
}

/// Deleting another connection's exclusive queue is 405.
pub async fn exclusive_delete_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (_owner, ch) = exclusive_pair(&cx, &q).await?;
    ch.queue_delete(&q).await.channel_closed(405)?;
    Ok(())
}

/// Purging another connection's exclusive queue is 405.
pub async fn exclusive_purge_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (_owner, ch) = exclusive_pair(&cx, &q).await?;
    ch.queue_purge(&q).await.channel_closed(405)?;
    Ok(())
}

/// Binding another connection's exclusive queue is 405.
pub async fn exclusive_bind_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (_owner, ch) = exclusive_pair(&cx, &q).await?;
    ch.queue_bind(&q, "amq.fanout", "")
        .await
        .channel_closed(405)?;
    Ok(())
}

/// Another connection may still publish to an exclusive queue.
pub async fn exclusive_publish_from_other_connection(cx: Ctx) -> R {
    let q = cx.name("q");
    let (owner, och) = open(&cx).await?;
    och.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    let (other, ch) = open(&cx).await?;
    ch.publish("", &q, "from-other").await?;
    ch.sync().await?;
    och.get_expect(&q, true, "from-other").await?;
    other.close().await?;
    owner.close().await
}

/// The owner may use its exclusive queue from any of its channels.
pub async fn exclusive_other_channel_same_connection(cx: Ctx) -> R {
    let (conn, a) = open(&cx).await?;
    let q = cx.name("q");
    a.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    let b = conn.channel().await?;
    b.queue_passive(&q).await?;
    b.consume(&q).await?;
    conn.close().await
}

/// An exclusive queue is deleted when its connection closes.
pub async fn exclusive_deleted_on_close(cx: Ctx) -> R {
    let q = cx.name("q");
    let (owner, och) = open(&cx).await?;
    och.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    owner.close().await?;
    let (_other, ch) = open(&cx).await?;
    ch.queue_passive(&q).await.channel_closed(404)?;
    Ok(())
}

/// An exclusive queue survives the close of the channel that declared it.
pub async fn exclusive_survives_channel_close(cx: Ctx) -> R {
    let (conn, a) = open(&cx).await?;
    let q = cx.name("q");
    a.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    a.close().await?;
    let b = conn.channel().await?;
    b.queue_passive(&q).await?;
    conn.close().await
}

/// After the owner goes, the name is free for another connection.
pub async fn exclusive_name_reusable_after_close(cx: Ctx) -> R {
    let q = cx.name("q");
    let (owner, och) = open(&cx).await?;
    och.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    owner.close().await?;
    let (other, ch) = open(&cx).await?;
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    other.close().await
}

/// An auto-delete queue goes when its last consumer cancels.
pub async fn auto_delete_on_last_cancel(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().auto_delete())
        .await?;
    let tag = ch.consume(&q).await?;
    ch.cancel(&tag).await?;
    ch.queue_passive(&q).await.channel_closed(404)?;
    Ok(())
}

/// An auto-delete queue stays until it had a consumer.
pub async fn auto_delete_stays_without_consumer(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().auto_delete())
        .await?;
    ch.publish("", &q, "m").await?;
    ch.get_expect(&q, true, "m").await?;
    ch.queue_passive(&q).await?;
    conn.close().await
}

/// An auto-delete queue stays while one of two consumers remains.
pub async fn auto_delete_two_consumers(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().auto_delete())
        .await?;
    let t1 = ch.consume(&q).await?;
    let t2 = ch.consume(&q).await?;
    ch.cancel(&t1).await?;
    expect_eq("consumers", ch.queue_passive(&q).await?.consumers, 1)?;
    ch.cancel(&t2).await?;
    ch.queue_passive(&q).await.channel_closed(404)?;
    Ok(())
}

/// Closing the consumer's channel counts as cancelling for auto-delete.
pub async fn auto_delete_on_channel_close(cx: Ctx) -> R {
    let (conn, a) = open(&cx).await?;
    let q = cx.name("q");
    a.queue_declare_with(&q, QueueOpts::default().auto_delete())
        .await?;
    a.consume(&q).await?;
    a.close().await?;
    let b = conn.channel().await?;
    b.queue_passive(&q).await.channel_closed(404)?;
    Ok(())
}

/// Purge removes ready messages and says how many.
pub async fn purge_counts(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    for m in ["a", "b", "c"] {
        ch.publish("", &q, m).await?;
    }
    expect_eq("purged", ch.queue_purge(&q).await?, 3)?;
    ch.get_empty(&q).await?;
    expect_eq("purged again", ch.queue_purge(&q).await?, 0)?;
    conn.close().await
}

/// Purge leaves unacked messages alone; they come back when requeued.
pub async fn purge_spares_unacked(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "held").await?;
    ch.publish("", &q, "ready").await?;
    let held = ch.get_expect(&q, false, "held").await?;
    expect_eq("purged", ch.queue_purge(&q).await?, 1)?;
    ch.reject(held.delivery_tag, true).await?;
    let d = ch.get_expect(&q, true, "held").await?;
    ensure!(d.redelivered, "requeued message not marked redelivered");
    conn.close().await
}

/// Purging a missing queue is 404.
pub async fn purge_missing(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.queue_purge(&cx.name("q")).await.channel_closed(404)?;
    Ok(())
}

/// Delete says how many messages went with the queue.
pub async fn delete_counts(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "a").await?;
    ch.publish("", &q, "b").await?;
    expect_eq("deleted", ch.queue_delete(&q).await?, 2)?;
    ch.queue_passive(&q).await.channel_closed(404)?;
    conn.close().await
}

/// Deleting a missing queue succeeds with a count of zero.
pub async fn delete_missing(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    expect_eq("deleted", ch.queue_delete(&cx.name("q")).await?, 0)?;
    conn.close().await
}

/// if-empty refuses to delete a queue with messages.
pub async fn delete_if_empty_refused(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m").await?;
    ch.queue_delete_with(&q, false, true)
        .await
        .channel_closed(406)?;
    Ok(())
}

/// if-empty deletes an empty queue.
pub async fn delete_if_empty_ok(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    expect_eq("deleted", ch.queue_delete_with(&q, false, true).await?, 0)?;
    conn.close().await
}

/// if-unused refuses to delete a queue with a consumer.
pub async fn delete_if_unused_refused(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.consume(&q).await?;
    ch.queue_delete_with(&q, true, false)
        .await
        .channel_closed(406)?;
    Ok(())
}

/// if-unused deletes a queue with messages but no consumer.
pub async fn delete_if_unused_ok(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m").await?;
    expect_eq("deleted", ch.queue_delete_with(&q, true, false).await?, 1)?;
    conn.close().await
}

/// Deleting a queue cancels its consumers with basic.cancel.
pub async fn delete_cancels_consumers(cx: Ctx) -> R {
    let (conn, a) = open(&cx).await?;
    let b = conn.channel().await?;
    let q = cx.name("q");
    a.queue_declare(&q).await?;
    let tag = a.consume(&q).await?;
    b.queue_delete(&q).await?;
    let cancelled = a.expect_server_cancel().await?;
    expect_eq("cancelled tag", cancelled, tag)?;
    conn.close().await
}

/// Deleting a queue removes its bindings.
pub async fn delete_removes_bindings(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (q, x) = (cx.name("q"), cx.name("x"));
    ch.exchange_declare(&x, "fanout").await?;
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, &x, "").await?;
    ch.queue_delete(&q).await?;
    ch.queue_declare(&q).await?;
    ch.publish(&x, "", "m").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// Binding a missing queue is 404.
pub async fn bind_missing_queue(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.queue_bind(&cx.name("q"), "amq.direct", "k")
        .await
        .channel_closed(404)?;
    Ok(())
}

/// Binding to a missing exchange is 404.
pub async fn bind_missing_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, &cx.name("x"), "k")
        .await
        .channel_closed(404)?;
    Ok(())
}

/// Binding when both are missing is 404 (the text names what RabbitMQ checks first).
pub async fn bind_both_missing(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.queue_bind(&cx.name("q"), &cx.name("x"), "k")
        .await
        .channel_closed(404)?;
    Ok(())
}

/// Unbinding a binding that does not exist succeeds.
pub async fn unbind_missing_binding(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_unbind(&q, "amq.direct", "nothing").await?;
    conn.close().await
}

/// Unbinding a missing queue.
pub async fn unbind_missing_queue(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    ch.queue_unbind(&cx.name("q"), "amq.direct", "k").await?;
    conn.close().await
}

/// Unbinding from a missing exchange.
pub async fn unbind_missing_exchange(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_unbind(&q, &cx.name("x"), "k").await?;
    conn.close().await
}

/// A nowait declare creates the queue without a reply.
pub async fn declare_nowait(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().nowait())
        .await?;
    ch.queue_passive(&q).await?;
    conn.close().await
}

/// A declare reports the consumers of a queue.
pub async fn declare_counts_consumers(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.consume(&q).await?;
    ch.consume(&q).await?;
    expect_eq("consumers", ch.queue_passive(&q).await?.consumers, 2)?;
    conn.close().await
}

/// Messages stay in a queue with no consumers until one arrives.
pub async fn messages_wait_for_consumer(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "early").await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.expect_deliver("early").await?;
    conn.close().await
}

/// delete-ok counts ready messages only, not unacked ones.
pub async fn delete_count_excludes_unacked(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "held").await?;
    ch.publish("", &q, "ready").await?;
    ch.get_expect(&q, false, "held").await?;
    expect_eq("deleted", ch.queue_delete(&q).await?, 1)?;
    conn.close().await
}

/// Even the owner cannot redeclare its exclusive queue without the exclusive flag.
pub async fn exclusive_redeclared_without_flag_by_owner(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    ch.queue_declare(&q).await.channel_closed(405)?;
    Ok(())
}

/// A non-exclusive queue cannot be redeclared exclusive.
pub async fn shared_redeclared_exclusive(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await
        .channel_closed(405)?;
    Ok(())
}

/// An exclusive auto-delete queue goes when its consumer cancels, before the close.
pub async fn exclusive_auto_delete_on_cancel(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().exclusive().auto_delete())
        .await?;
    let tag = ch.consume(&q).await?;
    ch.cancel(&tag).await?;
    ch.queue_passive(&q).await.channel_closed(404)?;
    Ok(())
}

/// A queue name of 255 bytes is accepted.
pub async fn longest_queue_name(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let base = cx.name("q");
    let q = format!("{base}{}", "n".repeat(255 - base.len()));
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m").await?;
    ch.get_expect(&q, true, "m").await?;
    conn.close().await
}

/// An empty queue name in bind, get and purge means the queue last declared on the
/// channel.
pub async fn empty_name_means_last_declared(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    ch.queue_declare_with("", QueueOpts::default().exclusive())
        .await?;
    ch.queue_bind("", "amq.fanout", "").await?;
    ch.publish("amq.fanout", "", "m1").await?;
    ch.publish("amq.fanout", "", "m2").await?;
    ch.get_expect("", true, "m1").await?;
    expect_eq("purged", ch.queue_purge("").await?, 1)?;
    conn.close().await
}

/// A passive declare of the empty name does not mean the last declared queue.
pub async fn empty_name_passive(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.queue_declare_with("", QueueOpts::default().exclusive())
        .await?;
    ch.queue_passive("").await.channel_closed(404)?;
    Ok(())
}

/// An empty queue name with nothing declared on the channel.
pub async fn empty_name_without_declare(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.get("", true).await.channel_closed(404)?;
    Ok(())
}

/// There is no exchange named amq.default to bind to.
pub async fn bind_to_amq_default(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, "amq.default", "k")
        .await
        .channel_closed(404)?;
    Ok(())
}

/// Found by the differential test: RabbitMQ does not check the durable flag when an
/// exclusive queue is redeclared by its owner.
pub async fn exclusive_redeclare_ignores_durable(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    ch.queue_declare_with(&q, QueueOpts::default().exclusive().durable())
        .await?;
    conn.close().await
}

/// The auto-delete flag of an exclusive queue is still checked.
pub async fn exclusive_redeclare_checks_auto_delete(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    ch.queue_declare_with(&q, QueueOpts::default().exclusive().auto_delete())
        .await
        .channel_closed(406)?;
    Ok(())
}
