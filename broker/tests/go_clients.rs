//! Go's amqp091 client against the `warren` binary (and against RabbitMQ when
//! `AMQP_URL` is set), in the close races Go programs met: a server
//! `channel.close` crossing the client's, and 32 goroutines closing one
//! connection at once (issue 18, items 1 and 2). The Go program is
//! `tests/go/closes`, built in GOPATH mode from Debian's
//! golang-github-rabbitmq-amqp091-go-dev, as the bench's load generator is.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod process;
use process::Warren;

/// Where Debian's golang-github-rabbitmq-amqp091-go-dev puts the client.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// Iterations per run: the races showed in 2 to 10 of every 10 tries before the
/// fixes, so a run this long could not pass by luck.
const ITERATIONS: &str = "40";

/// Builds the Go program, or says why it cannot be (no Go, no amqp091).
fn build(name: &str) -> Result<PathBuf, String> {
    let gopath = std::env::var("WARREN_BENCH_GOPATH").unwrap_or_else(|_| DEBIAN_GOPATH.into());
    if !Path::new(&gopath)
        .join("src/github.com/rabbitmq/amqp091-go")
        .is_dir()
    {
        return Err(format!(
            "Go's amqp091 is not in {gopath} (apt-get install golang-go \
             golang-github-rabbitmq-amqp091-go-dev; .ci/run installs them)"
        ));
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = target.join(format!("go-{name}"));
    let built = Command::new("go")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/closes"))
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", target.join("gocache"))
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(".")
        .status();
    match built {
        Ok(s) if s.success() => Ok(out),
        Ok(s) => Err(format!("go build failed ({s})")),
        Err(e) => Err(format!("go is not installed ({e})")),
    }
}

/// Runs `mode` against Warren, then against RabbitMQ when `AMQP_URL` is set.
fn run(test: &str, mode: &str) {
    let program = match build(mode) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            return;
        }
    };
    let broker = Warren::start(&[]);
    let url = broker.url.clone();
    let mut targets = vec![("Warren", url)];
    match std::env::var("AMQP_URL").ok().filter(|u| !u.is_empty()) {
        Some(rabbit) => targets.push(("RabbitMQ", rabbit)),
        None => eprintln!("{test}: AMQP_URL is not set; RabbitMQ skipped"),
    }
    for (who, url) in targets {
        let out = run_bounded(&program, &[mode, &url, ITERATIONS]);
        let report = String::from_utf8_lossy(&out.stdout);
        eprintln!("{test} against {who}: {report}");
        assert!(
            out.status.success(),
            "{mode} against {who}:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(broker);
}

/// Runs the Go program, killed if it outlives any sane run: each iteration has
/// its own 15 s bound inside the program, so only a wedged process gets here.
fn run_bounded(program: &Path, args: &[&str]) -> std::process::Output {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Go program");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx
            .recv_timeout(std::time::Duration::from_secs(300))
            .is_err()
        {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
        }
    });
    let out = child.wait_with_output().expect("wait for the Go program");
    let _ = tx.send(());
    out
}

/// Channel 1 publishes to a missing exchange and at once closes; channel 2's
/// declare must succeed every time.
#[test]
fn go_channel_close_crossing_the_servers_close() {
    run("go_channel_close_crossing_the_servers_close", "crossing");
}

/// 32 goroutines close one connection: each gets nil or ErrClosed, never EOF.
#[test]
fn go_many_goroutines_close_one_connection() {
    run("go_many_goroutines_close_one_connection", "concurrent");
}
