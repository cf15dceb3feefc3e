//! `cargo test -p warren-conformance`: every scenario against an embedded Warren.
//!
//! Each scenario asserts its own expectations (validated against RabbitMQ), so a
//! failure here is a place where Warren does not behave as RabbitMQ does.

use warren_conformance::embedded::Warren;
use warren_conformance::runner::run_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_embedded_warren() {
    let warren = Warren::start(&Default::default())
        .await
        .expect("embedded Warren starts");
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

/// The `versions::` scenarios against an embedded Warren imitating each release:
/// each scenario's expectation for that release (with its source line) must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_versions_scenarios_pass_for_every_profile() {
    let scenarios: Vec<_> = warren_conformance::all()
        .into_iter()
        .filter(|s| s.name.starts_with("versions::"))
        .collect();
    assert!(
        scenarios.len() >= 10,
        "{} versions:: scenarios",
        scenarios.len()
    );
    let mut failures = Vec::new();
    for version in warren_broker::RabbitVersion::ALL {
        let warren = Warren::start(&warren_broker::Profile::new(version))
            .await
            .expect("embedded Warren starts");
        for o in run_all(&scenarios, warren.url(), 4).await {
            if let Some(e) = o.error {
                failures.push(format!("{version} {}: {e}", o.name));
            }
        }
        warren.shutdown().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
