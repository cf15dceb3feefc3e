//! Tutorial three, "Publish/Subscribe": a fanout exchange `logs`; each subscriber binds
//! its own exclusive, server-named queue and gets every message.
//!
//! `-- emit_log info: Hello World!` or `-- receive_logs`; with no argument two
//! subscribers start, one log line is emitted, both print it, and it exits.

mod common;

use futures_util::StreamExt;
use warren_client::*;

const EXCHANGE: &str = "logs";

async fn declare_exchange(channel: &Channel) -> Result<()> {
    channel
        .exchange_declare(
            EXCHANGE,
            "fanout",
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
}

async fn emit_log(url: &str, message: &str) -> Result<()> {
    let connection = Connection::connect(url).await?;
    let channel = connection.create_channel().await?;
    declare_exchange(&channel).await?;
    channel
        .basic_publish(
            EXCHANGE,
            "",
            BasicPublishOptions::default(),
            message.as_bytes(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent {message}");
    connection.close().await
}

/// Subscribe; `ready` is told once the queue is bound (so nothing emitted after it is
/// missed). Stops after `stop_after` messages, or never.
async fn receive_logs(
    url: &str,
    name: &str,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
    stop_after: Option<usize>,
) -> Result<()> {
    let connection = Connection::connect(url).await?;
    let channel = connection.create_channel().await?;
    declare_exchange(&channel).await?;
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(&queue.name, EXCHANGE, "", FieldTable::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            &queue.name,
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    println!(
        " [*] {name} waiting for logs on {}. To exit press CTRL+C",
        queue.name
    );
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut received = 0;
    while let Some(delivery) = consumer.next().await {
        println!(
            " [x] {name} got {}",
            String::from_utf8_lossy(&delivery?.body)
        );
        received += 1;
        if Some(received) == stop_after {
            break;
        }
    }
    connection.close().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let target = common::Target::get().await;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("emit_log") if !target.is_embedded() => {
            let message = match args[1..].join(" ") {
                m if m.is_empty() => "info: Hello World!".to_string(),
                m => m,
            };
            emit_log(&target.url, &message).await?
        }
        Some("receive_logs") if !target.is_embedded() => {
            receive_logs(&target.url, "subscriber", None, None).await?
        }
        _ => {
            let mut subscribers = Vec::new();
            for name in ["subscriber-1", "subscriber-2"] {
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let url = target.url.clone();
                subscribers.push(tokio::spawn(async move {
                    receive_logs(&url, name, Some(ready_tx), Some(1)).await
                }));
                ready_rx.await.expect("subscriber ready");
            }
            emit_log(&target.url, "info: Hello World!").await?;
            for s in subscribers {
                s.await.expect("subscriber task")?;
            }
        }
    }
    target.stop().await;
    Ok(())
}
