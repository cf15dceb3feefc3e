//! kombu (Celery's transport) with py-amqp against the `warren` binary, and against
//! RabbitMQ when `AMQP_URL` is set: a prefetch-1 consumer on kombu's event loop,
//! acking from a timer thread, then deleting the queue under its consumer (issue
//! 18, item 3). The client is `tests/python/kombu_hub.py`.

use std::path::Path;
use std::process::Command;

mod process;
use process::Warren;

/// Runs the client against `url`; its report, or the failure with the report.
fn run_client(url: &str) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kombu_hub.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(url)
        .output()
        .expect("run python3");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

#[test]
fn kombu_event_loop_consumer_with_prefetch_one() {
    if !process::python_has("kombu, amqp") {
        eprintln!(
            "SKIPPED kombu_event_loop_consumer_with_prefetch_one: python3 with kombu is not \
             installed (pip install kombu); .ci/run installs it"
        );
        return;
    }
    let broker = Warren::start(&[]);
    let warren = run_client(&broker.url);
    drop(broker);
    match &warren {
        Ok(report) => println!("Warren:\n{report}"),
        Err(report) => panic!("kombu against Warren:\n{report}"),
    }

    match std::env::var("AMQP_URL").ok().filter(|u| !u.is_empty()) {
        Some(rabbit) => match run_client(&rabbit) {
            Ok(report) => println!("RabbitMQ:\n{report}"),
            Err(report) => panic!("kombu against RabbitMQ (the reference) failed:\n{report}"),
        },
        None => eprintln!(
            "SKIPPED the RabbitMQ half of kombu_event_loop_consumer_with_prefetch_one: \
             AMQP_URL is not set"
        ),
    }
}
