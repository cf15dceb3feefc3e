//! RabbitMQ's error answers as a table: each row prepares what it needs on a fresh
//! channel, sends one method and expects one close — of the channel or the
//! connection, with the reply code, the class/method it names and RabbitMQ's exact
//! reply text (`{q}`, `{x}` and `{vhost}` stand for the row's queue, exchange and the
//! vhost under test). These were `broker/tests/errors.rs` tests, checked against
//! RabbitMQ by hand; as scenarios they run against it on every conformance run.
//!
//! To add a case: one row in [`rows!`]'s list below, and its name in the table of
//! `scenarios/mod.rs`.

use amq_protocol::protocol::{basic, channel, exchange, queue, tx, AMQPClass};

use crate::*;

/// What a row declares before its method, named `{q}` or `{x}`.
#[derive(Clone, Copy, Debug)]
enum Setup {
    Nothing,
    /// A queue `{q}` (deleted by the context's cleanup).
    Queue,
    /// A queue `{q}` used by this connection only.
    ExclusiveQueue,
    /// A direct exchange `{x}` (deleted by the context's cleanup).
    DirectExchange,
}

/// Which close the row expects.
#[derive(Clone, Copy, Debug)]
enum Closes {
    Channel,
    Connection,
}

/// The names a row's method and text use.
struct Names {
    q: String,
    x: String,
}

/// One case: "after `setup`, send `send`, expect this close".
struct Row {
    setup: Setup,
    send: fn(&Names) -> AMQPClass,
    closes: Closes,
    code: u16,
    at: (u16, u16),
    text: &'static str,
}

async fn check(cx: Ctx, row: Row) -> R {
    let names = Names {
        q: cx.name("q"),
        x: cx.name("x"),
    };
    let conn = cx.connect().await?;
    let ch = conn.channel().await?;
    match row.setup {
        Setup::Nothing => {}
        Setup::Queue => {
            ch.queue_declare(&names.q).await?;
        }
        Setup::ExclusiveQueue => {
            ch.queue_declare_with(&names.q, QueueOpts::default().exclusive())
                .await?;
        }
        Setup::DirectExchange => ch.exchange_declare(&names.x, "direct").await?,
    }
    let answer = ch.call((row.send)(&names)).await;
    let close = match row.closes {
        Closes::Channel => answer.channel_closed_at(row.code, row.at)?,
        Closes::Connection => answer.connection_closed_at(row.code, row.at)?,
    };
    let want = row
        .text
        .replace("{q}", &names.q)
        .replace("{x}", &names.x)
        .replace("{vhost}", &cx.url().vhost);
    expect_eq("reply text", &close.text, &want)
}

/// Each row becomes a scenario `errors::NAME`.
macro_rules! rows {
    ($($name:ident: $setup:ident, |$n:ident| $send:expr => $closes:ident $code:literal at ($class:literal, $method:literal) $text:literal;)*) => {
        $(
            #[doc = concat!("`", $text, "`")]
            pub async fn $name(cx: Ctx) -> R {
                check(cx, Row {
                    setup: Setup::$setup,
                    send: |$n: &Names| $send,
                    closes: Closes::$closes,
                    code: $code,
                    at: ($class, $method),
                    text: $text,
                })
                .await
            }
        )*
    };
}

fn xd(name: &str, kind: &str) -> exchange::Declare {
    exchange::Declare {
        exchange: name.into(),
        kind: kind.into(),
        ..Default::default()
    }
}

fn qd(name: &str) -> queue::Declare {
    queue::Declare {
        queue: name.into(),
        ..Default::default()
    }
}

fn ex(m: exchange::AMQPMethod) -> AMQPClass {
    AMQPClass::Exchange(m)
}

fn qu(m: queue::AMQPMethod) -> AMQPClass {
    AMQPClass::Queue(m)
}

fn ba(m: basic::AMQPMethod) -> AMQPClass {
    AMQPClass::Basic(m)
}

rows! {
    // 403 ACCESS_REFUSED
    declare_default_exchange: Nothing,
        |_n| ex(exchange::AMQPMethod::Declare(xd("", "direct")))
        => Channel 403 at (40, 10) "ACCESS_REFUSED - operation not permitted on the default exchange";
    delete_default_exchange_refused: Nothing,
        |_n| ex(exchange::AMQPMethod::Delete(exchange::Delete { exchange: "".into(), ..Default::default() }))
        => Channel 403 at (40, 20) "ACCESS_REFUSED - operation not permitted on the default exchange";
    delete_system_exchange: Nothing,
        |_n| ex(exchange::AMQPMethod::Delete(exchange::Delete { exchange: "amq.direct".into(), ..Default::default() }))
        => Channel 403 at (40, 20) "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '{vhost}' not allowed";
    bind_to_default_exchange: ExclusiveQueue,
        |n| qu(queue::AMQPMethod::Bind(queue::Bind { queue: n.q.as_str().into(), exchange: "".into(), routing_key: "k".into(), ..Default::default() }))
        => Channel 403 at (50, 20) "ACCESS_REFUSED - operation not permitted on the default exchange";
    unbind_from_default_exchange: ExclusiveQueue,
        |n| qu(queue::AMQPMethod::Unbind(queue::Unbind { queue: n.q.as_str().into(), exchange: "".into(), routing_key: n.q.as_str().into(), ..Default::default() }))
        => Channel 403 at (50, 50) "ACCESS_REFUSED - operation not permitted on the default exchange";
    declare_queue_with_amq_prefix: Nothing,
        |_n| qu(queue::AMQPMethod::Declare(qd("amq.warren-errors")))
        => Channel 403 at (50, 10) "ACCESS_REFUSED - queue name 'amq.warren-errors' contains reserved prefix 'amq.*'";

    // 404 NOT_FOUND
    passive_declare_missing_exchange: Nothing,
        |n| ex(exchange::AMQPMethod::Declare(exchange::Declare { passive: true, ..xd(&n.x, "direct") }))
        => Channel 404 at (40, 10) "NOT_FOUND - no exchange '{x}' in vhost '{vhost}'";
    passive_declare_missing_queue: Nothing,
        |n| qu(queue::AMQPMethod::Declare(queue::Declare { passive: true, ..qd(&n.q) }))
        => Channel 404 at (50, 10) "NOT_FOUND - no queue '{q}' in vhost '{vhost}'";
    bind_to_missing_exchange: ExclusiveQueue,
        |n| qu(queue::AMQPMethod::Bind(queue::Bind { queue: n.q.as_str().into(), exchange: n.x.as_str().into(), routing_key: "k".into(), ..Default::default() }))
        => Channel 404 at (50, 20) "NOT_FOUND - no exchange '{x}' in vhost '{vhost}'";
    bind_of_missing_queue: Nothing,
        |n| qu(queue::AMQPMethod::Bind(queue::Bind { queue: n.q.as_str().into(), exchange: "amq.direct".into(), routing_key: "k".into(), ..Default::default() }))
        => Channel 404 at (50, 20) "NOT_FOUND - no queue '{q}' in vhost '{vhost}'";
    bind_with_both_ends_missing: Nothing,
        |n| qu(queue::AMQPMethod::Bind(queue::Bind { queue: n.q.as_str().into(), exchange: n.x.as_str().into(), ..Default::default() }))
        => Channel 404 at (50, 20) "NOT_FOUND - no exchange '{x}' in vhost '{vhost}'";
    exchange_bind_from_missing_source: Nothing,
        |n| ex(exchange::AMQPMethod::Bind(exchange::Bind { destination: "amq.fanout".into(), source: n.x.as_str().into(), routing_key: "".into(), ..Default::default() }))
        => Channel 404 at (40, 30) "NOT_FOUND - no exchange '{x}' in vhost '{vhost}'";
    consume_from_missing_queue: Nothing,
        |n| ba(basic::AMQPMethod::Consume(basic::Consume { queue: n.q.as_str().into(), ..Default::default() }))
        => Channel 404 at (60, 20) "NOT_FOUND - no queue '{q}' in vhost '{vhost}'";
    get_from_missing_queue: Nothing,
        |n| ba(basic::AMQPMethod::Get(basic::Get { queue: n.q.as_str().into(), no_ack: false }))
        => Channel 404 at (60, 70) "NOT_FOUND - no queue '{q}' in vhost '{vhost}'";
    purge_of_missing_queue: Nothing,
        |n| qu(queue::AMQPMethod::Purge(queue::Purge { queue: n.q.as_str().into(), nowait: false }))
        => Channel 404 at (50, 30) "NOT_FOUND - no queue '{q}' in vhost '{vhost}'";

    // 406 PRECONDITION_FAILED
    redeclare_exchange_other_type: DirectExchange,
        |n| ex(exchange::AMQPMethod::Declare(xd(&n.x, "fanout")))
        => Channel 406 at (40, 10) "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '{vhost}': received 'fanout' but current is 'direct'";
    redeclare_exchange_other_durable: DirectExchange,
        |n| ex(exchange::AMQPMethod::Declare(exchange::Declare { durable: true, ..xd(&n.x, "direct") }))
        => Channel 406 at (40, 10) "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '{vhost}': received 'true' but current is 'false'";
    redeclare_queue_other_durable: Queue,
        |n| qu(queue::AMQPMethod::Declare(queue::Declare { durable: true, ..qd(&n.q) }))
        => Channel 406 at (50, 10) "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '{vhost}': received 'true' but current is 'false'";
    redeclare_queue_other_auto_delete: Queue,
        |n| qu(queue::AMQPMethod::Declare(queue::Declare { auto_delete: true, ..qd(&n.q) }))
        => Channel 406 at (50, 10) "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '{vhost}': received 'true' but current is 'false'";
    ack_of_unknown_tag: Nothing,
        |_n| ba(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 7, multiple: false }))
        => Channel 406 at (60, 80) "PRECONDITION_FAILED - unknown delivery tag 7";
    nack_of_unknown_tag: Nothing,
        |_n| ba(basic::AMQPMethod::Nack(basic::Nack { delivery_tag: 3, multiple: false, requeue: true }))
        => Channel 406 at (60, 120) "PRECONDITION_FAILED - unknown delivery tag 3";
    reject_of_unknown_tag: Nothing,
        |_n| ba(basic::AMQPMethod::Reject(basic::Reject { delivery_tag: 5, requeue: false }))
        => Channel 406 at (60, 90) "PRECONDITION_FAILED - unknown delivery tag 5";
    commit_without_tx_select: Nothing,
        |_n| AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))
        => Channel 406 at (90, 20) "PRECONDITION_FAILED - channel is not transactional";
    rollback_without_tx_select: Nothing,
        |_n| AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}))
        => Channel 406 at (90, 30) "PRECONDITION_FAILED - channel is not transactional";

    // Connection errors
    unknown_exchange_type: Nothing,
        |n| ex(exchange::AMQPMethod::Declare(xd(&n.x, "no-such-type")))
        => Connection 503 at (40, 10) "COMMAND_INVALID - unknown exchange type 'no-such-type'";
    // RabbitMQ says "invalid" when the type name is an atom its VM already knows
    // ('', 'foo', ...) and "unknown" otherwise.
    empty_exchange_type: Nothing,
        |n| ex(exchange::AMQPMethod::Declare(xd(&n.x, "")))
        => Connection 503 at (40, 10) "COMMAND_INVALID - invalid exchange type ''";
    recover_without_requeue: Nothing,
        |_n| ba(basic::AMQPMethod::Recover(basic::Recover { requeue: false }))
        => Connection 540 at (60, 110) "NOT_IMPLEMENTED - requeue=false";
    channel_flow_inactive_refused: Nothing,
        |_n| AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: false }))
        => Connection 540 at (20, 20) "NOT_IMPLEMENTED - active=false";
}
