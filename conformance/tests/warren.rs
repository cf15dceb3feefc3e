//! `cargo test -p warren-conformance`: every scenario against an embedded Warren.
//!
//! Each scenario asserts its own expectations (validated against RabbitMQ), so a
//! failure here is a place where Warren does not behave as RabbitMQ does.

use warren_conformance::embedded::Warren;
use warren_conformance::runner::run_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_embedded_warren() {
    let warren = Warren::start().await.expect("embedded Warren starts");
    let scenarios = warren_conformance::all();
    let outcomes = run_all(&scenarios, warren.url(), 4).await;
    warren.shutdown().await;
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed against Warren:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
}
