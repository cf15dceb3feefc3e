//! The `clients` section: the patterns users write, each through lapin, Go's amqp091,
//! pika and amqplib as that client's own documentation shows it, against Warren in
//! memory, Warren with `--data-dir` and RabbitMQ, in alternating rounds.
//!
//! Go, Python and Node run as their own processes (`bench/go/clients`,
//! `bench/clients/*.py|js`, installed by `cargo xtask bench` from the registries);
//! each takes `MODE URL QUEUE N` and prints one `RESULT key=value ...` line, as the
//! Go load generator does. The lapin patterns run in this process, on its runtime,
//! as a `#[tokio::main]` program would.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::process::Command;

use crate::procs::Result;

/// One pattern of the section. The modes are the programs' first argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// Publishes one at a time (each awaited where the client returns something to
    /// await), then a passive `queue.declare` polled until the queue holds them all.
    Publish,
    /// A filled queue consumed with prefetch 1000, an ack per delivery.
    Consume,
    /// Publisher confirms on a durable queue, persistent messages.
    Confirm,
    /// One message at a time, publish → delivery on a second connection.
    RoundTrip,
    /// The seed tutorial's producer: durable queue, `delivery_mode=2`, one at a time.
    SeedPublish,
    /// The seed tutorial's worker: prefetch 1, an ack per delivery.
    SeedConsume,
}

pub const PATTERNS: [Pattern; 6] = [
    Pattern::Publish,
    Pattern::Consume,
    Pattern::Confirm,
    Pattern::RoundTrip,
    Pattern::SeedPublish,
    Pattern::SeedConsume,
];

impl Pattern {
    pub fn mode(self) -> &'static str {
        match self {
            Pattern::Publish => "publish",
            Pattern::Consume => "consume",
            Pattern::Confirm => "confirm",
            Pattern::RoundTrip => "roundtrip",
            Pattern::SeedPublish => "seed-publish",
            Pattern::SeedConsume => "seed-consume",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Pattern::Publish => "publish, each awaited, until the queue holds all",
            Pattern::Consume => "consume, prefetch 1000, ack each",
            Pattern::Confirm => "confirms, durable queue, persistent",
            Pattern::RoundTrip => "round trip publish → delivery, p50",
            Pattern::SeedPublish => "seed: publish one at a time, delivery_mode=2",
            Pattern::SeedConsume => "seed: consume, prefetch 1, ack each",
        }
    }

    /// A time (lower is better) rather than a rate.
    pub fn is_time(self) -> bool {
        self == Pattern::RoundTrip
    }

    pub fn unit(self) -> &'static str {
        if self.is_time() {
            "µs"
        } else {
            "msg/s"
        }
    }
}

/// A client of the section and how to run it.
#[derive(Clone, Debug)]
pub struct ClientProgram {
    pub name: &'static str,
    /// The command before `MODE URL QUEUE N`; empty for lapin, which runs in process.
    pub command: Vec<String>,
    /// Set when the client could not be installed: its rows say why.
    pub missing: Option<String>,
    /// How much slower than lapin and Go the client is, to scale its counts (pika and
    /// amqplib spend tens of microseconds per message in the interpreter).
    pub slow: bool,
}

/// How many messages a run of `pattern` takes.
pub fn count(pattern: Pattern, quick: bool, slow: bool) -> usize {
    let base = match pattern {
        Pattern::Publish | Pattern::Consume => 50_000,
        Pattern::Confirm | Pattern::SeedPublish => 20_000,
        Pattern::SeedConsume => 10_000,
        Pattern::RoundTrip => 2_000,
    };
    let base = if slow { base / 5 } else { base };
    if quick {
        (base / 10).max(200)
    } else {
        base
    }
}

/// Runs one pattern once; the figure is msg/s, or the p50 in µs for the round trip.
pub async fn run(
    client: &ClientProgram,
    pattern: Pattern,
    url: &str,
    queue: &str,
    n: usize,
    timeout: Duration,
) -> Result<f64> {
    if client.command.is_empty() {
        let run = lapin_run(pattern, url, queue, n);
        return tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| format!("lapin {}: no result within {timeout:?}", pattern.mode()))?;
    }
    let (program, args) = client.command.split_first().ok_or("empty command")?;
    let child = Command::new(program)
        .args(args)
        .args([pattern.mode(), url, queue, &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "{} {}: no result within {timeout:?}",
                client.name,
                pattern.mode()
            )
        })??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    let (true, Some(line)) = (out.status.success(), line) else {
        return Err(format!(
            "{} {}: {}",
            client.name,
            pattern.mode(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    };
    let value = |key: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("{}: no {key} in {line:?}", client.name))?
            .parse()
            .map_err(|e| format!("{}: {key}: {e}", client.name).into())
    };
    if pattern.is_time() {
        value("p50_us")
    } else {
        Ok(n as f64 / value("secs")?)
    }
}

/// Where `cargo xtask bench` installs the clients that come from registries.
pub fn programs(bench_dir: &std::path::Path, go_clients: Option<PathBuf>) -> Vec<ClientProgram> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = bench_dir.join("venv/bin/python");
    let node_modules = bench_dir.join("node/node_modules");
    let missing = |ok: bool, what: &str| (!ok).then(|| format!("n/a ({what} not installed)"));
    vec![
        ClientProgram {
            name: "lapin",
            command: Vec::new(),
            missing: None,
            slow: false,
        },
        ClientProgram {
            name: "Go amqp091",
            missing: missing(go_clients.is_some(), "Go's amqp091"),
            command: go_clients
                .map(|p| vec![p.to_string_lossy().into_owned()])
                .unwrap_or_default(),
            slow: false,
        },
        ClientProgram {
            name: "pika",
            missing: missing(python.exists(), "pika"),
            command: vec![
                python.to_string_lossy().into_owned(),
                root.join("clients/pika_client.py")
                    .to_string_lossy()
                    .into_owned(),
            ],
            slow: true,
        },
        ClientProgram {
            name: "amqplib",
            missing: missing(node_modules.join("amqplib").exists(), "amqplib"),
            // The script lives in the source tree, amqplib where xtask installed it.
            command: vec![
                "env".into(),
                format!("NODE_PATH={}", node_modules.display()),
                "node".into(),
                root.join("clients/amqplib_client.js")
                    .to_string_lossy()
                    .into_owned(),
            ],
            slow: true,
        },
    ]
}

async fn declare(ch: &Channel, queue: &str, durable: bool) -> Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// lapin's README: `basic_publish(...).await?.await?` (the second await is the
/// confirm, which resolves at once on a channel without confirms).
async fn publish(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) -> Result<()> {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await?
    .await?;
    Ok(())
}

async fn wait_depth(ch: &Channel, queue: &str, durable: bool, want: u32) -> Result<()> {
    let passive = QueueDeclareOptions {
        passive: true,
        durable,
        ..Default::default()
    };
    while ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?
        .message_count()
        < want
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn consume_acking(ch: &Channel, queue: &str, prefetch: u16, n: usize) -> Result<()> {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
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
    Ok(())
}

/// The patterns through lapin, written as its README writes them.
async fn lapin_run(pattern: Pattern, url: &str, queue: &str, n: usize) -> Result<f64> {
    let body = [b'x'; 16];
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let durable = matches!(
        pattern,
        Pattern::Confirm | Pattern::SeedPublish | Pattern::SeedConsume
    );
    declare(&ch, queue, durable).await?;
    let props = if durable {
        persistent
    } else {
        BasicProperties::default()
    };
    let start = Instant::now();
    let figure = match pattern {
        Pattern::Publish | Pattern::SeedPublish => {
            for _ in 0..n {
                publish(&ch, queue, &body, props.clone()).await?;
            }
            wait_depth(&ch, queue, durable, n as u32).await?;
            n as f64 / start.elapsed().as_secs_f64()
        }
        Pattern::Consume | Pattern::SeedConsume => {
            for _ in 0..n {
                publish(&ch, queue, &body, props.clone()).await?;
            }
            wait_depth(&ch, queue, durable, n as u32).await?;
            let prefetch = if pattern == Pattern::Consume { 1000 } else { 1 };
            let cch = conn.create_channel().await?;
            let start = Instant::now();
            consume_acking(&cch, queue, prefetch, n).await?;
            n as f64 / start.elapsed().as_secs_f64()
        }
        Pattern::Confirm => {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let mut pending = Vec::with_capacity(n);
            for _ in 0..n {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        &body,
                        props.clone(),
                    )
                    .await?;
                pending.push(confirm);
            }
            for confirm in pending {
                if !confirm.await?.is_ack() {
                    return Err("a publish was nacked".into());
                }
            }
            n as f64 / start.elapsed().as_secs_f64()
        }
        Pattern::RoundTrip => {
            let sub = Connection::connect(url, ConnectionProperties::default()).await?;
            let cch = sub.create_channel().await?;
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
                publish(&ch, queue, &body, BasicProperties::default()).await?;
                consumer.next().await.ok_or("consumer ended")??;
                if i >= warmup {
                    samples.push(start.elapsed());
                }
            }
            samples.sort();
            let _ = sub.close(200, "OK".into()).await;
            samples[samples.len() / 2].as_secs_f64() * 1e6
        }
    };
    let _ = conn.close(200, "OK".into()).await;
    Ok(figure)
}
