//! Warren's settings and limits (`Broker::builder()`): what tune proposes, the
//! maximum message size, the connection limit, a broker without a listener. Limits
//! answer the way RabbitMQ answers when its own limit is reached; the 128 MiB default
//! message size is checked against any target, the configurable limits on Warren
//! only (RabbitMQ's cannot be changed per test).

mod common;

use amq_protocol::protocol::{basic, channel, connection};
use common::{open1, raw_frame, unique, Raw, Target, FRAME_END};
use warren_broker::Broker;

/// Publishes a message of `size` octets in frames of at most `frame_max - 8`.
async fn publish_sized(c: &mut Raw, queue: &str, size: usize) {
    c.send(
        1,
        basic::Publish {
            routing_key: queue.into(),
            ..Default::default()
        },
    )
    .await;
    c.send_header(1, size as u64, Default::default()).await;
    let chunk = vec![b'x'; c.tune.frame_max as usize - 8];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        // The broker may refuse the message before its body ends and stop reading.
        if c.try_send_raw(&raw_frame(3, 1, &chunk[..n], FRAME_END))
            .await
            .is_err()
        {
            break;
        }
        sent += n;
    }
}

#[tokio::test]
async fn message_over_128_mib_is_precondition_failed() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    let size = 128 * 1024 * 1024 + 1;
    publish_sized(&mut c, &q, size).await;
    c.expect_channel_close(
        1,
        406,
        (60, 40),
        "PRECONDITION_FAILED - message size 134217729 is larger than configured max size \
         134217728",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn configured_max_message_size_is_enforced() {
    let Some(t) = Target::start_with(Broker::builder().max_message_size(4096)).await else {
        return;
    };
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    // At the limit: accepted.
    publish_sized(&mut c, &q, 4096).await;
    let got = c.get(1, &q, true).await.expect("the 4096-octet message");
    assert_eq!(got.body.len(), 4096);
    publish_sized(&mut c, &q, 4097).await;
    c.expect_channel_close(
        1,
        406,
        (60, 40),
        "PRECONDITION_FAILED - message size 4097 is larger than configured max size 4096",
    )
    .await;
    c.assert_alive().await;
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn tune_proposes_the_configured_values() {
    let builder = Broker::builder()
        .channel_max(3)
        .frame_max(8192)
        .heartbeat(7);
    let Some(t) = Target::start_with(builder).await else {
        return;
    };
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    let tune = c.tune().await;
    assert_eq!(
        (tune.channel_max, tune.frame_max, tune.heartbeat),
        (3, 8192, 7)
    );
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

#[tokio::test]
async fn configured_frame_max_is_enforced() {
    let Some(t) = Target::start_with(Broker::builder().frame_max(8192)).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.send(1, basic::Publish::default()).await;
    c.send_header(1, 9000, Default::default()).await;
    c.send_body(1, &[b'x'; 9000]).await;
    c.expect_connection_close(501, (0, 0), "FRAME_ERROR - type 3, ")
        .await;
    t.stop().await;
}

/// Goes as far into the handshake as the broker lets it; true if it got open-ok.
async fn handshake_allowed(t: &Target) -> bool {
    let mut c = t.connect().await;
    c.send_raw(common::PROTOCOL_HEADER).await;
    if c.next_frame().await.is_none() {
        return false;
    }
    c.start_ok(&t.user, &t.password).await;
    // A refusal may come as a closed socket or a connection.close at any step.
    loop {
        match c.next_frame().await {
            None => return false,
            Some(amq_protocol::frame::AMQPFrame::Method(0, m)) => match m {
                amq_protocol::protocol::AMQPClass::Connection(connection::AMQPMethod::Tune(t_)) => {
                    c.send(
                        0,
                        connection::TuneOk {
                            channel_max: t_.channel_max,
                            frame_max: t_.frame_max,
                            heartbeat: 0,
                        },
                    )
                    .await;
                    c.send(
                        0,
                        connection::Open {
                            virtual_host: t.vhost.as_str().into(),
                        },
                    )
                    .await;
                }
                amq_protocol::protocol::AMQPClass::Connection(connection::AMQPMethod::OpenOk(
                    _,
                )) => return true,
                amq_protocol::protocol::AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                    return false
                }
                other => panic!("unexpected {other:?} during the handshake"),
            },
            Some(other) => panic!("unexpected {other:?} during the handshake"),
        }
    }
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_the_others_go_on() {
    let Some(t) = Target::start_with(Broker::builder().max_connections(2)).await else {
        return;
    };
    let mut a = open1(&t).await;
    let mut b = open1(&t).await;
    assert!(!handshake_allowed(&t).await, "a third connection got in");
    a.assert_alive().await;
    b.assert_alive().await;
    b.close().await;
    drop(b);
    // Once a connection is gone a new one is let in. No event tells when the broker
    // has released the closed connection, so this retries, bounded.
    let deadline = tokio::time::Instant::now() + common::REPLY_TIMEOUT;
    while !handshake_allowed(&t).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection let in after one closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    a.close().await;
    t.stop().await;
}

#[tokio::test]
async fn broker_without_listener_serves_in_process() {
    let Some(t) = Target::start_with(Broker::builder().no_listener()).await else {
        return;
    };
    let broker = t.warren().expect("Warren");
    assert_eq!(broker.local_addr(), None);
    let mut c = t.connect_in_process().expect("in-process stream");
    c.handshake(&t.user, &t.password, &t.vhost).await;
    c.open_channel(1).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.put(&q, b"no socket").await;
    assert_eq!(
        c.get(1, &q, true).await.expect("a message").body,
        b"no socket"
    );
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn configured_credentials_and_vhosts_apply_in_process() {
    let builder = Broker::builder()
        .credentials("svc", "p@ss word")
        .vhost("tenant-a");
    let Some(t) = Target::start_with(builder).await else {
        return;
    };
    // The URL carries the credentials, percent-encoded.
    assert!(
        t.url.starts_with("amqp://svc:p%40ss%20word@127.0.0.1:"),
        "{}",
        t.url
    );
    assert_eq!(t.password, "p@ss word");
    let mut c = t.connect_in_process().expect("in-process stream");
    c.handshake("svc", "p@ss word", "tenant-a").await;
    c.assert_alive().await;
    c.close().await;
    let mut c = t.connect_in_process().expect("in-process stream");
    c.start().await;
    c.start_ok("guest", "guest").await;
    c.expect_connection_close(403, (0, 0), "ACCESS_REFUSED - ")
        .await;
    t.stop().await;
}
