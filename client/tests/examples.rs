//! Runs every example end to end, each against the Warren it starts itself, checking it
//! exits cleanly and prints what the tutorial prints. The examples use the tutorial's
//! fixed names (hello, task_queue, logs, rpc_queue), so the test keeps them off a
//! shared RabbitMQ even when `AMQP_URL` is set; run an example by hand with
//! `AMQP_URL` to see it against RabbitMQ.
//!
//! `cargo test` builds the examples before the tests; when only this test target was
//! built (`cargo test --test examples`) the binaries may be missing, and it says so.

use std::{path::PathBuf, process::Command, time::Duration};

fn example(name: &str) -> Option<PathBuf> {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().ok()?;
    let path = exe
        .parent()?
        .parent()?
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path.exists().then_some(path)
}

fn run(name: &str, expected: &[&str]) {
    let Some(path) = example(name) else {
        eprintln!("SKIPPED example {name}: binary not built (plain `cargo test` builds it)");
        return;
    };
    let mut child = Command::new(&path)
        .env_remove("AMQP_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A hung example must fail the test, not hang it.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example {name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in expected {
        assert!(
            stdout.contains(line),
            "example {name} did not print {line:?}:\n{stdout}"
        );
    }
}

#[test]
fn hello_world() {
    run(
        "hello_world",
        &[" [x] Sent 'Hello World!'", " [x] Received Hello World!"],
    );
}

#[test]
fn work_queues() {
    run(
        "work_queues",
        &[
            " [x] Sent Fifth message.....",
            "received First message.",
            " done",
        ],
    );
}

#[test]
fn publish_subscribe() {
    run(
        "publish_subscribe",
        &[
            " [x] subscriber-1 got info: Hello World!",
            " [x] subscriber-2 got info: Hello World!",
        ],
    );
}

#[test]
fn rpc() {
    run("rpc", &[" [x] Requesting fib(30)", " [.] Got 832040"]);
}
