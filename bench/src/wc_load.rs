//! The warren-client load over TCP: the project's own client, which pipelines
//! publishes (a publish waits only for room in its outgoing queue), so it can push a
//! broker harder than lapin's one-publish-at-a-time.

use std::time::{Duration, Instant};

use warren_client::{
    BasicAckOptions, BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    Channel, Confirmation, Connection, FieldTable, QueueDeclareOptions,
};

use crate::procs::Result;

async fn publish_n(ch: &Channel, key: &str, n: usize, body: &[u8]) -> Result<()> {
    for _ in 0..n {
        ch.basic_publish(
            "",
            key,
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await?;
    }
    Ok(())
}

async fn wait_depth(ch: &Channel, queue: &str, want: u32) -> Result<()> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    while ch
        .queue_declare(queue, passive, FieldTable::default())
        .await?
        .message_count
        < want
    {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(())
}

/// Fire-and-forget publishes into one queue, timed until the queue holds all of them.
pub async fn publish(url: &str, queue: &str, n: usize, body: &[u8]) -> Result<Duration> {
    let conn = Connection::connect(url).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await?;
    let poll = conn.create_channel().await?;
    let start = Instant::now();
    publish_n(&ch, queue, n, body).await?;
    wait_depth(&poll, queue, n as u32).await?;
    let took = start.elapsed();
    conn.close().await?;
    Ok(took)
}

/// Fills a queue untimed, then consumes `n` with a manual ack each.
pub async fn consume(
    url: &str,
    queue: &str,
    n: usize,
    body: &[u8],
    prefetch: u16,
) -> Result<Duration> {
    let conn = Connection::connect(url).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await?;
    publish_n(&ch, queue, n, body).await?;
    wait_depth(&ch, queue, n as u32).await?;
    let cch = conn.create_channel().await?;
    cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let start = Instant::now();
    let mut consumer = cch
        .basic_consume(
            queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for i in 0..n {
        let d = consumer
            .recv()
            .await
            .ok_or_else(|| format!("consumer ended after {i}"))??;
        d.ack(BasicAckOptions::default()).await?;
    }
    let took = start.elapsed();
    drop(consumer);
    conn.close().await?;
    Ok(took)
}

/// Persistent publishes to a durable queue on a confirming channel, every confirm
/// awaited at the end: the publishes are pipelined, as many in flight as the
/// client's queue holds.
pub async fn confirm(url: &str, queue: &str, n: usize, body: &[u8]) -> Result<Duration> {
    let conn = Connection::connect(url).await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue, durable, FieldTable::default())
        .await?;
    ch.confirm_select().await?;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let start = Instant::now();
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        let c = ch
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body,
                persistent.clone(),
            )
            .await?;
        confirms.push(c);
    }
    for (i, c) in confirms.into_iter().enumerate() {
        if c.await? != Confirmation::Ack {
            return Err(format!("publish {} was not acked", i + 1).into());
        }
    }
    let took = start.elapsed();
    conn.close().await?;
    Ok(took)
}

/// End to end: one producer connection publishing `n` messages while one consumer
/// connection takes them (no-ack, or a manual ack each with prefetch 1000), timed
/// until the consumer has the last one.
pub async fn end_to_end(
    url: &str,
    queue: &str,
    n: usize,
    body: &[u8],
    ack: bool,
) -> Result<Duration> {
    let producer = Connection::connect(url).await?;
    let consumer_conn = Connection::connect(url).await?;
    let ch = producer.create_channel().await?;
    ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await?;
    let cch = consumer_conn.create_channel().await?;
    if ack {
        cch.basic_qos(1000, BasicQosOptions::default()).await?;
    }
    let mut consumer = cch
        .basic_consume(
            queue,
            "",
            BasicConsumeOptions {
                no_ack: !ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let start = Instant::now();
    let take = tokio::spawn(async move {
        for i in 0..n {
            let d = consumer
                .recv()
                .await
                .ok_or_else(|| format!("consumer ended after {i}"))??;
            if ack {
                d.ack(BasicAckOptions::default()).await?;
            }
        }
        Ok::<_, crate::procs::BoxError>(())
    });
    publish_n(&ch, queue, n, body).await?;
    take.await??;
    let took = start.elapsed();
    producer.close().await?;
    consumer_conn.close().await?;
    Ok(took)
}

/// Round trips publish → delivery, one message at a time, on two connections: the
/// p50 of `n` after a warm-up of a tenth.
pub async fn round_trip(url: &str, queue: &str, n: usize, body: &[u8]) -> Result<Duration> {
    let producer = Connection::connect(url).await?;
    let consumer_conn = Connection::connect(url).await?;
    let ch = producer.create_channel().await?;
    ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await?;
    let cch = consumer_conn.create_channel().await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = cch
        .basic_consume(queue, "", no_ack, FieldTable::default())
        .await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let start = Instant::now();
        publish_n(&ch, queue, 1, body).await?;
        consumer.recv().await.ok_or("consumer ended")??;
        if i >= n / 10 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    drop(consumer);
    producer.close().await?;
    consumer_conn.close().await?;
    Ok(samples[samples.len() / 2])
}

/// The loopback floor: a plain TCP ping-pong between two tasks of this process,
/// `out` bytes one way and `back` bytes the other (the frames of a 16 B publish and
/// of its delivery), the p50 of `n` exchanges.
pub async fn loopback_floor(n: usize, out: usize, back: usize) -> Result<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; out];
        let reply = vec![b'y'; back];
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&reply).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let msg = vec![b'x'; out];
    let mut buf = vec![0u8; back];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let start = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut buf).await?;
        if i >= n / 10 {
            samples.push(start.elapsed());
        }
    }
    drop(s);
    echo.await??;
    samples.sort();
    Ok(samples[samples.len() / 2])
}
