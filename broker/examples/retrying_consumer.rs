//! A retrying consumer, tested against Warren.
//!
//! The application code is a worker that acks the jobs it finished, sends back
//! (nack with requeue) the ones that failed for a passing reason, and opens a new
//! channel when the broker closes its channel under it. The test seeds the queue,
//! lets one job fail once and another hang past RabbitMQ's consumer timeout (30
//! minutes, crossed in microseconds on Warren's virtual clock), and checks that
//! every job was done and nothing is left behind.
//!
//! `cargo run -p warren-broker --example retrying_consumer` (exits non-zero on
//! failure; `cargo test -p warren-broker --test examples` runs it too).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_broker::Broker;

type Error = Box<dyn std::error::Error + Send + Sync>;

// ---- the application code -------------------------------------------------------

/// What the job handler made of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Failed for a passing reason: try again later.
    Retry,
    /// The handler got stuck and never finishes this attempt.
    Stuck,
}

/// Consumes `queue` until `jobs` deliveries were done, handing each to `handle`
/// (its body, and whether it was delivered before). A closed channel — a
/// consumer timeout, say — is replaced by a new one.
pub async fn work(
    conn: &Connection,
    queue: &str,
    jobs: usize,
    mut handle: impl FnMut(&str, bool) -> Outcome,
) -> Result<(), Error> {
    let mut done = 0;
    // Deliveries a stuck handler holds: never acked.
    let mut stuck: Vec<Delivery> = Vec::new();
    while done < jobs {
        let ch = conn.create_channel().await?;
        let mut deliveries = ch
            .basic_consume(
                queue.into(),
                "worker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        while done < jobs {
            let Some(Ok(delivery)) = deliveries.next().await else {
                break; // the channel is gone: open another
            };
            let body = String::from_utf8_lossy(&delivery.data).into_owned();
            match handle(&body, delivery.redelivered) {
                Outcome::Done => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    done += 1;
                }
                Outcome::Retry => {
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    };
                    delivery.nack(requeue).await?;
                }
                Outcome::Stuck => stuck.push(delivery),
            }
        }
    }
    Ok(())
}

// ---- the test -------------------------------------------------------------------

pub async fn run() -> Result<(), Error> {
    let broker = Broker::builder().virtual_clock().start().await?;
    let conn = Connection::connect(&broker.url(), ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    setup
        .queue_declare("jobs".into(), Default::default(), FieldTable::default())
        .await?;
    for job in ["resize", "flaky upload", "hanging export"] {
        broker.seed("jobs", job, BasicProperties::default())?;
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let worker = tokio::spawn({
        let log = log.clone();
        async move {
            work(&conn, "jobs", 3, |body, redelivered| {
                let outcome = match (body, redelivered) {
                    ("flaky upload", false) => Outcome::Retry,
                    ("hanging export", false) => Outcome::Stuck,
                    _ => Outcome::Done,
                };
                log.lock().unwrap().push(format!("{body}: {outcome:?}"));
                outcome
            })
            .await
        }
    });

    // Wait (no sleep) until only the hanging job is left, held by the worker.
    broker
        .wait_for(Duration::from_secs(10), |s| {
            s.queue("jobs")
                .is_some_and(|q| q.messages.is_empty() && q.unacked.len() == 1)
        })
        .await?;
    // Half an hour later RabbitMQ closes the channel (406) and requeues the job.
    broker.advance(Duration::from_secs(31 * 60));
    tokio::time::timeout(Duration::from_secs(10), worker).await???;

    let log = log.lock().unwrap().clone();
    // Per job, in order (jobs interleave as their deliveries do).
    for (job, expected) in [
        ("resize", &["Done"][..]),
        ("flaky upload", &["Retry", "Done"]),
        ("hanging export", &["Stuck", "Done"]),
    ] {
        let seen: Vec<&str> = log
            .iter()
            .filter_map(|l| l.strip_prefix(job)?.strip_prefix(": "))
            .collect();
        if seen != expected {
            return Err(format!("{job}: {seen:?}, expected {expected:?}; log {log:?}").into());
        }
    }
    // The last ack is on its way (acks have no reply): wait for it, then check.
    broker
        .wait_for(Duration::from_secs(10), |s| {
            s.queue("jobs").is_some_and(|q| q.unacked.is_empty())
        })
        .await?;
    broker.queue("jobs").assert_empty().assert_no_unacked();
    broker.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => {
            println!("retrying_consumer: ok");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("retrying_consumer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
