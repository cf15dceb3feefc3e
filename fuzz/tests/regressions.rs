//! Broker bugs found by warren-fuzz (the model-based test and probes of RabbitMQ
//! 3.10 that followed its failures), each kept as a test of the right behaviour.

use amq_protocol::protocol::{basic, connection, queue, AMQPClass};
use warren_broker::testing::Core;
use warren_broker::Config;
use warren_fuzz::targets::{open_connection, Watch};
use warren_fuzz::wire::{self, Event};

fn declare(ch: u16, name: &str) -> Vec<u8> {
    wire::method(
        ch,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
}

fn consume(ch: u16, queue: &str, tag: &str) -> Vec<u8> {
    wire::method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
}

/// When a connection closed, its channels went one by one: the unacked messages of
/// the first channel to go were requeued and handed straight to the consumer of
/// another channel of the same, closing connection, so the client saw
/// `basic.deliver` after `connection.close-ok`. As in RabbitMQ, every consumer of
/// the connection must go before its messages are requeued.
#[test]
fn no_delivery_to_a_connection_after_its_close_ok() {
    let core = Core::new(Config::default());
    let mut a = open_connection(&core);
    let mut watch = Watch::default();
    let mut bytes = wire::channel_open(2);
    bytes.extend(declare(1, "q"));
    bytes.extend(consume(1, "q", "c1"));
    bytes.extend(consume(2, "q", "c2"));
    // Round robin: m1 to c1 (channel 1), m2 to c2 (channel 2); both stay unacked,
    // so whichever channel closes first has a message for the other one.
    bytes.extend(wire::publish(1, "", "q", b"m1"));
    bytes.extend(wire::publish(1, "", "q", b"m2"));
    a.feed(&bytes);
    watch.take(&mut a);
    a.feed(&wire::connection_close("bye"));
    let out = a.take_output();
    let events = wire::parse_events(&out).unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
            )]
        ),
        "after connection.close, got {events:?}"
    );
}

/// Raising a channel's global prefetch: RabbitMQ 3.10 answers `basic.qos-ok` first,
/// then delivers what the new limit lets through (observed against the local
/// RabbitMQ with docs/probe_rabbitmq.py's helpers). Warren delivered first.
#[test]
fn qos_ok_comes_before_the_deliveries_it_unblocks() {
    let core = Core::new(Config::default());
    let mut a = open_connection(&core);
    let mut watch = Watch::default();
    let qos = |n| {
        wire::method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: n,
                global: true,
            })),
        )
    };
    let mut bytes = declare(1, "q");
    for body in [b"m0", b"m1", b"m2"] {
        bytes.extend(wire::publish(1, "", "q", body));
    }
    bytes.extend(qos(1));
    bytes.extend(consume(1, "q", "c"));
    a.feed(&bytes);
    watch.take(&mut a);
    a.feed(&qos(3));
    let events = watch.take(&mut a);
    assert!(
        matches!(
            events.first(),
            Some(Event::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::QosOk(_))
            ))
        ),
        "qos-ok not first: {events:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
}

/// A transaction that nacks with requeue: RabbitMQ 3.10 answers `tx.commit-ok`,
/// then redelivers (observed against the local RabbitMQ with raw frames). Warren
/// redelivered first. (Deliveries of messages published in the transaction do come
/// before `commit-ok` in RabbitMQ too.)
#[test]
fn commit_ok_comes_before_the_redeliveries_it_causes() {
    use amq_protocol::protocol::tx;
    let core = Core::new(Config::default());
    let mut a = open_connection(&core);
    let mut watch = Watch::default();
    let mut bytes = declare(1, "q");
    bytes.extend(consume(1, "q", "c"));
    bytes.extend(wire::publish(1, "", "q", b"m0"));
    bytes.extend(wire::method(
        1,
        AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
    ));
    bytes.extend(wire::method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 1,
            multiple: false,
            requeue: true,
        })),
    ));
    a.feed(&bytes);
    watch.take(&mut a);
    a.feed(&wire::method(
        1,
        AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
    ));
    let events = watch.take(&mut a);
    assert!(
        matches!(
            events.first(),
            Some(Event::Method(1, AMQPClass::Tx(tx::AMQPMethod::CommitOk(_))))
        ),
        "commit-ok not first: {events:?}"
    );
    assert_eq!(events.len(), 2, "{events:?}");
}

/// In a transaction, RabbitMQ 3.10 checks a delivery tag when the `basic.ack`
/// arrives: acking tag 1 twice closes the channel at the second ack with 406
/// "unknown delivery tag 1", class/method 60/80 (observed against the local
/// RabbitMQ). Warren said nothing until `tx.commit`, then closed with 90/20, after
/// applying the transaction's earlier operations.
#[test]
fn unknown_delivery_tag_in_a_transaction_fails_at_the_ack() {
    use amq_protocol::protocol::{channel, tx};
    let core = Core::new(Config::default());
    let mut a = open_connection(&core);
    let mut watch = Watch::default();
    let ack = wire::method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 1,
            multiple: false,
        })),
    );
    let mut bytes = declare(1, "q");
    bytes.extend(wire::publish(1, "", "q", b"m0"));
    bytes.extend(wire::method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: false,
        })),
    ));
    bytes.extend(wire::method(
        1,
        AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
    ));
    bytes.extend(&ack);
    a.feed(&bytes);
    watch.take(&mut a);
    a.feed(&ack);
    let events = watch.take(&mut a);
    let want = Event::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 406,
            reply_text: "PRECONDITION_FAILED - unknown delivery tag 1".into(),
            class_id: 60,
            method_id: 80,
        })),
    );
    assert_eq!(events, vec![want]);
}

fn last_is_close_ok(watch: &Watch) -> bool {
    watch.events.last().is_some_and(|e| {
        matches!(
            e,
            Event::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
        )
    })
}

/// Found by the session target (CI, 2026-12-06): a frame too large made the broker
/// close the connection (501), and the client then sent `connection.close` twice.
/// The broker answered each; RabbitMQ reads nothing after a frame it cannot
/// delimit (`fatal_frame_error`, rabbit_reader.erl:857-864 at v3.10.8), and now
/// neither does Warren (conformance `malformed::nothing_read_after_frame_too_large`).
#[test]
fn nothing_is_read_after_a_frame_too_large() {
    let core = Core::new(Config::default());
    let mut conn = open_connection(&core);
    let mut watch = Watch::default();
    let mut too_large = vec![1, 0, 0];
    too_large.extend_from_slice(&u32::MAX.to_be_bytes());
    warren_fuzz::targets::feed(&mut conn, &mut watch, &too_large);
    assert!(
        watch.close_sent,
        "no connection.close for a frame too large"
    );
    let seen = watch.events.len();
    for _ in 0..2 {
        warren_fuzz::targets::feed(
            &mut conn,
            &mut watch,
            &wire::connection_close("Normal shutdown"),
        );
    }
    assert_eq!(
        &watch.events[seen..],
        &[],
        "the broker read on after a frame too large"
    );
}

/// After a whole frame it cannot parse, RabbitMQ reads on, answering each
/// `connection.close` while closing with `close-ok` (rabbit_reader.erl:1255-1261 at
/// v3.10.8); the checker allows a `close-ok` after a `close-ok` for this.
#[test]
fn each_close_while_closing_is_answered_with_close_ok() {
    let core = Core::new(Config::default());
    let mut conn = open_connection(&core);
    let mut watch = Watch::default();
    let unknown_type = [9, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c', 0xCE];
    warren_fuzz::targets::feed(&mut conn, &mut watch, &unknown_type);
    assert!(
        watch.close_sent,
        "no connection.close for an unknown frame type"
    );
    for _ in 0..2 {
        warren_fuzz::targets::feed(
            &mut conn,
            &mut watch,
            &wire::connection_close("Normal shutdown"),
        );
        assert!(
            last_is_close_ok(&watch),
            "connection.close was not answered: {:?}",
            watch.events
        );
    }
}
