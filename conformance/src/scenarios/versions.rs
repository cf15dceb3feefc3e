//! What differs between RabbitMQ releases. Each scenario states its expected
//! outcome per version (the target's, from `connection.start`), and each
//! expectation cites the rabbitmq-server source line it comes from, at the tag the
//! profile follows (`docs/rabbitmq-versions.md` has the whole table).

use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use amq_protocol::types::AMQPValue;
use warren_broker::{DeprecatedFeature, RabbitVersion as V};

use crate::ctx::{expect_eq, ConsumeOpts, Ctx, PublishOpts, QueueOpts};
use crate::driver::{ConnectOpts, Expect, R};
use crate::ensure;

/// `connection.start` names RabbitMQ and the release, as every RabbitMQ does
/// (`rabbit_reader:server_properties/1`).
pub async fn start_names_rabbitmq_and_release(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let start = conn
        .start
        .clone()
        .expect("handshake keeps connection.start");
    let text = |k: &str| match start.server_properties.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => String::new(),
    };
    expect_eq("product", text("product").as_str(), "RabbitMQ")?;
    let version = cx.version();
    ensure!(
        V::from_release(&text("version")) == Some(version),
        "version {:?} is not of the {version} series",
        text("version")
    );
    // Not the exact release: the patch level is the installation's.
    cx.note(format!("start: product RabbitMQ, series {version}"));
    conn.close().await
}

/// Whether the target permits `feature`: its configuration's override, else
/// `default` (the phase the version's source gives it).
fn permitted(cx: &Ctx, feature: DeprecatedFeature, default: bool) -> bool {
    cx.permitted(feature).unwrap_or(default)
}

/// `queue.declare` of a queue neither durable nor exclusive.
pub async fn transient_non_exclusive_queue(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("transient");
    let v = cx.version();
    // rabbit_amqqueue.erl:115 at v4.3.5: denied_by_default; 3.13.7 (:117) to
    // 4.2.9 (:116): permitted_by_default; before 3.13 not a deprecated feature.
    let default = v < V::V4_3;
    let allowed =
        v < V::V3_13 || permitted(&cx, DeprecatedFeature::TransientNonexclQueues, default);
    let res = ch.queue_declare(&q).await;
    if allowed {
        res?;
        cx.note("transient non-exclusive queue declared");
        return conn.close().await;
    }
    // rabbit_amqqueue.erl:239 at v4.3.5: {protocol_error, internal_error, "~ts",
    // [Warning]}; the warning from rabbit_deprecated_features.erl:416.
    let close = res.connection_closed(541)?;
    let expected = if default {
        "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
         Its use is not permitted per the configuration"
    } else {
        "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
         By default, this feature is not permitted anymore.\n"
    };
    ensure!(
        close.text.starts_with(expected),
        "reply text {:?} does not start with {expected:?}",
        close.text
    );
    Ok(())
}

/// A consumer on a quorum queue on a channel with a global prefetch: refused
/// (540) while `global_qos` is honoured; taken where it is denied (4.3), since
/// the qos is then per consumer.
pub async fn global_qos_on_a_quorum_queue(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("qq");
    let quorum = quorum_queue();
    ch.queue_declare_with(&q, quorum).await?;
    ch.qos(10, true).await?;
    let v = cx.version();
    // rabbit_channel.erl:237 at v4.3.5 (denied_by_default), taken as global=false
    // at :1445; permitted_by_default from 3.13.7 (:243) to 4.2.9 (:240).
    let global = v < V::V3_13 || permitted(&cx, DeprecatedFeature::GlobalQos, v < V::V4_3);
    let res = ch.consume(&q).await;
    if global {
        // rabbit_channel.erl:1479 at v3.10.8 … rabbit_quorum_queue.erl:1233 at v4.3.5.
        let close = res.connection_closed(540)?;
        ensure!(
            close.text.ends_with("does not support global qos"),
            "reply text {:?}",
            close.text
        );
        return Ok(());
    }
    res?;
    ch.publish("", &q, "m1").await?;
    ch.expect_deliver("m1").await?;
    conn.close().await
}

/// `x-queue-version` 1: taken until 4.2, refused by 4.3, which removed CQv1.
pub async fn queue_version_1(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("cqv1");
    let opts = QueueOpts::default()
        .exclusive()
        .arg("x-queue-version", AMQPValue::LongInt(1));
    let res = ch.queue_declare_with(&q, opts).await;
    if cx.version() < V::V4_3 {
        // rabbit_amqqueue.erl:1086 at v3.10.8 … :1193 at v4.2.9: 1 and 2.
        res?;
        return conn.close().await;
    }
    // rabbit_amqqueue.erl:1180 at v4.3.5: only 2.
    let close = res.channel_closed(406)?;
    expect_eq(
        "reply text",
        close.text.as_str(),
        &format!(
            "PRECONDITION_FAILED - invalid arg 'x-queue-version' for queue '{q}' in vhost \
             '{}': \"unsupported queue version '1'\"",
            cx.url().vhost
        ),
    )?;
    Ok(())
}

/// An `x-queue-mode` RabbitMQ does not know: refused until 4.2, ignored by 4.3.
pub async fn queue_mode_unknown(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("moded");
    let opts = QueueOpts::default()
        .exclusive()
        .arg("x-queue-mode", AMQPValue::LongString("bogus".into()));
    let res = ch.queue_declare_with(&q, opts).await;
    if cx.version() >= V::V4_3 {
        // rabbit_amqqueue.erl:950 at v4.3.5: no validator left for x-queue-mode.
        res?;
        return conn.close().await;
    }
    // rabbit_amqqueue.erl:1071 at v3.10.8 (check_queue_mode/2).
    let close = res.channel_closed(406)?;
    expect_eq(
        "reply text",
        close.text.as_str(),
        &format!(
            "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue '{q}' in vhost \
             '{}': \"unsupported queue mode 'bogus'\"",
            cx.url().vhost
        ),
    )?;
    Ok(())
}

/// `connection.tune-ok` with `frame_max` 4096: the minimum until 4.0, below the
/// 8192 minimum from 4.1 (the socket is dropped).
pub async fn frame_max_4096(cx: Ctx) -> R {
    let opts = ConnectOpts {
        frame_max: Some(4096),
        ..Default::default()
    };
    let res = cx.connect_with(opts).await;
    if cx.version() >= V::V4_1 {
        // rabbit_framing.hrl:14 at v4.1.8: FRAME_MIN_SIZE 8192; checked at
        // rabbit_reader.erl:1261.
        return res.dropped();
    }
    // amqp-rabbitmq-0.9.1.json:77 at v3.10.8: FRAME-MIN-SIZE 4096.
    res?.close().await
}

/// The smallest message refused when no `max_message_size` is configured.
pub async fn default_max_message_size(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("big");
    ch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    // deps/rabbit/Makefile:112 at v4.0.9: 16777216; :119 at v3.10.8: 134217728.
    let max: u64 = if cx.version() >= V::V4_0 {
        16 * 1024 * 1024
    } else {
        128 * 1024 * 1024
    };
    // The whole body: RabbitMQ 3.10 checks the size of the assembled message
    // (rabbit_channel:check_msg_size/2), so it answers only once the body is in.
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: q.as_str().into(),
        mandatory: false,
        immediate: false,
    }));
    let mut bytes = warren_frames::method(ch.id, publish);
    bytes.extend(warren_frames::header(
        ch.id,
        max + 1,
        BasicProperties::default(),
    ));
    conn.send_raw(&bytes).await?;
    let chunk = vec![b'x'; conn.tune.frame_max.min(131_072) as usize - 8];
    let mut sent = 0u64;
    while sent < max + 1 {
        let n = (chunk.len() as u64).min(max + 1 - sent) as usize;
        // A broker may refuse the message before its body ends and stop reading.
        if conn
            .send_raw(&warren_frames::body(ch.id, &chunk[..n]))
            .await
            .is_err()
        {
            break;
        }
        sent += n as u64;
    }
    let close = ch.wait_close().await?;
    expect_eq("close code", close.code, 406)?;
    expect_eq(
        "reply text",
        close.text.as_str(),
        &format!(
            "PRECONDITION_FAILED - message size {} is larger than configured max size {max}",
            max + 1
        ),
    )?;
    conn.close().await
}

/// A responder's mandatory reply to a direct reply-to address whose requester
/// is there: delivered, and also returned 312 NO_ROUTE until 4.1 (the reply is
/// not a routed queue); delivered only, from 4.2 (the address is a queue).
pub async fn mandatory_direct_reply(cx: Ctx) -> R {
    let client = cx.connect().await?;
    let cch = client.channel().await?;
    let server = cx.connect().await?;
    let sch = server.channel().await?;
    let q = cx.name("rpc");
    sch.queue_declare_with(&q, QueueOpts::default().exclusive())
        .await?;
    cch.consume_with(
        "amq.rabbitmq.reply-to",
        ConsumeOpts::default().tag("replies").no_ack(),
    )
    .await?;
    let props = BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into());
    cch.publish_with("", &q, b"request", PublishOpts::default().props(props))
        .await?;
    let req = sch.poll_get(&q, true).await?;
    let reply_to = req
        .props
        .reply_to()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    sch.publish_with("", &reply_to, b"reply", PublishOpts::default().mandatory())
        .await?;
    cch.expect_deliver("reply").await?;
    if cx.version() >= V::V4_2 {
        // rabbit_db_queue.erl:550 and rabbit_volatile_queue.erl:99 at v4.2.9.
        sch.expect_no_return().await?;
    } else {
        // rabbit_exchange.erl:417-420 at v3.10.8; rabbit_channel.erl:1248 at v4.1.8.
        let r = sch.returned().await?;
        expect_eq("return", (r.code, r.text.as_str()), (312, "NO_ROUTE"))?;
    }
    server.close().await?;
    client.close().await
}

/// How many returns a quorum queue message survives without `x-delivery-limit`:
/// any number until 3.13, 20 from 4.0.
pub async fn quorum_default_delivery_limit(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("poison");
    let quorum = quorum_queue();
    ch.queue_declare_with(&q, quorum).await?;
    ch.publish("", &q, "m").await?;
    for _ in 0..20 {
        let d = ch.poll_get(&q, false).await?;
        ch.reject(d.delivery_tag, true).await?;
    }
    // The 21st return.
    let d = ch.poll_get(&q, false).await?;
    ch.reject(d.delivery_tag, true).await?;
    let kept = if cx.version() >= V::V4_0 {
        // rabbit_quorum_queue.erl:111 at v4.0.9: ?DEFAULT_DELIVERY_LIMIT 20; the
        // 21st return is over it and drops the message (no dead-letter exchange).
        // Only Warren runs this branch here, where the drop is synchronous.
        let left = ch.get(&q, true).await?;
        ensure!(left.is_none(), "the message survived 21 returns: {left:?}");
        false
    } else {
        // No limit: the message comes back (asynchronously on RabbitMQ).
        ch.poll_get(&q, true).await?;
        true
    };
    cx.note(format!(
        "after 21 returns: {}",
        if kept { "kept" } else { "dropped" }
    ));
    ch.queue_delete(&q).await?;
    conn.close().await
}

/// `x-queue-master-locator` on a classic queue: taken until 4.2, refused by 4.3
/// (deprecated feature `queue_master_locator`, denied by default).
pub async fn queue_master_locator(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("located");
    let opts = QueueOpts::default().exclusive().arg(
        "x-queue-master-locator",
        AMQPValue::LongString("client-local".into()),
    );
    let res = ch.queue_declare_with(&q, opts).await;
    let v = cx.version();
    // rabbit_queue_location.erl:26: permitted_by_default at v4.0.9 to v4.2.9,
    // denied_by_default at v4.3.5; not a deprecated feature before 4.0.
    let allowed = v < V::V4_0 || permitted(&cx, DeprecatedFeature::QueueMasterLocator, v < V::V4_3);
    if allowed {
        res?;
        return conn.close().await;
    }
    // rabbit_classic_queue.erl:143 at v4.3.5.
    let close = res.connection_closed(541)?;
    ensure!(
        close
            .text
            .starts_with("INTERNAL_ERROR - Feature `queue_master_locator` is deprecated."),
        "reply text {:?}",
        close.text
    );
    Ok(())
}

/// The `x-local-random` exchange type: unknown until 3.13 (503); from 4.0 each
/// message goes to one of the bound classic queues, whatever its routing key,
/// and only classic queues bound with the empty key may be bound.
pub async fn local_random_exchange(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let x = cx.name("lrx");
    let res = ch.exchange_declare(&x, "x-local-random").await;
    if cx.version() < V::V4_0 {
        // Live 3.10.8: no such type (rabbit_exchange_type_local_random.erl is new in v4.0.0).
        let close = res.connection_closed(503)?;
        expect_eq(
            "reply text",
            close.text.as_str(),
            "COMMAND_INVALID - unknown exchange type 'x-local-random'",
        )?;
        return Ok(());
    }
    res?;
    let (a, b) = (cx.name("lra"), cx.name("lrb"));
    for q in [&a, &b] {
        ch.queue_declare_with(q, QueueOpts::default().exclusive())
            .await?;
        ch.queue_bind(q, &x, "").await?;
    }
    // route/3 at rabbit_exchange_type_local_random.erl:45-55 (v4.3.5): one binding.
    for i in 0..20 {
        ch.publish(&x, &format!("any.key.{i}"), "m").await?;
    }
    ch.sync().await?;
    let (na, nb) = (
        ch.queue_declare_with(&a, QueueOpts::default().passive())
            .await?
            .messages,
        ch.queue_declare_with(&b, QueueOpts::default().passive())
            .await?
            .messages,
    );
    expect_eq("messages in the two queues together", na + nb, 20)?;
    // validate_binding/2 at :85-106, answered 406 by rabbit_channel.erl:1859-1860.
    let close = ch.queue_bind(&a, &x, "k").await.channel_closed(406)?;
    expect_eq(
        "reply text",
        close.text.as_str(),
        "PRECONDITION_FAILED - Non empty binding 'k' key not permitted",
    )?;
    let ch = conn.channel().await?;
    let qq = cx.name("lrq");
    let quorum = quorum_queue();
    ch.queue_declare_with(&qq, quorum).await?;
    let close = ch.queue_bind(&qq, &x, "").await.channel_closed(406)?;
    expect_eq(
        "reply text",
        close.text.as_str(),
        "PRECONDITION_FAILED - Queue type rabbit_quorum_queue not valid for this exchange type",
    )?;
    let ch = conn.channel().await?;
    let close = ch
        .exchange_bind("amq.fanout", &x, "")
        .await
        .channel_closed(406)?;
    expect_eq(
        "reply text",
        close.text.as_str(),
        "PRECONDITION_FAILED - Destination not found",
    )?;
    conn.close().await
}

/// A `connection.start-ok` larger than the frame size allowed before tune-ok
/// (`initial_frame_max`, FRAME_MIN_SIZE: 4096 until 4.0, 8192 from 4.1): the
/// server ends the socket with nothing after its `connection.start`
/// (rabbit_reader.erl:1021-1027 and 851-855 at v3.10.8; :300 at v4.1.8).
pub async fn start_ok_over_initial_frame_max(cx: Ctx) -> R {
    let min: usize = if cx.version() >= V::V4_1 { 8192 } else { 4096 };
    let mut props = amq_protocol::types::FieldTable::default();
    props.insert(
        "product".into(),
        AMQPValue::LongString("x".repeat(min).into()),
    );
    let mut response = vec![0u8];
    response.extend(cx.url().user.as_bytes());
    response.push(0);
    response.extend(cx.url().password.as_bytes());
    let start_ok = AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::StartOk(
        amq_protocol::protocol::connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: String::from_utf8_lossy(&response).into_owned().into(),
            locale: "en_US".into(),
        },
    ));
    let conn = cx.raw().await?;
    let mut bytes = b"AMQP\x00\x00\x09\x01".to_vec();
    bytes.extend(warren_frames::method(0, start_ok));
    conn.send_raw(&bytes).await?;
    // RabbitMQ closes after its SILENT_CLOSE_DELAY of 3 s (rabbit_reader.erl:61).
    let reply = conn
        .read_to_eof_within(std::time::Duration::from_secs(10))
        .await?;
    // Only connection.start came back: one frame, then the end of the stream.
    let first = reply
        .get(3..7)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize + 8);
    ensure!(
        first == Some(reply.len()) && reply[0] == 1,
        "expected connection.start alone, got {} bytes",
        reply.len()
    );
    cx.note(format!(
        "start-ok over {min}: connection.start, then the socket closed unanswered"
    ));
    Ok(())
}

/// The `x-modulus-hash` exchange type: unknown until 4.2 (the sharding plugin's,
/// off by default; live 3.10.8 answers 503); from 4.3 each message goes to the
/// binding `erlang:phash2(RoutingKeys, 2^27) rem Count` picks among the
/// bindings sorted by destination (rabbit_exchange_type_modulus_hash.erl:41-52
/// at v4.3.5). The expected queues were computed with `erlang:phash2/2`.
pub async fn modulus_hash_exchange(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let x = cx.name("mhx");
    let res = ch.exchange_declare(&x, "x-modulus-hash").await;
    if cx.version() < V::V4_3 {
        let close = res.connection_closed(503)?;
        expect_eq(
            "reply text",
            close.text.as_str(),
            "COMMAND_INVALID - unknown exchange type 'x-modulus-hash'",
        )?;
        return Ok(());
    }
    res?;
    // The names share their suffix, so they sort by prefix: four bindings,
    // sorted [mha, mha, mhb, mhc] (every binding counts, whatever its key).
    let (a, b, c) = (cx.name("mha"), cx.name("mhb"), cx.name("mhc"));
    for q in [&a, &b, &c] {
        ch.queue_declare_with(q, QueueOpts::default().exclusive())
            .await?;
    }
    for (q, key) in [(&c, ""), (&a, ""), (&b, "any"), (&a, "other")] {
        ch.queue_bind(q, &x, key).await?;
    }
    for (key, q) in [
        ("key-0", &a),
        ("key-1", &b),
        ("key-2", &c),
        ("key-3", &b),
        ("key-5", &a),
        ("key-7", &c),
    ] {
        ch.publish(&x, key, key).await?;
        let d = ch.poll_get(q, true).await?;
        expect_eq(
            "routing key of the message in its queue",
            d.routing_key.as_str(),
            key,
        )?;
    }
    conn.close().await
}

/// A string as a header value.
fn ls(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// The (queue, reason, count) of each entry of a delivery's `x-death`.
fn x_death(d: &crate::ctx::Delivery) -> R<Vec<(String, String, i64)>> {
    let headers = d.props.headers().clone().unwrap_or_default();
    let Some(AMQPValue::FieldArray(a)) = headers.inner().get("x-death") else {
        return Err(crate::driver::Fail::msg(format!(
            "no x-death array in {headers:?}"
        )));
    };
    let field = |t: &amq_protocol::types::FieldTable, k: &str| match t.inner().get(k) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => format!("{other:?}"),
    };
    Ok(a.as_slice()
        .iter()
        .filter_map(|e| match e {
            AMQPValue::FieldTable(t) => Some((
                field(t, "queue"),
                field(t, "reason"),
                match t.inner().get("count") {
                    Some(AMQPValue::LongLongInt(n)) => *n,
                    _ => -1,
                },
            )),
            _ => None,
        })
        .collect())
}

/// A top-level string header of a delivery, if any.
fn header(d: &crate::ctx::Delivery, key: &str) -> Option<String> {
    match d.props.headers().as_ref()?.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// A message published with an `x-death` header of the client's (claiming 5
/// rejections in the very queue it goes to, and an expiry elsewhere) and with
/// `x-first-death-reason` / `x-last-death-reason` headers of its own, then
/// rejected into a dead-letter queue. Delivered before that, every profile
/// leaves the headers as they came (the transcript compares them with RabbitMQ).
/// Until 3.13 the client's history is the message's: the matching entry counts
/// 6, the other stays, and `x-first-death-*` are not set because an `x-death`
/// was there (`rabbit_dead_letter.erl:110-157` at v3.10.8; `mc_amqpl.erl:691,712`
/// and `mc.erl:388-395` at v3.13.7). From 4.0 the client's header is not read:
/// the broker's own history (one death, count 1) replaces it, and its
/// `x-first-death-*` override the client's (`mc.erl:414-429` and
/// `mc_amqpl.erl:454-479` at v4.0.9; release notes 4.0.1, "AMQP 0.9.1 x-death
/// header"). From 3.13 `x-last-death-*` are set at every death (`mc.erl:392-394`
/// at v3.13.7).
pub async fn client_x_death_header(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("xd");
    let dlq = cx.name("xd-dl");
    ch.queue_declare_with(&dlq, QueueOpts::default().exclusive())
        .await?;
    let dead_letters = QueueOpts::default()
        .exclusive()
        .arg("x-dead-letter-exchange", ls(""))
        .arg("x-dead-letter-routing-key", ls(&dlq));
    ch.queue_declare_with(&q, dead_letters).await?;
    let entry = |queue: &str, reason: &str, count: i64| {
        let mut t = amq_protocol::types::FieldTable::default();
        t.insert("count".into(), AMQPValue::LongLongInt(count));
        t.insert("reason".into(), ls(reason));
        t.insert("queue".into(), ls(queue));
        t.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        t.insert("exchange".into(), ls(""));
        t.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(vec![ls(queue)].into()),
        );
        AMQPValue::FieldTable(t)
    };
    let elsewhere = cx.name("xd-elsewhere");
    let mut headers = amq_protocol::types::FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(
            vec![entry(&q, "rejected", 5), entry(&elsewhere, "expired", 2)].into(),
        ),
    );
    headers.insert("x-first-death-reason".into(), ls("client"));
    headers.insert("x-last-death-reason".into(), ls("client"));
    let props = BasicProperties::default().with_headers(headers);
    ch.publish_with("", &q, b"m", PublishOpts::default().props(props))
        .await?;
    let d = ch.poll_get(&q, false).await?;
    expect_eq(
        "x-death before any dead-lettering",
        x_death(&d)?,
        vec![
            (q.clone(), "rejected".into(), 5),
            (elsewhere.clone(), "expired".into(), 2),
        ],
    )?;
    ch.reject(d.delivery_tag, false).await?;
    let dl = ch.poll_get(&dlq, true).await?;
    let v = cx.version();
    if v < V::V4_0 {
        expect_eq(
            "x-death after the broker's first dead-lettering",
            x_death(&dl)?,
            vec![
                (q.clone(), "rejected".into(), 6),
                (elsewhere, "expired".into(), 2),
            ],
        )?;
        expect_eq(
            "x-first-death-reason",
            header(&dl, "x-first-death-reason").as_deref(),
            Some("client"),
        )?;
    } else {
        expect_eq(
            "x-death after the broker's first dead-lettering",
            x_death(&dl)?,
            vec![(q.clone(), "rejected".into(), 1)],
        )?;
        expect_eq(
            "x-first-death-reason",
            header(&dl, "x-first-death-reason").as_deref(),
            Some("rejected"),
        )?;
        expect_eq(
            "x-first-death-queue",
            header(&dl, "x-first-death-queue").as_deref(),
            Some(q.as_str()),
        )?;
    }
    let last = if v >= V::V3_13 { "rejected" } else { "client" };
    expect_eq(
        "x-last-death-reason",
        header(&dl, "x-last-death-reason").as_deref(),
        Some(last),
    )?;
    conn.close().await
}

/// Messages of several `priority` values on a quorum queue, taken by
/// `basic.get` and then by a consumer (both share the queue's order); then a
/// returned message against a newer one of higher priority.
pub async fn quorum_message_priorities(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("qq-prio");
    let quorum = quorum_queue();
    ch.queue_declare_with(&q, quorum).await?;
    ch.confirm_select().await?;
    // (body, priority); "none" has no priority property.
    let sent: [(&str, Option<u8>); 6] = [
        ("none", None),
        ("p0", Some(0)),
        ("p9", Some(9)),
        ("p5", Some(5)),
        ("p4", Some(4)),
        ("p40", Some(40)),
    ];
    for (body, p) in sent {
        let mut props = BasicProperties::default();
        if let Some(p) = p {
            props = props.with_priority(p);
        }
        ch.publish_with("", &q, body.as_bytes(), PublishOpts::default().props(props))
            .await?;
    }
    // Confirmed: every enqueue is committed before the first get.
    ch.wait_confirms(0, sent.len() as u64).await?;
    let v = cx.version();
    let expected: [&str; 6] = if v >= V::V4_3 {
        // rabbit_fifo.erl:3775-3786 at v4.3.5: min(P, 31), none is
        // ?DEFAULT_PRIORITY 4 (:48), so "none" (4, older) before "p4" and
        // "p0" last; rabbit_fifo_pq.erl:52-95: highest level first, FIFO within.
        ["p40", "p9", "p5", "none", "p4", "p0"]
    } else if v >= V::V4_0 {
        // priority_tag/1 (rabbit_fifo.erl:2917-2929 at v4.0.9): P > 4 is hi
        // (p9, p5, p40), the rest no. rabbit_fifo_q.erl at
        // v4.0.9 (15,44-66,119-135): counter 0 and 1 take hi, at 2 the older head (index order)
        // wins: none (older than p40); then p40, and no's p0 and p4.
        ["p9", "p5", "none", "p40", "p0", "p4"]
    } else {
        // rabbit_fifo.erl at v3.10.8 keeps one lqueue: FIFO.
        ["none", "p0", "p9", "p5", "p4", "p40"]
    };
    for body in &expected[..3] {
        ch.get_expect(&q, true, body).await?;
    }
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    for body in &expected[3..] {
        ch.expect_deliver(body).await?;
    }
    cx.note(format!("order: {}", expected.join(" ")));
    ch.close().await?;

    // A message returned goes ahead of a newer one of higher priority: the
    // returns queue is taken before the messages (take_next_msg/1,
    // rabbit_fifo.erl:2057-2065 at v4.0.9, :2586-2598 at v4.3.5; release notes
    // 4.3.0: "correct redelivery ordering across priorities"). A consumer with
    // prefetch 1 sees it without a race: the return and the next checkout are
    // one command of the queue. With an x-delivery-limit set in every
    // release: without one a reject or nack is appended again at the back as a
    // new message (handle_aux/6 and #requeue{}, rabbit_fifo.erl:976-1000,255-279
    // at v3.10.8; :1008-1035 at v4.0.9 for a negative limit), as 3.10.8 does live.
    let ch = conn.channel().await?;
    ch.queue_delete(&q).await?;
    let limited = quorum_queue().arg("x-delivery-limit", AMQPValue::LongInt(10));
    ch.queue_declare_with(&q, limited).await?;
    ch.confirm_select().await?;
    ch.publish("", &q, "lo").await?;
    ch.wait_confirms(0, 1).await?;
    ch.qos(1, false).await?;
    ch.consume(&q).await?;
    let lo = ch.expect_deliver("lo").await?;
    let hi = BasicProperties::default().with_priority(9);
    ch.publish_with("", &q, b"hi", PublishOpts::default().props(hi))
        .await?;
    ch.wait_confirms(1, 2).await?;
    ch.reject(lo.delivery_tag, true).await?;
    let again = ch.expect_deliver("lo").await?;
    ch.ack(again.delivery_tag, false).await?;
    let hi = ch.expect_deliver("hi").await?;
    ch.ack(hi.delivery_tag, false).await?;
    ch.queue_delete(&q).await?;
    conn.close().await
}

/// What counts toward a quorum queue's `x-delivery-limit` (1 here, no
/// dead-letter exchange, so a message over it is dropped): two `basic.nack`
/// requeues, two `basic.reject` requeues, two channels closed with the
/// message unacked, each on a message of its own.
pub async fn quorum_delivery_limit_counts(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("qq-limit");
    let quorum = quorum_queue().arg("x-delivery-limit", AMQPValue::LongInt(1));
    ch.queue_declare_with(&q, quorum).await?;
    // The check is `count > limit`: the first return keeps a message, the
    // second drops it where it counts (rabbit_fifo.erl:1766-1767 at v3.10.8,
    // :1904 at v4.0.9, :2367-2372 at v4.3.5).
    // 4.3 counts delivery_count, bumped only by a failed delivery
    // (incr_msg_headers/3, rabbit_fifo.erl:3884-3899): basic.nack requeue=true
    // is `requeue`, a #return{} with DeliveryFailed false (rabbit_channel.erl:
    // 1226-1234, rabbit_quorum_queue.erl:1196-1197, rabbit_fifo.erl:323-328).
    // Before, every return counts (delivery_count at v3.10.8 :1764,
    // acquired_count at v4.0.9 :3028).
    let nack_counts = cx.version() < V::V4_3;
    ch.publish("", &q, "nacked").await?;
    for _ in 0..2 {
        let d = ch.poll_get(&q, false).await?;
        ch.nack(d.delivery_tag, false, true).await?;
    }
    if nack_counts {
        // Dropped (and, while the return is on its way, still checked out).
        let left = ch.get(&q, true).await?;
        ensure!(left.is_none(), "kept after two nacks: {left:?}");
    } else {
        ch.poll_get(&q, true).await?;
    }
    // basic.reject requeue=true is {modify, true, false, #{}}: a failed delivery
    // in every release (rabbit_channel.erl:1504-1510,2291-2293 at v4.3.5).
    ch.publish("", &q, "rejected").await?;
    for _ in 0..2 {
        let d = ch.poll_get(&q, false).await?;
        ch.reject(d.delivery_tag, true).await?;
    }
    let left = ch.get(&q, true).await?;
    ensure!(left.is_none(), "kept after two rejects: {left:?}");
    // A channel gone is {down, Pid, _}: return_all/6 with DeliveryFailed true
    // (rabbit_fifo.erl:648,1041-1054,1954-1966 at v4.3.5), counted everywhere.
    ch.publish("", &q, "released").await?;
    for _ in 0..2 {
        let other = conn.channel().await?;
        other.poll_get(&q, false).await?;
        other.close().await?;
    }
    let left = ch.get(&q, true).await?;
    ensure!(left.is_none(), "kept after two channels closed: {left:?}");
    cx.note(format!(
        "two nacks {}; two rejects and two closes drop",
        if nack_counts { "drop" } else { "keep" }
    ));
    ch.queue_delete(&q).await?;
    conn.close().await
}

/// A quorum queue with no delivery limit (none given until 3.13, `-1` from 4.0)
/// requeues an explicit return (`#return{}`: basic.nack and, until 4.2,
/// basic.reject with requeue) as a new message, behind every message waiting
/// (`handle_aux` → `make_requeue`, rabbit_fifo.erl:976-1000 and `apply(#requeue{})`
/// :255-283 at v3.10.8; :1377-1401 at v4.3.5). 4.3's basic.reject is a
/// `#modify{}` (rabbit_channel.erl:1504-1510 at v4.3.5), which goes back in
/// front, as a message whose channel went away does (`return_all`) in every
/// release.
pub async fn quorum_requeue_without_a_limit(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("qq-nolimit");
    let mut quorum = quorum_queue();
    if cx.version() >= V::V4_0 {
        quorum = quorum.arg("x-delivery-limit", AMQPValue::LongInt(-1));
    }
    ch.queue_declare_with(&q, quorum).await?;
    let mut order = Vec::new();
    // basic.nack requeue=true: to the back everywhere.
    for body in ["a", "b", "c"] {
        ch.publish("", &q, body).await?;
    }
    let a = ch.poll_get(&q, false).await?;
    ch.nack(a.delivery_tag, false, true).await?;
    for _ in 0..3 {
        let d = ch.poll_get(&q, true).await?;
        order.push(format!(
            "{}{}",
            d.body,
            if d.redelivered { "*" } else { "" }
        ));
    }
    // basic.reject requeue=true: to the back until 4.2, in front in 4.3.
    for body in ["d", "e"] {
        ch.publish("", &q, body).await?;
    }
    let d = ch.poll_get(&q, false).await?;
    ch.reject(d.delivery_tag, true).await?;
    for _ in 0..2 {
        let d = ch.poll_get(&q, true).await?;
        order.push(format!(
            "{}{}",
            d.body,
            if d.redelivered { "*" } else { "" }
        ));
    }
    let want = if cx.version() >= V::V4_3 {
        ["b", "c", "a*", "d*", "e"]
    } else {
        ["b", "c", "a*", "e", "d*"]
    };
    ensure!(order == want, "order {order:?}, want {want:?}");
    cx.note(format!("order {}", order.join(" ")));
    ch.queue_delete(&q).await?;
    conn.close().await
}
/// A consumer's `x-consumer-timeout` (200 ms) on a quorum queue. From 4.3 the
/// queue returns the unacked delivery once its time is up (`rabbit_fifo.erl:722-751`
/// at v4.3.5; the consumer's argument wins, `rabbit_queue_type.erl:544-547`) and
/// the channel cancels the consumer of a client that announced
/// `consumer_cancel_notify` (`rabbit_channel.erl:2802-2807`); the old tag still
/// settles. Until 4.2 the timeout is the channel's, `consumer_timeout` (30
/// minutes) or a queue's own (3.12+), and the argument is no consumer argument
/// (`rabbit_channel.erl:853` at v3.10.8): nothing happens.
pub async fn quorum_consumer_timeout(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("slow-worker");
    let quorum = quorum_queue();
    ch.queue_declare_with(&q, quorum).await?;
    ch.publish("", &q, "job").await?;
    let mut opts = ConsumeOpts::default().tag("worker");
    opts.args
        .insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(200));
    ch.consume_with(&q, opts).await?;
    let d = ch.deliver().await?;
    if cx.version() >= V::V4_3 {
        let tag = ch.expect_server_cancel().await?;
        expect_eq("cancelled consumer", tag.as_str(), "worker")?;
        let other = conn.channel().await?;
        let again = other.poll_get(&q, true).await?;
        ensure!(again.redelivered, "returned job not redelivered: {again:?}");
        cx.note("after 200 ms: basic.cancel, the job back in the queue, redelivered");
    } else {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        ch.expect_no_delivery().await?;
        cx.note("after 600 ms: still held by the consumer");
    }
    ch.ack(d.delivery_tag, false).await?;
    ch.sync().await?;
    ch.queue_delete(&q).await?;
    conn.close().await
}

/// `x-consumer-timeout` as a queue argument. 4.3 validates it as a
/// non-negative integer (`rabbit_amqqueue.erl:964` at v4.3.5) and only quorum
/// queues take it (`rabbit_quorum_queue.erl:626`; refused for the others,
/// `rabbit_amqqueue.erl:912-913`). Until 4.2 no version validates it (none in
/// `declare_args/0`, `rabbit_amqqueue.erl:841` at v3.10.8): any value declares.
pub async fn consumer_timeout_queue_argument(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let v43 = cx.version() >= V::V4_3;
    let classic = cx.name("ct-classic");
    let ch = conn.channel().await?;
    let opts = QueueOpts::default()
        .exclusive()
        .arg("x-consumer-timeout", AMQPValue::LongLongInt(1000));
    let res = ch.queue_declare_with(&classic, opts).await;
    if v43 {
        let close = res.channel_closed(406)?;
        expect_eq(
            "reply text",
            close.text.as_str(),
            &format!(
                "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue '{classic}' \
                 in vhost '/' of queue type rabbit_classic_queue"
            ),
        )?;
    } else {
        res?;
    }
    let quorum = cx.name("ct-quorum");
    let ch = conn.channel().await?;
    let opts = quorum_queue().arg("x-consumer-timeout", AMQPValue::LongLongInt(-1));
    let res = ch.queue_declare_with(&quorum, opts).await;
    if v43 {
        let close = res.channel_closed(406)?;
        expect_eq(
            "reply text",
            close.text.as_str(),
            &format!(
                "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue '{quorum}' \
                 in vhost '/': {{value_negative,-1}}"
            ),
        )?;
        cx.note("x-consumer-timeout: refused on a classic queue, -1 refused on a quorum queue");
    } else {
        res?;
        ch.queue_delete(&quorum).await?;
        cx.note("x-consumer-timeout: any value declares");
    }
    conn.close().await
}

/// A classic queue's `x-consumer-timeout` (200 ms) against a consumer that does
/// not ack. From 3.12 to 4.2 the channel's timeout is the queue's: the channel
/// closes with 406 naming 200 ms (`rabbit_channel.erl:2776-2807` at v3.12.14,
/// `:2854-2885` at v4.2.9). 3.10 and 3.11 read only `consumer_timeout` (30
/// minutes, `rabbit_channel.erl:2827-2833` at v3.10.8): nothing happens. 4.3
/// refuses the argument on a classic queue (`consumer_timeout_queue_argument`).
pub async fn classic_queue_consumer_timeout(cx: Ctx) -> R {
    let v = cx.version();
    if v >= V::V4_3 {
        cx.note("4.3: a classic queue takes no x-consumer-timeout");
        return Ok(());
    }
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("ct-slow");
    let opts = QueueOpts::default()
        .exclusive()
        .arg("x-consumer-timeout", AMQPValue::LongLongInt(200));
    ch.queue_declare_with(&q, opts).await?;
    ch.publish("", &q, "job").await?;
    ch.consume_with(&q, ConsumeOpts::default().tag("worker"))
        .await?;
    let d = ch.deliver().await?;
    if v >= V::V3_12 {
        let close = ch.wait_close().await?;
        expect_eq("close code", close.code, 406)?;
        expect_eq(
            "reply text",
            close.text.as_str(),
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. \
             Timeout value used: 200 ms. This timeout value can be configured, see \
             consumers doc guide to learn more",
        )?;
        cx.note("after 200 ms: channel closed 406");
    } else {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        ch.expect_no_delivery().await?;
        ch.ack(d.delivery_tag, false).await?;
        ch.sync().await?;
        cx.note("after 600 ms: still held by the consumer");
    }
    conn.close().await
}

/// The counts a quorum queue's `basic.get` carries through a nack and a
/// reject. Until 3.13 `x-delivery-count` is there from the first get, 0, and
/// counts every return (`rabbit_fifo_client.erl:249-256` at v3.10.8). From 4.0
/// nothing until a return (`add_delivery_count_header/2`): 4.0-4.2 write the
/// returns as `x-delivery-count` (`:221-237` at v4.0.9); 4.3 writes them as
/// `x-acquired-count`, and `x-delivery-count` only counts failed deliveries,
/// which a reject is and a nack is not (`:246-267` at v4.3.5;
/// `rabbit_fifo.erl:3884-3899`, `rabbit_channel.erl:1504-1510`).
pub async fn quorum_delivery_count_headers(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let q = cx.name("qq-counts");
    // A limit, so that the returns come back in front in every release.
    let quorum = quorum_queue().arg("x-delivery-limit", AMQPValue::LongInt(10));
    ch.queue_declare_with(&q, quorum).await?;
    ch.publish("", &q, "m").await?;
    let counts = |d: &crate::ctx::Delivery| {
        let h = d.props.headers().clone().unwrap_or_default();
        let get = |k: &str| match h.inner().get(k) {
            Some(AMQPValue::LongLongInt(n)) => n.to_string(),
            Some(other) => format!("{other:?}"),
            None => "-".into(),
        };
        format!("{}/{}", get("x-delivery-count"), get("x-acquired-count"))
    };
    let mut seen = Vec::new();
    let d = ch.poll_get(&q, false).await?;
    seen.push(counts(&d));
    ch.nack(d.delivery_tag, false, true).await?;
    let d = ch.poll_get(&q, false).await?;
    seen.push(counts(&d));
    ch.reject(d.delivery_tag, true).await?;
    let d = ch.poll_get(&q, true).await?;
    seen.push(counts(&d));
    let want = if cx.version() >= V::V4_3 {
        ["-/-", "-/1", "1/2"]
    } else if cx.version() >= V::V4_0 {
        ["-/-", "1/-", "2/-"]
    } else {
        ["0/-", "1/-", "2/-"]
    };
    ensure!(
        seen == want,
        "x-delivery-count/x-acquired-count {seen:?}, want {want:?}"
    );
    cx.note(format!("delivery/acquired counts {}", seen.join(" ")));
    ch.queue_delete(&q).await?;
    conn.close().await
}

/// A durable quorum queue's declaration options, to add arguments to.
fn quorum_queue() -> QueueOpts {
    QueueOpts::default()
        .durable()
        .arg("x-queue-type", AMQPValue::LongString("quorum".into()))
}
