//! The codec against amq-protocol, an independent implementation: frames Warren
//! emits parse back to themselves, and methods with arbitrary arguments, field
//! tables of every field type (nested tables and arrays), content headers and
//! bodies written by amq-protocol decode through Warren to what was written.

use amq_protocol::frame::{parse_frame, AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use bytes::BytesMut;
use proptest::prelude::*;
use warren_broker::codec::{self, Frame};
use warren_fuzz::wire;

/// Large enough for every frame generated here: the decoder's size check is tested
/// elsewhere.
const BIG: u32 = 1 << 24;

fn short_string() -> impl Strategy<Value = ShortString> {
    // Up to 60 chars of at most 4 bytes each stays under the 255-byte limit.
    "\\PC{0,60}".prop_map(ShortString::from)
}

fn long_string() -> impl Strategy<Value = LongString> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(LongString::from)
}

/// Floats without NaN, which equals nothing and would fail any equality check.
fn float() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("not NaN", |f| !f.is_nan())
}

fn double() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("not NaN", |f| !f.is_nan())
}

/// Every field type that goes on the wire (`t b B s u I i l f d D S A T F x V`).
fn value() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<u8>().prop_map(AMQPValue::ShortShortUInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<u16>().prop_map(AMQPValue::ShortUInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        float().prop_map(AMQPValue::Float),
        double().prop_map(AMQPValue::Double),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
        long_string().prop_map(AMQPValue::LongString),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| AMQPValue::ByteArray(ByteArray::from(b))),
        Just(AMQPValue::Void),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
            prop::collection::btree_map(short_string(), inner, 0..6)
                .prop_map(|m| AMQPValue::FieldTable(FieldTable::from(m))),
        ]
    })
}

fn table() -> impl Strategy<Value = FieldTable> {
    prop::collection::btree_map(short_string(), value(), 0..8).prop_map(FieldTable::from)
}

fn properties() -> impl Strategy<Value = AMQPProperties> {
    let strings = (
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
        prop::option::of(short_string()),
    );
    let numbers = (
        prop::option::of(table()),
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u64>()),
    );
    (strings, numbers).prop_map(|(s, n)| {
        let mut p = AMQPProperties::default();
        let (ct, ce, cid, rt, exp, mid, kind, uid, app, cluster) = s;
        let (headers, mode, prio, ts) = n;
        macro_rules! set {
            ($opt:expr, $with:ident) => {
                if let Some(v) = $opt {
                    p = p.$with(v);
                }
            };
        }
        set!(ct, with_content_type);
        set!(ce, with_content_encoding);
        set!(headers, with_headers);
        set!(mode, with_delivery_mode);
        set!(prio, with_priority);
        set!(cid, with_correlation_id);
        set!(rt, with_reply_to);
        set!(exp, with_expiration);
        set!(mid, with_message_id);
        set!(ts, with_timestamp);
        set!(kind, with_type);
        set!(uid, with_user_id);
        set!(app, with_app_id);
        set!(cluster, with_cluster_id);
        p
    })
}

/// Methods with arguments of every kind a client sends: bits, shorts, longs,
/// long-longs, short and long strings, and tables.
fn method() -> impl Strategy<Value = AMQPClass> {
    let b = any::<bool>;
    prop_oneof![
        (table(), short_string(), long_string(), short_string()).prop_map(|(t, m, r, l)| {
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: t,
                mechanism: m,
                response: r,
                locale: l,
            }))
        }),
        (any::<u16>(), any::<u32>(), any::<u16>()).prop_map(|(c, f, h)| {
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: c,
                frame_max: f,
                heartbeat: h,
            }))
        }),
        (any::<u16>(), short_string(), any::<u16>(), any::<u16>()).prop_map(|(c, t, k, m)| {
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: c,
                reply_text: t,
                class_id: k,
                method_id: m,
            }))
        }),
        (
            short_string(),
            short_string(),
            (b(), b(), b(), b(), b()),
            table()
        )
            .prop_map(|(e, k, (p, d, a, i, n), t)| {
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: e,
                    kind: k,
                    passive: p,
                    durable: d,
                    auto_delete: a,
                    internal: i,
                    nowait: n,
                    arguments: t,
                }))
            }),
        (short_string(), (b(), b(), b(), b(), b()), table()).prop_map(|(q, (p, d, e, a, n), t)| {
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: q,
                passive: p,
                durable: d,
                exclusive: e,
                auto_delete: a,
                nowait: n,
                arguments: t,
            }))
        }),
        (short_string(), short_string(), short_string(), b(), table()).prop_map(
            |(q, e, k, n, t)| {
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: q,
                    exchange: e,
                    routing_key: k,
                    nowait: n,
                    arguments: t,
                }))
            }
        ),
        (short_string(), short_string(), b(), b()).prop_map(|(e, k, m, i)| {
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: e,
                routing_key: k,
                mandatory: m,
                immediate: i,
            }))
        }),
        (
            short_string(),
            short_string(),
            (b(), b(), b(), b()),
            table()
        )
            .prop_map(|(q, c, (l, a, e, n), t)| {
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: q,
                    consumer_tag: c,
                    no_local: l,
                    no_ack: a,
                    exclusive: e,
                    nowait: n,
                    arguments: t,
                }))
            }),
        (any::<u64>(), b(), b()).prop_map(|(t, m, r)| {
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: t,
                multiple: m,
                requeue: r,
            }))
        }),
        (any::<u16>(), b()).prop_map(|(n, g)| {
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: n,
                global: g,
            }))
        }),
        (
            short_string(),
            any::<u64>(),
            b(),
            short_string(),
            short_string(),
            any::<u32>()
        )
            .prop_map(|(_, t, r, e, k, n)| {
                AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                    delivery_tag: t,
                    redelivered: r,
                    exchange: e,
                    routing_key: k,
                    message_count: n,
                }))
            }),
    ]
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = codec::decode(&mut buf, BIG)
        .expect("valid frame")
        .expect("whole frame");
    assert!(buf.is_empty(), "{} bytes left after one frame", buf.len());
    frame
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A method written by amq-protocol decodes through Warren to itself, and
    /// Warren writes it back byte for byte as amq-protocol did.
    #[test]
    fn methods_round_trip(ch in any::<u16>(), m in method()) {
        let bytes = wire::method(ch, m.clone());
        // A publish is read in place; as a method it must be the same one.
        match decode_one(&bytes).general() {
            Frame::Method(got_ch, got) => {
                prop_assert_eq!(got_ch, ch);
                prop_assert_eq!(&got, &m);
            }
            other => prop_assert!(false, "decoded as {:?}", other),
        }
        let mut out = BytesMut::new();
        codec::put_method(&mut out, ch, m.clone());
        prop_assert_eq!(&out[..], &bytes[..]);
        prop_assert_eq!(parse_frame(&out[..]).map(|(_, f)| f).ok(), Some(AMQPFrame::Method(ch, m)));
    }

    /// Field tables, nested to three levels with arrays, survive a round trip in a
    /// method's arguments and in a message's headers.
    #[test]
    fn field_tables_round_trip(t in table()) {
        let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: t.clone(),
        }));
        match decode_one(&wire::method(1, declare)) {
            Frame::Method(_, AMQPClass::Queue(queue::AMQPMethod::Declare(d))) => {
                prop_assert_eq!(&d.arguments, &t)
            }
            other => prop_assert!(false, "decoded as {:?}", other),
        }
        let props = AMQPProperties::default().with_headers(t.clone());
        let header = wire::frame(&AMQPFrame::Header(1, AMQPContentHeader {
            class_id: 60,
            body_size: 0,
            properties: props,
        }));
        match decode_one(&header) {
            Frame::Header { properties, .. } => {
                let properties = properties.as_deref().unwrap_or(codec::no_properties());
                prop_assert_eq!(properties.headers().as_ref(), Some(&t))
            }
            other => prop_assert!(false, "decoded as {:?}", other),
        }
    }

    /// A content header decodes to its properties and keeps its payload verbatim;
    /// a delivery built from that payload and a body parses back, split into
    /// frames no larger than frame_max.
    #[test]
    fn content_round_trips(
        ch in 1u16..,
        props in properties(),
        body in prop::collection::vec(any::<u8>(), 0..20_000),
        frame_max in 4096u32..20_000,
    ) {
        let header = wire::frame(&AMQPFrame::Header(ch, AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: props.clone(),
        }));
        let Frame::Header { channel, class_id, body_size, properties, raw } = decode_one(&header) else {
            return Err(TestCaseError::fail("not a header"));
        };
        prop_assert_eq!((channel, class_id, body_size), (ch, 60, body.len() as u64));
        // None stands for a header without properties.
        prop_assert_eq!(properties.is_none(), props == AMQPProperties::default());
        prop_assert_eq!(properties.as_deref().unwrap_or(codec::no_properties()), &props);
        prop_assert_eq!(&raw[..], &header[7..header.len() - 1]);

        let mut out = BytesMut::new();
        codec::put_content(&mut out, ch, &raw, &body, frame_max);
        let frames = wire::parse_frames(&out).map_err(TestCaseError::fail)?;
        let mut got_body: Vec<u8> = Vec::new();
        match frames.first() {
            Some(AMQPFrame::Header(c, h)) => {
                prop_assert_eq!(*c, ch);
                prop_assert_eq!(&h.properties, &props);
                prop_assert_eq!(h.body_size, body.len() as u64);
            }
            other => prop_assert!(false, "first frame {:?}", other),
        }
        for f in &frames[1..] {
            match f {
                AMQPFrame::Body(c, b) => {
                    prop_assert_eq!(*c, ch);
                    prop_assert!(!b.is_empty());
                    prop_assert!(b.len() + codec::FRAME_OVERHEAD <= frame_max as usize);
                    got_body.extend(b);
                }
                other => prop_assert!(false, "expected a body frame, got {:?}", other),
            }
        }
        prop_assert_eq!(got_body, body.clone());
        // Warren's own decoder agrees frame by frame.
        let mut buf = out;
        let mut again = Vec::new();
        while let Some(f) = codec::decode(&mut buf, frame_max).expect("valid frames") {
            if let Frame::Body(_, b) = f {
                again.extend_from_slice(&b);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(again, body);
    }

    /// `basic.deliver`, written by hand on the hot path, parses as amq-protocol's.
    #[test]
    fn deliver_parses_as_written(
        ch in any::<u16>(),
        consumer_tag in short_string(),
        delivery_tag in any::<u64>(),
        redelivered in any::<bool>(),
        exchange in short_string(),
        routing_key in short_string(),
    ) {
        let mut out = BytesMut::new();
        codec::put_deliver(
            &mut out,
            ch,
            consumer_tag.as_str(),
            delivery_tag,
            redelivered,
            exchange.as_str(),
            routing_key.as_str(),
        );
        let want = AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag,
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
        })));
        let (rest, got) = parse_frame(&out[..]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(rest.is_empty());
        prop_assert_eq!(got, want);
    }

    /// Any frame cut anywhere waits for the rest and then decodes whole.
    #[test]
    fn frames_cut_anywhere_wait_for_the_rest(m in method(), cut in any::<prop::sample::Index>()) {
        let bytes = wire::method(3, m);
        let at = cut.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..at]);
        prop_assert!(codec::decode(&mut buf, BIG).expect("no error on a prefix").is_none());
        buf.extend_from_slice(&bytes[at..]);
        prop_assert!(matches!(
            codec::decode(&mut buf, BIG).map(|f| f.map(Frame::general)),
            Ok(Some(Frame::Method(3, _)))
        ));
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn heartbeat_round_trips() {
    let mut out = BytesMut::new();
    codec::put_heartbeat(&mut out);
    assert_eq!(parse_frame(&out[..]).unwrap().1, AMQPFrame::Heartbeat);
    assert!(matches!(decode_one(&out), Frame::Heartbeat(0)));
}
