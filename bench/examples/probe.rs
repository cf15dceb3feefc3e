//! Issue 20's probe: one lapin connection through the phases in turn
//! (`probe URL N`), or through the publish phase alone (`probe URL N publish`).
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = &args[1];
    let n: usize = args[2].parse()?;
    let q = format!("probe.{}", std::process::id());
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let body = [b'x'; 16];
    let t = Instant::now();
    for _ in 0..n {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await?
        .await?;
    }
    let pubd = t.elapsed();
    loop {
        let d = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        if d.message_count() as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let publish = t.elapsed();
    if args.get(3).map(String::as_str) == Some("publish") {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
        println!(
            "n={n} publish={:.0}/s (client {:.0}/s)",
            n as f64 / publish.as_secs_f64(),
            n as f64 / pubd.as_secs_f64()
        );
        return Ok(());
    }
    let cch = conn.create_channel().await?;
    cch.basic_qos(1000, BasicQosOptions::default()).await?;
    let t = Instant::now();
    let mut consumer = cch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..n {
        let d = consumer.next().await.unwrap()?;
        d.ack(BasicAckOptions::default()).await?;
    }
    let consume = t.elapsed();
    cch.basic_cancel(
        consumer.tag().as_str().into(),
        BasicCancelOptions::default(),
    )
    .await?;
    // round trip
    let sub = Connection::connect(url, ConnectionProperties::default()).await?;
    let sch = sub.create_channel().await?;
    let mut c2 = sch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut s = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await?
        .await?;
        c2.next().await.unwrap()?;
        s.push(t.elapsed());
    }
    s.sort();
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await?;
    println!(
        "n={n} publish={:.0}/s (client {:.0}/s) consume={:.0}/s rt_p50={:?}",
        n as f64 / publish.as_secs_f64(),
        n as f64 / pubd.as_secs_f64(),
        n as f64 / consume.as_secs_f64(),
        s[s.len() / 2]
    );
    Ok(())
}
