//! A publisher that must handle nacks, tested against Warren.
//!
//! The application code publishes payments with publisher confirms and retries a
//! payment whose confirm is a nack, up to three attempts, reporting the ones it
//! gave up on. The test makes the broker nack confirms for one queue only (as when
//! that queue refuses messages) and on one channel only, which no real broker can
//! be told to do, and checks what the publisher reported and what the queues hold.
//! On a failure it prints the frame trace.
//!
//! `cargo run -p warren-broker --example nacked_publisher` (exits non-zero on
//! failure; `cargo test -p warren-broker --test examples` runs it too).

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use warren_broker::{Broker, Fault};

type Error = Box<dyn std::error::Error + Send + Sync>;

// ---- the application code -------------------------------------------------------

/// Publishes payments to the `payments` exchange, each routed by its region.
pub struct Payments {
    ch: Channel,
}

impl Payments {
    pub async fn new(conn: &Connection) -> Result<Self, Error> {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Payments { ch })
    }

    /// Publishes one payment; a nack is retried, up to 3 attempts. Returns the
    /// attempts it took, or an error once it gave up.
    pub async fn send(&self, region: &str, payment: &str) -> Result<u32, Error> {
        for attempt in 1..=3 {
            let confirm = self
                .ch
                .basic_publish(
                    "payments".into(),
                    region.into(),
                    BasicPublishOptions::default(),
                    payment.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            if confirm.is_ack() {
                return Ok(attempt);
            }
        }
        Err(format!("payment {payment} nacked 3 times").into())
    }
}

// ---- the test -------------------------------------------------------------------

pub async fn run() -> Result<(), Error> {
    let broker = Broker::start().await?;
    broker.set_tracing(true);
    let result = scenario(&broker).await;
    if result.is_err() {
        eprintln!("{}", broker.trace_dump());
    }
    broker.shutdown().await;
    result
}

async fn scenario(broker: &Broker) -> Result<(), Error> {
    let conn = Connection::connect(&broker.url(), ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    setup
        .exchange_declare(
            "payments".into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await?;
    for region in ["eu", "us"] {
        setup
            .queue_declare(region.into(), Default::default(), FieldTable::default())
            .await?;
        setup
            .queue_bind(
                region.into(),
                "payments".into(),
                region.into(),
                Default::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let payments = Payments::new(&conn).await?;

    // The "us" queue refuses twice: the publisher must retry, and succeed.
    broker.inject(Fault::on_publish_routed_to("us").times(2).nack_confirm());
    expect("eu payment", payments.send("eu", "p-1").await?, 1)?;
    expect("us payment", payments.send("us", "p-2").await?, 3)?;
    broker.clear_faults();

    // Every confirm of the publisher's channel is nacked: it must give up and
    // say so, while another channel is unaffected.
    broker.inject(
        Fault::on_any_publish()
            .on_channel(payments.ch.id())
            .nack_confirm(),
    );
    if payments.send("eu", "p-3").await.is_ok() {
        return Err("a payment nacked three times was reported as sent".into());
    }
    let other = Payments::new(&conn).await?;
    expect("other channel", other.send("eu", "p-4").await?, 1)?;
    broker.clear_faults();

    // Nacked messages may still have been enqueued (RabbitMQ gives no
    // guarantee either way; Warren's fault enqueues them): consumers must be
    // idempotent.
    broker.queue("us").assert_bodies(&["p-2", "p-2", "p-2"]);
    broker
        .queue("eu")
        .assert_bodies(&["p-1", "p-3", "p-3", "p-3", "p-4"]);
    Ok(())
}

fn expect(what: &str, attempts: u32, expected: u32) -> Result<(), Error> {
    if attempts == expected {
        Ok(())
    } else {
        Err(format!("{what}: {attempts} attempts, expected {expected}").into())
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => {
            println!("nacked_publisher: ok");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nacked_publisher: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
