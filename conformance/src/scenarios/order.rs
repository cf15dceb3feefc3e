//! The order and shape of what the server sends where RabbitMQ's processes set it:
//! a channel hears that a queue it consumes is gone only after the reply to its
//! own `queue.delete` (rabbit_channel.erl:1668-1676, then :815-835); reply texts
//! longer than a short string are cut to 252 bytes and `...`
//! (rabbit_binary_generator.erl:230-235); a publish routed to no queue is
//! confirmed at once, on its own (rabbit_channel.erl:2262-2264, :2322-2324).
//! Orders that are a race inside RabbitMQ (a confirm against the delivery of the
//! same message to the publishing channel) are not asserted.

use amq_protocol::protocol::{basic, queue, AMQPClass};

use crate::driver::{encode, unexpected, Event};
use crate::*;

fn delete(q: &str, nowait: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
        queue: q.into(),
        if_unused: false,
        if_empty: false,
        nowait,
    }))
}

/// The next event on `ch` must be the server's `basic.cancel` of `tag`.
async fn expect_cancel(conn: &Conn, ch: u16, tag: &str) -> R {
    match conn.next_event(ch).await? {
        Event::Method(AMQPClass::Basic(basic::AMQPMethod::Cancel(c)))
            if c.consumer_tag.as_str() == tag =>
        {
            Ok(())
        }
        other => Err(unexpected(&format!("basic.cancel of {tag}"), &other)),
    }
}

/// A channel that deletes the queue it consumes gets `queue.delete-ok` first,
/// then the `basic.cancel` of its consumer.
pub async fn delete_ok_before_own_cancel(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let tag = ch.consume(&q).await?;
    conn.send(ch.id, delete(&q, false)).await?;
    match conn.next_event(ch.id).await? {
        Event::Method(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(d))) => {
            expect_eq("message count", d.message_count, 0)?;
        }
        other => return Err(unexpected("queue.delete-ok", &other)),
    }
    expect_cancel(&conn, ch.id, &tag).await?;
    ch.sync().await?;
    conn.close().await
}

/// With two consumers of the queue on the deleting channel, both cancels follow
/// `delete-ok`; a consumer of it on another channel is cancelled too.
pub async fn delete_ok_before_own_cancels_others_cancelled(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let other = conn.channel().await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let first = ch
        .consume_with(&q, ConsumeOpts::default().tag("c1"))
        .await?;
    let second = ch
        .consume_with(&q, ConsumeOpts::default().tag("c2"))
        .await?;
    let elsewhere = other.consume(&q).await?;
    conn.send(ch.id, delete(&q, false)).await?;
    match conn.next_event(ch.id).await? {
        Event::Method(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))) => {}
        other => return Err(unexpected("queue.delete-ok", &other)),
    }
    // The order of a channel's own cancels is its consumer table's; not asserted.
    let mut cancelled = Vec::new();
    for _ in 0..2 {
        match conn.next_async(ch.id, |_| true, false).await? {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::Cancel(c))) => {
                cancelled.push(c.consumer_tag.to_string())
            }
            other => return Err(unexpected("basic.cancel", &other)),
        }
    }
    cancelled.sort();
    expect_eq(
        "cancelled on the deleting channel",
        cancelled,
        vec![first, second],
    )?;
    expect_eq(
        "cancelled on the other channel",
        other.expect_server_cancel().await?,
        elsewhere,
    )?;
    ch.sync().await?;
    conn.close().await
}

/// A `queue.delete` with no-wait on the consuming channel: only the cancel comes.
pub async fn delete_nowait_cancels_own_consumer(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let tag = ch.consume(&q).await?;
    conn.send(ch.id, delete(&q, true)).await?;
    expect_cancel(&conn, ch.id, &tag).await?;
    ch.sync().await?;
    ch.queue_passive(&q).await.channel_closed(404)?;
    conn.close().await
}

/// A queue name that makes the reply text longer than 255 bytes: `name-SUFFIX-xxx…`
/// (the suffix early, so that the transcripts still compare).
fn long_name(cx: &Ctx) -> String {
    let base = cx.name("q");
    format!("{base}-{}", "x".repeat(240 - base.len() - 1))
}

/// Checks a reply text RabbitMQ cut: 252 bytes of `full`, then `...`.
fn expect_cut(text: &str, full: &str) -> R {
    expect_eq("reply text length", text.len(), 255)?;
    let want = format!("{}...", &full[..252]);
    expect_eq("reply text", text, want.as_str())
}

/// A 404 whose text runs over 255 bytes (a passive declare of a 240-character
/// name) is cut to 252 bytes and ends with `...`.
pub async fn long_not_found_text_is_cut(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = long_name(&cx);
    let close = ch.queue_passive(&q).await.channel_closed(404)?;
    let full = format!("NOT_FOUND - no queue '{q}' in vhost '{}'", cx.url().vhost);
    expect_cut(&close.text, &full)?;
    conn.close().await
}

/// A 405 naming a long exclusive queue is cut the same way.
pub async fn long_locked_text_is_cut(cx: Ctx) -> R {
    let owner = cx.connect().await?;
    let ch = owner.channel().await?;
    let q = long_name(&cx);
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    let other = cx.connect().await?;
    let close = other
        .channel()
        .await?
        .queue_passive(&q)
        .await
        .channel_closed(405)?;
    let full = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '{}'",
        cx.url().vhost
    );
    expect_cut(&close.text, &full)?;
    other.close().await?;
    owner.close().await
}

/// Ten unroutable publishes in one write, in confirm mode, after a routed one:
/// each is acked on its own, `multiple=false`, tags 2 to 11 in order.
pub async fn unroutable_acked_one_by_one(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.confirm_select().await?;
    ch.publish("", &q, "routed").await?;
    ch.wait_confirms(0, 1).await?;
    let nowhere = cx.name("nowhere");
    let mut bytes = Vec::new();
    for _ in 0..10 {
        bytes.extend(encode(&amq_protocol::frame::AMQPFrame::Method(
            ch.id,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "amq.direct".into(),
                routing_key: nowhere.as_str().into(),
                mandatory: false,
                immediate: false,
            })),
        )));
        bytes.extend(encode(&amq_protocol::frame::AMQPFrame::Header(
            ch.id,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: 1,
                properties: Default::default(),
            },
        )));
        bytes.extend(encode(&amq_protocol::frame::AMQPFrame::Body(
            ch.id,
            b"m".to_vec(),
        )));
    }
    conn.send_raw(&bytes).await?;
    for tag in 2..=11 {
        match conn.next_event(ch.id).await? {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::Ack(a)))
                if a.delivery_tag == tag && !a.multiple => {}
            other => return Err(unexpected(&format!("basic.ack {tag}, single"), &other)),
        }
    }
    ch.sync().await?;
    conn.close().await
}

/// A mandatory unroutable publish in confirm mode: the return, then its own ack.
pub async fn unroutable_mandatory_returned_then_acked(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    ch.confirm_select().await?;
    ch.publish_with(
        "amq.direct",
        &cx.name("nowhere"),
        b"m",
        PublishOpts::default().mandatory(),
    )
    .await?;
    match conn.next_event(ch.id).await? {
        Event::Content(AMQPClass::Basic(basic::AMQPMethod::Return(r)), _) => {
            expect_eq("return code", r.reply_code, 312)?;
        }
        other => return Err(unexpected("basic.return", &other)),
    }
    match conn.next_event(ch.id).await? {
        Event::Method(AMQPClass::Basic(basic::AMQPMethod::Ack(a)))
            if a.delivery_tag == 1 && !a.multiple => {}
        other => return Err(unexpected("basic.ack 1, single", &other)),
    }
    conn.close().await
}
