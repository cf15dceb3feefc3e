//! RabbitMQ's extensions and durability: topic and headers routing, exchange-to-exchange
//! bindings, alternate exchanges, dead-lettering, TTL, length limits, priorities, single
//! active consumer, consumer priorities, direct reply-to, quorum queue checks, and
//! durable queues across a reconnect (without restarting the broker).
//!
//! Waits on broker timers (TTL, `x-expires`) poll with [`Channel::poll_get`],
//! [`Channel::poll_count`] or [`Channel::poll_gone`], bounded, never a bare sleep.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};

use super::exchange::{open, open_c};
use crate::*;

/// A field table from key/value pairs.
fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A long string value.
fn ls(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// Queue options with the given arguments.
fn qargs(pairs: &[(&str, AMQPValue)]) -> QueueOpts {
    let mut o = QueueOpts::default();
    for (k, v) in pairs {
        o = o.arg(k, v.clone());
    }
    o
}

/// Publishes with properties.
async fn publish_props(ch: &Channel, x: &str, key: &str, body: &str, p: BasicProperties) -> R {
    ch.publish_with(x, key, body.as_bytes(), PublishOpts::default().props(p))
        .await
}

/// Publishes with headers.
async fn publish_headers(ch: &Channel, x: &str, body: &str, h: FieldTable) -> R {
    publish_props(ch, x, "", body, BasicProperties::default().with_headers(h)).await
}

/// Which of `keys` reach a queue bound to a topic exchange with `patterns`, in order.
async fn topic_routes(cx: &Ctx, patterns: &[&str], keys: &[&str]) -> R<Vec<String>> {
    let (conn, ch) = open_c(cx).await?;
    let x = cx.name("topic");
    ch.exchange_declare(&x, "topic").await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    for p in patterns {
        ch.queue_bind(&q, &x, p).await?;
    }
    for k in keys {
        ch.publish(&x, k, k).await?;
    }
    ch.settle().await?;
    let mut got = Vec::new();
    while let Some(d) = ch.get(&q, true).await? {
        got.push(d.body);
    }
    conn.close().await?;
    Ok(got)
}

/// `*` matches exactly one word.
pub async fn topic_star_one_word(cx: Ctx) -> R {
    let got = topic_routes(&cx, &["a.*"], &["a", "a.b", "a.b.c", "b.a", "a.x"]).await?;
    expect_eq("routed", got, vec!["a.b".to_string(), "a.x".to_string()])
}

/// `#` matches zero or more words.
pub async fn topic_hash_zero_or_more(cx: Ctx) -> R {
    let got = topic_routes(&cx, &["a.#"], &["a", "a.b", "a.b.c", "b.a", "ab"]).await?;
    expect_eq(
        "routed",
        got,
        vec!["a".to_string(), "a.b".to_string(), "a.b.c".to_string()],
    )
}

/// `#` in the middle and `*` combined; a message matching two patterns arrives once.
pub async fn topic_mixed_patterns_once(cx: Ctx) -> R {
    let got = topic_routes(
        &cx,
        &["*.x.#", "#.y", "a.x.y"],
        &["a.x.y", "a.x", "x.y", "a.b.x", "q.x.r.s", "y"],
    )
    .await?;
    expect_eq(
        "routed",
        got,
        vec![
            "a.x.y".to_string(),
            "a.x".to_string(),
            "x.y".to_string(),
            "q.x.r.s".to_string(),
            "y".to_string(),
        ],
    )
}

/// Empty words are words: `*` matches one, and `a..b` is three words.
pub async fn topic_empty_words(cx: Ctx) -> R {
    let got = topic_routes(&cx, &["a.*.b"], &["a..b", "a.b", "a.x.b", ".a.b"]).await?;
    expect_eq("routed", got, vec!["a..b".to_string(), "a.x.b".to_string()])
}

/// A binding with the empty key matches only the empty routing key; `#` matches it too.
pub async fn topic_empty_key(cx: Ctx) -> R {
    let got = topic_routes(&cx, &[""], &["", "a", "."]).await?;
    expect_eq("routed by \"\"", got, vec![String::new()])?;
    let got = topic_routes(&cx, &["#"], &["", "a", "a.b"]).await?;
    expect_eq(
        "routed by #",
        got,
        vec![String::new(), "a".to_string(), "a.b".to_string()],
    )
}

/// Which of `messages` (name, headers) reach a queue bound to a headers exchange with
/// `args`, in order.
async fn headers_routes(
    cx: &Ctx,
    args: FieldTable,
    messages: Vec<(&str, FieldTable)>,
) -> R<Vec<String>> {
    let (conn, ch) = open_c(cx).await?;
    let x = cx.name("headers");
    ch.exchange_declare(&x, "headers").await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind_args(&q, &x, "", args).await?;
    for (body, h) in messages {
        publish_headers(&ch, &x, body, h).await?;
    }
    ch.settle().await?;
    let mut got = Vec::new();
    while let Some(d) = ch.get(&q, true).await? {
        got.push(d.body);
    }
    conn.close().await?;
    Ok(got)
}

/// The messages headers scenarios publish: every combination of headers a and b, and
/// an x- header.
fn header_messages() -> Vec<(&'static str, FieldTable)> {
    vec![
        ("both", table(&[("a", ls("1")), ("b", ls("2"))])),
        ("only-a", table(&[("a", ls("1"))])),
        ("wrong-b", table(&[("a", ls("1")), ("b", ls("9"))])),
        ("none", table(&[("c", ls("3"))])),
        ("x-only", table(&[("x-a", ls("1")), ("x-b", ls("2"))])),
        (
            "all-plus-extra",
            table(&[("a", ls("1")), ("b", ls("2")), ("z", ls("0"))]),
        ),
    ]
}

/// x-match all: every bound header must be present with the same value.
pub async fn headers_match_all(cx: Ctx) -> R {
    let args = table(&[("x-match", ls("all")), ("a", ls("1")), ("b", ls("2"))]);
    let got = headers_routes(&cx, args, header_messages()).await?;
    expect_eq(
        "routed",
        got,
        vec!["both".to_string(), "all-plus-extra".to_string()],
    )
}

/// Without x-match, matching is `all`.
pub async fn headers_default_is_all(cx: Ctx) -> R {
    let args = table(&[("a", ls("1")), ("b", ls("2"))]);
    let got = headers_routes(&cx, args, header_messages()).await?;
    expect_eq(
        "routed",
        got,
        vec!["both".to_string(), "all-plus-extra".to_string()],
    )
}

/// x-match any: one matching header suffices.
pub async fn headers_match_any(cx: Ctx) -> R {
    let args = table(&[("x-match", ls("any")), ("a", ls("1")), ("b", ls("2"))]);
    let got = headers_routes(&cx, args, header_messages()).await?;
    expect_eq(
        "routed",
        got,
        vec![
            "both".to_string(),
            "only-a".to_string(),
            "wrong-b".to_string(),
            "all-plus-extra".to_string(),
        ],
    )
}

/// all and any ignore x- headers in the binding; the -with-x forms compare them too.
pub async fn headers_with_x_forms(cx: Ctx) -> R {
    let got = headers_routes(
        &cx,
        table(&[("x-match", ls("any")), ("x-a", ls("1"))]),
        header_messages(),
    )
    .await?;
    expect_eq("routed by any", got, Vec::<String>::new())?;
    let got = headers_routes(
        &cx,
        table(&[("x-match", ls("any-with-x")), ("x-a", ls("1"))]),
        header_messages(),
    )
    .await?;
    expect_eq("routed by any-with-x", got, vec!["x-only".to_string()])?;
    let got = headers_routes(
        &cx,
        table(&[
            ("x-match", ls("all-with-x")),
            ("x-a", ls("1")),
            ("x-b", ls("2")),
        ]),
        header_messages(),
    )
    .await?;
    expect_eq("routed by all-with-x", got, vec!["x-only".to_string()])
}

/// A binding to an exchange bound to another exchange routes through both.
pub async fn e2e_routes_through(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let a = cx.name("xa");
    let b = cx.name("xb");
    ch.exchange_declare(&a, "topic").await?;
    ch.exchange_declare(&b, "direct").await?;
    ch.exchange_bind(&b, &a, "k.*").await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, &b, "k.1").await?;
    for k in ["k.1", "k.2", "j.1"] {
        ch.publish(&a, k, k).await?;
    }
    ch.settle().await?;
    let d = ch.get_expect(&q, true, "k.1").await?;
    expect_eq("exchange", d.exchange.as_str(), a.as_str())?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// A loop A→B→A delivers to a queue on A once.
pub async fn e2e_loop_delivers_once(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let a = cx.name("xa");
    let b = cx.name("xb");
    ch.exchange_declare(&a, "fanout").await?;
    ch.exchange_declare(&b, "fanout").await?;
    ch.exchange_bind(&b, &a, "").await?;
    ch.exchange_bind(&a, &b, "").await?;
    let qa = cx.name("qa");
    let qb = cx.name("qb");
    ch.queue_declare(&qa).await?;
    ch.queue_declare(&qb).await?;
    ch.queue_bind(&qa, &a, "").await?;
    ch.queue_bind(&qb, &b, "").await?;
    ch.publish(&a, "", "m").await?;
    ch.publish(&b, "", "n").await?;
    ch.settle().await?;
    expect_eq("qa", ch.queue_passive(&qa).await?.messages, 2)?;
    expect_eq("qb", ch.queue_passive(&qb).await?.messages, 2)?;
    conn.close().await
}

/// An internal exchange refuses publishes but routes what an exchange bound to it sends.
pub async fn internal_exchange_as_destination(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let front = cx.name("front");
    let inner = cx.name("inner");
    ch.exchange_declare(&front, "fanout").await?;
    ch.exchange_declare_with(&inner, "fanout", ExchangeOpts::default().internal())
        .await?;
    ch.exchange_bind(&inner, &front, "").await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, &inner, "").await?;
    ch.publish(&front, "k", "via-front").await?;
    ch.settle().await?;
    ch.get_expect(&q, true, "via-front").await?;
    ch.publish(&inner, "k", "direct").await?;
    let close = ch.wait_close().await?;
    expect_eq("code", close.code, 403)?;
    conn.close().await
}

/// Declares `x` (direct) with an alternate exchange `ae` (fanout) and a queue on `ae`.
async fn with_alternate(cx: &Ctx, ch: &Channel) -> R<(String, String, String)> {
    let ae = cx.name("ae");
    let x = cx.name("x");
    let q = cx.name("unrouted");
    ch.exchange_declare(&ae, "fanout").await?;
    let o = ExchangeOpts {
        args: table(&[("alternate-exchange", ls(&ae))]),
        ..Default::default()
    };
    ch.exchange_declare_with(&x, "direct", o).await?;
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, &ae, "").await?;
    Ok((ae, x, q))
}

/// Unroutable messages go to the alternate exchange; routable ones do not.
pub async fn alternate_exchange_takes_unroutable(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (_ae, x, unrouted) = with_alternate(&cx, &ch).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, &x, "k").await?;
    ch.publish(&x, "k", "routed").await?;
    ch.publish(&x, "other", "lost").await?;
    ch.settle().await?;
    ch.get_expect(&q, true, "routed").await?;
    ch.get_empty(&q).await?;
    let d = ch.get_expect(&unrouted, true, "lost").await?;
    expect_eq("exchange", d.exchange.as_str(), x.as_str())?;
    expect_eq("routing key", d.routing_key.as_str(), "other")?;
    ch.get_empty(&unrouted).await?;
    conn.close().await
}

/// A mandatory message taken by the alternate exchange is not returned.
pub async fn alternate_exchange_mandatory_not_returned(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (_ae, x, unrouted) = with_alternate(&cx, &ch).await?;
    ch.publish_with(&x, "nowhere", b"m", PublishOpts::default().mandatory())
        .await?;
    ch.settle().await?;
    ch.expect_no_return().await?;
    ch.get_expect(&unrouted, true, "m").await?;
    conn.close().await
}

/// A queue `q` dead-lettering to a fanout exchange `dlx` with a queue `dlq` on it.
async fn with_dlx(cx: &Ctx, ch: &Channel, extra: &[(&str, AMQPValue)]) -> R<(String, String)> {
    let dlx = cx.name("dlx");
    let dlq = cx.name("dlq");
    let q = cx.name("q");
    ch.exchange_declare(&dlx, "fanout").await?;
    ch.queue_declare(&dlq).await?;
    ch.queue_bind(&dlq, &dlx, "").await?;
    let mut args = vec![("x-dead-letter-exchange", ls(&dlx))];
    args.extend(extra.iter().cloned());
    ch.queue_declare_with(&q, qargs(&args)).await?;
    Ok((q, dlq))
}

/// The headers of a delivery.
fn headers(d: &Delivery) -> FieldTable {
    d.props.headers().clone().unwrap_or_default()
}

/// A string-valued header.
fn header_str(t: &FieldTable, key: &str) -> Option<String> {
    match t.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// The x-death entries of a delivery.
fn x_death(d: &Delivery) -> R<Vec<FieldTable>> {
    match headers(d).inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => Ok(a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::FieldTable(t) => Some(t.clone()),
                _ => None,
            })
            .collect()),
        other => Err(Fail::msg(format!(
            "expected an x-death array, got {other:?}"
        ))),
    }
}

/// Checks the first x-death entry's reason, queue and count.
fn check_death(d: &Delivery, reason: &str, queue: &str, count: i64) -> R {
    let deaths = x_death(d)?;
    ensure!(!deaths.is_empty(), "x-death is empty");
    let e = &deaths[0];
    expect_eq(
        "x-death reason",
        header_str(e, "reason").as_deref(),
        Some(reason),
    )?;
    expect_eq(
        "x-death queue",
        header_str(e, "queue").as_deref(),
        Some(queue),
    )?;
    let n = match e.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        other => return Err(Fail::msg(format!("x-death count {other:?}"))),
    };
    expect_eq("x-death count", n, count)?;
    ensure!(e.inner().contains_key("time"), "x-death lacks time");
    Ok(())
}

/// basic.reject with requeue=false dead-letters with reason rejected and x-first-death-*.
pub async fn dead_letter_on_reject(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[]).await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, false).await?;
    let dl = ch.poll_get(&dlq, true).await?;
    check_death(&dl, "rejected", &q, 1)?;
    let h = headers(&dl);
    expect_eq(
        "x-first-death-reason",
        header_str(&h, "x-first-death-reason").as_deref(),
        Some("rejected"),
    )?;
    expect_eq(
        "x-first-death-queue",
        header_str(&h, "x-first-death-queue").as_deref(),
        Some(q.as_str()),
    )?;
    expect_eq(
        "x-first-death-exchange",
        header_str(&h, "x-first-death-exchange").as_deref(),
        Some(""),
    )?;
    expect_eq("routing key", dl.routing_key.as_str(), q.as_str())?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// basic.nack with requeue=false dead-letters every message it names, in order.
pub async fn dead_letter_on_nack_multiple(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[]).await?;
    for b in ["m1", "m2", "m3"] {
        ch.publish("", &q, b).await?;
    }
    ch.settle().await?;
    ch.get_expect(&q, false, "m1").await?;
    ch.get_expect(&q, false, "m2").await?;
    ch.nack(2, true, false).await?;
    let d1 = ch.poll_get(&dlq, true).await?;
    expect_eq("first", d1.body.as_str(), "m1")?;
    check_death(&d1, "rejected", &q, 1)?;
    let d2 = ch.poll_get(&dlq, true).await?;
    expect_eq("second", d2.body.as_str(), "m2")?;
    ch.get_expect(&q, true, "m3").await?;
    conn.close().await
}

/// Requeueing does not dead-letter.
pub async fn requeue_does_not_dead_letter(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[]).await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, true).await?;
    let d = ch.get_expect(&q, true, "m").await?;
    ensure!(d.redelivered, "requeued message not redelivered");
    ch.get_empty(&dlq).await?;
    conn.close().await
}

/// x-dead-letter-routing-key replaces the routing key of dead-lettered messages.
pub async fn dead_letter_routing_key(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let dlx = cx.name("dlx");
    ch.exchange_declare(&dlx, "direct").await?;
    let dlq = cx.name("dlq");
    ch.queue_declare(&dlq).await?;
    ch.queue_bind(&dlq, &dlx, "dead").await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[
            ("x-dead-letter-exchange", ls(&dlx)),
            ("x-dead-letter-routing-key", ls("dead")),
        ]),
    )
    .await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.nack(d.delivery_tag, false, false).await?;
    let dl = ch.poll_get(&dlq, true).await?;
    expect_eq("routing key", dl.routing_key.as_str(), "dead")?;
    expect_eq("exchange", dl.exchange.as_str(), dlx.as_str())?;
    check_death(&dl, "rejected", &q, 1)?;
    conn.close().await
}

/// The default exchange as dead-letter exchange, with the key naming the target queue.
pub async fn dead_letter_via_default_exchange(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let dlq = cx.name("dlq");
    ch.queue_declare(&dlq).await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[
            ("x-dead-letter-exchange", ls("")),
            ("x-dead-letter-routing-key", ls(&dlq)),
        ]),
    )
    .await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, false).await?;
    let dl = ch.poll_get(&dlq, true).await?;
    check_death(&dl, "rejected", &q, 1)?;
    conn.close().await
}

/// x-max-length with the default drop-head: the oldest is dead-lettered with maxlen.
pub async fn max_length_drop_head_dead_letters(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[("x-max-length", AMQPValue::LongInt(2))]).await?;
    for b in ["m1", "m2", "m3"] {
        ch.publish("", &q, b).await?;
    }
    ch.settle().await?;
    let dl = ch.poll_get(&dlq, true).await?;
    expect_eq("dropped", dl.body.as_str(), "m1")?;
    check_death(&dl, "maxlen", &q, 1)?;
    ch.get_expect(&q, true, "m2").await?;
    ch.get_expect(&q, true, "m3").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// x-overflow reject-publish nacks the publish that would exceed the limit.
pub async fn overflow_reject_publish_nacks(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", ls("reject-publish")),
        ]),
    )
    .await?;
    ch.publish("", &q, "m1").await?;
    ch.publish("", &q, "m2").await?;
    let nacked = ch.wait_confirms(0, 2).await?;
    expect_eq("nacked", nacked, vec![2])?;
    ch.get_expect(&q, true, "m1").await?;
    ch.get_empty(&q).await?;
    ch.publish("", &q, "m3").await?;
    expect_eq("nacked after room", ch.wait_confirms(2, 3).await?, vec![])?;
    conn.close().await
}

/// x-overflow reject-publish does not dead-letter; reject-publish-dlx does, with maxlen.
pub async fn overflow_reject_publish_dlx(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(
        &cx,
        &ch,
        &[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", ls("reject-publish-dlx")),
        ],
    )
    .await?;
    ch.publish("", &q, "m1").await?;
    ch.publish("", &q, "m2").await?;
    expect_eq("nacked", ch.wait_confirms(0, 2).await?, vec![2])?;
    let dl = ch.poll_get(&dlq, true).await?;
    expect_eq("dead-lettered", dl.body.as_str(), "m2")?;
    check_death(&dl, "maxlen", &q, 1)?;
    ch.get_expect(&q, true, "m1").await?;
    conn.close().await
}

/// x-overflow reject-publish with a DLX set dead-letters nothing.
pub async fn overflow_reject_publish_no_dlx(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(
        &cx,
        &ch,
        &[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", ls("reject-publish")),
        ],
    )
    .await?;
    ch.publish("", &q, "m1").await?;
    ch.publish("", &q, "m2").await?;
    expect_eq("nacked", ch.wait_confirms(0, 2).await?, vec![2])?;
    ch.get_empty(&dlq).await?;
    conn.close().await
}

/// A message that dies twice in the same queue for the same reason: its x-death
/// entry counts 2 and keeps the first death's exchange (the message came in
/// through the default exchange, then back through the dead-letter exchange),
/// as `increment_xdeath_event_count/1` only bumps the count
/// (rabbit_dead_letter.erl:169 at v3.10.8).
pub async fn repeated_death_keeps_its_first_exchange(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let fx = cx.name("again");
    let q = cx.name("q");
    ch.exchange_declare(&fx, "fanout").await?;
    ch.queue_declare_with(
        &q,
        qargs(&[("x-dead-letter-exchange", ls(&fx))]).exclusive(),
    )
    .await?;
    ch.queue_bind(&q, &fx, "").await?;
    ch.publish("", &q, "m").await?;
    for _ in 0..2 {
        let d = ch.poll_get(&q, false).await?;
        ch.reject(d.delivery_tag, false).await?;
    }
    let d = ch.poll_get(&q, true).await?;
    check_death(&d, "rejected", &q, 2)?;
    expect_eq(
        "x-death exchange",
        header_str(&x_death(&d)?[0], "exchange").as_deref(),
        Some(""),
    )?;
    conn.close().await
}

/// x-message-ttl expires messages in the queue.
pub async fn queue_ttl_expires(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-message-ttl", AMQPValue::LongInt(100))]))
        .await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    ch.poll_count(&q, 0).await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// A message expired by x-message-ttl is dead-lettered with reason expired.
pub async fn queue_ttl_dead_letters(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[("x-message-ttl", AMQPValue::LongInt(100))]).await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let dl = ch.poll_get(&dlq, true).await?;
    check_death(&dl, "expired", &q, 1)?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// A per-message expiration dead-letters with original-expiration in x-death and no
/// expiration property left.
pub async fn message_expiration_dead_letters(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[]).await?;
    publish_props(
        &ch,
        "",
        &q,
        "m",
        BasicProperties::default().with_expiration("100".into()),
    )
    .await?;
    ch.settle().await?;
    let dl = ch.poll_get(&dlq, true).await?;
    check_death(&dl, "expired", &q, 1)?;
    expect_eq(
        "original-expiration",
        header_str(&x_death(&dl)?[0], "original-expiration").as_deref(),
        Some("100"),
    )?;
    ensure!(
        dl.props.expiration().is_none(),
        "dead-lettered message kept its expiration"
    );
    conn.close().await
}

/// An expired message at the head is dropped; one behind an unexpired head stays
/// counted until it reaches the head, and is dropped then.
pub async fn message_expiration_only_at_head(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    let clock = cx.name("clock");
    ch.queue_declare(&q).await?;
    ch.queue_declare(&clock).await?;
    let short = BasicProperties::default().with_expiration("50".into());
    publish_props(&ch, "", &q, "short1", short.clone()).await?;
    ch.publish("", &q, "keep1").await?;
    ch.settle().await?;
    ch.poll_count(&q, 1).await?;
    ch.get_expect(&q, true, "keep1").await?;
    ch.publish("", &q, "keep2").await?;
    publish_props(&ch, "", &q, "short2", short.clone()).await?;
    // Published after short2 with the same expiration: once it is gone, so is short2's time.
    publish_props(&ch, "", &clock, "tick", short).await?;
    ch.settle().await?;
    ch.poll_count(&clock, 0).await?;
    expect_eq("behind the head", ch.queue_passive(&q).await?.messages, 2)?;
    // Not basic.get: its message_count is where Warren diverges (see
    // get_count_excludes_expired_next).
    expect_eq("next", ch.poll_get(&q, true).await?.body.as_str(), "keep2")?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// basic.get-ok's message_count leaves out an expired message that the get brought
/// to the head.
pub async fn get_count_excludes_expired_next(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    let clock = cx.name("clock");
    ch.queue_declare(&q).await?;
    ch.queue_declare(&clock).await?;
    let short = BasicProperties::default().with_expiration("50".into());
    ch.publish("", &q, "keep").await?;
    publish_props(&ch, "", &q, "short", short.clone()).await?;
    publish_props(&ch, "", &clock, "tick", short).await?;
    ch.settle().await?;
    ch.poll_count(&clock, 0).await?;
    let d = ch.get_expect(&q, true, "keep").await?;
    expect_eq("message_count", d.message_count, 0)?;
    conn.close().await
}

/// x-message-ttl 0 drops a message at once when no consumer can take it.
pub async fn ttl_zero_without_consumer(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-message-ttl", AMQPValue::LongInt(0))]))
        .await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    ch.get_empty(&q).await?;
    expect_eq("ready", ch.queue_passive(&q).await?.messages, 0)?;
    conn.close().await
}

/// x-message-ttl 0 still delivers to a waiting consumer.
pub async fn ttl_zero_with_consumer(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-message-ttl", AMQPValue::LongInt(0))]))
        .await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ch.publish("", &q, "m").await?;
    ch.expect_deliver("m").await?;
    conn.close().await
}

/// The lower of x-message-ttl and expiration applies.
pub async fn ttl_lower_of_queue_and_message(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[("x-message-ttl", AMQPValue::LongInt(60_000))]).await?;
    publish_props(
        &ch,
        "",
        &q,
        "m",
        BasicProperties::default().with_expiration("50".into()),
    )
    .await?;
    ch.settle().await?;
    let dl = ch.poll_get(&dlq, true).await?;
    check_death(&dl, "expired", &q, 1)?;
    conn.close().await
}

/// A non-numeric expiration closes the channel with 406.
pub async fn invalid_expiration_text(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    publish_props(
        &ch,
        "",
        &q,
        "m",
        BasicProperties::default().with_expiration("soon".into()),
    )
    .await?;
    let close = ch.wait_close().await?;
    expect_eq("code", close.code, 406)?;
    cx.note(format!("close {}", close.text));
    let ch2 = conn.channel().await?;
    expect_eq("ready", ch2.queue_passive(&q).await?.messages, 0)?;
    conn.close().await
}

/// A negative expiration closes the channel with 406.
pub async fn invalid_expiration_negative(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    publish_props(
        &ch,
        "",
        &q,
        "m",
        BasicProperties::default().with_expiration("-5".into()),
    )
    .await?;
    let close = ch.wait_close().await?;
    expect_eq("code", close.code, 406)?;
    cx.note(format!("close {}", close.text));
    conn.close().await
}

/// x-expires deletes a queue nobody uses.
pub async fn queue_expires_when_unused(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    let x = cx.name("probe");
    ch.exchange_declare(&x, "fanout").await?;
    ch.queue_declare_with(&q, qargs(&[("x-expires", AMQPValue::LongInt(100))]))
        .await?;
    ch.poll_gone(&q, &x).await?;
    conn.close().await
}

/// x-expires does not delete a queue with a consumer.
pub async fn queue_expires_not_while_consumed(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-expires", AMQPValue::LongInt(100))]))
        .await?;
    let x = cx.name("probe");
    ch.exchange_declare(&x, "fanout").await?;
    let tag = ch.consume(&q).await?;
    // Longer than the lease: a bounded wait for something that must not happen.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    expect_eq("consumers", ch.queue_passive(&q).await?.consumers, 1)?;
    ch.cancel(&tag).await?;
    let other = conn.channel().await?;
    other.poll_gone(&q, &x).await?;
    conn.close().await
}

/// x-max-priority delivers higher priorities first, FIFO within one priority.
pub async fn priority_queue_order(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-max-priority", AMQPValue::LongInt(10))]))
        .await?;
    for (b, p) in [
        ("p1", 1),
        ("p5a", 5),
        ("none", 0),
        ("p5b", 5),
        ("p9", 9),
        ("p50", 50),
    ] {
        let props = if b == "none" {
            BasicProperties::default()
        } else {
            BasicProperties::default().with_priority(p)
        };
        publish_props(&ch, "", &q, b, props).await?;
    }
    ch.settle().await?;
    for b in ["p50", "p9", "p5a", "p5b", "p1", "none"] {
        ch.get_expect(&q, true, b).await?;
    }
    conn.close().await
}

/// Without x-max-priority, priority is ignored.
pub async fn priority_ignored_without_max(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    for (b, p) in [("p1", 1), ("p9", 9)] {
        publish_props(&ch, "", &q, b, BasicProperties::default().with_priority(p)).await?;
    }
    ch.settle().await?;
    ch.get_expect(&q, true, "p1").await?;
    ch.get_expect(&q, true, "p9").await?;
    conn.close().await
}

/// Single active consumer: only the first consumer gets messages, the next one after
/// it cancels.
pub async fn single_active_consumer(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("first").no_ack())
        .await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("second").no_ack())
        .await?;
    for b in ["m1", "m2", "m3"] {
        ch.publish("", &q, b).await?;
    }
    let ds = ch.expect_bodies(&["m1", "m2", "m3"]).await?;
    for d in &ds {
        expect_eq("consumer", d.consumer_tag.as_str(), "first")?;
    }
    ch.cancel("first").await?;
    ch.publish("", &q, "m4").await?;
    let d = ch.expect_deliver("m4").await?;
    expect_eq("consumer after cancel", d.consumer_tag.as_str(), "second")?;
    conn.close().await
}

/// Single active consumer: unacked messages of the cancelled consumer go to the next
/// when its channel closes.
pub async fn single_active_consumer_takes_over(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let a = conn.channel().await?;
    let b = conn.channel().await?;
    a.confirm_select().await?;
    let q = cx.name("q");
    a.queue_declare_with(
        &q,
        qargs(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await?;
    a.consume_with(&q, ConsumeOpts::default().tag("a")).await?;
    b.consume_with(&q, ConsumeOpts::default().tag("b")).await?;
    a.publish("", &q, "m1").await?;
    a.expect_deliver("m1").await?;
    b.expect_no_delivery().await?;
    a.close().await?;
    let d = b.expect_deliver("m1").await?;
    ensure!(d.redelivered, "takeover delivery not marked redelivered");
    conn.close().await
}

/// Consumer priorities: the higher x-priority consumer gets the messages.
pub async fn consumer_priority(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let mut low = ConsumeOpts::default().tag("low").no_ack();
    low.args = table(&[("x-priority", AMQPValue::LongInt(1))]);
    let mut high = ConsumeOpts::default().tag("high").no_ack();
    high.args = table(&[("x-priority", AMQPValue::LongInt(10))]);
    ch.consume_with(&q, low).await?;
    ch.consume_with(&q, high).await?;
    for b in ["m1", "m2", "m3"] {
        ch.publish("", &q, b).await?;
    }
    for d in ch.expect_bodies(&["m1", "m2", "m3"]).await? {
        expect_eq("consumer", d.consumer_tag.as_str(), "high")?;
    }
    conn.close().await
}

/// Consumer priorities: a blocked high-priority consumer (prefetch full) lets the lower
/// one take messages.
pub async fn consumer_priority_blocked_falls_through(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let hi = conn.channel().await?;
    let lo = conn.channel().await?;
    let q = cx.name("q");
    hi.queue_declare(&q).await?;
    hi.qos(1, false).await?;
    let mut high = ConsumeOpts::default().tag("high");
    high.args = table(&[("x-priority", AMQPValue::LongInt(10))]);
    hi.consume_with(&q, high).await?;
    let mut low = ConsumeOpts::default().tag("low").no_ack();
    low.args = table(&[("x-priority", AMQPValue::LongInt(1))]);
    lo.consume_with(&q, low).await?;
    hi.publish("", &q, "m1").await?;
    hi.expect_deliver("m1").await?;
    hi.publish("", &q, "m2").await?;
    lo.expect_deliver("m2").await?;
    conn.close().await
}

/// Direct reply-to: a request carrying reply_to amq.rabbitmq.reply-to is answered to
/// the requester's no-ack consumer.
pub async fn direct_reply_to_round_trip(cx: Ctx) -> R {
    let client = cx.connect().await?;
    let cch = client.channel().await?;
    let server = cx.connect().await?;
    let sch = server.channel().await?;
    let q = cx.name("rpc");
    sch.queue_declare(&q).await?;
    sch.consume_with(&q, ConsumeOpts::default().no_ack())
        .await?;
    cch.consume_with(
        "amq.rabbitmq.reply-to",
        ConsumeOpts::default().tag("replies").no_ack(),
    )
    .await?;
    publish_props(
        &cch,
        "",
        &q,
        "request",
        BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("c1".into()),
    )
    .await?;
    let req = sch.expect_deliver("request").await?;
    let reply_to = req
        .props
        .reply_to()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    ensure!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "reply_to {reply_to:?} not rewritten"
    );
    publish_props(
        &sch,
        "",
        &reply_to,
        "response",
        BasicProperties::default().with_correlation_id("c1".into()),
    )
    .await?;
    let resp = cch.expect_deliver("response").await?;
    expect_eq("consumer", resp.consumer_tag.as_str(), "replies")?;
    server.close().await?;
    client.close().await
}

/// Direct reply-to: publishing with it and no reply consumer closes the channel.
pub async fn direct_reply_to_without_consumer(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("rpc");
    ch.queue_declare(&q).await?;
    publish_props(
        &ch,
        "",
        &q,
        "request",
        BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
    )
    .await?;
    let close = ch.wait_close().await?;
    expect_eq("code", close.code, 406)?;
    ensure!(
        close.text.contains("fast reply consumer does not exist"),
        "close text {:?}",
        close.text
    );
    conn.close().await
}

/// Direct reply-to: the reply consumer must be no-ack.
pub async fn direct_reply_to_needs_no_ack(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let close = ch
        .consume("amq.rabbitmq.reply-to")
        .await
        .channel_closed(406)?;
    ensure!(
        close.text.contains("reply consumer cannot acknowledge"),
        "close text {:?}",
        close.text
    );
    conn.close().await
}

/// Quorum queues refuse the flags and arguments RabbitMQ 3.10 refuses, with 406.
pub async fn quorum_declare_checks(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let quorum = || qargs(&[("x-queue-type", ls("quorum"))]);
    let cases: Vec<(&str, QueueOpts)> = vec![
        ("non-durable", quorum()),
        ("exclusive", quorum().durable().exclusive()),
        ("auto-delete", quorum().durable().auto_delete()),
        (
            "max-priority",
            quorum()
                .durable()
                .arg("x-max-priority", AMQPValue::LongInt(5)),
        ),
    ];
    for (what, opts) in cases {
        let ch = conn.channel().await?;
        let q = cx.name(&format!("qq-{what}"));
        ch.queue_declare_with(&q, opts).await.channel_closed(406)?;
    }
    conn.close().await
}

/// A quorum queue counts redeliveries in x-delivery-count.
pub async fn quorum_delivery_count(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("qq");
    ch.queue_declare_with(&q, qargs(&[("x-queue-type", ls("quorum"))]).durable())
        .await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let d = ch.poll_get(&q, false).await?;
    expect_eq(
        "first x-delivery-count",
        headers(&d).inner().get("x-delivery-count").cloned(),
        Some(AMQPValue::LongLongInt(0)),
    )?;
    ch.reject(d.delivery_tag, true).await?;
    let d = ch.poll_get(&q, false).await?;
    ensure!(d.redelivered, "requeued message not redelivered");
    expect_eq(
        "x-delivery-count after a requeue",
        headers(&d).inner().get("x-delivery-count").cloned(),
        Some(AMQPValue::LongLongInt(1)),
    )?;
    ch.ack(d.delivery_tag, false).await?;
    conn.close().await
}

/// A durable queue keeps an unacked persistent message across the consumer's
/// connection closing; it is redelivered.
pub async fn durable_unacked_redelivered_after_close(cx: Ctx) -> R {
    let q = cx.name("durable");
    {
        let (conn, ch) = open_c(&cx).await?;
        ch.queue_declare_with(&q, QueueOpts::default().durable())
            .await?;
        publish_props(
            &ch,
            "",
            &q,
            "persistent",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
        ch.settle().await?;
        let d = ch.get_expect(&q, false, "persistent").await?;
        ensure!(!d.redelivered, "first delivery redelivered");
        conn.close().await?;
    }
    let (conn, ch) = open(&cx).await?;
    let d = ch.poll_get(&q, false).await?;
    ensure!(d.redelivered, "not marked redelivered");
    expect_eq("delivery mode", *d.props.delivery_mode(), Some(2))?;
    ch.ack(d.delivery_tag, false).await?;
    conn.close().await
}

/// A durable queue's declare-ok counts persistent and transient messages alike, and
/// redeclaring it from another connection sees them.
pub async fn durable_declare_counts(cx: Ctx) -> R {
    let q = cx.name("durable");
    let (conn, ch) = open_c(&cx).await?;
    ch.queue_declare_with(&q, QueueOpts::default().durable())
        .await?;
    publish_props(
        &ch,
        "",
        &q,
        "p",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await?;
    ch.publish("", &q, "t").await?;
    ch.settle().await?;
    conn.close().await?;
    let (conn, ch) = open(&cx).await?;
    let ok = ch
        .queue_declare_with(&q, QueueOpts::default().durable())
        .await?;
    expect_eq("messages", ok.messages, 2)?;
    ch.queue_declare_with(&q, QueueOpts::default())
        .await
        .channel_closed(406)?;
    conn.close().await
}

/// An exclusive queue is never durable: redeclaring it with the other durable flag is ok,
/// and it is gone once its connection closes.
pub async fn exclusive_never_durable(cx: Ctx) -> R {
    let q = cx.name("excl");
    let (conn, ch) = open(&cx).await?;
    ch.queue_declare_with(&q, QueueOpts::default().durable().exclusive())
        .await?;
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    ch.queue_declare_with(&q, QueueOpts::default().durable().exclusive())
        .await?;
    conn.close().await?;
    let (conn, ch) = open(&cx).await?;
    ch.queue_passive(&q).await.channel_closed(404)?;
    conn.close().await
}

/// A passive declare renews an x-expires lease: queue.declare counts as use.
pub async fn queue_expires_renewed_by_passive_declare(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-expires", AMQPValue::LongInt(1000))]))
        .await?;
    // Six passive declares 250 ms apart: 1.5 s in all, longer than a lease, each
    // renewing it with 750 ms to spare, so that a loaded machine's late wake-ups
    // do not let it lapse.
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        ch.queue_passive(&q).await?;
    }
    conn.close().await
}

/// `#` between words matches zero words too: `a.#.b` routes `a.b`.
pub async fn topic_hash_between_words(cx: Ctx) -> R {
    let got = topic_routes(&cx, &["a.#.b"], &["a.b", "a.x.b", "a.x.y.b", "a.b.c", "b"]).await?;
    expect_eq(
        "routed",
        got,
        vec![
            "a.b".to_string(),
            "a.x.b".to_string(),
            "a.x.y.b".to_string(),
        ],
    )
}

/// Headers match integer values too, and an x-match any binding with no other
/// arguments matches nothing.
pub async fn headers_integer_values(cx: Ctx) -> R {
    let args = table(&[("x-match", ls("all")), ("n", AMQPValue::LongInt(7))]);
    let got = headers_routes(
        &cx,
        args,
        vec![
            ("seven", table(&[("n", AMQPValue::LongInt(7))])),
            ("eight", table(&[("n", AMQPValue::LongInt(8))])),
            ("text", table(&[("n", ls("7"))])),
        ],
    )
    .await?;
    expect_eq("routed", got, vec!["seven".to_string()])
}

/// An alternate exchange that does not exist: the message is unroutable and a mandatory
/// one is returned.
pub async fn alternate_exchange_missing(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let x = cx.name("x");
    let o = ExchangeOpts {
        args: table(&[("alternate-exchange", ls(&cx.name("no-such-ae")))]),
        ..Default::default()
    };
    ch.exchange_declare_with(&x, "direct", o).await?;
    ch.publish_with(&x, "k", b"m", PublishOpts::default().mandatory())
        .await?;
    let r = ch.returned().await?;
    expect_eq("return code", r.code, 312)?;
    ch.settle().await?;
    conn.close().await
}

/// A message dead-lettered twice through different queues carries two x-death
/// entries, the latest first, and x-first-death-* names the first.
pub async fn dead_letter_twice_two_entries(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let last = cx.name("last");
    ch.queue_declare(&last).await?;
    let second = cx.name("second");
    ch.queue_declare_with(
        &second,
        qargs(&[
            ("x-dead-letter-exchange", ls("")),
            ("x-dead-letter-routing-key", ls(&last)),
        ]),
    )
    .await?;
    let first = cx.name("first");
    ch.queue_declare_with(
        &first,
        qargs(&[
            ("x-dead-letter-exchange", ls("")),
            ("x-dead-letter-routing-key", ls(&second)),
            ("x-message-ttl", AMQPValue::LongInt(50)),
        ]),
    )
    .await?;
    ch.publish("", &first, "m").await?;
    ch.settle().await?;
    let d = ch.poll_get(&second, false).await?;
    ch.reject(d.delivery_tag, false).await?;
    let dl = ch.poll_get(&last, true).await?;
    let deaths = x_death(&dl)?;
    expect_eq("x-death entries", deaths.len(), 2)?;
    check_death(&dl, "rejected", &second, 1)?;
    expect_eq(
        "older entry queue",
        header_str(&deaths[1], "queue").as_deref(),
        Some(first.as_str()),
    )?;
    expect_eq(
        "x-first-death-reason",
        header_str(&headers(&dl), "x-first-death-reason").as_deref(),
        Some("expired"),
    )?;
    conn.close().await
}

/// A message republished with its x-death and dead-lettered again by the same queue
/// for the same reason counts 2 in one entry.
pub async fn dead_letter_count_increments(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[]).await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, false).await?;
    let dl = ch.poll_get(&dlq, true).await?;
    publish_props(&ch, "", &q, "m", dl.props.clone()).await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, false).await?;
    let dl = ch.poll_get(&dlq, true).await?;
    expect_eq("x-death entries", x_death(&dl)?.len(), 1)?;
    check_death(&dl, "rejected", &q, 2)?;
    conn.close().await
}

/// A dead-letter exchange that does not exist: the message is dropped, nothing fails.
pub async fn dead_letter_exchange_missing(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[("x-dead-letter-exchange", ls(&cx.name("no-such-dlx")))]),
    )
    .await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, false).await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// x-max-length without a dead-letter exchange drops the oldest.
pub async fn max_length_drops_oldest(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-max-length", AMQPValue::LongInt(2))]))
        .await?;
    for b in ["m1", "m2", "m3", "m4"] {
        ch.publish("", &q, b).await?;
    }
    ch.settle().await?;
    expect_eq("ready", ch.queue_passive(&q).await?.messages, 2)?;
    ch.get_expect(&q, true, "m3").await?;
    ch.get_expect(&q, true, "m4").await?;
    conn.close().await
}

/// x-max-length-bytes counts body bytes.
pub async fn max_length_bytes(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-max-length-bytes", AMQPValue::LongInt(10))]))
        .await?;
    for b in ["aaaa", "bbbb", "cccc"] {
        ch.publish("", &q, b).await?;
    }
    ch.settle().await?;
    expect_eq("ready", ch.queue_passive(&q).await?.messages, 2)?;
    ch.get_expect(&q, true, "bbbb").await?;
    ch.get_expect(&q, true, "cccc").await?;
    conn.close().await
}

/// x-max-length 0 with reject-publish nacks every publish.
pub async fn max_length_zero_reject_publish(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[
            ("x-max-length", AMQPValue::LongInt(0)),
            ("x-overflow", ls("reject-publish")),
        ]),
    )
    .await?;
    ch.publish("", &q, "m1").await?;
    ch.publish("", &q, "m2").await?;
    expect_eq("nacked", ch.wait_confirms(0, 2).await?, vec![1, 2])?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// A message routed to two queues, one full with reject-publish, is nacked.
pub async fn reject_publish_one_of_two_queues(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let x = cx.name("fan");
    ch.exchange_declare(&x, "fanout").await?;
    let full = cx.name("full");
    let open_q = cx.name("open");
    ch.queue_declare_with(
        &full,
        qargs(&[
            ("x-max-length", AMQPValue::LongInt(0)),
            ("x-overflow", ls("reject-publish")),
        ]),
    )
    .await?;
    ch.queue_declare(&open_q).await?;
    ch.queue_bind(&full, &x, "").await?;
    ch.queue_bind(&open_q, &x, "").await?;
    ch.publish(&x, "", "m").await?;
    expect_eq("nacked", ch.wait_confirms(0, 1).await?, vec![1])?;
    ch.get_expect(&open_q, true, "m").await?;
    conn.close().await
}

/// A priority queue puts a requeued message back by its priority.
pub async fn priority_requeue_keeps_order(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(&q, qargs(&[("x-max-priority", AMQPValue::LongInt(5))]))
        .await?;
    for (b, p) in [("low", 1), ("high", 5)] {
        publish_props(&ch, "", &q, b, BasicProperties::default().with_priority(p)).await?;
    }
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "high").await?;
    ch.reject(d.delivery_tag, true).await?;
    let d = ch.get_expect(&q, true, "high").await?;
    ensure!(d.redelivered, "requeued message not redelivered");
    ch.get_expect(&q, true, "low").await?;
    conn.close().await
}

/// Redeclaring a queue with a different x-single-active-consumer is refused with 406.
pub async fn single_active_consumer_equivalence(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await?;
    ch.queue_declare(&q).await.channel_closed(406)?;
    conn.close().await
}

/// Invalid queue arguments are refused with 406: a negative TTL or length, a zero
/// x-expires.
pub async fn invalid_queue_arguments(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let cases: Vec<(&str, QueueOpts)> = vec![
        ("ttl", qargs(&[("x-message-ttl", AMQPValue::LongInt(-1))])),
        ("expires", qargs(&[("x-expires", AMQPValue::LongInt(0))])),
        (
            "max-length",
            qargs(&[("x-max-length", AMQPValue::LongInt(-1))]),
        ),
    ];
    for (what, opts) in cases {
        let ch = conn.channel().await?;
        let q = cx.name(&format!("bad-{what}"));
        ch.queue_declare_with(&q, opts).await.channel_closed(406)?;
    }
    conn.close().await
}

/// A durable queue's non-persistent message also survives its publisher's connection
/// (no restart): durability only matters across a broker restart.
pub async fn durable_transient_message_survives_close(cx: Ctx) -> R {
    let q = cx.name("durable");
    let (conn, ch) = open_c(&cx).await?;
    ch.queue_declare_with(&q, QueueOpts::default().durable())
        .await?;
    ch.publish("", &q, "transient").await?;
    ch.settle().await?;
    conn.close().await?;
    let (conn, ch) = open(&cx).await?;
    let d = ch.get_expect(&q, true, "transient").await?;
    ensure!(!d.redelivered, "never-delivered message marked redelivered");
    conn.close().await
}

/// An unknown x-overflow mode is refused with 406 `... in vhost '/': invalid_overflow`.
pub async fn invalid_overflow_text(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("bad-overflow");
    let close = ch
        .queue_declare_with(&q, qargs(&[("x-overflow", ls("sometimes"))]))
        .await
        .channel_closed(406)?;
    ensure!(
        close.text.ends_with(": invalid_overflow"),
        "close text {:?}",
        close.text
    );
    conn.close().await
}

/// Unbinding an exchange from another stops routing through it.
pub async fn e2e_unbind_stops_routing(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let a = cx.name("xa");
    let b = cx.name("xb");
    ch.exchange_declare(&a, "direct").await?;
    ch.exchange_declare(&b, "fanout").await?;
    ch.exchange_bind(&b, &a, "k").await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind(&q, &b, "").await?;
    ch.publish(&a, "k", "before").await?;
    ch.exchange_unbind(&b, &a, "k").await?;
    ch.publish(&a, "k", "after").await?;
    ch.settle().await?;
    ch.get_expect(&q, true, "before").await?;
    ch.get_empty(&q).await?;
    conn.close().await
}

/// An x-match value other than all, any, all-with-x and any-with-x is refused: the
/// channel closes with 406 `PRECONDITION_FAILED - Invalid x-match field value
/// <<"some">>; expected all, any, all-with-x, or any-with-x` (50.20).
pub async fn headers_invalid_x_match(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let x = cx.name("headers");
    ch.exchange_declare(&x, "headers").await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.queue_bind_args(&q, &x, "", table(&[("x-match", ls("some"))]))
        .await
        .channel_closed(406)?;
    conn.close().await
}

/// Dead-lettering keeps the message's own headers and properties beside x-death.
pub async fn dead_letter_keeps_headers(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let (q, dlq) = with_dlx(&cx, &ch, &[]).await?;
    let props = BasicProperties::default()
        .with_headers(table(&[("app", ls("mine"))]))
        .with_correlation_id("c-1".into())
        .with_content_type("text/plain".into());
    publish_props(&ch, "", &q, "m", props).await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, false, "m").await?;
    ch.reject(d.delivery_tag, false).await?;
    let dl = ch.poll_get(&dlq, true).await?;
    expect_eq(
        "app header",
        header_str(&headers(&dl), "app").as_deref(),
        Some("mine"),
    )?;
    expect_eq(
        "correlation_id",
        dl.props.correlation_id().as_ref().map(|s| s.to_string()),
        Some("c-1".to_string()),
    )?;
    conn.close().await
}

/// A message not yet expired is delivered with its expiration property intact.
pub async fn expiration_property_delivered(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    publish_props(
        &ch,
        "",
        &q,
        "m",
        BasicProperties::default().with_expiration("60000".into()),
    )
    .await?;
    ch.settle().await?;
    let d = ch.get_expect(&q, true, "m").await?;
    expect_eq(
        "expiration",
        d.props.expiration().as_ref().map(|s| s.to_string()),
        Some("60000".to_string()),
    )?;
    conn.close().await
}

/// Consumers of equal x-priority take turns.
pub async fn consumer_priority_ties_round_robin(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    for tag in ["p5a", "p5b"] {
        let mut o = ConsumeOpts::default().tag(tag).no_ack();
        o.args = table(&[("x-priority", AMQPValue::LongInt(5))]);
        ch.consume_with(&q, o).await?;
    }
    let mut low = ConsumeOpts::default().tag("p1").no_ack();
    low.args = table(&[("x-priority", AMQPValue::LongInt(1))]);
    ch.consume_with(&q, low).await?;
    for b in ["m1", "m2", "m3", "m4"] {
        ch.publish("", &q, b).await?;
    }
    let ds = ch.expect_bodies(&["m1", "m2", "m3", "m4"]).await?;
    let tags: Vec<&str> = ds.iter().map(|d| d.consumer_tag.as_str()).collect();
    expect_eq("consumers", tags, vec!["p5a", "p5b", "p5a", "p5b"])?;
    conn.close().await
}

/// basic.get works on a single-active-consumer queue without a consumer.
pub async fn single_active_consumer_get(cx: Ctx) -> R {
    let (conn, ch) = open_c(&cx).await?;
    let q = cx.name("q");
    ch.queue_declare_with(
        &q,
        qargs(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await?;
    ch.publish("", &q, "m").await?;
    ch.settle().await?;
    ch.get_expect(&q, true, "m").await?;
    conn.close().await
}

/// A quorum queue refuses a consumer on a channel with a global prefetch: RabbitMQ
/// closes the connection with 540 NOT_IMPLEMENTED.
pub async fn quorum_refuses_global_qos(cx: Ctx) -> R {
    let (_conn, ch) = open(&cx).await?;
    let q = cx.name("qq");
    ch.queue_declare_with(&q, qargs(&[("x-queue-type", ls("quorum"))]).durable())
        .await?;
    ch.qos(10, true).await?;
    ch.consume(&q).await.connection_closed(540)?;
    Ok(())
}

/// Direct reply-to with requester and responder on one channel.
pub async fn direct_reply_to_same_channel(cx: Ctx) -> R {
    let (conn, ch) = open(&cx).await?;
    let q = cx.name("rpc");
    ch.queue_declare(&q).await?;
    ch.consume_with(
        "amq.rabbitmq.reply-to",
        ConsumeOpts::default().tag("replies").no_ack(),
    )
    .await?;
    publish_props(
        &ch,
        "",
        &q,
        "request",
        BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
    )
    .await?;
    let req = ch.poll_get(&q, true).await?;
    let reply_to = req
        .props
        .reply_to()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    ch.publish("", &reply_to, "response").await?;
    let d = ch.expect_deliver("response").await?;
    expect_eq("consumer", d.consumer_tag.as_str(), "replies")?;
    conn.close().await
}
