//! The lapin load: the same scenarios as the Go load generator, through the Rust
//! client a Warren user is most likely to test with.
//!
//! lapin awaits every `basic_publish` until its frames are handed to the socket, so
//! one publisher is capped by the client's round trip through its I/O loop; the
//! bench's client ceilings run the same loads against a peer that does no broker
//! work to show that cap.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::procs::Result;

async fn connect(url: &str) -> Result<Connection> {
    Ok(Connection::connect(url, ConnectionProperties::default()).await?)
}

async fn declare(ch: &Channel, queue: &str) -> Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn publish_n(ch: &Channel, exchange: &str, key: &str, n: usize, body: &[u8]) -> Result<()> {
    for _ in 0..n {
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await?;
    }
    Ok(())
}

/// Polls the queue's depth until the broker has routed every publish.
async fn wait_depth(conn: &Connection, queue: &str, want: u32) -> Result<()> {
    let ch = conn.create_channel().await?;
    loop {
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        if q.message_count() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let _ = ch.close(200, "OK".into()).await;
    Ok(())
}

/// Fire-and-forget publishes into one queue, timed until the queue holds all of them.
pub async fn publish(url: &str, queue: &str, n: usize, body: &[u8]) -> Result<Duration> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, queue).await?;
    let start = Instant::now();
    publish_n(&ch, "", queue, n, body).await?;
    wait_depth(&conn, queue, n as u32).await?;
    let took = start.elapsed();
    let _ = conn.close(200, "OK".into()).await;
    Ok(took)
}

/// Fills a queue untimed, then consumes `n` with a manual ack each, prefetch given.
pub async fn consume(
    url: &str,
    queue: &str,
    n: usize,
    body: &[u8],
    prefetch: u16,
) -> Result<Duration> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, queue).await?;
    publish_n(&ch, "", queue, n, body).await?;
    wait_depth(&conn, queue, n as u32).await?;
    let cch = conn.create_channel().await?;
    cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let start = Instant::now();
    let mut consumer = cch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for i in 0..n {
        let d = consumer
            .next()
            .await
            .ok_or_else(|| format!("consumer ended after {i}"))??;
        d.ack(BasicAckOptions::default()).await?;
    }
    let took = start.elapsed();
    let _ = conn.close(200, "OK".into()).await;
    Ok(took)
}

/// `n` publishes to a fanout exchange bound to `queues` queues, each consumed with
/// manual acks on its own channel; timed until every copy is delivered and acked.
pub async fn fanout(
    url: &str,
    exchange: &str,
    queue_prefix: &str,
    queues: usize,
    n: usize,
    body: &[u8],
    prefetch: u16,
) -> Result<Duration> {
    let publisher = connect(url).await?;
    let subscriber = connect(url).await?;
    let ch = publisher.create_channel().await?;
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut tasks = Vec::new();
    for k in 0..queues {
        let name = format!("{queue_prefix}.{k}");
        declare(&ch, &name).await?;
        ch.queue_bind(
            name.as_str().into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let cch = subscriber.create_channel().await?;
        cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let mut consumer = cch
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                match consumer.next().await {
                    Some(Ok(d)) => d.ack(BasicAckOptions::default()).await?,
                    Some(Err(e)) => return Err(e),
                    None => break,
                };
            }
            Ok::<_, lapin::Error>(())
        }));
    }
    let start = Instant::now();
    publish_n(&ch, exchange, "", n, body).await?;
    for t in tasks {
        t.await??;
    }
    let took = start.elapsed();
    let _ = publisher.close(200, "OK".into()).await;
    let _ = subscriber.close(200, "OK".into()).await;
    Ok(took)
}

/// Round trips publish → delivery on two connections, one message at a time; returns
/// the sorted samples after a warm-up of a tenth.
pub async fn latency(url: &str, queue: &str, n: usize, body: &[u8]) -> Result<Vec<Duration>> {
    let publisher = connect(url).await?;
    let subscriber = connect(url).await?;
    let ch = publisher.create_channel().await?;
    declare(&ch, queue).await?;
    let cch = subscriber.create_channel().await?;
    let mut consumer = cch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let warmup = n / 10;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let start = Instant::now();
        publish_n(&ch, "", queue, 1, body).await?;
        consumer.next().await.ok_or("consumer ended")??;
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    let _ = publisher.close(200, "OK".into()).await;
    let _ = subscriber.close(200, "OK".into()).await;
    Ok(samples)
}

/// Connection opens (TCP + AMQP handshake), sorted.
pub async fn connect_times(url: &str, n: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let conn = connect(url).await?;
        samples.push(start.elapsed());
        let _ = conn.close(200, "OK".into()).await;
    }
    samples.sort();
    Ok(samples)
}

/// Runs `make`'s future on a thread of its own, bound to one CPU, on a runtime of its
/// own. lapin's I/O thread inherits that binding when `Connection::connect` spawns it,
/// so every publish is handed between two threads on the same CPU. Unbound, on an
/// otherwise idle machine, Linux puts the two on different CPUs and each hand-over
/// wakes an idle one (bench/PROFILE.md); this shows what the client reaches without
/// that cost.
pub async fn on_one_cpu<T, F, Fut>(timeout: Duration, make: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("lapin-one-cpu".into())
        .spawn(move || {
            let run = || -> Result<T> {
                bind_to_one_cpu()?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    tokio::time::timeout(timeout, make())
                        .await
                        .map_err(|_| format!("no result within {timeout:?}"))?
                })
            };
            let _ = tx.send(run());
        })?;
    rx.await?
}

/// Binds the calling thread, and every thread it spawns from now on, to the first CPU
/// it may run on (CPU 0 unless a cpuset says otherwise).
fn bind_to_one_cpu() -> Result<()> {
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
    let allowed = sched_getaffinity(None)?;
    let cpu = (0..CpuSet::MAX_CPU)
        .find(|&c| allowed.is_set(c))
        .ok_or("no CPU to bind to")?;
    let mut one = CpuSet::new();
    one.set(cpu);
    sched_setaffinity(None, &one)?;
    Ok(())
}

/// Deletes the bench's queues and exchange, each on a fresh channel so that one
/// failure (a queue that a killed run never declared) does not stop the rest.
/// Deletes `queues` and `exchanges`, within 30 s: a broker that stops answering
/// (or accepting) must not hang the bench, and lapin's connect has no timeout.
pub async fn cleanup(url: &str, queues: &[String], exchanges: &[String]) -> Result<()> {
    let clean = async {
        let conn = connect(url).await?;
        for q in queues {
            let ch = conn.create_channel().await?;
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in exchanges {
            let ch = conn.create_channel().await?;
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "OK".into()).await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), clean)
        .await
        .map_err(|_| "cleanup timed out")?
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}
