//! The seed document's pika examples (tests/seed/), unmodified but for the port,
//! run against the `warren` binary: the promise that a Python user's tutorial code
//! works against Warren as it does against RabbitMQ.

use std::path::Path;
use std::process::Command;

mod process;
use process::Warren;

#[test]
fn seed_tutorial_runs_unmodified_against_warren() {
    run_seed("seed_tutorial_runs_unmodified_against_warren", &[], &[]);
}

/// RabbitMQ 4.3 refuses the hello world's `queue_declare(queue='hello')` (a queue
/// neither durable nor exclusive) with 541; the durable work queues and the
/// exclusive queues of publish/subscribe still work.
#[test]
fn seed_tutorial_against_the_4_3_profile() {
    run_seed(
        "seed_tutorial_against_the_4_3_profile",
        &["--rabbitmq-version", "4.3"],
        &["--refuses-transient-queues"],
    );
}

/// Starts `warren` with `broker_args` and runs the seed harness against it.
fn run_seed(test: &str, broker_args: &[&str], harness_args: &[&str]) {
    if !process::python_has("pika") {
        eprintln!(
            "SKIPPED {test}: python3 with pika is not installed (pip install pika); .ci/run \
             installs it"
        );
        return;
    }
    let broker = Warren::start(broker_args);
    let url = broker.url.as_str();
    assert!(url.starts_with("amqp://guest:guest@127.0.0.1:"), "{url}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/seed/run_seed.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(url)
        .args(harness_args)
        .output()
        .expect("run the seed harness");
    drop(broker);
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "seed examples failed against Warren:\n{report}"
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

/// tests/seed/test_double_over_http.py: a pika application tested through the
/// management listener alone (queue depth and bodies, a wait for the worker's
/// acks, a nacked third publish, a TTL crossed on the virtual clock, a crash).
#[test]
fn a_pika_test_steers_warren_over_http_only() {
    if !process::python_has("pika") {
        eprintln!(
            "SKIPPED a_pika_test_steers_warren_over_http_only: python3 with pika is not \
             installed (pip install pika); .ci/run installs it"
        );
        return;
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/seed/test_double_over_http.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_warren"))
        .output()
        .expect("run the example");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "the example failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok: ")).count(),
        14,
        "{report}"
    );
}
