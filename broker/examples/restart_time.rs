//! Measures how long a broker takes to start on a data directory holding N
//! persistent messages (default 1 million, 16-byte bodies): the figure issue 5
//! asks for beside the confirmed-publish rate.
//!
//! `cargo run --release -p warren-broker --example restart_time -- [N]`

use std::time::Instant;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_broker::Broker;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("warren-restart-time-{}", std::process::id()));
    let broker = Broker::builder().data_dir(&dir).start().await?;
    let conn = Connection::connect(&broker.url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("q".into(), durable, FieldTable::default())
        .await?;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let started = Instant::now();
    for i in 0..n {
        broker.seed("q", format!("message {i:08}"), persistent.clone())?;
    }
    let written = started.elapsed();
    conn.close(200, "bye".into()).await?;
    broker.shutdown().await;
    let size: u64 = std::fs::read_dir(&dir)?
        .map(|e| {
            e.map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .unwrap_or(0)
        })
        .sum();

    let started = Instant::now();
    let broker = Broker::builder().data_dir(&dir).start().await?;
    let recovered = started.elapsed();
    let count = broker.queue("q").message_count();
    broker.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    println!(
        "{n} persistent messages: written in {:.2} s ({} MB of log); start with recovery {:.2} s; {count} recovered",
        written.as_secs_f64(),
        size / 1_000_000,
        recovered.as_secs_f64()
    );
    Ok(())
}
