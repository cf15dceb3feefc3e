//! Every error the broker can answer, checked frame by frame: the reply code, the class
//! and method ids, RabbitMQ's reply text, and that a channel error leaves the
//! connection working. Expectations are RabbitMQ 3.10's, observed by running this file
//! with `RAW_TARGET=amqp://guest:guest@127.0.0.1:5672/%2f` (see `common`).

mod common;

use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use common::{
    exchange_decl, open1, queue_decl, raw_frame, unique, Target, FRAME_END, PROTOCOL_HEADER,
};

// ------------------------------------------------------------------ 403 ACCESS_REFUSED

#[tokio::test]
async fn declare_exchange_with_amq_prefix_is_access_refused() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let name = format!("amq.{}", unique("x"));
    c.send(1, exchange_decl(&name, "direct")).await;
    c.expect_channel_close(
        1,
        403,
        (40, 10),
        &format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn exclusive_consume_on_a_consumed_queue_is_access_refused() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.consume(1, &q, "first", false).await;
    c.open_channel(2).await;
    c.send(
        2,
        basic::Consume {
            queue: q.as_str().into(),
            consumer_tag: "second".into(),
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    c.expect_channel_close(
        2,
        403,
        (60, 20),
        &format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn consume_on_a_queue_with_an_exclusive_consumer_is_access_refused() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let first = basic::Consume {
        queue: q.as_str().into(),
        consumer_tag: "first".into(),
        exclusive: true,
        ..Default::default()
    };
    c.call(1, first).await;
    c.open_channel(2).await;
    c.send(
        2,
        basic::Consume {
            queue: q.as_str().into(),
            consumer_tag: "second".into(),
            ..Default::default()
        },
    )
    .await;
    c.expect_channel_close(
        2,
        403,
        (60, 20),
        &format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_access_refused() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok("guest", "not-the-password").await;
    c.expect_connection_close(
        403,
        (0, 0),
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn unknown_user_is_access_refused() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&unique("nobody"), "guest").await;
    c.expect_connection_close(
        403,
        (0, 0),
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn publish_to_an_internal_exchange_is_access_refused() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    let d = exchange::Declare {
        internal: true,
        ..exchange_decl(&x, "fanout")
    };
    c.exchange_declare(1, d).await;
    c.publish(1, &x, "", b"no").await;
    c.expect_channel_close(
        1,
        403,
        (60, 40),
        &format!("ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'"),
    )
    .await;
    c.open_channel(2).await;
    c.delete_exchange(2, &x).await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn bad_credentials_without_the_capability_drop_the_socket() {
    // An old client that did not announce authentication_failure_close gets no
    // connection.close, only a closed socket.
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.announce_capabilities = false;
    c.start().await;
    c.start_ok("guest", "wrong").await;
    c.expect_closed().await;
    t.stop().await;
}

#[tokio::test]
async fn amqplain_with_a_wrong_password_is_access_refused() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    let mut response = Vec::new();
    for (key, value) in [("LOGIN", "guest"), ("PASSWORD", "wrong")] {
        response.push(key.len() as u8);
        response.extend_from_slice(key.as_bytes());
        response.push(b'S');
        response.extend_from_slice(&(value.len() as u32).to_be_bytes());
        response.extend_from_slice(value.as_bytes());
    }
    c.start_ok_with("AMQPLAIN", &response).await;
    c.expect_connection_close(
        403,
        (0, 0),
        "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. \
         For details see the broker logfile.",
    )
    .await;
    t.stop().await;
}

// ------------------------------------------------------------------ 404 NOT_FOUND

#[tokio::test]
async fn publish_to_a_missing_exchange_is_not_found() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    c.publish(1, &x, "k", b"hello").await;
    c.expect_channel_close(
        1,
        404,
        (60, 40),
        &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn publish_to_a_missing_exchange_drops_what_follows_until_close_ok() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    c.publish(1, &x, "k", b"one").await;
    // Sent before the client has seen the channel.close: dropped, not answered.
    c.send(1, queue_decl("")).await;
    c.publish(1, &x, "k", b"two").await;
    c.expect_channel_close(
        1,
        404,
        (60, 40),
        &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
    )
    .await;
    // Only one close, and the channel id can be opened again.
    c.open_channel(1).await;
    c.declare_exclusive(1, "").await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn passive_declare_of_the_empty_name_on_a_fresh_channel_is_not_found() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(
        1,
        queue::Declare {
            passive: true,
            ..queue_decl("")
        },
    )
    .await;
    c.expect_channel_close(1, 404, (50, 10), "NOT_FOUND - no queue '' in vhost '/'")
        .await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn publish_to_amq_default_is_not_found() {
    // The default exchange has no name: RabbitMQ 3.10 does not know it as
    // "amq.default" on the wire.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.publish(1, "amq.default", "k", b"hello").await;
    c.expect_channel_close(
        1,
        404,
        (60, 40),
        "NOT_FOUND - no exchange 'amq.default' in vhost '/'",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

// ------------------------------------------------------------------ 405 RESOURCE_LOCKED

/// Another connection owns exclusive queue `q`; `m` on a second connection must be
/// refused with 405 naming `class_method`.
async fn locked(m: impl common::Method, q: &str, t: &Target, class_method: (u16, u16)) {
    let mut owner = open1(t).await;
    owner.declare_exclusive(1, q).await;
    let mut other = open1(t).await;
    other.send(1, m).await;
    other
        .expect_channel_close(
            1,
            405,
            class_method,
            &format!(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'"
            ),
        )
        .await;
    other.assert_alive().await;
    other.close().await;
    // The owner did not notice.
    owner.declare_exclusive(1, q).await;
    owner.assert_alive().await;
    owner.close().await;
}

#[tokio::test]
async fn declare_of_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let q = unique("q");
    let d = queue::Declare {
        exclusive: true,
        ..queue_decl(&q)
    };
    locked(d, &q, &t, (50, 10)).await;
    t.stop().await;
}

#[tokio::test]
async fn passive_declare_of_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let q = unique("q");
    let d = queue::Declare {
        passive: true,
        ..queue_decl(&q)
    };
    locked(d, &q, &t, (50, 10)).await;
    t.stop().await;
}

#[tokio::test]
async fn consume_from_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let q = unique("q");
    let m = basic::Consume {
        queue: q.as_str().into(),
        ..Default::default()
    };
    locked(m, &q, &t, (60, 20)).await;
    t.stop().await;
}

#[tokio::test]
async fn bind_of_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let q = unique("q");
    let m = queue::Bind {
        queue: q.as_str().into(),
        exchange: "amq.fanout".into(),
        ..Default::default()
    };
    locked(m, &q, &t, (50, 20)).await;
    t.stop().await;
}

#[tokio::test]
async fn purge_of_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let q = unique("q");
    let m = queue::Purge {
        queue: q.as_str().into(),
        nowait: false,
    };
    locked(m, &q, &t, (50, 30)).await;
    t.stop().await;
}

#[tokio::test]
async fn delete_of_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let q = unique("q");
    let m = queue::Delete {
        queue: q.as_str().into(),
        ..Default::default()
    };
    locked(m, &q, &t, (50, 40)).await;
    t.stop().await;
}

#[tokio::test]
async fn get_from_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let q = unique("q");
    let m = basic::Get {
        queue: q.as_str().into(),
        no_ack: false,
    };
    locked(m, &q, &t, (60, 70)).await;
    t.stop().await;
}

#[tokio::test]
async fn non_exclusive_redeclare_of_an_exclusive_queue_is_locked() {
    // Even on the owning connection: RabbitMQ's text says the flag may be the cause.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.send(1, queue_decl(&q)).await;
    c.expect_channel_close(
        1,
        405,
        (50, 10),
        &format!(
            "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost \
             '/'. It could be originally declared on another connection or the exclusive \
             property value does not match that of the original declaration."
        ),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn unbind_of_another_connections_exclusive_queue_is_locked() {
    let t = Target::start().await;
    let mut owner = open1(&t).await;
    let q = unique("q");
    owner.declare_exclusive(1, &q).await;
    owner.bind_queue(1, &q, "amq.direct", "k").await;
    let mut other = open1(&t).await;
    let unbind = queue::Unbind {
        queue: q.as_str().into(),
        exchange: "amq.direct".into(),
        routing_key: "k".into(),
        ..Default::default()
    };
    other.send(1, unbind).await;
    other
        .expect_channel_close(
            1,
            405,
            (50, 50),
            &format!(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'"
            ),
        )
        .await;
    other.assert_alive().await;
    other.close().await;
    owner.close().await;
    t.stop().await;
}

#[tokio::test]
async fn exclusive_redeclare_of_a_shared_queue_is_locked() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_queue(1, &q).await;
    c.send(
        1,
        queue::Declare {
            exclusive: true,
            ..queue_decl(&q)
        },
    )
    .await;
    c.expect_channel_close(
        1,
        405,
        (50, 10),
        &format!(
            "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'"
        ),
    )
    .await;
    c.open_channel(2).await;
    c.delete_queue(2, &q).await;
    c.close().await;
    t.stop().await;
}

// ------------------------------------------------------------------ 406 PRECONDITION_FAILED

#[tokio::test]
async fn delete_if_unused_of_a_consumed_queue_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.consume(1, &q, "c", false).await;
    c.open_channel(2).await;
    c.send(
        2,
        queue::Delete {
            queue: q.as_str().into(),
            if_unused: true,
            ..Default::default()
        },
    )
    .await;
    c.expect_channel_close(
        2,
        406,
        (50, 40),
        &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn delete_if_unused_of_a_bound_exchange_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    let q = unique("q");
    c.declare_exchange(1, &x, "fanout").await;
    c.declare_exclusive(1, &q).await;
    c.bind_queue(1, &q, &x, "").await;
    c.send(
        1,
        exchange::Delete {
            exchange: x.as_str().into(),
            if_unused: true,
            ..Default::default()
        },
    )
    .await;
    c.expect_channel_close(
        1,
        406,
        (40, 20),
        &format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn double_ack_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    let got = c.get(1, &q, false).await.expect("a message");
    let tag = got.get_ok().delivery_tag;
    let ack = basic::Ack {
        delivery_tag: tag,
        multiple: false,
    };
    c.send(1, ack.clone()).await;
    c.send(1, ack).await;
    c.expect_channel_close(
        1,
        406,
        (60, 80),
        &format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn confirm_select_on_a_transactional_channel_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.call(1, tx::Select {}).await;
    c.send(1, confirm::Select { nowait: false }).await;
    c.expect_channel_close(
        1,
        406,
        (85, 10),
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn tx_select_on_a_confirm_channel_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.confirm_select(1).await;
    c.send(1, tx::Select {}).await;
    c.expect_channel_close(
        1,
        406,
        (90, 10),
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn delete_if_empty_of_a_queue_with_messages_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    c.send(
        1,
        queue::Delete {
            queue: q.as_str().into(),
            if_empty: true,
            ..Default::default()
        },
    )
    .await;
    c.expect_channel_close(
        1,
        406,
        (50, 40),
        &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn redeclare_amq_direct_as_non_durable_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let d = exchange::Declare {
        exchange: "amq.direct".into(),
        kind: "direct".into(),
        ..Default::default()
    };
    c.send(1, d).await;
    c.expect_channel_close(
        1,
        406,
        (40, 10),
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.direct' in \
         vhost '/': received 'false' but current is 'true'",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn redeclare_exchange_as_internal_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    c.declare_exchange(1, &x, "direct").await;
    let d = exchange::Declare {
        internal: true,
        ..exchange_decl(&x, "direct")
    };
    c.send(1, d).await;
    c.expect_channel_close(
        1,
        406,
        (40, 10),
        &format!(
            "PRECONDITION_FAILED - inequivalent arg 'internal' for exchange '{x}' in vhost \
             '/': received 'true' but current is 'false'"
        ),
    )
    .await;
    c.open_channel(2).await;
    c.delete_exchange(2, &x).await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn ack_of_tag_zero_without_multiple_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(
        1,
        basic::Ack {
            delivery_tag: 0,
            multiple: false,
        },
    )
    .await;
    c.expect_channel_close(
        1,
        406,
        (60, 80),
        "PRECONDITION_FAILED - unknown delivery tag 0",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn ack_of_a_no_ack_get_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    let got = c.get(1, &q, true).await.expect("a message");
    let tag = got.get_ok().delivery_tag;
    c.send(
        1,
        basic::Ack {
            delivery_tag: tag,
            multiple: false,
        },
    )
    .await;
    c.expect_channel_close(
        1,
        406,
        (60, 80),
        &format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn ack_on_another_channel_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    let got = c.get(1, &q, false).await.expect("a message");
    let tag = got.get_ok().delivery_tag;
    c.send(
        2,
        basic::Ack {
            delivery_tag: tag,
            multiple: false,
        },
    )
    .await;
    c.expect_channel_close(
        2,
        406,
        (60, 80),
        &format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
    )
    .await;
    // Channel 1 still holds the delivery and can ack it.
    c.send(
        1,
        basic::Ack {
            delivery_tag: tag,
            multiple: false,
        },
    )
    .await;
    assert_eq!(c.declare_exclusive(1, &q).await.message_count, 0);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn ack_multiple_beyond_the_last_delivery_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"m").await;
    c.get(1, &q, false).await.expect("a message");
    c.send(
        1,
        basic::Ack {
            delivery_tag: 5,
            multiple: true,
        },
    )
    .await;
    c.expect_channel_close(
        1,
        406,
        (60, 80),
        "PRECONDITION_FAILED - unknown delivery tag 5",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn ack_zero_multiple_acks_everything_outstanding() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    // With nothing outstanding it is accepted.
    c.send(
        1,
        basic::Ack {
            delivery_tag: 0,
            multiple: true,
        },
    )
    .await;
    for body in ["a", "b"] {
        c.put(&q, body.as_bytes()).await;
        c.get(1, &q, false).await.expect("a message");
    }
    c.send(
        1,
        basic::Ack {
            delivery_tag: 0,
            multiple: true,
        },
    )
    .await;
    c.close_channel(1).await;
    // Nothing came back when the channel closed: both were acked.
    c.open_channel(2).await;
    assert_eq!(c.declare_exclusive(2, &q).await.message_count, 0);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn user_id_other_than_the_login_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let publish = basic::Publish {
        routing_key: q.as_str().into(),
        ..Default::default()
    };
    let props = amq_protocol::protocol::BasicProperties::default().with_user_id("mallory".into());
    c.publish_with(1, publish, props, b"forged").await;
    c.expect_channel_close(
        1,
        406,
        (60, 40),
        &format!(
            "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user \
             was '{}'",
            t.user
        ),
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

// ------------------------------------------------------------------ 501 FRAME_ERROR

#[tokio::test]
async fn frame_end_other_than_0xce_is_frame_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let mut frame = common::method_frame(1, queue_decl(""));
    *frame.last_mut().unwrap() = 0x00;
    c.send_raw(&frame).await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 1, ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn frame_larger_than_frame_max_is_frame_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let frame_max = c.tune.frame_max as usize;
    c.send(
        1,
        basic::Publish {
            routing_key: q.as_str().into(),
            ..Default::default()
        },
    )
    .await;
    let body = vec![b'x'; frame_max * 2];
    c.send_header(1, body.len() as u64, Default::default())
        .await;
    // One body frame twice the negotiated maximum; the server may stop reading midway.
    let _ = c
        .try_send_raw(&raw_frame(3, 1, &body, common::FRAME_END))
        .await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 3, ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn method_frame_too_short_to_parse_is_frame_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send_raw(&raw_frame(1, 1, b"\x00", common::FRAME_END))
        .await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 1, ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn unknown_frame_type_is_frame_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send_raw(&raw_frame(9, 1, b"what", common::FRAME_END))
        .await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 9, ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn frame_announcing_a_huge_size_is_frame_error_at_once() {
    // Hostile input: the size alone must be refused, nothing buffered for it.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send_raw(&[1, 0, 1, 0x7f, 0xff, 0xff, 0xff]).await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 1, ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn method_arguments_with_trailing_garbage_are_frame_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let mut frame = common::method_frame(1, queue_decl(""));
    // Seven more octets inside the frame, before the frame end.
    let end = frame.pop().unwrap();
    frame.extend_from_slice(b"garbage");
    frame.push(end);
    let size = (frame.len() - 8) as u32;
    frame[3..7].copy_from_slice(&size.to_be_bytes());
    c.send_raw(&frame).await;
    c.expect_connection_close(501, (50, 10), "FRAME_ERROR - cannot decode ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn heartbeat_with_a_payload_is_frame_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send_raw(&raw_frame(8, 0, b"xx", FRAME_END)).await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 8, ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn body_one_past_frame_max_is_frame_error() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: p.channel_max,
        frame_max: 4096,
        heartbeat: 0,
    })
    .await;
    c.open_vhost(&t.vhost).await;
    c.open_channel(1).await;
    c.send(1, basic::Publish::default()).await;
    c.send_header(1, 4097, Default::default()).await;
    c.send_body(1, &[7u8; 4097]).await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 3, ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_short_string_is_frame_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    // queue.declare with the 2-octet name 0xff 0xfe.
    let mut payload = Vec::new();
    payload.extend_from_slice(&50u16.to_be_bytes());
    payload.extend_from_slice(&10u16.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes()); // reserved
    payload.extend_from_slice(&[2, 0xff, 0xfe]);
    payload.push(0); // flags
    payload.extend_from_slice(&0u32.to_be_bytes()); // empty arguments
    c.send_raw(&raw_frame(1, 1, &payload, FRAME_END)).await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - Malformed UTF-8 in shortstr")
        .await;
    t.stop().await;
}

// ------------------------------------------------------------------ 503 COMMAND_INVALID

#[tokio::test]
async fn unknown_method_ends_the_connection() {
    // RabbitMQ drops the socket without a connection.close here; any defined end
    // will do, a hang or an answer will not.
    let t = Target::start().await;
    let mut bystander = open1(&t).await;
    let mut c = open1(&t).await;
    let mut payload = Vec::new();
    payload.extend_from_slice(&50u16.to_be_bytes());
    payload.extend_from_slice(&99u16.to_be_bytes());
    c.send_raw(&raw_frame(1, 1, &payload, common::FRAME_END))
        .await;
    c.expect_end().await;
    bystander.assert_alive().await;
    bystander.close().await;
    t.stop().await;
}

#[tokio::test]
async fn tune_ok_instead_of_start_ok_ends_the_connection() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.send(
        0,
        connection::TuneOk {
            channel_max: 10,
            frame_max: 131_072,
            heartbeat: 0,
        },
    )
    .await;
    c.expect_end().await;
    t.stop().await;
}

#[tokio::test]
async fn server_only_method_from_the_client_is_command_invalid() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let get_empty = AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}));
    c.send(1, get_empty).await;
    c.expect_connection_close(503, (60, 72), "COMMAND_INVALID - unimplemented method")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn tune_ok_on_a_channel_is_command_invalid() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(
        1,
        connection::TuneOk {
            channel_max: 10,
            frame_max: 131_072,
            heartbeat: 0,
        },
    )
    .await;
    c.expect_connection_close(503, (10, 31), "COMMAND_INVALID - unimplemented method")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn unknown_mechanism_ends_the_connection() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok_with("FOO", b"whatever").await;
    c.expect_end().await;
    t.stop().await;
}

#[tokio::test]
async fn unsolicited_channel_close_ok_is_command_invalid() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, channel::CloseOk {}).await;
    c.expect_connection_close(503, (20, 41), "COMMAND_INVALID - unimplemented method")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn plain_response_without_separators_ends_the_connection() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok_with("PLAIN", b"guestguest").await;
    c.expect_end().await;
    t.stop().await;
}

// ------------------------------------------------------------------ 504 CHANNEL_ERROR

#[tokio::test]
async fn method_on_a_channel_never_opened_is_channel_error() {
    let t = Target::start().await;
    let mut c = t.open().await;
    c.send(5, queue_decl("")).await;
    c.expect_connection_close(504, (50, 10), "CHANNEL_ERROR - expected 'channel.open'")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn method_on_a_closed_channel_is_channel_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.close_channel(1).await;
    c.send(1, queue_decl("")).await;
    c.expect_connection_close(504, (50, 10), "CHANNEL_ERROR - expected 'channel.open'")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn channel_open_twice_is_channel_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, channel::Open {}).await;
    c.expect_connection_close(504, (20, 10), "CHANNEL_ERROR - second 'channel.open' seen")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn connection_open_twice_is_channel_error() {
    let t = Target::start().await;
    let mut c = t.open().await;
    c.send(
        0,
        connection::Open {
            virtual_host: "/".into(),
        },
    )
    .await;
    c.expect_connection_close(
        504,
        (10, 40),
        "CHANNEL_ERROR - unexpected method in connection state running",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn queue_method_on_channel_zero_is_channel_error() {
    let t = Target::start().await;
    let mut c = t.open().await;
    c.send(0, queue_decl("")).await;
    c.expect_connection_close(
        504,
        (50, 10),
        "CHANNEL_ERROR - unexpected method in connection state running",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn tune_ok_after_open_is_channel_error() {
    let t = Target::start().await;
    let mut c = t.open().await;
    c.send(
        0,
        connection::TuneOk {
            channel_max: 10,
            frame_max: 131_072,
            heartbeat: 0,
        },
    )
    .await;
    c.expect_connection_close(
        504,
        (10, 31),
        "CHANNEL_ERROR - unexpected method in connection state running",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn close_ok_on_a_channel_never_opened_is_channel_error() {
    let t = Target::start().await;
    let mut c = t.open().await;
    c.send(5, channel::CloseOk {}).await;
    c.expect_connection_close(504, (20, 41), "CHANNEL_ERROR - expected 'channel.open'")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn channel_open_on_channel_zero_is_channel_error() {
    let t = Target::start().await;
    let mut c = t.open().await;
    c.send(0, channel::Open {}).await;
    c.expect_connection_close(
        504,
        (20, 10),
        "CHANNEL_ERROR - unexpected method in connection state running",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn start_ok_during_tune_is_channel_error() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune().await;
    c.start_ok(&t.user, &t.password).await;
    c.expect_connection_close(
        504,
        (10, 11),
        "CHANNEL_ERROR - unexpected method in connection state opening",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn server_channel_close_then_channel_open_is_channel_error() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(
        1,
        basic::Ack {
            delivery_tag: 9,
            multiple: false,
        },
    )
    .await;
    match c.recv().await {
        AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {}
        other => panic!("expected channel.close, got {other:?}"),
    }
    // Without close-ok the channel is still closing: a second open is refused.
    c.send(1, channel::Open {}).await;
    c.expect_connection_close(504, (20, 10), "CHANNEL_ERROR - second 'channel.open' seen")
        .await;
    t.stop().await;
}

// ------------------------------------------------------------------ 505 UNEXPECTED_FRAME

#[tokio::test]
async fn content_is_assembled_per_channel() {
    // Not an error: a method on channel 2 while channel 1 waits for its body is fine,
    // and channel 1's message completes afterwards.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.open_channel(2).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let publish = basic::Publish {
        routing_key: q.as_str().into(),
        ..Default::default()
    };
    c.send(1, publish).await;
    c.send_header(1, 5, Default::default()).await;
    c.send_body(1, b"he").await;
    c.declare_exclusive(2, "").await;
    c.send_body(1, b"llo").await;
    c.publish(1, "", &q, b"second").await;
    // A get on the publishing channel reaches the queue after both publishes.
    let got = c.get(1, &q, true).await.expect("the first message");
    assert_eq!(got.body, b"hello");
    assert_eq!(got.get_ok().message_count, 1);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn body_when_a_header_was_due_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, basic::Publish::default()).await;
    c.send_body(1, b"body").await;
    c.expect_connection_close(
        505,
        (60, 40),
        "UNEXPECTED_FRAME - expected content header for class 60, \
         got non content header frame instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn body_longer_than_its_header_said_then_a_method_is_unexpected_frame() {
    // RabbitMQ keeps waiting for the body to end exactly at the announced size, so an
    // overlong body leaves the channel expecting more body; the next method is then a
    // method where a body was due.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, basic::Publish::default()).await;
    c.send_header(1, 2, Default::default()).await;
    c.send_body(1, b"much longer than two bytes").await;
    c.send(1, queue_decl("")).await;
    c.expect_connection_close(
        505,
        (60, 40),
        "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn channel_open_before_connection_open_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune().await;
    c.send(1, channel::Open {}).await;
    c.expect_connection_close(505, (0, 0), "UNEXPECTED_FRAME - ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn body_when_a_method_was_expected_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send_body(1, b"x").await;
    c.expect_connection_close(
        505,
        (0, 0),
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn content_header_of_another_class_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, basic::Publish::default()).await;
    let header = AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 50,
            body_size: 1,
            properties: Default::default(),
        },
    );
    c.send_raw(&common::encode(&header)).await;
    c.expect_connection_close(
        505,
        (60, 40),
        "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn content_header_when_a_method_was_expected_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send_header(1, 3, Default::default()).await;
    c.expect_connection_close(
        505,
        (0, 0),
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn heartbeat_on_a_channel_other_than_zero_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send_raw(&raw_frame(8, 1, b"", common::FRAME_END)).await;
    c.expect_connection_close(505, (0, 0), "UNEXPECTED_FRAME - ")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn method_when_a_body_was_due_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, basic::Publish::default()).await;
    c.send_header(1, 10, Default::default()).await;
    c.send(1, queue_decl("")).await;
    c.expect_connection_close(
        505,
        (60, 40),
        "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn method_when_a_header_was_due_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, basic::Publish::default()).await;
    c.send(1, queue_decl("")).await;
    c.expect_connection_close(
        505,
        (60, 40),
        "UNEXPECTED_FRAME - expected content header for class 60, \
         got non content header frame instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn empty_body_frame_after_a_zero_size_header_is_unexpected_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    c.send(1, basic::Publish::default()).await;
    c.send_header(1, 0, Default::default()).await;
    c.send_body(1, b"").await;
    c.expect_connection_close(
        505,
        (0, 0),
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn deliver_sent_by_the_client_waits_for_content_then_is_unexpected_frame() {
    // basic.deliver carries content, so RabbitMQ first expects its header.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let deliver = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
        consumer_tag: "x".into(),
        delivery_tag: 1,
        redelivered: false,
        exchange: "".into(),
        routing_key: "k".into(),
    }));
    c.send(1, deliver).await;
    c.send(
        1,
        basic::Qos {
            prefetch_count: 1,
            global: false,
        },
    )
    .await;
    c.expect_connection_close(
        505,
        (60, 60),
        "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
    )
    .await;
    t.stop().await;
}

// ------------------------------------------------------------------ 530 NOT_ALLOWED

#[tokio::test]
async fn duplicate_consumer_tag_is_not_allowed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.consume(1, &q, "tag", false).await;
    c.send(
        1,
        basic::Consume {
            queue: q.as_str().into(),
            consumer_tag: "tag".into(),
            ..Default::default()
        },
    )
    .await;
    c.expect_connection_close(
        530,
        (60, 20),
        "NOT_ALLOWED - attempt to reuse consumer tag 'tag'",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune().await;
    let vhost = unique("vhost");
    c.send(
        0,
        connection::Open {
            virtual_host: vhost.as_str().into(),
        },
    )
    .await;
    c.expect_connection_close(
        530,
        (10, 40),
        &format!("NOT_ALLOWED - vhost {vhost} not found"),
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn more_channels_than_channel_max_is_not_allowed() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|p| connection::TuneOk {
        channel_max: 3,
        frame_max: p.frame_max,
        heartbeat: 0,
    })
    .await;
    c.open_vhost(&t.vhost).await;
    for ch in 1..=3 {
        c.open_channel(ch).await;
    }
    c.send(4, channel::Open {}).await;
    c.expect_connection_close(
        530,
        (0, 0),
        "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)",
    )
    .await;
    t.stop().await;
}

/// Sends tune-ok with these values, then connection.open: the connection must end.
async fn refused_tune_ok(channel_max: u16, frame_max: u32) {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    c.tune_with(|_| connection::TuneOk {
        channel_max,
        frame_max,
        heartbeat: 0,
    })
    .await;
    c.send(
        0,
        connection::Open {
            virtual_host: t.vhost.as_str().into(),
        },
    )
    .await;
    c.expect_end().await;
    t.stop().await;
}

#[tokio::test]
async fn tune_ok_with_channel_max_zero_ends_the_connection() {
    // The spec reads 0 as "no limit"; RabbitMQ refuses it (silently, by dropping
    // the socket). Either way the connection must not open.
    refused_tune_ok(0, 131_072).await;
}

#[tokio::test]
async fn tune_ok_with_frame_max_zero_ends_the_connection() {
    refused_tune_ok(2047, 0).await;
}

#[tokio::test]
async fn tune_ok_with_channel_max_above_the_servers_ends_the_connection() {
    refused_tune_ok(4000, 131_072).await;
}

#[tokio::test]
async fn tune_ok_with_frame_max_above_the_servers_ends_the_connection() {
    refused_tune_ok(2047, 1_048_576).await;
}

// ------------------------------------------------------------------ 540 NOT_IMPLEMENTED

#[tokio::test]
async fn immediate_publish_is_not_implemented() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let publish = basic::Publish {
        routing_key: q.as_str().into(),
        immediate: true,
        ..Default::default()
    };
    c.publish_with(1, publish, Default::default(), b"now").await;
    c.expect_connection_close(540, (60, 40), "NOT_IMPLEMENTED - immediate=true")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn qos_with_prefetch_size_is_not_implemented() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    // amq-protocol cannot encode a prefetch_size, so the method is built by hand:
    // class 60, method 10, prefetch-size 1, prefetch-count 0, global false.
    let mut payload = Vec::new();
    payload.extend_from_slice(&60u16.to_be_bytes());
    payload.extend_from_slice(&10u16.to_be_bytes());
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.push(0);
    c.send_raw(&raw_frame(1, 1, &payload, common::FRAME_END))
        .await;
    c.expect_connection_close(540, (60, 10), "NOT_IMPLEMENTED - prefetch_size!=0")
        .await;
    t.stop().await;
}

// ------------------------------------------------------------------ malformed input

#[tokio::test]
async fn wrong_protocol_header_gets_the_supported_one_and_a_close() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.send_raw(b"AMQP\x01\x01\x00\x0a").await;
    assert_eq!(c.read_to_end().await, PROTOCOL_HEADER);
    t.stop().await;
}

#[tokio::test]
async fn http_request_gets_the_protocol_header_and_a_close() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.read_to_end().await, PROTOCOL_HEADER);
    t.stop().await;
}

#[tokio::test]
async fn truncated_frame_then_eof_closes_the_socket() {
    let t = Target::start().await;
    let mut bystander = open1(&t).await;
    let mut c = open1(&t).await;
    let frame = common::method_frame(1, queue_decl(""));
    // Everything but the frame end, then the client stops writing.
    c.send_raw(&frame[..frame.len() - 1]).await;
    c.shutdown_write().await;
    c.expect_closed().await;
    bystander.assert_alive().await;
    bystander.close().await;
    t.stop().await;
}

#[tokio::test]
async fn garbage_before_the_protocol_header_gets_the_header_and_a_close() {
    let t = Target::start().await;
    let mut bystander = open1(&t).await;
    let mut c = t.connect().await;
    c.send_raw(&[0xff; 64]).await;
    assert_eq!(c.read_to_end().await, PROTOCOL_HEADER);
    bystander.assert_alive().await;
    bystander.close().await;
    t.stop().await;
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let t = Target::start().await;
    let mut bystander = open1(&t).await;
    let q = unique("q");
    bystander.declare_exclusive(1, &q).await;
    let mut c = open1(&t).await;
    c.send_raw(b"\x01\x00\x01\x00\x00\x00\x04\xde\xad\xbe\xef\x00garbage garbage")
        .await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 1, ")
        .await;
    bystander.put(&q, b"still here").await;
    let got = bystander.get(1, &q, true).await.expect("the message");
    assert_eq!(got.body, b"still here");
    bystander.assert_alive().await;
    bystander.close().await;
    t.stop().await;
}

#[tokio::test]
async fn truncated_frame_followed_by_another_is_frame_error() {
    let t = Target::start().await;
    let mut bystander = open1(&t).await;
    let mut c = open1(&t).await;
    let frame = common::method_frame(1, queue_decl(""));
    let mut bytes = frame[..frame.len() - 1].to_vec();
    // The next frame's type octet lands where the frame end should be.
    bytes.extend_from_slice(&frame);
    c.send_raw(&bytes).await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 1, ")
        .await;
    bystander.assert_alive().await;
    bystander.close().await;
    t.stop().await;
}

#[tokio::test]
async fn short_string_in_a_header_table_is_internal_error() {
    // RabbitMQ reads field type 's' as a short int, fails on the rest of the table
    // and closes the connection with a bare 541.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let mut headers = amq_protocol::types::FieldTable::default();
    headers.insert(
        "shortstr".into(),
        amq_protocol::types::AMQPValue::ShortString("short".into()),
    );
    let publish = basic::Publish {
        routing_key: q.as_str().into(),
        ..Default::default()
    };
    let props = amq_protocol::protocol::BasicProperties::default().with_headers(headers);
    c.publish_with(1, publish, props, b"x").await;
    c.expect_connection_close(541, (0, 0), "INTERNAL_ERROR")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn amqp_1_0_header_gets_the_0_9_1_header_and_a_close() {
    let t = Target::start().await;
    let mut c = t.connect().await;
    c.send_raw(b"AMQP\x00\x01\x00\x00").await;
    assert_eq!(c.read_to_end().await, PROTOCOL_HEADER);
    t.stop().await;
}

// ------------------------------------------------------------------ 320 CONNECTION_FORCED

#[tokio::test]
async fn shutdown_closes_every_connection_with_connection_forced() {
    let t = Target::start().await;
    if t.warren().is_none() {
        eprintln!("note: RAW_TARGET set; shutdown is Warren's alone");
        return;
    }
    let mut a = open1(&t).await;
    let mut b = t.connect_in_process().expect("Warren");
    b.handshake(&t.user, &t.password, &t.vhost).await;
    // shutdown() waits for every connection to finish, so it runs beside the clients
    // that answer its close.
    let stop = tokio::spawn(t.stop());
    for c in [&mut a, &mut b] {
        c.expect_connection_close(320, (0, 0), "CONNECTION_FORCED - ")
            .await;
    }
    common::within(stop).await.expect("shutdown finished");
}

#[tokio::test]
async fn restart_closes_every_connection_with_connection_forced() {
    let t = Target::start().await;
    let Some(broker) = t.warren() else {
        eprintln!("note: RAW_TARGET set; restart is Warren's alone");
        return;
    };
    let mut a = open1(&t).await;
    let (_, ()) = tokio::join!(broker.restart(), async {
        a.expect_connection_close(320, (0, 0), "CONNECTION_FORCED - ")
            .await;
    });
    // The listener stays: a new connection works right away.
    let mut c = open1(&t).await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_a_client_that_never_answers() {
    let t = Target::start().await;
    if t.warren().is_none() {
        eprintln!("note: RAW_TARGET set; shutdown is Warren's alone");
        return;
    }
    // This client reads nothing and never sends close-ok.
    let mut silent = open1(&t).await;
    common::within(t.stop()).await;
    // It was told, and then dropped.
    match silent.next_frame().await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
            assert_eq!(c.reply_code, 320)
        }
        other => panic!("expected connection.close 320, got {other:?}"),
    }
    silent.expect_closed().await;
}

/// Generous: a shutdown or restart that has not ended by then never will.
const HANG: Duration = Duration::from_secs(30);

/// A TCP client through the handshake that consumes (no-ack) from a queue
/// holding far more than the socket buffers and the outbox can take, and then
/// never reads: the broker's writes to it block for good.
async fn stalled_consumer(t: &Target) -> common::Raw {
    let broker = t.warren().expect("Warren");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window fills sooner; the volume below fills any window anyway.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(t.addr.parse().unwrap()).await.unwrap();
    let mut c = common::Raw::new(Box::new(stream));
    c.handshake(&t.user, &t.password, &t.vhost).await;
    c.open_channel(1).await;
    let q = unique("stalled");
    c.declare_exclusive(1, &q).await;
    // 64 MiB of deliveries, one shared buffer on the broker's side.
    let body = bytes::Bytes::from(vec![b'x'; 256 * 1024]);
    let n = 256;
    for _ in 0..n {
        broker
            .seed(&q, body.clone(), Default::default())
            .expect("seed");
    }
    c.send(
        1,
        basic::Consume {
            queue: q.as_str().into(),
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    broker
        .wait_for(common::REPLY_TIMEOUT, |s| {
            s.queue(&q).is_some_and(|q| q.message_count() < n)
        })
        .await
        .expect("deliveries started");
    c
}

#[tokio::test]
async fn shutdown_abandons_a_client_that_stops_reading() {
    let builder = warren_broker::Broker::builder().close_timeout(Duration::from_millis(50));
    let Some(t) = Target::start_with(builder).await else {
        return;
    };
    let _stalled = stalled_consumer(&t).await;
    // Its unread deliveries, and the close behind them, go with the socket.
    t.stop().await;
}

#[tokio::test]
async fn restart_abandons_a_client_that_stops_reading() {
    let builder = warren_broker::Broker::builder().close_timeout(Duration::from_millis(50));
    let Some(t) = Target::start_with(builder).await else {
        return;
    };
    let _stalled = stalled_consumer(&t).await;
    let broker = t.warren().expect("Warren");
    tokio::time::timeout(HANG, broker.restart())
        .await
        .expect("restart waited for a client that does not read");
    let mut c = open1(&t).await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

/// Writes a whole handshake (PLAIN guest/guest, no heartbeats, vhost `/`)
/// without waiting for the server, so that it is in the stream before the
/// connection's task has run at all.
async fn blind_handshake(c: &mut common::Raw) {
    c.send_raw(PROTOCOL_HEADER).await;
    c.send(
        0,
        connection::StartOk {
            client_properties: Default::default(),
            mechanism: "PLAIN".into(),
            response: b"\0guest\0guest".to_vec().into(),
            locale: "en_US".into(),
        },
    )
    .await;
    c.send(
        0,
        connection::TuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        },
    )
    .await;
    c.send(
        0,
        connection::Open {
            virtual_host: "/".into(),
        },
    )
    .await;
}

/// Past the handshake's replies, the broker closes the connection: with 320
/// CONNECTION_FORCED, or silently when the signal was handled before the
/// handshake was (the task reads and hears the signal in either order).
async fn expect_closed_by_broker(c: &mut common::Raw) {
    loop {
        match c.next_frame().await {
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Close(close)),
            )) => {
                assert_eq!(close.reply_code, 320, "{close:?}");
                return;
            }
            Some(AMQPFrame::Method(0, AMQPClass::Connection(_))) => {}
            None => return,
            Some(other) => panic!("expected the handshake and a close, got {other:?}"),
        }
    }
}

/// A broker with no listener and a virtual clock, and an in-process connection
/// whose handshake is written but whose task has not run yet (see below).
async fn connection_not_yet_started() -> (warren_broker::Broker, common::Raw) {
    let broker = warren_broker::Broker::builder()
        .no_listener()
        .virtual_clock()
        .close_timeout(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let mut c = common::Raw::new(Box::new(broker.connect_in_process()));
    blind_handshake(&mut c).await;
    (broker, c)
}

// On a current-thread runtime a spawned task first runs when the test's task
// yields; with no listener and a virtual clock the broker has no background
// task either, so `shutdown()` sends its signal before the connection's task
// has started: the case of a connection accepted just before the signal.
#[tokio::test]
async fn shutdown_closes_a_connection_whose_task_had_not_started() {
    let (broker, mut c) = connection_not_yet_started().await;
    tokio::time::timeout(HANG, broker.shutdown())
        .await
        .expect("shutdown missed a connection that started after its signal");
    expect_closed_by_broker(&mut c).await;
}

// As above: the connection exists when `restart()` is called, so the restart
// closes it, even though its task only runs once the restart is over.
#[tokio::test]
async fn restart_closes_a_connection_whose_task_had_not_started() {
    let (broker, mut c) = connection_not_yet_started().await;
    tokio::time::timeout(HANG, broker.restart())
        .await
        .expect("restart hung");
    expect_closed_by_broker(&mut c).await;
    tokio::time::timeout(HANG, broker.shutdown())
        .await
        .expect("shutdown hung");
}

// ------------------------------------------------------------------ in-process stream
// ------------------------------------------------------------------ in-process stream

#[tokio::test]
async fn in_process_stream_reports_errors_like_tcp() {
    let t = Target::start().await;
    let Some(mut c) = t.connect_in_process() else {
        eprintln!("note: RAW_TARGET set; the in-process stream is Warren's alone");
        return;
    };
    c.handshake(&t.user, &t.password, &t.vhost).await;
    c.open_channel(1).await;
    c.send(
        1,
        queue::Declare {
            passive: true,
            ..queue_decl("missing")
        },
    )
    .await;
    c.expect_channel_close(
        1,
        404,
        (50, 10),
        "NOT_FOUND - no queue 'missing' in vhost '/'",
    )
    .await;
    c.assert_alive().await;
    c.send(7, queue_decl("")).await;
    c.expect_connection_close(504, (50, 10), "CHANNEL_ERROR - expected 'channel.open'")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn in_process_stream_refuses_bad_credentials() {
    let t = Target::start().await;
    let Some(mut c) = t.connect_in_process() else {
        eprintln!("note: RAW_TARGET set; the in-process stream is Warren's alone");
        return;
    };
    c.start().await;
    c.start_ok("guest", "wrong").await;
    c.expect_connection_close(
        403,
        (0, 0),
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
    )
    .await;
    t.stop().await;
}
