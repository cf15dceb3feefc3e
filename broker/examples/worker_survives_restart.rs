//! A worker that must survive a broker restart and a crash, tested against Warren.
//!
//! The application code is a worker that reconnects when it loses its
//! connection, consumes a durable queue of persistent tasks one at a time and
//! acks each once done; it records what it did idempotently, since a task may
//! come back after a restart. The test restarts the broker (320
//! CONNECTION_FORCED, as RabbitMQ going down for maintenance) with a task in the
//! worker's hands, then crashes it (the socket just dies and what was not
//! fsynced is lost), and checks that every task was done and none is left.
//!
//! `cargo run -p warren-broker --example worker_survives_restart` (exits non-zero
//! on failure; `cargo test -p warren-broker --test examples` runs it too).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::Semaphore;
use warren_broker::Broker;

type Error = Box<dyn std::error::Error + Send + Sync>;

// ---- the application code -------------------------------------------------------

/// Runs until `done` holds `tasks` distinct tasks. Each task waits for a permit
/// of `work` (the test's hand on the worker's pace), is recorded, then acked.
pub async fn worker(
    url: String,
    tasks: usize,
    done: Arc<Mutex<BTreeSet<String>>>,
    work: Arc<Semaphore>,
) -> Result<(), Error> {
    let finished = || done.lock().unwrap().len() >= tasks;
    while !finished() {
        // Whatever went wrong, start over on a new connection after a pause.
        if let Err(e) = session(&url, &done, &work, &finished).await {
            eprintln!("worker: {e}; reconnecting");
        }
        if !finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn session(
    url: &str,
    done: &Mutex<BTreeSet<String>>,
    work: &Semaphore,
    finished: &impl Fn() -> bool,
) -> Result<(), Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("tasks".into(), durable, FieldTable::default())
        .await?;
    ch.basic_qos(1, BasicQosOptions::default()).await?;
    let mut deliveries = ch
        .basic_consume(
            "tasks".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while !finished() {
        let delivery = match deliveries.next().await {
            Some(d) => d?,
            None => return Err("the consumer was cancelled".into()),
        };
        work.acquire().await?.forget();
        // Idempotent: a task done before the broker went away may come again.
        done.lock()
            .unwrap()
            .insert(String::from_utf8_lossy(&delivery.data).into_owned());
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

// ---- the test -------------------------------------------------------------------

pub async fn run() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("warren-example-worker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = scenario(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn scenario(dir: &std::path::Path) -> Result<(), Error> {
    const WAIT: Duration = Duration::from_secs(10);
    let broker = Broker::builder().data_dir(dir).start().await?;
    let conn = Connection::connect(&broker.url(), ConnectionProperties::default()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let setup = conn.create_channel().await?;
    setup
        .queue_declare("tasks".into(), durable, FieldTable::default())
        .await?;
    let tasks: Vec<String> = (1..=6).map(|i| format!("task {i}")).collect();
    for task in &tasks {
        broker.seed(
            "tasks",
            task.clone(),
            BasicProperties::default().with_delivery_mode(2),
        )?;
    }

    let done = Arc::new(Mutex::new(BTreeSet::new()));
    let work = Arc::new(Semaphore::new(0));
    let worker = tokio::spawn(worker(broker.url(), tasks.len(), done.clone(), work.clone()));

    // Two tasks done, the third in the worker's hands when the broker restarts.
    let_work_until(&broker, &work, &done, 2).await?;
    broker.restart().await;
    // None was lost: the four not done are there (the worker may already hold
    // the first of them again).
    let q = broker.queue("tasks");
    if q.messages.len() + q.unacked.len() != 4 {
        return Err(format!("after the restart 4 tasks should be left:\n{q}").into());
    }
    // The worker finishes the task it held (its ack fails: the connection is
    // gone), reconnects, gets it again and does it again.
    let_work_until(&broker, &work, &done, 4).await?;
    // Then the power goes out. Acks are not confirmed to anyone, so one that was
    // not yet on disk is lost and its task comes back: the worker does it again.
    broker.crash().await;
    work.add_permits(100);
    tokio::time::timeout(WAIT, worker).await???;

    let done = done.lock().unwrap().clone();
    let expected: BTreeSet<String> = tasks.into_iter().collect();
    if done != expected {
        return Err(format!("the worker did {done:?}, expected {expected:?}").into());
    }
    broker
        .wait_for(WAIT, |s| {
            s.queue("tasks")
                .is_some_and(|q| q.messages.is_empty() && q.unacked.is_empty())
        })
        .await?;
    broker.shutdown().await;
    Ok(())
}

/// Lets the worker go one task at a time until it has done `n` distinct ones
/// and holds the next delivery (or the queue is drained).
async fn let_work_until(
    broker: &Broker,
    work: &Semaphore,
    done: &Mutex<BTreeSet<String>>,
    n: usize,
) -> Result<(), Error> {
    while done.lock().unwrap().len() < n {
        work.add_permits(1);
        broker
            .wait_for(Duration::from_secs(10), |s| {
                work.available_permits() == 0
                    && s.queue("tasks")
                        .is_some_and(|q| q.unacked.len() == 1 || q.messages.is_empty())
            })
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => {
            println!("worker_survives_restart: ok");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker_survives_restart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
