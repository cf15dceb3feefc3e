//! Property tests: URL round trips, and publish/consume of arbitrary bodies and
//! properties (empty bodies and bodies larger than frame_max included) on every target.

mod common;

use std::{collections::BTreeMap, time::Duration};

use futures_util::StreamExt;
use proptest::{
    collection::{btree_map, vec},
    option::of as opt,
    prelude::*,
    test_runner::{Config, TestRunner},
};
use warren_client::*;

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Failures are reported with their minimal input; no files left in the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn url_config() -> impl Strategy<Value = ConnectionConfig> {
    let host = prop_oneof![
        "[a-z][a-z0-9.-]{0,30}",
        Just("::1".to_string()),
        Just("fe80::1:2".to_string()),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
    ];
    (
        (host, any::<u16>(), ".*", ".*", ".+"),
        (
            opt(any::<u16>()),
            opt(any::<u32>()),
            opt(any::<u16>()),
            opt(0u64..10_000_000),
        ),
    )
        .prop_map(
            |(
                (host, port, username, password, vhost),
                (heartbeat, frame_max, channel_max, timeout),
            )| {
                let mut c = ConnectionConfig::default();
                c.host = host;
                c.port = port;
                c.username = username;
                c.password = password;
                c.vhost = vhost;
                c.heartbeat = heartbeat;
                c.frame_max = frame_max;
                c.channel_max = channel_max;
                c.connection_timeout = timeout.map(Duration::from_millis);
                c
            },
        )
}

#[test]
fn url_round_trips() {
    TestRunner::new(config(2000))
        .run(&url_config(), |c| {
            let url = c.to_url();
            let parsed: ConnectionConfig = url
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{url} does not parse: {e}")))?;
            prop_assert_eq!(parsed, c, "via {}", url);
            Ok(())
        })
        .unwrap();
}

#[test]
fn url_parsing_never_panics() {
    TestRunner::new(config(5000))
        .run(&prop_oneof![".*", "amqp://.*"], |s| {
            let _ = s.parse::<ConnectionConfig>();
            Ok(())
        })
        .unwrap();
}

fn short_text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn header_value() -> impl Strategy<Value = AMQPValue> {
    // Types RabbitMQ passes through unchanged (not 's', which RabbitMQ reads as a short
    // int, nor floats, whose NaN would not compare equal).
    prop_oneof![
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        "\\PC{0,30}".prop_map(|s| AMQPValue::LongString(s.into_bytes().into())),
    ]
}

fn headers() -> impl Strategy<Value = FieldTable> {
    btree_map("[a-z]{1,12}", header_value(), 0..6).prop_map(|m: BTreeMap<String, AMQPValue>| {
        let mut t = FieldTable::default();
        for (k, v) in m {
            t.insert(k.into(), v);
        }
        t
    })
}

fn properties() -> impl Strategy<Value = BasicProperties> {
    (
        (
            opt(short_text()),
            opt(short_text()),
            opt(headers()),
            opt(1u8..=2),
            opt(0u8..=9),
        ),
        (
            opt(short_text()),
            opt(short_text()),
            // Long enough never to expire during the test.
            opt((600_000u32..100_000_000).prop_map(|n| n.to_string())),
            opt(short_text()),
            opt(any::<u64>()),
        ),
        (opt(short_text()), opt(short_text())),
    )
        .prop_map(
            |((ct, ce, h, dm, pr), (cid, rt, exp, mid, ts), (kind, app))| {
                let mut p = BasicProperties::default();
                if let Some(v) = ct {
                    p = p.with_content_type(v.into());
                }
                if let Some(v) = ce {
                    p = p.with_content_encoding(v.into());
                }
                if let Some(v) = h {
                    p = p.with_headers(v);
                }
                if let Some(v) = dm {
                    p = p.with_delivery_mode(v);
                }
                if let Some(v) = pr {
                    p = p.with_priority(v);
                }
                if let Some(v) = cid {
                    p = p.with_correlation_id(v.into());
                }
                if let Some(v) = rt {
                    p = p.with_reply_to(v.into());
                }
                if let Some(v) = exp {
                    p = p.with_expiration(v.into());
                }
                if let Some(v) = mid {
                    p = p.with_message_id(v.into());
                }
                if let Some(v) = ts {
                    p = p.with_timestamp(v);
                }
                if let Some(v) = kind {
                    p = p.with_type(v.into());
                }
                if let Some(v) = app {
                    p = p.with_app_id(v.into());
                }
                p
            },
        )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
        // Larger than the usual frame_max of 131072: split into several body frames.
        1 => vec(any::<u8>(), 131_000..400_000),
    ]
}

#[test]
fn publish_consume_round_trip_is_exact() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let targets = rt.block_on(common::targets());
    if std::env::var("AMQP_URL").is_err() {
        eprintln!("publish_consume_round_trip_is_exact: AMQP_URL is not set, RabbitMQ skipped");
    }
    for target in targets {
        eprintln!(
            "publish_consume_round_trip_is_exact: running against {}",
            target.name
        );
        let (conn, ch, consumer, queue) = rt.block_on(async {
            let conn = target.connect().await;
            let ch = conn.create_channel().await.unwrap();
            let q = ch
                .queue_declare(
                    "",
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            ch.confirm_select().await.unwrap();
            let consumer = ch
                .basic_consume(
                    &q.name,
                    "",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            // The runner's closure is `Fn`: the consumer needs interior mutability.
            (conn, ch, tokio::sync::Mutex::new(consumer), q.name)
        });
        TestRunner::new(config(48))
            .run(&(body(), properties()), |(body, props)| {
                rt.block_on(async {
                    let confirm = ch
                        .basic_publish(
                            "",
                            &queue,
                            BasicPublishOptions::default(),
                            &body,
                            props.clone(),
                        )
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let outcome = confirm
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(outcome.is_ack());
                    let d = consumer
                        .lock()
                        .await
                        .next()
                        .await
                        .expect("a delivery")
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    d.ack(BasicAckOptions::default())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(d.body.len(), body.len());
                    prop_assert!(d.body[..] == body[..], "body differs");
                    prop_assert_eq!(&d.properties, &props);
                    Ok(())
                })
            })
            .unwrap();
        rt.block_on(async {
            drop(consumer);
            drop(ch);
            conn.close().await.unwrap();
        });
    }
}
