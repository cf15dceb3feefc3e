//! Publish and consume rates of warren-client and lapin, against the same brokers, in
//! one run: an embedded Warren always, and RabbitMQ too when `AMQP_URL` is set.
//!
//! `cargo run --release -p warren-client --example bench -- [MESSAGES] [BODY_BYTES]`
//!
//! Workload per client and broker, on a fresh queue:
//! - publish: MESSAGES publishes in confirm mode, all pipelined, then every confirm
//!   awaited (persistent messages off: this measures the client and the broker's
//!   routing, not a disk);
//! - consume: MESSAGES deliveries with manual ack, prefetch 1000.
//!
//! A measurement, not a test: run it on an otherwise idle machine.

use std::time::{Duration, Instant};

use futures_util::{future::try_join_all, StreamExt};

const PREFETCH: u16 = 1000;

struct Rates {
    publish: f64,
    consume: f64,
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn queue_name(client: &str) -> String {
    format!(
        "warren-bench.{client}.{}.{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

async fn bench_warren_client(
    conn: warren_client::Connection,
    n: usize,
    body: &[u8],
) -> warren_client::Result<Rates> {
    use warren_client::*;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            &queue_name("warren-client"),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .name;
    ch.confirm_select().await?;

    let start = Instant::now();
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        confirms.push(
            ch.basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await?,
        );
    }
    let outcomes = try_join_all(confirms).await?;
    let publish = rate(n, start.elapsed());
    assert!(outcomes.iter().all(|o| o.is_ack()));

    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let start = Instant::now();
    let mut consumer = ch
        .basic_consume(
            &q,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..n {
        let d = consumer.next().await.expect("delivery")?;
        d.ack(BasicAckOptions::default()).await?;
    }
    let consume = rate(n, start.elapsed());
    conn.close().await?;
    Ok(Rates { publish, consume })
}

async fn bench_lapin(url: &str, n: usize, body: &[u8]) -> lapin::Result<Rates> {
    use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue_name("lapin").as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .name()
        .clone();
    ch.confirm_select(ConfirmSelectOptions::default()).await?;

    let start = Instant::now();
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        confirms.push(
            ch.basic_publish(
                "".into(),
                q.clone(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await?,
        );
    }
    let outcomes = try_join_all(confirms).await?;
    let publish = rate(n, start.elapsed());
    assert!(outcomes.iter().all(|o| o.is_ack()));

    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let start = Instant::now();
    let mut consumer = ch
        .basic_consume(
            q.clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..n {
        let d = consumer.next().await.expect("delivery")?;
        d.ack(BasicAckOptions::default()).await?;
    }
    let consume = rate(n, start.elapsed());
    conn.close(200, "OK".into()).await?;
    Ok(Rates { publish, consume })
}

/// Start a broker, connect in-process, publish one message and receive it: the
/// "fresh broker per test" cost.
async fn start_to_first_delivery() -> Duration {
    use warren_client::*;
    let start = Instant::now();
    let broker = warren_broker::Broker::builder()
        .no_listener()
        .start()
        .await
        .expect("start Warren");
    let conn = Connection::open(broker.connect_in_process()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare("", QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap()
        .name;
    let mut consumer = ch
        .basic_consume(
            &q,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_publish(
        "",
        &q,
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    consumer.next().await.unwrap().unwrap();
    let took = start.elapsed();
    drop(consumer);
    conn.close().await.unwrap();
    broker.shutdown().await;
    took
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let body = vec![0xAB; size];

    let warren = warren_broker::Broker::start().await.expect("start Warren");
    let mut brokers = vec![("warren", warren.url())];
    if let Ok(url) = std::env::var("AMQP_URL") {
        brokers.push(("rabbitmq", url));
    }
    println!("{n} messages of {size} bytes; publish = confirmed & pipelined, consume = manual ack, prefetch {PREFETCH}");
    println!(
        "{:<10} {:<14} {:>14} {:>14}",
        "broker", "client", "publish msg/s", "consume msg/s"
    );
    let in_process = warren_client::Connection::open(warren.connect_in_process())
        .await
        .expect("in-process connection");
    let r = bench_warren_client(in_process, n, &body)
        .await
        .expect("warren-client bench");
    println!(
        "{:<10} {:<14} {:>14.0} {:>14.0}   (in-process, no socket; lapin cannot)",
        "warren", "warren-client", r.publish, r.consume
    );
    for (broker, url) in &brokers {
        let conn = warren_client::Connection::connect(url)
            .await
            .expect("connect");
        let w = bench_warren_client(conn, n, &body)
            .await
            .expect("warren-client bench");
        let l = bench_lapin(url, n, &body).await.expect("lapin bench");
        for (client, r) in [("warren-client", &w), ("lapin", &l)] {
            println!(
                "{broker:<10} {client:<14} {:>14.0} {:>14.0}",
                r.publish, r.consume
            );
        }
        println!(
            "{broker:<10} {:<14} {:>13.2}x {:>13.2}x",
            "ratio w/l",
            w.publish / l.publish,
            w.consume / l.consume
        );
    }
    warren.shutdown().await;
    let mut samples: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        samples.push(start_to_first_delivery().await);
    }
    samples.sort();
    println!(
        "in-process broker start to first delivery (warren-client): median {:?}, best {:?}",
        samples[samples.len() / 2],
        samples[0]
    );
}
