//! Who may log in and what they may touch: a user whose permissions cover only
//! names starting with `ok-` is refused, with 403 ACCESS_REFUSED and
//! RabbitMQ's text, by each method RabbitMQ checks (rabbit_channel.erl's
//! check_*_permitted at v3.10.8); a user with no permissions in the vhost is
//! refused at `connection.open`. The users are made for the scenario (through
//! the management API on RabbitMQ) and deleted after it.

use amq_protocol::types::AMQPValue;

use crate::ctx::{expect_eq, Channel, Ctx, QueueOpts};
use crate::driver::{Conn, ConnectOpts, Expect, R};
use crate::scenarios::exchange::open;

const PASSWORD: &str = "limited-secret";

/// A connection of a new user allowed `^ok-` names only, and the user's name.
async fn limited(cx: &Ctx) -> R<(Conn, String)> {
    let user = cx
        .add_user("limited", PASSWORD, Some(("^ok-", "^ok-", "^ok-")))
        .await?;
    let conn = cx
        .connect_with(ConnectOpts {
            user: Some(user.clone()),
            password: Some(PASSWORD.into()),
            ..Default::default()
        })
        .await?;
    Ok((conn, user))
}

/// RabbitMQ's refusal text (rabbit_access_control.erl:197, v3.10.8).
fn refused(kind: &str, name: &str, user: &str) -> String {
    format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user '{user}'")
}

/// A queue the limited user may not touch, declared by the URL's user.
async fn theirs(cx: &Ctx) -> R<String> {
    let (_conn, ch) = open(cx).await?;
    let q = cx.name("no-q");
    ch.queue_declare(&q).await?;
    Ok(q)
}

/// queue.declare and queue.delete need configure; purge, get and consume read.
pub async fn queue_methods_refused(cx: Ctx) -> R {
    let q = theirs(&cx).await?;
    let (conn, user) = limited(&cx).await?;
    let ch: Channel = conn.channel().await?;
    ch.queue_declare(&cx.name("ok-q")).await?;
    let close = ch.queue_declare(&q).await.channel_closed(403)?;
    expect_eq("reply text", close.text, refused("queue", &q, &user))?;
    let ch = conn.channel().await?;
    ch.queue_delete(&q).await.channel_closed(403)?;
    let ch = conn.channel().await?;
    ch.queue_purge(&q).await.channel_closed(403)?;
    let ch = conn.channel().await?;
    ch.get(&q, true).await.channel_closed(403)?;
    let ch = conn.channel().await?;
    ch.consume(&q).await.channel_closed(403)?;
    Ok(())
}

/// Publishing to the default exchange is writing to `amq.default`.
pub async fn publish_to_default_exchange_refused(cx: Ctx) -> R {
    let (conn, user) = limited(&cx).await?;
    let ch = conn.channel().await?;
    let q = cx.name("ok-q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m").await?;
    let close = ch.sync().await.channel_closed_at(403, (60, 40))?;
    expect_eq(
        "reply text",
        close.text,
        refused("exchange", "amq.default", &user),
    )?;
    Ok(())
}

/// queue.bind writes to the queue and reads from the exchange; exchange.bind
/// writes to the destination and reads from the source.
pub async fn bindings_refused(cx: Ctx) -> R {
    let (conn, user) = limited(&cx).await?;
    let ch = conn.channel().await?;
    let q = cx.name("ok-q");
    let x = cx.name("ok-x");
    ch.queue_declare(&q).await?;
    ch.exchange_declare(&x, "direct").await?;
    let close = ch
        .queue_bind(&q, "amq.direct", "k")
        .await
        .channel_closed(403)?;
    expect_eq(
        "reply text",
        close.text,
        refused("exchange", "amq.direct", &user),
    )?;
    let ch = conn.channel().await?;
    ch.exchange_bind(&x, "amq.direct", "k")
        .await
        .channel_closed(403)?;
    let ch = conn.channel().await?;
    ch.exchange_bind("amq.fanout", &x, "k")
        .await
        .channel_closed(403)?;
    Ok(())
}

/// exchange.declare needs configure; deleting amq.* or the default exchange is
/// refused before permissions are looked at.
pub async fn exchange_methods_refused(cx: Ctx) -> R {
    let (conn, user) = limited(&cx).await?;
    let ch = conn.channel().await?;
    let x = cx.name("no-x");
    let close = ch
        .exchange_declare(&x, "direct")
        .await
        .channel_closed(403)?;
    expect_eq("reply text", close.text, refused("exchange", &x, &user))?;
    let ch = conn.channel().await?;
    let close = ch.exchange_delete("amq.direct").await.channel_closed(403)?;
    expect_eq(
        "reply text",
        close.text,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed".into(),
    )?;
    let ch = conn.channel().await?;
    ch.exchange_delete("").await.channel_closed(403)?;
    Ok(())
}

/// A new queue's dead-letter exchange needs write permission on it.
pub async fn dead_letter_exchange_refused(cx: Ctx) -> R {
    let (conn, user) = limited(&cx).await?;
    let ch = conn.channel().await?;
    let opts = QueueOpts::default().arg(
        "x-dead-letter-exchange",
        AMQPValue::LongString("amq.fanout".into()),
    );
    let close = ch
        .queue_declare_with(&cx.name("ok-q"), opts)
        .await
        .channel_closed(403)?;
    expect_eq(
        "reply text",
        close.text,
        refused("exchange", "amq.fanout", &user),
    )?;
    Ok(())
}

/// A user with no permissions in the vhost is refused at connection.open with
/// 530 NOT_ALLOWED.
pub async fn vhost_without_permissions_refused(cx: Ctx) -> R {
    let user = cx.add_user("stranger", PASSWORD, None).await?;
    let close = cx
        .connect_with(ConnectOpts {
            user: Some(user.clone()),
            password: Some(PASSWORD.into()),
            ..Default::default()
        })
        .await
        .connection_closed_at(530, (10, 40))?;
    expect_eq(
        "reply text",
        close.text,
        format!("NOT_ALLOWED - access to vhost '/' refused for user '{user}'"),
    )?;
    Ok(())
}
