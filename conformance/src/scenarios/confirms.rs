//! Publisher confirm scenarios: every publish confirmed exactly once, whatever happens to
//! the message, and the interplay with returns and transactions.

use super::exchange::open;
use crate::*;

/// A channel in confirm mode with a fresh queue.
async fn confirming(cx: &Ctx) -> R<(Conn, Channel, String)> {
    let (conn, ch) = open(cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.confirm_select().await?;
    Ok((conn, ch, q))
}

/// One publish, one ack with sequence number 1.
pub async fn single_publish_acked(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    ch.publish("", &q, "m").await?;
    let nacked = ch.wait_confirms(0, 1).await?;
    expect_eq("nacked", nacked, vec![])?;
    ch.expect_no_confirm().await?;
    conn.close().await
}

/// A hundred publishes are each confirmed exactly once (in whatever batches).
pub async fn many_publishes_each_confirmed_once(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    for i in 0..100 {
        ch.publish("", &q, &format!("m{i}")).await?;
    }
    ch.wait_confirms(0, 100).await?;
    ch.expect_no_confirm().await?;
    expect_eq("messages", ch.queue_passive(&q).await?.messages, 100)?;
    conn.close().await
}

/// Sequence numbers continue across waits.
pub async fn sequence_numbers_continue(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    ch.publish("", &q, "a").await?;
    ch.wait_confirms(0, 1).await?;
    ch.publish("", &q, "b").await?;
    ch.publish("", &q, "c").await?;
    ch.wait_confirms(1, 3).await?;
    conn.close().await
}

/// An unroutable message is still confirmed (acked).
pub async fn unroutable_is_acked(cx: Ctx) -> R {
    let (conn, ch, _q) = confirming(&cx).await?;
    ch.publish("amq.direct", &cx.name("nowhere"), "m").await?;
    expect_eq("nacked", ch.wait_confirms(0, 1).await?, vec![])?;
    conn.close().await
}

/// An unroutable mandatory message is returned, then acked.
pub async fn mandatory_unroutable_return_then_ack(cx: Ctx) -> R {
    let (conn, ch, _q) = confirming(&cx).await?;
    ch.publish_with(
        "amq.direct",
        &cx.name("nowhere"),
        b"m",
        PublishOpts::default().mandatory(),
    )
    .await?;
    let r = ch.returned().await?;
    expect_eq("return code", r.code, 312)?;
    ch.wait_confirms(0, 1).await?;
    conn.close().await
}

/// Routed and unroutable publishes interleaved: all confirmed, only the routed kept.
pub async fn mixed_routing_all_confirmed(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    for i in 0..10 {
        let key = if i % 2 == 0 {
            q.clone()
        } else {
            cx.name("nowhere")
        };
        ch.publish("", &key, &format!("m{i}")).await?;
    }
    ch.wait_confirms(0, 10).await?;
    expect_eq("messages", ch.queue_passive(&q).await?.messages, 5)?;
    conn.close().await
}

/// A fanout to several queues is confirmed once.
pub async fn fanout_confirmed_once(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    let x = cx.name("x");
    let q2 = cx.name("q2");
    ch.exchange_declare(&x, "fanout").await?;
    ch.queue_declare(&q2).await?;
    ch.queue_bind(&q, &x, "").await?;
    ch.queue_bind(&q2, &x, "").await?;
    ch.publish(&x, "", "m").await?;
    ch.wait_confirms(0, 1).await?;
    ch.expect_no_confirm().await?;
    conn.close().await
}

/// Persistent messages to a durable queue are confirmed.
pub async fn persistent_confirmed(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, QueueOpts::default().durable())
        .await?;
    ch.confirm_select().await?;
    let props = amq_protocol::protocol::BasicProperties::default().with_delivery_mode(2);
    for _ in 0..5 {
        ch.publish_with("", &q, b"p", PublishOpts::default().props(props.clone()))
            .await?;
    }
    ch.wait_confirms(0, 5).await?;
    conn.close().await
}

/// confirm.select twice is fine.
pub async fn select_twice(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    ch.confirm_select().await?;
    ch.publish("", &q, "m").await?;
    ch.wait_confirms(0, 1).await?;
    conn.close().await
}

/// Each channel numbers its confirms from 1.
pub async fn channels_number_independently(cx: Ctx) -> R {
    let (conn, a, q) = confirming(&cx).await?;
    let b = conn.channel().await?;
    b.confirm_select().await?;
    a.publish("", &q, "a1").await?;
    a.publish("", &q, "a2").await?;
    b.publish("", &q, "b1").await?;
    a.wait_confirms(0, 2).await?;
    b.wait_confirms(0, 1).await?;
    conn.close().await
}

/// Without confirm.select no confirms arrive.
pub async fn no_confirms_without_select(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m").await?;
    ch.expect_no_confirm().await?;
    conn.close().await
}

/// A transactional channel cannot switch to confirm mode.
pub async fn tx_then_confirm_refused(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.tx_select().await?;
    ch.confirm_select().await.channel_closed(406)?;
    Ok(())
}

/// A confirm channel cannot switch to transactions.
pub async fn confirm_then_tx_refused(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.confirm_select().await?;
    ch.tx_select().await.channel_closed(406)?;
    Ok(())
}

/// Publishing to a missing exchange in confirm mode closes the channel with 404.
pub async fn missing_exchange_closes_channel(cx: Ctx) -> R {
    let (_conn, ch, _q) = confirming(&cx).await?;
    ch.publish(&cx.name("x"), "k", "m").await?;
    ch.sync().await.channel_closed_at(404, (60, 40))?;
    Ok(())
}

/// Confirms and deliveries on the same channel do not disturb each other.
pub async fn confirms_with_consumer_on_same_channel(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.publish("", &q, "m1").await?;
    ch.publish("", &q, "m2").await?;
    ch.expect_bodies(&["m1", "m2"]).await?;
    ch.wait_confirms(0, 2).await?;
    conn.close().await
}

/// Empty-bodied and large messages are confirmed alike.
pub async fn empty_and_large_confirmed(cx: Ctx) -> R {
    let (conn, ch, q) = confirming(&cx).await?;
    ch.publish("", &q, "").await?;
    ch.publish("", &q, &"x".repeat(300_000)).await?;
    ch.wait_confirms(0, 2).await?;
    conn.close().await
}
