//! Seed inputs for the fuzz targets and libFuzzer's dictionary.
//!
//! The seeds are what clients really send, so that mutation starts past the
//! handshake and deep in the state machine: the method sequences of the pika
//! tutorial Warren started from (hello world, work queues, publish/subscribe) and
//! the paths around them (confirms, transactions, nacks, errors). Traffic recorded
//! from pika and lapin sits beside them in `fuzz/seeds/`, as captured.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, confirm, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use crate::wire::{self, FRAME_MAX};

/// Named client byte streams, each a list of steps (one client action per step),
/// sent after the handshake with channel 1 already open.
pub fn scenarios() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("hello", hello()),
        ("work_queue", work_queue()),
        ("fanout", fanout()),
        ("routing_nack", routing_nack()),
        ("confirms", confirms()),
        ("tx", transactions()),
        ("errors", errors()),
        ("headers_topic", headers_topic()),
    ]
}

/// The seeds of every target, as (target, file name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, steps) in scenarios() {
        let stream: Vec<u8> = steps.concat();
        let mut conn = wire::handshake();
        conn.extend(wire::channel_open(1));
        conn.extend(&stream);
        out.push(("connection", format!("gen-{name}"), conn));
        // frame_decode: two bytes of frame_max (0 means 4096), then the frames.
        let mut frames = vec![0xFF, 0xFF];
        frames.extend(&stream);
        out.push(("frame_decode", format!("gen-{name}"), frames));
        // session: each step goes to connection 0 or 1 in turn, in records of at
        // most 255 bytes.
        let mut records = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            for piece in step.chunks(255) {
                records.push((i % 2) as u8);
                records.push(piece.len() as u8);
                records.extend(piece);
            }
        }
        out.push(("session", format!("gen-{name}"), records));
    }
    out
}

/// libFuzzer's dictionary: method ids as they appear in a method frame, frame
/// types and ends, names the broker treats specially, and field-table type tags.
pub fn dictionary() -> String {
    let mut out = String::from(
        "# AMQP 0-9-1 tokens for Warren's fuzz targets; written by warren-fuzz's seeds.rs\n",
    );
    let mut add = |name: String, bytes: &[u8]| {
        let escaped: String = bytes.iter().map(|b| format!("\\x{b:02X}")).collect();
        out.push_str(&format!("{name}=\"{escaped}\"\n"));
    };
    for &(class, methods) in METHODS {
        for &m in methods {
            let mut id = class.to_be_bytes().to_vec();
            id.extend(m.to_be_bytes());
            add(format!("m_{class}_{m}"), &id);
        }
    }
    add("protocol_header".into(), b"AMQP\x00\x00\x09\x01");
    add("frame_end".into(), &[0xCE]);
    add("heartbeat".into(), &[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    for (i, kind) in [1u8, 2, 3].iter().enumerate() {
        add(format!("frame_type_{i}_ch1"), &[*kind, 0, 1]);
    }
    add("content_class".into(), &[0, 60, 0, 0]);
    add("frame_max".into(), &FRAME_MAX.to_be_bytes());
    for (i, word) in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.gen-",
        "amq.ctag-",
        "direct",
        "fanout",
        "topic",
        "headers",
        "x-match",
        "x-max-length",
        "x-message-ttl",
        "x-expires",
        "x-queue-type",
        "x-dead-letter-exchange",
        "PLAIN",
        "AMQPLAIN",
        "\0guest\0guest",
        "capabilities",
        "consumer_cancel_notify",
        "#",
        "*",
        "stream",
        "x-stream-offset",
        "x-max-age",
    ]
    .iter()
    .enumerate()
    {
        let mut short = vec![word.len() as u8];
        short.extend(word.as_bytes());
        add(format!("word_{i}"), &short);
    }
    for tag in b"tFbBsuIiLlfdDSATxV" {
        add(format!("type_{}", *tag as char), &[*tag]);
    }
    out
}

/// Every (class, methods) of AMQP 0-9-1 as RabbitMQ knows them.
pub const METHODS: &[(u16, &[u16])] = &[
    (
        10,
        &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
    ),
    (20, &[10, 11, 20, 21, 40, 41]),
    (30, &[10, 11]),
    (40, &[10, 11, 20, 21, 30, 31, 40, 51]),
    (50, &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51]),
    (
        60,
        &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
    ),
    (85, &[10, 11]),
    (90, &[10, 11, 20, 21, 30, 31]),
];

fn m(class: AMQPClass) -> Vec<u8> {
    wire::method(1, class)
}

fn declare(name: &str, durable: bool, exclusive: bool) -> Vec<u8> {
    m(AMQPClass::Queue(queue::AMQPMethod::Declare(
        queue::Declare {
            queue: name.into(),
            passive: false,
            durable,
            exclusive,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        },
    )))
}

fn exchange_declare(name: &str, kind: &str, arguments: FieldTable) -> Vec<u8> {
    m(AMQPClass::Exchange(exchange::AMQPMethod::Declare(
        exchange::Declare {
            exchange: name.into(),
            kind: kind.into(),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments,
        },
    )))
}

fn bind(queue: &str, exchange: &str, key: &str, arguments: FieldTable) -> Vec<u8> {
    m(AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: queue.into(),
        exchange: exchange.into(),
        routing_key: key.into(),
        nowait: false,
        arguments,
    })))
}

fn publish_with(exchange: &str, key: &str, mandatory: bool, props: AMQPProperties) -> Vec<u8> {
    let mut out = m(AMQPClass::Basic(basic::AMQPMethod::Publish(
        basic::Publish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            immediate: false,
        },
    )));
    out.extend(wire::content(1, props, b"Hello World!", FRAME_MAX));
    out
}

fn publish(exchange: &str, key: &str) -> Vec<u8> {
    wire::publish(1, exchange, key, b"Hello World!")
}

fn consume(queue: &str, tag: &str, no_ack: bool) -> Vec<u8> {
    m(AMQPClass::Basic(basic::AMQPMethod::Consume(
        basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        },
    )))
}

fn get(queue: &str, no_ack: bool) -> Vec<u8> {
    m(AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
        queue: queue.into(),
        no_ack,
    })))
}

fn ack(tag: u64, multiple: bool) -> Vec<u8> {
    m(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag: tag,
        multiple,
    })))
}

fn hello() -> Vec<Vec<u8>> {
    vec![
        declare("hello", false, false),
        publish("", "hello"),
        get("hello", false),
        ack(1, false),
        m(AMQPClass::Channel(channel::AMQPMethod::Close(
            channel::Close {
                reply_code: 200,
                reply_text: "Normal shutdown".into(),
                class_id: 0,
                method_id: 0,
            },
        ))),
        wire::connection_close("Normal shutdown"),
    ]
}

fn work_queue() -> Vec<Vec<u8>> {
    vec![
        declare("task_queue", true, false),
        publish_with(
            "",
            "task_queue",
            false,
            AMQPProperties::default().with_delivery_mode(2),
        ),
        m(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        }))),
        consume("task_queue", "", false),
        publish("", "task_queue"),
        ack(1, false),
        ack(2, false),
    ]
}

fn fanout() -> Vec<Vec<u8>> {
    vec![
        exchange_declare("logs", "fanout", FieldTable::default()),
        declare("", false, true),
        // The server-named queue is the channel's last declared one: "" names it.
        bind("", "logs", "", FieldTable::default()),
        consume("", "ctag", true),
        publish("logs", ""),
        m(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "ctag".into(),
            nowait: false,
        }))),
    ]
}

fn routing_nack() -> Vec<Vec<u8>> {
    vec![
        exchange_declare("direct_logs", "direct", FieldTable::default()),
        declare("errors", false, false),
        bind("errors", "direct_logs", "error", FieldTable::default()),
        publish("direct_logs", "error"),
        publish("direct_logs", "error"),
        consume("errors", "c1", false),
        m(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 0,
            multiple: true,
            requeue: true,
        }))),
        m(AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag: 3,
            requeue: false,
        }))),
        m(AMQPClass::Basic(basic::AMQPMethod::Recover(
            basic::Recover { requeue: true },
        ))),
        ack(0, true),
    ]
}

fn confirms() -> Vec<Vec<u8>> {
    vec![
        m(AMQPClass::Confirm(confirm::AMQPMethod::Select(
            confirm::Select { nowait: false },
        ))),
        declare("confirmed", false, false),
        publish("", "confirmed"),
        publish_with("amq.direct", "nowhere", true, AMQPProperties::default()),
    ]
}

fn transactions() -> Vec<Vec<u8>> {
    vec![
        m(AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))),
        declare("txq", false, false),
        publish("", "txq"),
        m(AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))),
        get("txq", false),
        ack(1, false),
        m(AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}))),
    ]
}

fn errors() -> Vec<Vec<u8>> {
    vec![
        get("missing", false),
        m(AMQPClass::Channel(channel::AMQPMethod::CloseOk(
            channel::CloseOk {},
        ))),
        wire::channel_open(1),
        ack(42, false),
        m(AMQPClass::Channel(channel::AMQPMethod::CloseOk(
            channel::CloseOk {},
        ))),
        wire::channel_open(1),
        declare("busy", false, false),
        publish("", "busy"),
        m(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: "busy".into(),
            if_unused: false,
            if_empty: true,
            nowait: false,
        }))),
        wire::channel_open(2),
        m(AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: "busy".into(),
            nowait: false,
        }))),
        m(AMQPClass::Exchange(exchange::AMQPMethod::Delete(
            exchange::Delete {
                exchange: "amq.direct".into(),
                if_unused: false,
                nowait: false,
            },
        ))),
    ]
}

fn headers_topic() -> Vec<Vec<u8>> {
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("all".into()));
    args.insert("kind".into(), AMQPValue::LongString("a".into()));
    let mut headers = FieldTable::default();
    headers.insert("kind".into(), AMQPValue::LongString(LongString::from("a")));
    headers.insert(
        "list".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongLongInt(-1),
            AMQPValue::Double(0.5),
            AMQPValue::Boolean(true),
        ])),
    );
    let mut qargs = FieldTable::default();
    qargs.insert("x-max-length".into(), AMQPValue::LongInt(10));
    let mut big = m(AMQPClass::Basic(basic::AMQPMethod::Publish(
        basic::Publish {
            exchange: "amq.topic".into(),
            routing_key: "a.b.c".into(),
            mandatory: false,
            immediate: false,
        },
    )));
    // A body cut into several frames, as clients do with large messages.
    big.extend(wire::content(
        1,
        AMQPProperties::default(),
        &[7u8; 9000],
        4096,
    ));
    vec![
        exchange_declare("h", "headers", FieldTable::default()),
        m(AMQPClass::Queue(queue::AMQPMethod::Declare(
            queue::Declare {
                queue: "hq".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: true,
                nowait: false,
                arguments: qargs,
            },
        ))),
        bind("hq", "h", "", args),
        bind("hq", "amq.topic", "a.#", FieldTable::default()),
        publish_with(
            "h",
            "",
            false,
            AMQPProperties::default()
                .with_headers(headers)
                .with_content_type("text/plain".into())
                .with_message_id("id-1".into())
                .with_timestamp(1_700_000_000),
        ),
        big,
        get("hq", true),
        get("hq", true),
    ]
}
