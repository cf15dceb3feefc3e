//! Where integration tests run: an embedded Warren over TCP and in-process, always, and
//! RabbitMQ at `AMQP_URL` when it is set.
//!
//! Each test is written once as `async fn(Target)` and [`run`] calls it per target.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::{
    collections::hash_map::RandomState,
    future::Future,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
};

use warren_client::{Connection, ConnectionConfig};

/// One broker a test runs against.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    kind: Kind,
    /// Keeps an embedded broker running while the test holds its target.
    broker: Option<Arc<warren_broker::Broker>>,
}

#[derive(Clone, Debug)]
enum Kind {
    Url(String),
    /// Warren without a socket: `Broker::connect_in_process`.
    InProcess(Arc<warren_broker::Broker>),
}

impl Target {
    /// Open a new connection to this target.
    pub async fn connect(&self) -> Connection {
        match &self.kind {
            Kind::Url(url) => Connection::connect(url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name)),
            Kind::InProcess(broker) => Connection::open(broker.connect_in_process())
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name)),
        }
    }

    /// Open a new connection with config tweaks (credentials, tune proposals).
    pub async fn connect_with(
        &self,
        f: impl FnOnce(&mut ConnectionConfig),
    ) -> warren_client::Result<Connection> {
        match &self.kind {
            Kind::Url(url) => {
                let mut config: ConnectionConfig = url.parse().expect("AMQP_URL parses");
                f(&mut config);
                Connection::connect_with(&config).await
            }
            Kind::InProcess(broker) => {
                let mut config: ConnectionConfig = broker.url().parse().expect("url parses");
                f(&mut config);
                Connection::open_with(broker.connect_in_process(), &config).await
            }
        }
    }

    /// The URL of this target, for tests that need one.
    pub fn url(&self) -> Option<String> {
        match &self.kind {
            Kind::Url(url) => Some(url.clone()),
            Kind::InProcess(_) => None,
        }
    }
}

/// Every target available in this environment. Switching where tests run is this one
/// function. Each call starts fresh Warren brokers, so tests never share state.
pub async fn targets() -> Vec<Target> {
    let tcp = warren_broker::Broker::start()
        .await
        .expect("start an embedded Warren");
    let in_process = warren_broker::Broker::start()
        .await
        .expect("start an embedded Warren");
    let in_process = Arc::new(in_process);
    let mut targets = vec![
        Target {
            name: "warren-tcp",
            kind: Kind::Url(tcp.url()),
            broker: Some(Arc::new(tcp)),
        },
        Target {
            name: "warren-in-process",
            kind: Kind::InProcess(in_process.clone()),
            broker: Some(in_process),
        },
    ];
    if std::env::var("AMQP_URL").is_err() {
        // Written to the real stderr (not through `eprintln!`, which the test harness
        // captures) and once per test binary, so that a run without RabbitMQ says so.
        static NOTICE: std::sync::Once = std::sync::Once::new();
        NOTICE.call_once(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "note: AMQP_URL is not set: RabbitMQ targets SKIPPED, \
                 running against embedded Warren only"
            );
        });
    }
    if let Ok(url) = std::env::var("AMQP_URL") {
        targets.push(Target {
            name: "rabbitmq",
            kind: Kind::Url(url),
            broker: None,
        });
    }
    targets
}

/// Run `test` against every target; say so clearly when there is none.
pub async fn run<F, Fut>(test: &str, f: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()>,
{
    let targets = targets().await;
    if std::env::var("AMQP_URL").is_err() {
        eprintln!("{test}: AMQP_URL is not set, RabbitMQ skipped; running against Warren only");
    }
    for target in targets {
        eprintln!("{test}: running against {}", target.name);
        let broker = target.broker.clone();
        f(target).await;
        if let Some(broker) = broker.and_then(Arc::into_inner) {
            broker.shutdown().await;
        }
    }
}

/// Like [`run`], for a scenario where Warren is known to differ from RabbitMQ in
/// `divergence`. RabbitMQ must pass as usual. On Warren the scenario still runs, and a
/// failure is reported loudly instead of failing the test (the client is not bent around
/// the broker); a pass says the divergence is gone and the marker can be removed.
pub async fn run_known_divergence<F, Fut>(test: &str, divergence: &str, f: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures_util::FutureExt;
    for target in targets().await {
        let broker = target.broker.clone();
        let name = target.name;
        if broker.is_none() {
            eprintln!("{test}: running against {name}");
            f(target).await;
            continue;
        }
        eprintln!("{test}: running against {name}, where Warren is known to diverge");
        let outcome = match std::panic::AssertUnwindSafe(f(target)).catch_unwind().await {
            Ok(()) => "KNOWN WARREN DIVERGENCE RESOLVED (drop the marker)",
            Err(_) => "KNOWN WARREN DIVERGENCE",
        };
        // To the real stderr, past the harness's capture: CI logs must show it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{test}: {outcome} on {name}: {divergence}"
        );
        if let Some(broker) = broker.and_then(Arc::into_inner) {
            broker.shutdown().await;
        }
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("warren-client-test.{prefix}.{:016x}", h.finish())
}
