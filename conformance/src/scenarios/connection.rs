//! Connection scenarios: handshake, authentication, vhosts, tuning, limits, closing.

use std::time::Duration;

use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::AMQPValue;

use crate::*;

/// A plain open, a channel, and a polite close.
pub async fn open_and_close(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    ch.close().await?;
    conn.close().await
}

/// connection.start announces 0-9-1, PLAIN and en_US, and the capabilities clients need.
pub async fn start_announces_capabilities(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let start = conn
        .start
        .clone()
        .ok_or_else(|| Fail::msg("no connection.start"))?;
    expect_eq(
        "version",
        (start.version_major, start.version_minor),
        (0, 9),
    )?;
    let mechanisms = start.mechanisms.to_string();
    ensure!(
        mechanisms.split(' ').any(|m| m == "PLAIN"),
        "PLAIN not in mechanisms {mechanisms:?}"
    );
    ensure!(
        start.locales.to_string().split(' ').any(|l| l == "en_US"),
        "en_US not in locales"
    );
    let caps = match start.server_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        other => return Err(Fail::msg(format!("no capabilities table: {other:?}"))),
    };
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "exchange_exchange_bindings",
        "per_consumer_qos",
        "authentication_failure_close",
    ] {
        let on = matches!(caps.inner().get(cap), Some(AMQPValue::Boolean(true)));
        ensure!(on, "capability {cap} not advertised");
        cx.note(format!("capability {cap}"));
    }
    conn.close().await
}

/// connection.tune proposes RabbitMQ's defaults.
pub async fn tune_proposes_defaults(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let t = conn.tune;
    cx.note(format!(
        "tune {} {} {}",
        t.channel_max, t.frame_max, t.heartbeat
    ));
    expect_eq("channel_max", t.channel_max, 2047)?;
    expect_eq("frame_max", t.frame_max, 131_072)?;
    expect_eq("heartbeat", t.heartbeat, 60)?;
    conn.close().await
}

/// A wrong password closes the connection with 403 when the client asked for a close.
pub async fn auth_wrong_password(cx: Ctx) -> R {
    let opts = ConnectOpts {
        password: Some("wrong".into()),
        ..Default::default()
    };
    cx.connect_with(opts)
        .await
        .connection_closed_at(403, (0, 0))?;
    Ok(())
}

/// An unknown user is refused the same way.
pub async fn auth_unknown_user(cx: Ctx) -> R {
    let opts = ConnectOpts {
        user: Some(cx.name("nobody")),
        ..Default::default()
    };
    cx.connect_with(opts)
        .await
        .connection_closed_at(403, (0, 0))?;
    Ok(())
}

/// Without authentication_failure_close the server just drops the socket.
pub async fn auth_failure_without_capability_drops_socket(cx: Ctx) -> R {
    let opts = ConnectOpts {
        password: Some("wrong".into()),
        auth_failure_close: false,
        ..Default::default()
    };
    cx.connect_with(opts).await.dropped()
}

/// Opening an unknown vhost is refused with 530 naming connection.open.
pub async fn unknown_vhost(cx: Ctx) -> R {
    let opts = ConnectOpts {
        vhost: Some(cx.name("no-such-vhost")),
        ..Default::default()
    };
    cx.connect_with(opts).await.connection_closed(530)?;
    Ok(())
}

/// With channel_max negotiated down to 2, channel 3 is refused with a connection close.
pub async fn channel_max_enforced(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            channel_max: Some(2),
            ..Default::default()
        })
        .await?;
    conn.open_channel(1).await?;
    conn.open_channel(2).await?;
    // RabbitMQ names no method here.
    conn.open_channel(3)
        .await
        .connection_closed_at(530, (0, 0))?;
    Ok(())
}

/// Channel ids up to the negotiated maximum are usable, in any order.
pub async fn channel_ids_up_to_max(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            channel_max: Some(10),
            ..Default::default()
        })
        .await?;
    let ten = conn.open_channel(10).await?;
    let five = conn.open_channel(5).await?;
    ten.sync().await?;
    five.close().await?;
    ten.close().await?;
    conn.close().await
}

/// Opening a channel that is already open is a connection error.
pub async fn channel_open_twice(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    conn.open_channel(1).await?;
    conn.open_channel(1).await.connection_closed(504)?;
    Ok(())
}

/// A method on a channel that was never opened is a connection error.
pub async fn method_on_unopened_channel(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    conn.unopened(7)
        .queue_declare(&cx.name("q"))
        .await
        .connection_closed(504)?;
    Ok(())
}

/// A closed channel id can be opened again and starts afresh.
pub async fn channel_reopen_after_close(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.open_channel(1).await?;
    ch.close().await?;
    let ch = conn.open_channel(1).await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, "m").await?;
    let d = ch.get_expect(&q, false, "m").await?;
    expect_eq("delivery tag", d.delivery_tag, 1)?;
    conn.close().await
}

/// After a channel error, the same channel id can be reopened on the same connection.
pub async fn channel_reopen_after_error(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.open_channel(1).await?;
    ch.queue_passive(&cx.name("missing"))
        .await
        .channel_closed(404)?;
    let ch = conn.open_channel(1).await?;
    ch.sync().await?;
    conn.close().await
}

/// A channel error leaves the connection's other channels working.
pub async fn channel_error_spares_other_channels(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let a = conn.channel().await?;
    let b = conn.channel().await?;
    let q = cx.name("q");
    b.queue_declare(&q).await?;
    a.queue_passive(&cx.name("missing"))
        .await
        .channel_closed(404)?;
    b.publish("", &q, "still here").await?;
    b.get_expect(&q, true, "still here").await?;
    conn.close().await
}

/// A smaller negotiated frame_max still carries large bodies, split into frames.
pub async fn small_frame_max_carries_large_body(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            frame_max: Some(4096),
            ..Default::default()
        })
        .await?;
    let ch = conn.channel().await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    let body = "x".repeat(20_000);
    ch.publish("", &q, &body).await?;
    let d = ch
        .get(&q, true)
        .await?
        .ok_or_else(|| Fail::msg("get-empty"))?;
    expect_eq("body length", d.body.len(), 20_000)?;
    conn.close().await
}

/// tune-ok with a frame_max below the 4096 minimum: the socket is dropped (no close is
/// sent before the connection is open).
pub async fn frame_max_below_minimum(cx: Ctx) -> R {
    let opts = ConnectOpts {
        frame_max: Some(1024),
        ..Default::default()
    };
    cx.connect_with(opts).await.dropped()
}

/// A body frame larger than the negotiated frame_max is a frame error.
pub async fn frame_larger_than_frame_max(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            frame_max: Some(4096),
            ..Default::default()
        })
        .await?;
    let ch = conn.channel().await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    // Build the frames by hand: the driver would split the body correctly.
    let publish = AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(
        amq_protocol::protocol::basic::Publish {
            exchange: "".into(),
            routing_key: q.as_str().into(),
            mandatory: false,
            immediate: false,
        },
    ));
    let mut bytes = driver::encode(&amq_protocol::frame::AMQPFrame::Method(1, publish));
    bytes.extend(driver::encode(&amq_protocol::frame::AMQPFrame::Header(
        1,
        amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size: 10_000,
            properties: Default::default(),
        },
    )));
    bytes.extend(driver::encode(&amq_protocol::frame::AMQPFrame::Body(
        1,
        vec![b'x'; 10_000],
    )));
    conn.send_raw(&bytes).await?;
    let close = conn
        .wait_closed()
        .await?
        .ok_or_else(|| Fail::msg("no connection.close"))?;
    expect_eq("close code", close.code, 501)
}

/// Negotiating a heartbeat makes the server send heartbeat frames.
pub async fn heartbeat_negotiated_is_sent(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            heartbeat: 1,
            ..Default::default()
        })
        .await?;
    conn.wait_heartbeat(Duration::from_secs(3)).await?;
    cx.note("heartbeat received");
    conn.close().await
}

/// With heartbeats disabled the connection stays open while idle.
pub async fn heartbeat_disabled_stays_open(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ch.sync().await?;
    conn.close().await
}

/// Closing a connection with unacked deliveries requeues them, marked redelivered, in order.
pub async fn close_with_unacked_requeues(cx: Ctx) -> R {
    let q = cx.name("q");
    let a = cx.connect().await?;
    let ca = a.channel().await?;
    ca.queue_declare(&q).await?;
    for m in ["m1", "m2", "m3"] {
        ca.publish("", &q, m).await?;
    }
    ca.consume(&q).await?;
    ca.expect_bodies(&["m1", "m2", "m3"]).await?;
    a.close().await?;
    let b = cx.connect().await?;
    let cb = b.channel().await?;
    expect_eq("messages", cb.queue_passive(&q).await?.messages, 3)?;
    for m in ["m1", "m2", "m3"] {
        let d = cb.get_expect(&q, true, m).await?;
        ensure!(d.redelivered, "{m} not marked redelivered");
    }
    b.close().await
}

/// Closing a connection drops its acked deliveries for good and requeues only the rest.
pub async fn close_requeues_only_unacked(cx: Ctx) -> R {
    let q = cx.name("q");
    let a = cx.connect().await?;
    let ca = a.channel().await?;
    ca.queue_declare(&q).await?;
    for m in ["m1", "m2", "m3"] {
        ca.publish("", &q, m).await?;
    }
    ca.consume(&q).await?;
    let ds = ca.expect_bodies(&["m1", "m2", "m3"]).await?;
    ca.ack(ds[1].delivery_tag, false).await?;
    ca.sync().await?;
    a.close().await?;
    let b = cx.connect().await?;
    let cb = b.channel().await?;
    cb.get_expect(&q, true, "m1").await?;
    cb.get_expect(&q, true, "m3").await?;
    cb.get_empty(&q).await?;
    b.close().await
}

/// Two connections share a queue: one publishes, the other consumes.
pub async fn two_connections_share_a_queue(cx: Ctx) -> R {
    let q = cx.name("q");
    let a = cx.connect().await?;
    let b = cx.connect().await?;
    let ca = a.channel().await?;
    let cb = b.channel().await?;
    ca.queue_declare(&q).await?;
    cb.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    ca.publish("", &q, "hello").await?;
    cb.expect_deliver("hello").await?;
    expect_eq("consumers", ca.queue_passive(&q).await?.consumers, 1)?;
    a.close().await?;
    b.close().await
}

/// Consumers on two connections take turns.
pub async fn two_connections_round_robin(cx: Ctx) -> R {
    let q = cx.name("q");
    let a = cx.connect().await?;
    let b = cx.connect().await?;
    let ca = a.channel().await?;
    let cb = b.channel().await?;
    ca.queue_declare(&q).await?;
    ca.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    cb.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    for m in ["m1", "m2", "m3", "m4"] {
        ca.publish("", &q, m).await?;
    }
    ca.expect_bodies(&["m1", "m3"]).await?;
    cb.expect_bodies(&["m2", "m4"]).await?;
    a.close().await?;
    b.close().await
}

/// A client closing a channel gets close-ok even with consumers and unacked messages.
pub async fn channel_close_with_unacked_requeues(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let a = conn.channel().await?;
    let b = conn.channel().await?;
    let q = cx.name("q");
    a.queue_declare(&q).await?;
    a.publish("", &q, "m1").await?;
    a.consume(&q).await?;
    a.expect_deliver("m1").await?;
    a.close().await?;
    let d = b.get_expect(&q, false, "m1").await?;
    ensure!(d.redelivered, "not marked redelivered");
    expect_eq("delivery tag on the new channel", d.delivery_tag, 1)?;
    conn.close().await
}

/// channel.flow active=true is acknowledged with flow-ok.
pub async fn channel_flow_active(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let ev = ch
        .call(AMQPClass::Channel(channel::AMQPMethod::Flow(
            channel::Flow { active: true },
        )))
        .await?;
    match ev.method() {
        AMQPClass::Channel(channel::AMQPMethod::FlowOk(f)) => expect_eq("active", f.active, true)?,
        _ => return Err(driver::unexpected("channel.flow-ok", &ev)),
    }
    conn.close().await
}

/// Closing the connection while a channel is mid-use is clean for other connections.
pub async fn abrupt_disconnect_requeues(cx: Ctx) -> R {
    let q = cx.name("q");
    let a = cx.connect().await?;
    let ca = a.channel().await?;
    ca.queue_declare(&q).await?;
    ca.publish("", &q, "m1").await?;
    ca.consume(&q).await?;
    ca.expect_deliver("m1").await?;
    // Garbage makes the server drop the connection without a polite close from us.
    a.send_raw(b"\x01\x00\x01\x00\x00\x00\x02xx\xff").await?;
    let _ = a.wait_closed().await;
    let b = cx.connect().await?;
    let cb = b.channel().await?;
    let d = cb.get_expect(&q, true, "m1").await?;
    ensure!(d.redelivered, "not marked redelivered");
    b.close().await
}

/// Frames from the server respect a negotiated frame_max.
pub async fn server_frames_respect_frame_max(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            frame_max: Some(4096),
            ..Default::default()
        })
        .await?;
    let ch = conn.channel().await?;
    let q = cx.name("q");
    ch.queue_declare(&q).await?;
    ch.publish("", &q, &"y".repeat(20_000)).await?;
    ch.consume_with(&q, ConsumeOpts::default().no_ack()).await?;
    expect_eq("body length", ch.deliver().await?.body.len(), 20_000)?;
    let largest = conn.largest_frame().await;
    ensure!(
        largest <= 4096,
        "received a frame of {largest} bytes, above frame_max 4096"
    );
    conn.close().await
}

/// A client that negotiated heartbeats and then stays silent is disconnected.
pub async fn missed_client_heartbeats_disconnect(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            heartbeat: 1,
            ..Default::default()
        })
        .await?;
    conn.channel().await?;
    let close = conn.wait_closed_within(Duration::from_secs(10)).await?;
    ensure!(
        close.is_none(),
        "expected the socket to be dropped, got {close:?}"
    );
    Ok(())
}

/// tune-ok with channel_max 0 ("no limit") exceeds the server's 2047: RabbitMQ drops
/// the connection.
pub async fn channel_max_zero_refused(cx: Ctx) -> R {
    let opts = ConnectOpts {
        channel_max: Some(0),
        ..Default::default()
    };
    cx.connect_with(opts).await.dropped()
}

/// tune-ok may ask for a longer heartbeat than proposed.
pub async fn heartbeat_longer_than_proposed(cx: Ctx) -> R {
    let conn = cx
        .connect_with(ConnectOpts {
            heartbeat: 600,
            ..Default::default()
        })
        .await?;
    conn.channel().await?.sync().await?;
    conn.close().await
}

/// access.request, a 0-8 leftover, is answered with access.request-ok.
pub async fn access_request_ok(cx: Ctx) -> R {
    use amq_protocol::protocol::access;
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    let ev = ch
        .call(AMQPClass::Access(access::AMQPMethod::Request(
            access::Request {
                realm: "/data".into(),
                exclusive: false,
                passive: true,
                active: true,
                write: true,
                read: true,
            },
        )))
        .await?;
    ensure!(
        matches!(
            ev.method(),
            AMQPClass::Access(access::AMQPMethod::RequestOk(_))
        ),
        "expected access.request-ok, got {}",
        driver::describe(&ev)
    );
    conn.close().await
}

/// channel.flow active=false is not implemented.
pub async fn channel_flow_inactive(cx: Ctx) -> R {
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    ch.call(AMQPClass::Channel(channel::AMQPMethod::Flow(
        channel::Flow { active: false },
    )))
    .await
    .connection_closed(540)?;
    Ok(())
}

/// connection.update-secret with the same password is accepted.
pub async fn update_secret(cx: Ctx) -> R {
    let secret = cx.url().password.clone();
    update_secret_with(cx, &secret).await
}

/// connection.update-secret with a wrong password is accepted too, and the
/// connection goes on: RabbitMQ passes the new secret only to backends whose
/// credentials can expire (`rabbit_access_control:update_state/2`,
/// rabbit_access_control.erl:236-257 at v3.10.8), and the internal user
/// database's cannot (`state_can_expire() -> false`,
/// rabbit_auth_backend_internal.erl:98).
pub async fn update_secret_not_checked_by_internal_users(cx: Ctx) -> R {
    update_secret_with(cx, "not-the-password").await
}

async fn update_secret_with(cx: Ctx, secret: &str) -> R {
    let conn = cx.connect().await?;
    conn.send(
        0,
        AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(
            connection::UpdateSecret {
                new_secret: secret.into(),
                reason: "rotation".into(),
            },
        )),
    )
    .await?;
    let ev = conn.call_reply(0, Some((10, 70)), true).await?;
    ensure!(
        matches!(
            ev.method(),
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(_))
        ),
        "expected connection.update-secret-ok, got {}",
        driver::describe(&ev)
    );
    conn.channel().await?.sync().await?;
    conn.close().await
}
