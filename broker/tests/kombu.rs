//! kombu (Celery's transport) with py-amqp against the `warren` binary, and against
//! RabbitMQ when `AMQP_URL` is set: a prefetch-1 consumer on kombu's event loop,
//! acking from a timer thread, then deleting the queue under its consumer (issue
//! 18, item 3). The client is `tests/python/kombu_hub.py`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills the broker when the test ends, whichever way it ends.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kombu_available() -> bool {
    Command::new("python3")
        .args(["-c", "import kombu, amqp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

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
    if !kombu_available() {
        eprintln!(
            "SKIPPED kombu_event_loop_consumer_with_prefetch_one: python3 with kombu is not \
             installed (pip install kombu); .ci/run installs it"
        );
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warren");
    let stdout = child.stdout.take().expect("stdout is piped");
    let broker = Broker(child);
    let mut url = String::new();
    BufReader::new(stdout)
        .read_line(&mut url)
        .expect("read the URL line");
    let warren = run_client(url.trim());
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
