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

/// Every task run, in order; a task run twice is there twice.
pub type Log = Arc<Mutex<Vec<String>>>;

fn distinct(log: &Log) -> BTreeSet<String> {
    log.lock().unwrap().iter().cloned().collect()
}

/// Runs until `log` holds `tasks` distinct tasks. Each task waits for a permit of
/// `work` (the test's hand on the worker's pace), runs (is logged), then is acked.
pub async fn worker(
    url: String,
    tasks: usize,
    log: Log,
    work: Arc<Semaphore>,
) -> Result<(), Error> {
    let finished = || distinct(&log).len() >= tasks;
    while !finished() {
        // Whatever went wrong, start over on a new connection after a pause.
        if let Err(e) = session(&url, &log, &work, &finished).await {
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
    log: &Log,
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
        let delivery = match while_connected(&conn, deliveries.next()).await? {
            Some(d) => d?,
            None => return Err("the consumer was cancelled".into()),
        };
        work.acquire().await?.forget();
        // A task done before the broker went away may come again: the work
        // must be idempotent.
        log.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&delivery.data).into_owned());
        while_connected(&conn, delivery.ack(BasicAckOptions::default())).await??;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Awaits `fut` unless the connection dies first: lapin can leave an idle
/// consumer, or an ack, waiting on a socket that died without a close.
async fn while_connected<T>(
    conn: &Connection,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    tokio::pin!(fut);
    let mut watchdog = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            _ = watchdog.tick() => {
                if !conn.status().connected() {
                    return Err("the connection is gone".into());
                }
            }
        }
    }
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

    let log: Log = Default::default();
    let work = Arc::new(Semaphore::new(0));
    let worker = tokio::spawn(worker(broker.url(), tasks.len(), log.clone(), work.clone()));
    let mut pace = Pace { work, issued: 0 };

    // Two tasks done, the third in the worker's hands when the broker restarts.
    pace.until(&broker, &log, 2).await?;
    broker.restart().await;
    // None was lost: every task not run yet is still there, the one the worker
    // held back in the queue (and one whose ack was still on its way, too).
    let q = broker.queue("tasks");
    let left: BTreeSet<String> = q
        .messages
        .iter()
        .chain(q.unacked.iter().map(|u| &u.message))
        .map(|m| m.text())
        .collect();
    let not_run: BTreeSet<String> = tasks
        .iter()
        .filter(|t| !distinct(&log).contains(*t))
        .cloned()
        .collect();
    if !not_run.is_subset(&left) {
        return Err(format!("tasks {not_run:?} should all be left after the restart:\n{q}").into());
    }
    // The worker runs the task it held (its ack fails: the connection is gone),
    // reconnects, gets it again and runs it again.
    pace.until(&broker, &log, 4).await?;
    // Then the power goes out. Acks are not confirmed to anyone, so one that was
    // not yet on disk is lost and its task comes back: the worker runs it again.
    broker.crash().await;
    pace.work.add_permits(100);
    tokio::time::timeout(WAIT, worker).await???;

    let done = distinct(&log);
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

/// The test's hand on the worker: one task run at a time.
struct Pace {
    work: Arc<Semaphore>,
    issued: usize,
}

impl Pace {
    /// Lets the worker run one task at a time until it has done `n` distinct
    /// ones, each time waiting until it ran the task and holds the next one.
    async fn until(&mut self, broker: &Broker, log: &Log, n: usize) -> Result<(), Error> {
        while distinct(log).len() < n {
            self.work.add_permits(1);
            self.issued += 1;
            let issued = self.issued;
            broker
                .wait_for(Duration::from_secs(10), |s| {
                    let ran = log.lock().unwrap().len();
                    s.queue("tasks").is_some_and(|q| {
                        ran == issued && (q.unacked.len() == 1 || q.messages.is_empty())
                    })
                })
                .await?;
        }
        Ok(())
    }
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
