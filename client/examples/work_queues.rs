//! Tutorial two, "Work Queues": a durable `task_queue`, persistent messages, fair
//! dispatch with prefetch 1, and manual acks. Each `.` in a task is one second of work
//! (a tenth of one here, to keep the demo short).
//!
//! `-- new_task First message.` publishes one task; `-- worker` runs one worker. With
//! no argument, it publishes five tasks and two workers share them, then exits.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use warren_client::*;

const QUEUE: &str = "task_queue";

async fn declare(channel: &Channel) -> Result<()> {
    channel
        .queue_declare(
            QUEUE,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(drop)
}

async fn new_task(url: &str, messages: &[String]) -> Result<()> {
    let connection = Connection::connect(url).await?;
    let channel = connection.create_channel().await?;
    declare(&channel).await?;
    for message in messages {
        channel
            .basic_publish(
                "",
                QUEUE,
                BasicPublishOptions::default(),
                message.as_bytes(),
                // delivery_mode 2: persistent, like pika.DeliveryMode.Persistent.
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        println!(" [x] Sent {message}");
    }
    connection.close().await
}

/// Work until `done` reaches `total` (or forever when `total` is `None`).
async fn worker(url: &str, name: &str, done: Arc<AtomicUsize>, total: Option<usize>) -> Result<()> {
    let connection = Connection::connect(url).await?;
    let channel = connection.create_channel().await?;
    declare(&channel).await?;
    // Fair dispatch: no new task until the previous one is acked.
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            QUEUE,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(" [*] {name} waiting for messages. To exit press CTRL+C");
    loop {
        if total.is_some_and(|t| done.load(Ordering::SeqCst) >= t) {
            break;
        }
        let delivery = tokio::select! {
            d = consumer.next() => d,
            // Re-check the shared count now and then: the other worker may finish last.
            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let Some(delivery) = delivery else { break };
        let delivery = delivery?;
        let body = String::from_utf8_lossy(&delivery.body).to_string();
        println!(" [x] {name} received {body}");
        let dots = body.matches('.').count() as u64;
        tokio::time::sleep(Duration::from_millis(100 * dots)).await;
        println!(" [x] {name} done");
        delivery.ack(BasicAckOptions::default()).await?;
        done.fetch_add(1, Ordering::SeqCst);
    }
    connection.close().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let target = common::Target::get().await;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("new_task") if !target.is_embedded() => {
            let message = match args[1..].join(" ") {
                m if m.is_empty() => "Hello World!".to_string(),
                m => m,
            };
            new_task(&target.url, &[message]).await?
        }
        Some("worker") if !target.is_embedded() => {
            worker(&target.url, "worker", Arc::default(), None).await?
        }
        _ => {
            let tasks: Vec<String> = [
                "First message.",
                "Second message..",
                "Third message...",
                "Fourth message....",
                "Fifth message.....",
            ]
            .map(String::from)
            .to_vec();
            // Start from an empty queue so the workers' count is exact even if an
            // earlier run against the same broker left tasks behind.
            let connection = Connection::connect(&target.url).await?;
            let channel = connection.create_channel().await?;
            declare(&channel).await?;
            channel.queue_purge(QUEUE).await?;
            connection.close().await?;
            new_task(&target.url, &tasks).await?;
            let done = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = ["worker-1", "worker-2"]
                .into_iter()
                .map(|name| {
                    let (url, done) = (target.url.clone(), done.clone());
                    let total = tasks.len();
                    tokio::spawn(async move { worker(&url, name, done, Some(total)).await })
                })
                .collect();
            for w in workers {
                w.await.expect("worker task")?;
            }
        }
    }
    target.stop().await;
    Ok(())
}
