//! Tests where Warren does not (yet) do what RabbitMQ 3.10 does. Each passes against
//! RabbitMQ (`RAW_TARGET=amqp://guest:guest@127.0.0.1:5672/%2f`, see `common`) and
//! fails against Warren; once the broker is fixed they move to `errors.rs` (error
//! paths) or `protocol.rs` (protocol behaviour).

mod common;

use common::{exchange_decl, open1, unique, Target};

#[tokio::test]
async fn empty_exchange_type_is_command_invalid() {
    // RabbitMQ says "invalid exchange type" when the type name is an atom its VM
    // already knows ('', 'foo', ...) and "unknown exchange type" otherwise
    // ('no-such-type'); errors.rs checks the latter.
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let x = unique("x");
    c.send(1, exchange_decl(&x, "")).await;
    c.expect_connection_close(503, (40, 10), "COMMAND_INVALID - invalid exchange type ''")
        .await;
    t.stop().await;
}
