//! Warren alone, inside the bench process, through warren-client over
//! `Broker::connect_in_process` (no socket): what a Rust test pays per fresh broker,
//! and how fast messages move when no kernel is in the way.

use std::time::{Duration, Instant};

use warren_client::{
    BasicAckOptions, BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    Connection, FieldTable, QueueDeclareOptions,
};

use crate::procs::Result;

/// `Broker::start()` → connected → declare → consume → publish → first delivery →
/// close → `shutdown()`: one property-test case's overhead.
pub async fn cycle() -> Result<Duration> {
    let start = Instant::now();
    let broker = warren_broker::Broker::start().await?;
    let conn = Connection::open(broker.connect_in_process()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare("", QueueDeclareOptions::default(), FieldTable::default())
        .await?
        .name;
    let mut consumer = ch
        .basic_consume(
            &q,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    ch.basic_publish(
        "",
        &q,
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await?;
    consumer
        .recv()
        .await
        .ok_or("no delivery")??
        .ack(BasicAckOptions::default())
        .await?;
    drop(consumer);
    conn.close().await?;
    broker.shutdown().await;
    Ok(start.elapsed())
}

/// `n` publishes on one channel while a consumer on another drains the queue;
/// timed until the last delivery. `ack`: manual acks with prefetch 1000, else no_ack.
pub async fn publish_consume(n: usize, body: &[u8], ack: bool) -> Result<Duration> {
    let broker = warren_broker::Broker::builder()
        .no_listener()
        .start()
        .await?;
    let conn = Connection::open(broker.connect_in_process()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare("", QueueDeclareOptions::default(), FieldTable::default())
        .await?
        .name;
    let cch = conn.create_channel().await?;
    if ack {
        cch.basic_qos(1000, BasicQosOptions::default()).await?;
    }
    let mut consumer = cch
        .basic_consume(
            &q,
            "",
            BasicConsumeOptions {
                no_ack: !ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let start = Instant::now();
    let drain = tokio::spawn(async move {
        for i in 0..n {
            let d = consumer
                .recv()
                .await
                .ok_or_else(|| format!("consumer ended after {i}"))??;
            if ack {
                d.ack(BasicAckOptions::default()).await?;
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    // The publisher is a task too, as in a `#[tokio::test(flavor = "multi_thread")]`:
    // run on the bench's own thread, outside the runtime's two workers, it made three
    // busy threads share two cores (about 720 000 msg/s against 855 000 as a task).
    let body = body.to_vec();
    let publisher = tokio::spawn(async move {
        for _ in 0..n {
            ch.basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    publisher.await??;
    drain.await??;
    let took = start.elapsed();
    conn.close().await?;
    broker.shutdown().await;
    Ok(took)
}
