//! Where integration tests run: RabbitMQ at `AMQP_URL` when it is set (and, once the
//! broker library is a dev-dependency, an embedded Warren over TCP and in-process).
//!
//! Each test is written once as `async fn(Target)` and [`run`] calls it per target.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::{
    collections::hash_map::RandomState,
    future::Future,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

use warren_client::{Connection, ConnectionConfig};

/// One broker a test runs against.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Url(String),
}

impl Target {
    /// Open a new connection to this target.
    pub async fn connect(&self) -> Connection {
        match &self.kind {
            Kind::Url(url) => Connection::connect(url)
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
        }
    }

    /// The URL of this target, for tests that need one.
    pub fn url(&self) -> Option<String> {
        match &self.kind {
            Kind::Url(url) => Some(url.clone()),
        }
    }
}

/// Every target available in this environment. Switching where tests run is this one
/// function.
pub async fn targets() -> Vec<Target> {
    let mut targets = Vec::new();
    if let Ok(url) = std::env::var("AMQP_URL") {
        targets.push(Target {
            name: "rabbitmq",
            kind: Kind::Url(url),
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
    if targets.is_empty() {
        eprintln!("SKIPPED {test}: AMQP_URL is not set and no embedded broker is available");
        return;
    }
    for target in targets {
        eprintln!("{test}: running against {}", target.name);
        f(target).await;
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
