//! RPC over AMQP: a server answers `fib(n)` requests from `rpc_queue`; a client sends
//! each request with `reply_to` (its exclusive callback queue) and a `correlation_id`,
//! and matches replies by it.
//!
//! `-- rpc_server` or `-- rpc_client 30`; with no argument the server runs in the
//! background, the client asks for fib(0..=10) and fib(30), and it exits.

mod common;

use std::collections::HashMap;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use warren_client::*;

const QUEUE: &str = "rpc_queue";

fn fib(n: u64) -> u64 {
    match n {
        0 => 0,
        1 => 1,
        n => fib(n - 1) + fib(n - 2),
    }
}

async fn rpc_server(url: &str, ready: Option<oneshot::Sender<()>>) -> Result<()> {
    let connection = Connection::connect(url).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(QUEUE, QueueDeclareOptions::default(), FieldTable::default())
        .await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut requests = channel
        .basic_consume(
            QUEUE,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(" [x] Awaiting RPC requests");
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    while let Some(request) = requests.next().await {
        let request = request?;
        let n: u64 = String::from_utf8_lossy(&request.body).parse().unwrap_or(0);
        println!(" [.] fib({n})");
        let answer = fib(n).to_string();
        if let Some(reply_to) = request.properties.reply_to() {
            let mut props = BasicProperties::default();
            if let Some(id) = request.properties.correlation_id() {
                props = props.with_correlation_id(id.clone());
            }
            channel
                .basic_publish(
                    "",
                    reply_to.as_str(),
                    BasicPublishOptions::default(),
                    answer.as_bytes(),
                    props,
                )
                .await?;
        }
        request.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// An RPC client: one callback queue, many calls in flight, replies matched by
/// correlation id.
struct FibonacciRpcClient {
    connection: Connection,
    channel: Channel,
    callback_queue: String,
    waiting: std::sync::Arc<std::sync::Mutex<HashMap<String, oneshot::Sender<String>>>>,
    next_id: u64,
}

impl FibonacciRpcClient {
    async fn new(url: &str) -> Result<Self> {
        let connection = Connection::connect(url).await?;
        let channel = connection.create_channel().await?;
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
        let mut replies = channel
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
        let waiting: std::sync::Arc<std::sync::Mutex<HashMap<String, oneshot::Sender<String>>>> =
            Default::default();
        let routes = waiting.clone();
        tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let id = reply
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.to_string());
                let waiter = id.and_then(|id| routes.lock().unwrap().remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(String::from_utf8_lossy(&reply.body).to_string());
                }
            }
        });
        Ok(FibonacciRpcClient {
            connection,
            channel,
            callback_queue: queue.name,
            waiting,
            next_id: 0,
        })
    }

    async fn call(&mut self, n: u64) -> Result<String> {
        self.next_id += 1;
        let correlation_id = format!("{}-{}", std::process::id(), self.next_id);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap()
            .insert(correlation_id.clone(), tx);
        self.channel
            .basic_publish(
                "",
                QUEUE,
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default()
                    .with_reply_to(self.callback_queue.as_str().into())
                    .with_correlation_id(correlation_id.as_str().into()),
            )
            .await?;
        Ok(rx.await.unwrap_or_default())
    }

    async fn close(self) -> Result<()> {
        self.connection.close().await
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let target = common::Target::get().await;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("rpc_server") if !target.is_embedded() => rpc_server(&target.url, None).await?,
        Some("rpc_client") if !target.is_embedded() => {
            let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
            let mut client = FibonacciRpcClient::new(&target.url).await?;
            println!(" [x] Requesting fib({n})");
            println!(" [.] Got {}", client.call(n).await?);
            client.close().await?
        }
        _ => {
            let (ready_tx, ready_rx) = oneshot::channel();
            let url = target.url.clone();
            let server = tokio::spawn(async move { rpc_server(&url, Some(ready_tx)).await });
            ready_rx.await.expect("server ready");
            let mut client = FibonacciRpcClient::new(&target.url).await?;
            for n in (0..=10).chain([30]) {
                println!(" [x] Requesting fib({n})");
                let answer = client.call(n).await?;
                println!(" [.] Got {answer}");
                assert_eq!(answer, fib(n).to_string());
            }
            client.close().await?;
            server.abort();
        }
    }
    target.stop().await;
    Ok(())
}
