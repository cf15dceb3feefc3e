//! Tutorial one, "Hello World!": send one message to the queue `hello` and receive it.
//!
//! `cargo run -p warren-client --example hello_world -- send` (or `receive`); with no
//! argument both run in this process, and it exits once the message arrived.

mod common;

use futures_util::StreamExt;
use warren_client::*;

async fn send(url: &str) -> Result<()> {
    let connection = Connection::connect(url).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            "hello",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_publish(
            "",
            "hello",
            BasicPublishOptions::default(),
            b"Hello World!",
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent 'Hello World!'");
    // close() flushes the publish before the connection goes.
    connection.close().await
}

async fn receive(url: &str, stop_after: Option<usize>) -> Result<()> {
    let connection = Connection::connect(url).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            "hello",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            "hello",
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    let mut received = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        println!(" [x] Received {}", String::from_utf8_lossy(&delivery.body));
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
    match std::env::args().nth(1).as_deref() {
        Some("send") if !target.is_embedded() => send(&target.url).await?,
        Some("receive") if !target.is_embedded() => receive(&target.url, None).await?,
        _ => {
            let receiver = tokio::spawn({
                let url = target.url.clone();
                async move { receive(&url, Some(1)).await }
            });
            send(&target.url).await?;
            receiver.await.expect("receiver task")?;
        }
    }
    target.stop().await;
    Ok(())
}
