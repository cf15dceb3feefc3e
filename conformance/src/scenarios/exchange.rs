//! Exchange scenarios: declare, passive, equivalence, reserved names, delete, routing.

use crate::*;

/// Opens a connection and a channel: the start of most scenarios.
pub(crate) async fn open(cx: &Ctx) -> R<(Conn, Channel)> {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    Ok((conn, ch))
}

/// Opens a connection and a channel in confirm mode, for scenarios that count messages
/// (see [`Channel::settle`]).
pub(crate) async fn open_c(cx: &Ctx) -> R<(Conn, Channel)> {
    let (conn, ch) = open(cx).await?;
    ch.confirm_select().await?;
    Ok((conn, ch))
}

/// Declares a queue bound to `x` with `key`.
pub(crate) async fn bound_queue(ch: &Channel, q: &str, x: &str, key: &str) -> R {
    ch.queue_declare(q).await?;
    ch.queue_bind(q, x, key).await
}

/// Each exchange type can be declared, and redeclared identically.
pub async fn declare_each_type(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    for kind in ["direct", "fanout", "topic", "headers"] {
        let x = cx.name(&format!("x-{kind}"));
        ch.exchange_declare(&x, kind).await?;
        ch.exchange_declare(&x, kind).await?;
    }
    conn.close().await
}

/// A passive declare of a missing exchange closes the channel with 404.
pub async fn passive_missing(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_exists(&cx.name("x"))
        .await
        .channel_closed(404)?;
    Ok(())
}

/// A passive declare of an existing exchange succeeds whatever type it names.
pub async fn passive_existing_ignores_type(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "fanout").await?;
    ch.exchange_exists(&x).await?;
    conn.close().await
}

/// The predeclared amq.* exchanges exist.
pub async fn predeclared_exchanges_exist(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    for x in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        ch.exchange_exists(x).await?;
    }
    conn.close().await
}

/// Redeclaring with another type is 406.
pub async fn redeclare_type_mismatch(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "direct").await?;
    ch.exchange_declare(&x, "fanout")
        .await
        .channel_closed(406)?;
    Ok(())
}

/// Redeclaring with another durable flag is 406.
pub async fn redeclare_durable_mismatch(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "direct").await?;
    ch.exchange_declare_with(&x, "direct", ExchangeOpts::default().durable())
        .await
        .channel_closed(406)?;
    Ok(())
}

/// Redeclaring with another auto-delete flag is 406.
pub async fn redeclare_auto_delete_mismatch(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "direct").await?;
    ch.exchange_declare_with(&x, "direct", ExchangeOpts::default().auto_delete())
        .await
        .channel_closed(406)?;
    Ok(())
}

/// Redeclaring with another internal flag is 406.
pub async fn redeclare_internal_mismatch(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "direct").await?;
    ch.exchange_declare_with(&x, "direct", ExchangeOpts::default().internal())
        .await
        .channel_closed(406)?;
    Ok(())
}

/// An unknown exchange type is a connection error.
pub async fn unknown_type(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_declare(&cx.name("x"), "no-such-type")
        .await
        .connection_closed(503)?;
    Ok(())
}

/// Names starting with amq. are reserved.
pub async fn amq_prefix_reserved(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_declare(&format!("amq.{}", cx.name("x")), "direct")
        .await
        .channel_closed(403)?;
    Ok(())
}

/// Redeclaring a predeclared amq.* exchange identically (durable) is allowed.
pub async fn redeclare_amq_direct_identically(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    ch.exchange_declare_with("amq.direct", "direct", ExchangeOpts::default().durable())
        .await?;
    conn.close().await
}

/// Redeclaring amq.direct non-durable fails the equivalence check, not the name check.
pub async fn redeclare_amq_direct_not_durable(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_declare("amq.direct", "direct")
        .await
        .channel_closed(406)?;
    Ok(())
}

/// The default exchange cannot be declared.
pub async fn declare_default_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_declare("", "direct")
        .await
        .channel_closed(403)?;
    Ok(())
}

/// Even a passive declare of the default exchange is refused.
pub async fn passive_default_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_exists("").await.channel_closed(403)?;
    Ok(())
}

/// The default exchange cannot be deleted.
pub async fn delete_default_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_delete("").await.channel_closed(403)?;
    Ok(())
}

/// amq.* exchanges cannot be deleted.
pub async fn delete_amq_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.exchange_delete("amq.fanout").await.channel_closed(403)?;
    Ok(())
}

/// Deleting a missing exchange.
pub async fn delete_missing(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    ch.exchange_delete(&cx.name("x")).await?;
    conn.close().await
}

/// Deleting an exchange makes it gone.
pub async fn delete_then_passive(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "fanout").await?;
    ch.exchange_delete(&x).await?;
    ch.exchange_exists(&x).await.channel_closed(404)?;
    Ok(())
}

/// if-unused refuses to delete an exchange with a queue bound.
pub async fn delete_if_unused_with_binding(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "fanout").await?;
    bound_queue(&ch, &cx.name("q"), &x, "").await?;
    ch.exchange_delete_with(&x, true)
        .await
        .channel_closed(406)?;
    Ok(())
}

/// if-unused deletes an exchange without bindings.
pub async fn delete_if_unused_without_binding(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "fanout").await?;
    ch.exchange_delete_with(&x, true).await?;
    conn.close().await
}

/// if-unused deletes an exchange whose last binding was removed.
pub async fn delete_if_unused_after_unbind(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare(&x, "direct").await?;
    bound_queue(&ch, &q, &x, "k").await?;
    ch.queue_unbind(&q, &x, "k").await?;
    ch.exchange_delete_with(&x, true).await?;
    conn.close().await
}

/// Deleting a bound exchange removes its bindings; the queue stays.
pub async fn delete_removes_bindings(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare(&x, "fanout").await?;
    bound_queue(&ch, &q, &x, "").await?;
    ch.exchange_delete(&x).await?;
    ch.exchange_declare(&x, "fanout").await?;
    ch.publish(&x, "", "after").await?;
    ch.settle().await?;
    expect_eq("messages", ch.queue_passive(&q).await?.messages, 0)?;
    conn.close().await
}

/// Publishing to a missing exchange closes the channel with 404 naming basic.publish.
pub async fn publish_to_missing_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    ch.publish(&cx.name("x"), "k", "m").await?;
    ch.sync().await.channel_closed_at(404, (60, 40))?;
    Ok(())
}

/// Publishing to an internal exchange is refused with 403.
pub async fn publish_to_internal_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare_with(&x, "fanout", ExchangeOpts::default().internal())
        .await?;
    ch.publish(&x, "", "m").await?;
    ch.sync().await.channel_closed_at(403, (60, 40))?;
    Ok(())
}

/// A fanout exchange with no queues drops the message (mandatory returns it).
pub async fn fanout_to_no_queue(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "fanout").await?;
    ch.publish_with(&x, "", b"m", PublishOpts::default().mandatory())
        .await?;
    let r = ch.returned().await?;
    expect_eq("return code", r.code, 312)?;
    conn.close().await
}

/// A fanout exchange with one queue delivers to it.
pub async fn fanout_to_one_queue(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare(&x, "fanout").await?;
    bound_queue(&ch, &q, &x, "").await?;
    ch.publish(&x, "ignored", "m").await?;
    let d = ch.get_expect(&q, true, "m").await?;
    expect_eq("exchange", d.exchange.as_str(), x.as_str())?;
    expect_eq("routing key", d.routing_key.as_str(), "ignored")?;
    conn.close().await
}

/// A fanout exchange copies each message to every bound queue, whatever the keys.
pub async fn fanout_to_many_queues(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare(&x, "fanout").await?;
    let qs: Vec<String> = (1..=3).map(|i| cx.name(&format!("q{i}"))).collect();
    for (i, q) in qs.iter().enumerate() {
        bound_queue(&ch, q, &x, &format!("key{i}")).await?;
    }
    ch.publish(&x, "other", "m1").await?;
    ch.publish(&x, "", "m2").await?;
    for q in &qs {
        ch.get_expect(q, true, "m1").await?;
        ch.get_expect(q, true, "m2").await?;
        ch.get_empty(q).await?;
    }
    conn.close().await
}

/// amq.fanout works like any fanout exchange.
pub async fn amq_fanout_routes(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    bound_queue(&ch, &q, "amq.fanout", "").await?;
    ch.publish("amq.fanout", "x", "m").await?;
    ch.get_expect(&q, true, "m").await?;
    conn.close().await
}

/// A direct exchange routes only on an exact key match.
pub async fn direct_routes_by_key(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (x, qa, qb) = (cx.name("x"), cx.name("qa"), cx.name("qb"));
    ch.exchange_declare(&x, "direct").await?;
    bound_queue(&ch, &qa, &x, "a").await?;
    bound_queue(&ch, &qb, &x, "b").await?;
    ch.publish(&x, "a", "to-a").await?;
    ch.publish(&x, "b", "to-b").await?;
    ch.publish(&x, "A", "to-nobody").await?;
    ch.get_expect(&qa, true, "to-a").await?;
    ch.get_empty(&qa).await?;
    ch.get_expect(&qb, true, "to-b").await?;
    ch.get_empty(&qb).await?;
    conn.close().await
}

/// Two queues bound with the same key both get a copy.
pub async fn direct_same_key_two_queues(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (x, qa, qb) = (cx.name("x"), cx.name("qa"), cx.name("qb"));
    ch.exchange_declare(&x, "direct").await?;
    bound_queue(&ch, &qa, &x, "k").await?;
    bound_queue(&ch, &qb, &x, "k").await?;
    ch.publish(&x, "k", "m").await?;
    ch.get_expect(&qa, true, "m").await?;
    ch.get_expect(&qb, true, "m").await?;
    conn.close().await
}

/// A queue bound with two keys gets one copy per matching publish, not two.
pub async fn direct_queue_with_two_keys(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare(&x, "direct").await?;
    bound_queue(&ch, &q, &x, "k1").await?;
    ch.queue_bind(&q, &x, "k2").await?;
    ch.publish(&x, "k1", "m1").await?;
    ch.publish(&x, "k2", "m2").await?;
    ch.settle().await?;
    expect_eq("messages", ch.queue_passive(&q).await?.messages, 2)?;
    conn.close().await
}

/// Binding twice with the same key is one binding.
pub async fn direct_duplicate_binding_is_one(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare(&x, "direct").await?;
    bound_queue(&ch, &q, &x, "k").await?;
    ch.queue_bind(&q, &x, "k").await?;
    ch.publish(&x, "k", "m").await?;
    ch.settle().await?;
    expect_eq("messages", ch.queue_passive(&q).await?.messages, 1)?;
    conn.close().await
}

/// The empty routing key is a key like any other.
pub async fn direct_empty_key(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare(&x, "direct").await?;
    bound_queue(&ch, &q, &x, "").await?;
    ch.publish(&x, "", "empty").await?;
    ch.publish(&x, "k", "keyed").await?;
    ch.get_expect(&q, true, "empty").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// Unbinding stops routing.
pub async fn unbind_stops_routing(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare(&x, "direct").await?;
    bound_queue(&ch, &q, &x, "k").await?;
    ch.publish(&x, "k", "before").await?;
    ch.queue_unbind(&q, &x, "k").await?;
    ch.publish(&x, "k", "after").await?;
    ch.get_expect(&q, true, "before").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// The default exchange routes to the queue named by the routing key.
pub async fn default_exchange_routes_by_name(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.get_expect(&q, true, "m").await?;
    expect_eq("exchange", d.exchange.as_str(), "")?;
    expect_eq("routing key", d.routing_key.as_str(), q.as_str())?;
    conn.close().await
}

/// The default exchange drops a message for a missing queue (mandatory returns it).
pub async fn default_exchange_unknown_queue(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("missing");
    ch.publish_with("", &q, b"m", PublishOpts::default().mandatory())
        .await?;
    let r = ch.returned().await?;
    expect_eq(
        "return",
        (r.code, r.routing_key.as_str()),
        (312, q.as_str()),
    )?;
    conn.close().await
}

/// Queues cannot be bound to the default exchange.
pub async fn bind_to_default_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, "", "k").await.channel_closed(403)?;
    Ok(())
}

/// Nor unbound from it.
pub async fn unbind_from_default_exchange(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_unbind(&q, "", &q).await.channel_closed(403)?;
    Ok(())
}

/// An auto-delete exchange goes when its last queue binding is removed.
pub async fn auto_delete_on_last_unbind(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare_with(&x, "direct", ExchangeOpts::default().auto_delete())
        .await?;
    bound_queue(&ch, &q, &x, "k").await?;
    ch.exchange_exists(&x).await?;
    ch.queue_unbind(&q, &x, "k").await?;
    ch.exchange_exists(&x).await.channel_closed(404)?;
    Ok(())
}

/// An auto-delete exchange that never had a binding stays.
pub async fn auto_delete_without_bindings_stays(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare_with(&x, "fanout", ExchangeOpts::default().auto_delete())
        .await?;
    ch.exchange_exists(&x).await?;
    conn.close().await
}

/// An auto-delete exchange goes when its only bound queue is deleted.
pub async fn auto_delete_on_queue_delete(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let (x, q) = (cx.name("x"), cx.name("q"));
    ch.exchange_declare_with(&x, "fanout", ExchangeOpts::default().auto_delete())
        .await?;
    bound_queue(&ch, &q, &x, "").await?;
    ch.queue_delete(&q).await?;
    ch.exchange_exists(&x).await.channel_closed(404)?;
    Ok(())
}

/// A nowait declare gets no reply but the exchange exists.
pub async fn declare_nowait(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    let opts = ExchangeOpts {
        nowait: true,
        ..Default::default()
    };
    ch.exchange_declare_with(&x, "fanout", opts).await?;
    ch.exchange_exists(&x).await?;
    conn.close().await
}

/// A durable exchange can be declared and redeclared durable.
pub async fn declare_durable(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("x");
    ch.exchange_declare_with(&x, "direct", ExchangeOpts::default().durable())
        .await?;
    ch.exchange_declare_with(&x, "direct", ExchangeOpts::default().durable())
        .await?;
    conn.close().await
}

/// Exchange-to-exchange bindings route through both exchanges.
pub async fn exchange_to_exchange_binding(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let (src, dst, q) = (cx.name("src"), cx.name("dst"), cx.name("q"));
    ch.exchange_declare(&src, "direct").await?;
    ch.exchange_declare(&dst, "fanout").await?;
    ch.exchange_bind(&dst, &src, "k").await?;
    bound_queue(&ch, &q, &dst, "").await?;
    ch.publish(&src, "k", "through").await?;
    ch.publish(&src, "other", "dropped").await?;
    let d = ch.get_expect(&q, true, "through").await?;
    expect_eq("exchange", d.exchange.as_str(), src.as_str())?;
    ch.get_empty(&q).await?;
    ch.exchange_unbind(&dst, &src, "k").await?;
    ch.publish(&src, "k", "unbound").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// Binding from a missing source exchange is 404.
pub async fn exchange_bind_missing_source(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let dst = cx.name("dst");
    ch.exchange_declare(&dst, "fanout").await?;
    ch.exchange_bind(&dst, &cx.name("missing"), "k")
        .await
        .channel_closed(404)?;
    Ok(())
}
