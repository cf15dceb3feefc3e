//! Version profiles (`--rabbitmq-version`, `Broker::builder().rabbitmq_version`):
//! each behaviour that differs between RabbitMQ releases, checked in the profiles
//! where it changes. The expected codes and texts come from RabbitMQ's source at
//! the release tag; `docs/rabbitmq-versions.md` cites the file and line of each.

mod common;

use amq_protocol::protocol::{basic, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use common::{open1, unique, Raw, Target};
use warren_broker::{Broker, DeprecatedFeature, RabbitVersion};

/// RabbitMQ 4.3's refusal of a queue that is neither durable nor exclusive, as
/// `rabbit_binary_generator` cuts it to 255 characters.
const TRANSIENT_REFUSED_4_3: &str =
    "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
     By default, this feature is not permitted anymore.\n\
     The feature will be removed from a future major RabbitMQ version, regardless of the \
     configuration; actual version to be determined.\nTo...";

/// An embedded Warren with this profile; `None` under `RAW_TARGET` (these tests
/// check Warren's own setting).
async fn warren(version: RabbitVersion) -> Option<Target> {
    Target::start_with(Broker::builder().rabbitmq_version(version)).await
}

fn text(props: &FieldTable, key: &str) -> String {
    match props.inner().get(key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("server property {key}: {other:?}"),
    }
}

fn plain(name: &str) -> queue::Declare {
    queue::Declare {
        queue: name.into(),
        ..Default::default()
    }
}

fn with_arg(mut d: queue::Declare, key: &str, value: AMQPValue) -> queue::Declare {
    d.arguments.insert(key.into(), value);
    d
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

#[tokio::test]
async fn connection_start_says_rabbitmq_and_the_profiles_release() {
    for (version, release, copyright) in [
        (
            RabbitVersion::V3_10,
            "3.10.8",
            "Copyright (c) 2007-2022 VMware, Inc. or its affiliates.",
        ),
        (
            RabbitVersion::V3_13,
            "3.13.7",
            "Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries",
        ),
        (
            RabbitVersion::V4_3,
            "4.3.5",
            "Copyright (c) 2007-2026 Broadcom Inc and/or its subsidiaries",
        ),
    ] {
        let Some(t) = warren(version).await else {
            return;
        };
        let c = t.open().await;
        let props = &c.server_properties;
        assert_eq!(text(props, "product"), "RabbitMQ");
        assert_eq!(text(props, "version"), release);
        assert_eq!(text(props, "copyright"), copyright);
        assert_eq!(
            text(props, "information"),
            "Licensed under the MPL 2.0. Website: https://rabbitmq.com"
        );
        assert!(text(props, "platform").starts_with("Erlang/OTP "));
        assert!(text(props, "cluster_name").starts_with("rabbit@"));
        assert_eq!(text(props, "warren_version"), env!("CARGO_PKG_VERSION"));
        let Some(AMQPValue::FieldTable(caps)) = props.inner().get("capabilities") else {
            panic!("no capabilities table");
        };
        assert_eq!(caps.inner().len(), 9, "{caps:?}");
    }
}

#[tokio::test]
async fn a_transient_non_exclusive_queue_is_refused_by_4_3() {
    let Some(t) = warren(RabbitVersion::V4_3).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.send(1, plain("hello")).await;
    c.expect_connection_close(541, (50, 10), TRANSIENT_REFUSED_4_3)
        .await;
}

#[tokio::test]
async fn durable_and_exclusive_queues_still_declare_in_4_3() {
    let Some(t) = warren(RabbitVersion::V4_3).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.queue_declare(
        1,
        queue::Declare {
            durable: true,
            ..plain("task_queue")
        },
    )
    .await;
    // The seed's publish/subscribe: an exclusive server-named queue.
    let ok = c
        .queue_declare(
            1,
            queue::Declare {
                exclusive: true,
                ..plain("")
            },
        )
        .await;
    assert!(ok.queue.as_str().starts_with("amq.gen-"));
    // An existing transient queue is only compared, not refused (the check is on
    // creation): none exists here, so a redeclaration of the durable one is fine.
    c.queue_declare(
        1,
        queue::Declare {
            durable: true,
            ..plain("task_queue")
        },
    )
    .await;
    c.assert_alive().await;
}

#[tokio::test]
async fn transient_queues_are_fine_before_4_3() {
    for version in [
        RabbitVersion::V3_10,
        RabbitVersion::V3_13,
        RabbitVersion::V4_2,
    ] {
        let Some(t) = warren(version).await else {
            return;
        };
        let mut c = open1(&t).await;
        c.queue_declare(1, plain("hello")).await;
        c.assert_alive().await;
    }
}

#[tokio::test]
async fn permit_deprecated_brings_transient_queues_back_in_4_3() {
    let Some(t) = Target::start_with(
        Broker::builder()
            .rabbitmq_version(RabbitVersion::V4_3)
            .permit_deprecated(DeprecatedFeature::TransientNonexclQueues),
    )
    .await
    else {
        return;
    };
    let mut c = open1(&t).await;
    c.queue_declare(1, plain("hello")).await;
    c.assert_alive().await;
}

#[tokio::test]
async fn deny_deprecated_refuses_with_the_configuration_text_in_3_13() {
    let Some(t) = Target::start_with(
        Broker::builder()
            .rabbitmq_version(RabbitVersion::V3_13)
            .deny_deprecated(DeprecatedFeature::TransientNonexclQueues),
    )
    .await
    else {
        return;
    };
    let mut c = open1(&t).await;
    c.send(1, plain("hello")).await;
    c.expect_connection_close(
        541,
        (50, 10),
        "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
         Its use is not permitted per the configuration (overriding the default, which is \
         permitted):\n    \"deprecated_features.permit.transient_nonexcl_queues = false\"\n",
    )
    .await;
}

#[tokio::test]
async fn a_deprecated_feature_unknown_to_the_version_is_refused_at_start() {
    let e = Broker::builder()
        .deny_deprecated(DeprecatedFeature::GlobalQos)
        .start()
        .await
        .expect_err("3.10 has no deprecated features");
    assert_eq!(
        e.to_string(),
        "RabbitMQ 3.10 has no deprecated features (global_qos is one from 3.13 on)"
    );
}

/// A quorum queue refuses a consumer on a channel with a global prefetch; where
/// `global_qos` is denied, the prefetch is per consumer and the consumer is taken.
#[tokio::test]
async fn global_qos_is_per_consumer_where_denied() {
    for (version, refused) in [(RabbitVersion::V3_10, true), (RabbitVersion::V4_3, false)] {
        let Some(t) = warren(version).await else {
            return;
        };
        let mut c = open1(&t).await;
        let q = unique("qq");
        c.queue_declare(
            1,
            with_arg(
                queue::Declare {
                    durable: true,
                    ..plain(&q)
                },
                "x-queue-type",
                long_str("quorum"),
            ),
        )
        .await;
        c.qos(1, 10, true).await;
        if refused {
            c.send(
                1,
                basic::Consume {
                    queue: q.as_str().into(),
                    ..Default::default()
                },
            )
            .await;
            c.expect_connection_close(
                540,
                (60, 20),
                &format!("NOT_IMPLEMENTED - queue '{q}' in vhost '/' does not support global qos"),
            )
            .await;
        } else {
            c.consume(1, &q, "c1", false).await;
            c.assert_alive().await;
        }
    }
}

#[tokio::test]
async fn queue_master_locator_is_refused_by_4_3_only() {
    let arg = |name: &str| {
        with_arg(
            queue::Declare {
                durable: true,
                ..plain(name)
            },
            "x-queue-master-locator",
            long_str("client-local"),
        )
    };
    let Some(t) = warren(RabbitVersion::V4_0).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.queue_declare(1, arg("located")).await;
    c.assert_alive().await;

    let Some(t) = warren(RabbitVersion::V4_3).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.send(1, arg("located")).await;
    c.expect_connection_close(
        541,
        (50, 10),
        "INTERNAL_ERROR - Feature `queue_master_locator` is deprecated.\n\
         By default, this feature is not permitted anymore.\n",
    )
    .await;
}

/// The content header is refused before any body is sent.
async fn header_refused(c: &mut Raw, size: u64, max: u64) {
    c.send(
        1,
        basic::Publish {
            routing_key: "nowhere".into(),
            ..Default::default()
        },
    )
    .await;
    c.send_header(1, size, Default::default()).await;
    c.expect_channel_close(
        1,
        406,
        (60, 40),
        &format!(
            "PRECONDITION_FAILED - message size {size} is larger than configured max size {max}"
        ),
    )
    .await;
}

#[tokio::test]
async fn max_message_size_default_is_16_mib_from_4_0() {
    let Some(t) = warren(RabbitVersion::V4_0).await else {
        return;
    };
    let mut c = open1(&t).await;
    header_refused(&mut c, 16 * 1024 * 1024 + 1, 16 * 1024 * 1024).await;

    let Some(t) = warren(RabbitVersion::V3_13).await else {
        return;
    };
    let mut c = open1(&t).await;
    header_refused(&mut c, 128 * 1024 * 1024 + 1, 128 * 1024 * 1024).await;

    // A configured size wins over the profile's default.
    let Some(t) = Target::start_with(
        Broker::builder()
            .max_message_size(4096)
            .rabbitmq_version(RabbitVersion::V4_3),
    )
    .await
    else {
        return;
    };
    let mut c = open1(&t).await;
    header_refused(&mut c, 4097, 4096).await;
}

#[test]
fn the_cli_lists_the_known_versions_for_an_unknown_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--bind", "127.0.0.1:0", "--rabbitmq-version", "3.9"])
        .output()
        .expect("run warren");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "unknown RabbitMQ version '3.9': known versions are \
             3.10, 3.11, 3.12, 3.13, 4.0, 4.1, 4.2, 4.3"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn queue_version_1_is_refused_from_4_3() {
    let declare = |name: &str, v: i32| {
        with_arg(
            queue::Declare {
                durable: true,
                ..plain(name)
            },
            "x-queue-version",
            AMQPValue::LongInt(v),
        )
    };
    let Some(t) = warren(RabbitVersion::V4_2).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.queue_declare(1, declare("cq1", 1)).await;
    c.send(1, declare("cq3", 3)).await;
    c.expect_channel_close(
        1,
        406,
        (50, 10),
        "PRECONDITION_FAILED - invalid arg 'x-queue-version' for queue 'cq3' in vhost '/': \
         \"unsupported queue version '3'\"",
    )
    .await;

    let Some(t) = warren(RabbitVersion::V4_3).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.queue_declare(1, declare("cq2", 2)).await;
    c.send(1, declare("cq1", 1)).await;
    c.expect_channel_close(
        1,
        406,
        (50, 10),
        "PRECONDITION_FAILED - invalid arg 'x-queue-version' for queue 'cq1' in vhost '/': \
         \"unsupported queue version '1'\"",
    )
    .await;
}

#[tokio::test]
async fn queue_mode_is_checked_until_4_2_and_ignored_by_4_3() {
    let declare = |mode: &str| {
        with_arg(
            queue::Declare {
                durable: true,
                ..plain("moded")
            },
            "x-queue-mode",
            long_str(mode),
        )
    };
    let Some(t) = warren(RabbitVersion::V3_10).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.send(1, declare("bogus")).await;
    c.expect_channel_close(
        1,
        406,
        (50, 10),
        "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'moded' in vhost '/': \
         \"unsupported queue mode 'bogus'\"",
    )
    .await;

    let Some(t) = warren(RabbitVersion::V4_3).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.queue_declare(1, declare("bogus")).await;
    c.assert_alive().await;
}

/// Publishes `n` messages to a quorum queue, then takes the first and rejects
/// it with requeue `returns` times; returns whether it is still in the queue.
async fn survives_returns(
    version: RabbitVersion,
    limit: Option<i32>,
    returns: u32,
) -> Option<bool> {
    let t = warren(version).await?;
    let mut c = open1(&t).await;
    let mut d = with_arg(
        queue::Declare {
            durable: true,
            ..plain("poison")
        },
        "x-queue-type",
        long_str("quorum"),
    );
    if let Some(limit) = limit {
        d = with_arg(d, "x-delivery-limit", AMQPValue::LongInt(limit));
    }
    c.queue_declare(1, d).await;
    c.publish(1, "", "poison", b"m").await;
    for _ in 0..returns {
        let Some(m) = c.get(1, "poison", false).await else {
            return Some(false);
        };
        c.send(
            1,
            basic::Reject {
                delivery_tag: m.get_ok().delivery_tag,
                requeue: true,
            },
        )
        .await;
    }
    Some(c.get(1, "poison", true).await.is_some())
}

#[tokio::test]
async fn quorum_queues_get_a_delivery_limit_of_20_from_4_0() {
    // 3.13: no limit unless asked.
    if let Some(kept) = survives_returns(RabbitVersion::V3_13, None, 25).await {
        assert!(kept, "3.13 has no default delivery limit");
    }
    // 4.0: 20 returns are allowed, the 21st drops the message.
    if let Some(kept) = survives_returns(RabbitVersion::V4_0, None, 20).await {
        assert!(kept, "20 returns are within the default limit");
    }
    if let Some(kept) = survives_returns(RabbitVersion::V4_0, None, 21).await {
        assert!(!kept, "the 21st return is over the default limit of 20");
    }
    // -1 disables it from 4.0; 3.10 drops the message at its first return.
    if let Some(kept) = survives_returns(RabbitVersion::V4_0, Some(-1), 25).await {
        assert!(kept, "x-delivery-limit -1 is no limit in 4.0");
    }
    if let Some(kept) = survives_returns(RabbitVersion::V3_10, Some(-1), 1).await {
        assert!(!kept, "3.10.8 drops it at the first return");
    }
}

#[tokio::test]
async fn frame_max_below_8192_is_refused_from_4_1() {
    for (version, accepted) in [(RabbitVersion::V4_0, true), (RabbitVersion::V4_1, false)] {
        let Some(t) = warren(version).await else {
            return;
        };
        let mut c = t.connect().await;
        c.start().await;
        c.start_ok(&t.user, &t.password).await;
        c.tune_with(|tune| amq_protocol::protocol::connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: 4096,
            heartbeat: 0,
        })
        .await;
        if accepted {
            c.open_vhost("/").await;
            c.assert_alive().await;
        } else {
            // RabbitMQ answers a refused tune-ok by dropping the socket.
            c.expect_end().await;
        }
    }
}

/// A responder's mandatory reply to a direct reply-to address: returned with 312
/// NO_ROUTE until 4.1 (delivered or not), routed from 4.2 (the requester gone or
/// not).
#[tokio::test]
async fn mandatory_direct_replies_are_returned_until_4_2() {
    for (version, returned) in [(RabbitVersion::V4_1, true), (RabbitVersion::V4_2, false)] {
        let Some(t) = warren(version).await else {
            return;
        };
        let mut c = open1(&t).await;
        c.open_channel(2).await;
        c.declare_exclusive(2, "rpc").await;
        c.consume(1, "amq.rabbitmq.reply-to", "requester", true)
            .await;
        let props = amq_protocol::protocol::BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into());
        c.publish_with(
            1,
            basic::Publish {
                routing_key: "rpc".into(),
                ..Default::default()
            },
            props,
            b"request",
        )
        .await;
        let request = c.get(2, "rpc", true).await.expect("the request");
        let address = request
            .props
            .reply_to()
            .clone()
            .expect("reply_to rewritten")
            .to_string();
        for requester_there in [true, false] {
            if !requester_there {
                c.close_channel(1).await;
            }
            c.publish_with(
                2,
                basic::Publish {
                    routing_key: address.as_str().into(),
                    mandatory: true,
                    ..Default::default()
                },
                Default::default(),
                b"reply",
            )
            .await;
            if requester_there {
                let reply = c.expect_content(1).await;
                assert_eq!(reply.body, b"reply");
            }
            // A return comes before the answer to a later method on its channel.
            c.send(2, basic::Qos::default()).await;
            let first = c.expect_method(2).await;
            match &first {
                AMQPClass::Basic(basic::AMQPMethod::Return(r)) => {
                    assert!(returned, "{version}: returned {r:?}");
                    assert_eq!((r.reply_code, r.reply_text.as_str()), (312, "NO_ROUTE"));
                    let content = c.content_after(2, first.clone()).await;
                    assert_eq!(content.body, b"reply");
                    let qos_ok = c.expect_method(2).await;
                    assert!(
                        matches!(qos_ok, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))),
                        "{qos_ok:?}"
                    );
                }
                AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => {
                    assert!(!returned, "{version}: no basic.return");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn local_random_spreads_messages_over_its_queues_one_each_from_4_0() {
    let Some(t) = warren(RabbitVersion::V4_0).await else {
        return;
    };
    let mut c = open1(&t).await;
    let x = unique("lrx");
    c.declare_exchange(1, &x, "x-local-random").await;
    let (a, b) = (unique("lra"), unique("lrb"));
    for q in [&a, &b] {
        c.declare_exclusive(1, q).await;
        c.bind_queue(1, q, &x, "").await;
    }
    for i in 0..200 {
        c.publish(1, &x, &format!("key-{i}"), b"m").await;
    }
    let depth = |ok: queue::DeclareOk| ok.message_count;
    let na = depth(
        c.queue_declare(
            1,
            queue::Declare {
                passive: true,
                ..plain(&a)
            },
        )
        .await,
    );
    let nb = depth(
        c.queue_declare(
            1,
            queue::Declare {
                passive: true,
                ..plain(&b)
            },
        )
        .await,
    );
    // Each message to exactly one queue, and a random one: both are used (all 200
    // in one queue would happen once in 2^199 runs).
    assert_eq!(na + nb, 200);
    assert!(na > 0 && nb > 0, "{na} and {nb}");
    c.assert_alive().await;
}

/// `x-modulus-hash`: unknown until 4.2 (a plugin's, off by default), from 4.3
/// each message goes to the one binding `phash2(RoutingKeys, 2^27) rem Count`
/// picks among the bindings sorted by destination. The expected queues were
/// computed with `erlang:phash2/2` on Erlang/OTP 25.
#[tokio::test]
async fn modulus_hash_routes_by_erlangs_hash_of_the_keys_from_4_3() {
    let Some(t) = warren(RabbitVersion::V4_2).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.send(
        1,
        amq_protocol::protocol::exchange::Declare {
            exchange: "mh".into(),
            kind: "x-modulus-hash".into(),
            ..Default::default()
        },
    )
    .await;
    c.expect_connection_close(
        503,
        (40, 10),
        "COMMAND_INVALID - unknown exchange type 'x-modulus-hash'",
    )
    .await;

    let Some(t) = warren(RabbitVersion::V4_3).await else {
        return;
    };
    let mut c = open1(&t).await;
    c.declare_exchange(1, "mh", "x-modulus-hash").await;
    // Four bindings, mh-a twice: sorted [mh-a, mh-a, mh-b, mh-c].
    for (q, key) in [
        ("mh-c", ""),
        ("mh-a", ""),
        ("mh-b", "any"),
        ("mh-a", "other"),
    ] {
        c.declare_exclusive(1, q).await;
        c.bind_queue(1, q, "mh", key).await;
    }
    let expected = [
        ("key-0", "mh-a"),
        ("key-1", "mh-b"),
        ("key-2", "mh-c"),
        ("key-3", "mh-b"),
        ("key-5", "mh-a"),
        ("key-7", "mh-c"),
    ];
    for (key, queue) in expected {
        c.publish(1, "mh", key, key.as_bytes()).await;
        let got = c.get(1, queue, true).await;
        assert_eq!(
            got.map(|m| m.body),
            Some(key.as_bytes().to_vec()),
            "{key} to {queue}"
        );
    }
    // The CC header's keys are hashed too: [key-0, cc-1] goes to mh-b.
    let cc = FieldTable::from(std::collections::BTreeMap::from([(
        "CC".into(),
        AMQPValue::FieldArray(vec![long_str("cc-1")].into()),
    )]));
    c.publish_with(
        1,
        basic::Publish {
            exchange: "mh".into(),
            routing_key: "key-0".into(),
            ..Default::default()
        },
        amq_protocol::protocol::BasicProperties::default().with_headers(cc),
        b"with cc",
    )
    .await;
    let got = c.get(1, "mh-b", true).await.expect("routed to mh-b");
    assert_eq!(got.body, b"with cc");
    c.assert_alive().await;
}

/// The `x-death` entries of a message as (queue, reason, count).
fn deaths(props: &amq_protocol::protocol::BasicProperties) -> Vec<(String, String, i64)> {
    let headers = props.headers().clone().unwrap_or_default();
    let Some(AMQPValue::FieldArray(a)) = headers.inner().get("x-death") else {
        panic!("no x-death in {headers:?}");
    };
    a.as_slice()
        .iter()
        .map(|e| {
            let AMQPValue::FieldTable(t) = e else {
                panic!("x-death entry {e:?}");
            };
            let Some(AMQPValue::LongLongInt(n)) = t.inner().get("count") else {
                panic!("x-death count in {t:?}");
            };
            (text(t, "queue"), text(t, "reason"), *n)
        })
        .collect()
}

/// Takes the one message of `queue` and rejects it without requeue: the broker
/// dead-letters it before it reads the next method.
async fn reject_from(c: &mut Raw, queue: &str) -> amq_protocol::protocol::BasicProperties {
    let m = c.get(1, queue, false).await.expect("a message");
    c.send(
        1,
        basic::Reject {
            delivery_tag: m.get_ok().delivery_tag,
            requeue: false,
        },
    )
    .await;
    m.props
}

/// From 4.0 only the broker's own death history counts, and the mark that says
/// a message's `x-death` is the broker's survives a restart from the data
/// directory: a message dead-lettered before the restart, dead-lettered again
/// in the same queue after it, counts 2 (a client's header would start over
/// at 1). Two durable queues dead-letter to each other through the default
/// exchange; the client's header claims 5 deaths in `a`.
#[tokio::test]
async fn the_broker_s_own_death_history_survives_a_restart_from_4_0() {
    let dir = std::env::temp_dir().join(unique("warren-xdeath"));
    let builder = || {
        Broker::builder()
            .rabbitmq_version(RabbitVersion::V4_0)
            .data_dir(&dir)
    };
    let Some(t) = Target::start_with(builder()).await else {
        return;
    };
    let mut c = open1(&t).await;
    let (a, b) = ("xdeath-a", "xdeath-b");
    for (q, next) in [(a, b), (b, a)] {
        let d = with_arg(
            with_arg(
                queue::Declare {
                    durable: true,
                    ..plain(q)
                },
                "x-dead-letter-exchange",
                long_str(""),
            ),
            "x-dead-letter-routing-key",
            long_str(next),
        );
        c.queue_declare(1, d).await;
    }
    let mut claimed = FieldTable::default();
    claimed.insert("count".into(), AMQPValue::LongLongInt(5));
    claimed.insert("queue".into(), long_str(a));
    claimed.insert("reason".into(), long_str("rejected"));
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(vec![AMQPValue::FieldTable(claimed)].into()),
    );
    let props = amq_protocol::protocol::BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    c.publish_with(
        1,
        basic::Publish {
            routing_key: a.into(),
            ..Default::default()
        },
        props,
        b"m",
    )
    .await;
    reject_from(&mut c, a).await;
    // A round trip: the reject was handled, and its dead-lettering logged.
    c.assert_alive().await;
    drop(c);
    t.stop().await;

    let t = Target::start_with(builder()).await.expect("restart Warren");
    let mut c = open1(&t).await;
    let props = reject_from(&mut c, b).await;
    assert_eq!(deaths(&props), [(a.into(), "rejected".into(), 1)]);
    let props = reject_from(&mut c, a).await;
    assert_eq!(
        deaths(&props),
        [
            (b.into(), "rejected".into(), 1),
            (a.into(), "rejected".into(), 1)
        ]
    );
    let props = c.get(1, b, true).await.expect("dead-lettered again").props;
    assert_eq!(
        deaths(&props),
        [
            (a.into(), "rejected".into(), 2),
            (b.into(), "rejected".into(), 1)
        ]
    );
    drop(c);
    t.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 4.3 broker in process on a virtual clock with a 5 s `consumer_timeout`,
/// and a connection that announces `consumer_cancel_notify` or not.
async fn timeout_broker(version: RabbitVersion, cancel_notify: bool) -> (Broker, Raw) {
    let broker = Broker::builder()
        .no_listener()
        .virtual_clock()
        .rabbitmq_version(version)
        .consumer_timeout(std::time::Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let mut raw = Raw::new(Box::new(broker.connect_in_process()));
    raw.announce_capabilities = cancel_notify;
    common::within(raw.handshake("guest", "guest", "/")).await;
    raw.open_channel(1).await;
    (broker, raw)
}

fn quorum(name: &str) -> queue::Declare {
    let d = queue::Declare {
        queue: name.into(),
        durable: true,
        ..Default::default()
    };
    with_arg(d, "x-queue-type", long_str("quorum"))
}

fn durable(name: &str) -> queue::Declare {
    queue::Declare {
        queue: name.into(),
        durable: true,
        ..Default::default()
    }
}

fn ack_timeout_text(ch: u16, ms: i64) -> String {
    format!(
        "PRECONDITION_FAILED - delivery acknowledgement on channel {ch} timed out. \
         Timeout value used: {ms} ms. This timeout value can be configured, see \
         consumers doc guide to learn more"
    )
}

/// 4.3: the quorum queue returns the timed-out delivery (redelivered, not
/// counted toward the delivery limit), the consumer gets `basic.cancel` and nothing
/// more until it settles the old tag, which the channel still accepts; a
/// classic queue's delivery never times out.
#[tokio::test]
async fn a_quorum_consumer_timeout_cancels_the_consumer_in_4_3() {
    let (broker, mut c) = timeout_broker(RabbitVersion::V4_3, true).await;
    // A limit of 1: two failed deliveries drop the job; a timeout is none.
    let limited = with_arg(quorum("work"), "x-delivery-limit", AMQPValue::LongInt(1));
    c.queue_declare(1, limited).await;
    c.queue_declare(1, durable("plain")).await;
    c.put("work", b"job").await;
    c.put("plain", b"slow").await;
    c.consume(1, "work", "w", false).await;
    let job = c.expect_content(1).await;
    c.open_channel(2).await;
    c.consume(2, "plain", "p", false).await;
    let _slow = c.expect_content(2).await;
    broker.advance(std::time::Duration::from_millis(4_999));
    c.assert_alive().await;
    broker.advance(std::time::Duration::from_millis(1));
    match c.expect_method(1).await {
        AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)) => {
            assert_eq!(cancel.consumer_tag.as_str(), "w");
            assert!(cancel.nowait);
        }
        other => panic!("expected basic.cancel for w, got {other:?}"),
    }
    let q = broker.queue("work");
    assert_eq!(q.message_count(), 1, "the job is back in the queue");
    assert!(q.unacked.is_empty());
    assert_eq!(q.consumers.len(), 1, "the consumer stays, held");
    // Another channel takes it: redelivered, not counted as a failed delivery.
    c.open_channel(3).await;
    let again = c.get(3, "work", false).await.expect("the job again");
    assert!(again.get_ok().redelivered);
    // One failed delivery on top: within the limit only if the timeout was none.
    c.send(
        3,
        basic::Reject {
            delivery_tag: again.get_ok().delivery_tag,
            requeue: true,
        },
    )
    .await;
    c.get(3, "work", true)
        .await
        .expect("kept after one failed delivery");
    // The old tag still settles without an error.
    c.send(
        1,
        basic::Ack {
            delivery_tag: job.deliver().delivery_tag,
            multiple: false,
        },
    )
    .await;
    // A round trip: the ack was handled before it.
    c.assert_alive().await;
    assert_eq!(broker.queue("work").consumers.len(), 1);
    // The classic queue's delivery is still held an hour later.
    broker.advance(std::time::Duration::from_secs(3600));
    c.assert_alive().await;
    assert_eq!(broker.queue("plain").unacked.len(), 1);
    broker.shutdown().await;
}

/// 4.3, single active consumer: the active consumer that timed out, with
/// nothing else checked out, moves among the waiting consumers and the next
/// one takes the message (`rabbit_fifo.erl:756-783` at v4.3.5).
#[tokio::test]
async fn a_timed_out_single_active_consumer_hands_over_in_4_3() {
    let (broker, mut c) = timeout_broker(RabbitVersion::V4_3, true).await;
    let sac = with_arg(
        quorum("work"),
        "x-single-active-consumer",
        AMQPValue::Boolean(true),
    );
    c.queue_declare(1, sac).await;
    c.put("work", b"job").await;
    c.consume(1, "work", "first", false).await;
    let _job = c.expect_content(1).await;
    c.open_channel(2).await;
    c.consume(2, "work", "second", false).await;
    broker.advance(std::time::Duration::from_secs(5));
    match c.expect_method(1).await {
        AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)) => {
            assert_eq!(cancel.consumer_tag.as_str(), "first");
        }
        other => panic!("expected basic.cancel for first, got {other:?}"),
    }
    let again = c.expect_content(2).await;
    assert_eq!(again.deliver().consumer_tag.as_str(), "second");
    assert!(again.deliver().redelivered);
    assert_eq!(again.body, b"job");
    broker.shutdown().await;
}

/// Until the client settles its timed-out tags the consumer gets nothing;
/// once it has, deliveries go on (`rabbit_fifo:maybe_untimeout/2`).
#[tokio::test]
async fn a_timed_out_quorum_consumer_resumes_once_it_settles_in_4_3() {
    let (broker, mut c) = timeout_broker(RabbitVersion::V4_3, true).await;
    c.queue_declare(1, quorum("work")).await;
    c.put("work", b"one").await;
    c.consume(1, "work", "w", false).await;
    let one = c.expect_content(1).await;
    broker.advance(std::time::Duration::from_secs(5));
    assert!(matches!(
        c.expect_method(1).await,
        AMQPClass::Basic(basic::AMQPMethod::Cancel(_))
    ));
    c.assert_alive().await;
    assert_eq!(
        broker.queue("work").message_count(),
        1,
        "held, not redelivered"
    );
    c.send(
        1,
        basic::Reject {
            delivery_tag: one.deliver().delivery_tag,
            requeue: true,
        },
    )
    .await;
    let again = c.expect_content(1).await;
    assert_eq!(again.body, b"one");
    assert!(again.deliver().redelivered);
    assert_eq!(again.deliver().consumer_tag.as_str(), "w");
    broker.shutdown().await;
}

/// 4.3 without `consumer_cancel_notify`: the channel closes with 406 naming a
/// timeout of -1 ms (`rabbit_channel.erl:2811` at v4.3.5); the message was
/// already returned. 4.2 closes with the configured timeout, classic queue or not.
#[tokio::test]
async fn a_client_without_cancel_notify_gets_406_with_minus_1_in_4_3() {
    let (broker, mut c) = timeout_broker(RabbitVersion::V4_3, false).await;
    c.queue_declare(1, quorum("work")).await;
    c.put("work", b"job").await;
    c.consume(1, "work", "w", false).await;
    c.expect_content(1).await;
    broker.advance(std::time::Duration::from_secs(5));
    c.expect_channel_close(1, 406, (0, 0), &ack_timeout_text(1, -1))
        .await;
    let q = broker.queue("work");
    assert_eq!(q.message_count(), 1);
    assert!(q.messages[0].redelivered);
    assert!(q.consumers.is_empty());
    broker.shutdown().await;

    let (broker, mut c) = timeout_broker(RabbitVersion::V4_2, false).await;
    c.queue_declare(1, durable("plain")).await;
    c.put("plain", b"job").await;
    c.consume(1, "plain", "p", false).await;
    c.expect_content(1).await;
    broker.advance(std::time::Duration::from_millis(5_001));
    c.expect_channel_close(1, 406, (0, 0), &ack_timeout_text(1, 5_000))
        .await;
    broker.shutdown().await;
}

/// A `basic.get` from a quorum queue times out too in 4.3, and as the channel
/// knows no consumer for it, it closes even for a client that announced
/// `consumer_cancel_notify` (`rabbit_channel.erl:2803-2804` at v4.3.5).
#[tokio::test]
async fn a_timed_out_basic_get_closes_the_channel_in_4_3() {
    let (broker, mut c) = timeout_broker(RabbitVersion::V4_3, true).await;
    c.queue_declare(1, quorum("work")).await;
    c.put("work", b"job").await;
    c.get(1, "work", false).await.expect("job");
    broker.advance(std::time::Duration::from_secs(5));
    c.expect_channel_close(1, 406, (0, 0), &ack_timeout_text(1, -1))
        .await;
    assert_eq!(broker.queue("work").message_count(), 1);
    broker.shutdown().await;
}

/// `x-consumer-timeout` in 4.3: the consumer's wins over the queue's, which
/// wins over `consumer_timeout` (`rabbit_queue_type.erl:544-547,944-952` at
/// v4.3.5); both are non-negative integers (`rabbit_amqqueue.erl:964,975`) that
/// only quorum queues take (`:912-913`, `:919-920`).
#[tokio::test]
async fn x_consumer_timeout_is_a_quorum_argument_in_4_3() {
    let (broker, mut c) = timeout_broker(RabbitVersion::V4_3, true).await;
    let ms = |n: i64| AMQPValue::LongLongInt(n);
    c.queue_declare(
        1,
        with_arg(quorum("slow"), "x-consumer-timeout", ms(60_000)),
    )
    .await;
    c.put("slow", b"a").await;
    c.put("slow", b"b").await;
    c.qos(1, 1, false).await;
    // The queue's 60 s, not the broker's 5 s.
    c.consume(1, "slow", "q", false).await;
    c.expect_content(1).await;
    broker.advance(std::time::Duration::from_secs(59));
    c.assert_alive().await;
    broker.advance(std::time::Duration::from_secs(1));
    assert!(matches!(
        c.expect_method(1).await,
        AMQPClass::Basic(basic::AMQPMethod::Cancel(_))
    ));
    // The consumer's 2 s beats the queue's 60 s.
    c.open_channel(2).await;
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), ms(2_000));
    let consume = basic::Consume {
        queue: "slow".into(),
        consumer_tag: "fast".into(),
        arguments: args,
        ..Default::default()
    };
    assert!(matches!(
        c.call(2, consume).await,
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))
    ));
    // Both messages: the one the queue took back from "q" and the other.
    c.expect_content(2).await;
    c.expect_content(2).await;
    broker.advance(std::time::Duration::from_secs(2));
    match c.expect_method(2).await {
        AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)) => {
            assert_eq!(cancel.consumer_tag.as_str(), "fast")
        }
        other => panic!("expected basic.cancel for fast, got {other:?}"),
    }
    // Values and types.
    c.open_channel(3).await;
    c.send(3, with_arg(quorum("neg"), "x-consumer-timeout", ms(-1)))
        .await;
    c.expect_channel_close(
        3,
        406,
        (50, 10),
        "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue 'neg' in vhost \
         '/': {value_negative,-1}",
    )
    .await;
    c.open_channel(4).await;
    c.send(4, with_arg(durable("classic"), "x-consumer-timeout", ms(1)))
        .await;
    c.expect_channel_close(
        4,
        406,
        (50, 10),
        "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue 'classic' in vhost \
         '/' of queue type rabbit_classic_queue",
    )
    .await;
    c.open_channel(5).await;
    c.queue_declare(5, durable("classic")).await;
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), ms(1));
    c.send(
        5,
        basic::Consume {
            queue: "classic".into(),
            arguments: args,
            ..Default::default()
        },
    )
    .await;
    c.expect_channel_close(
        5,
        406,
        (60, 20),
        "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue 'classic' in vhost \
         '/' of queue type rabbit_classic_queue",
    )
    .await;
    broker.shutdown().await;

    // 4.2 has no such queue argument check: a classic queue takes it.
    let (broker, mut c) = timeout_broker(RabbitVersion::V4_2, true).await;
    c.queue_declare(
        1,
        with_arg(durable("classic"), "x-consumer-timeout", ms(-1)),
    )
    .await;
    broker.shutdown().await;
}

/// From 3.12 to 4.2 the channel's consumer timeout is the queue's
/// `x-consumer-timeout` when it has one, any queue type, and none when it is not
/// an integer (`rabbit_channel.erl:2776-2807` at v3.12.14, `:2854-2885` at
/// v4.2.9); 3.11 reads only `consumer_timeout`.
#[tokio::test]
async fn the_queue_s_consumer_timeout_is_read_from_3_12_to_4_2() {
    for (version, per_queue) in [
        (RabbitVersion::V3_11, false),
        (RabbitVersion::V3_12, true),
        (RabbitVersion::V4_2, true),
    ] {
        let (broker, mut c) = timeout_broker(version, true).await;
        let d = with_arg(
            durable("slow"),
            "x-consumer-timeout",
            AMQPValue::LongInt(60_000),
        );
        c.queue_declare(1, d).await;
        c.put("slow", b"job").await;
        c.consume(1, "slow", "w", false).await;
        c.expect_content(1).await;
        broker.advance(std::time::Duration::from_millis(5_001));
        if !per_queue {
            c.expect_channel_close(1, 406, (0, 0), &ack_timeout_text(1, 5_000))
                .await;
            broker.shutdown().await;
            continue;
        }
        c.assert_alive().await;
        broker.advance(std::time::Duration::from_millis(55_000));
        c.expect_channel_close(1, 406, (0, 0), &ack_timeout_text(1, 60_000))
            .await;
        // Not an integer: no timeout at all.
        c.open_channel(2).await;
        let d = with_arg(durable("never"), "x-consumer-timeout", long_str("soon"));
        c.queue_declare(2, d).await;
        c.put("never", b"job").await;
        c.consume(2, "never", "w", false).await;
        c.expect_content(2).await;
        broker.advance(std::time::Duration::from_secs(24 * 3600));
        c.assert_alive().await;
        broker.shutdown().await;
    }
}
