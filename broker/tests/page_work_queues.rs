//! The seed's work queue, watched on the page: the `warren` binary with
//! `--management-bind`, the seed's producer (tests/seed/worker_task_new.py, only
//! its port changed) and two pika workers, and headless Chromium loading the page
//! while each worker holds an unacked task and again once the queue drained. The
//! test reads the rendered DOM for the queue's counts, the workers' connections
//! and unacked deliveries, and the arrows of every publish, deliver and ack.
//!
//! Needs python3 with pika and Chromium (`$WARREN_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on the PATH); without either it says so
//! and passes. `WARREN_PAGE_SCREENSHOTS=DIR` keeps page-work-queues.png (the
//! queue's unacked deliveries) and page-work-queues-trace.png in DIR.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod process;
use process::Warren;

/// How long any one step may take before the test gives up (not an assertion
/// on speed: a step that hangs fails with this instead of hanging CI).
const STEP: Duration = Duration::from_secs(30);

/// The seed's worker (tests/seed/worker.py) as the RabbitMQ tutorial finishes
/// it: one task at a time (`basic_qos(prefetch_count=1)`) and an ack when the
/// work is done. The seed's copy never acks, so its tasks would stay unacked
/// forever. "The work" here is waiting for a line on stdin, so the test decides
/// when a task is done; at end of input every task is done at once.
const WORKER: &str = r#"import sys
import pika

name, port = sys.argv[1], int(sys.argv[2])

def callback(ch, method, properties, body):
    print(f" [x] Received {body}", flush=True)
    sys.stdin.readline()
    ch.basic_ack(delivery_tag=method.delivery_tag)
    print(" [x] Done", flush=True)

connection = pika.BlockingConnection(pika.ConnectionParameters(
    host='127.0.0.1', port=port, client_properties={'connection_name': name}))
channel = connection.channel()
channel.queue_declare(queue='task_queue', durable=True)
channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue='task_queue', on_message_callback=callback)
print(' [*] Waiting for messages. To exit press CTRL+C', flush=True)
channel.start_consuming()
"#;

/// Kills a child process when the test ends, whichever way it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WARREN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|p| p.is_file())
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-wq-{}-{what}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on `url`; returns what it printed (the DOM for `--dump-dom`).
fn browse(chromium: &Path, url: &str, extra: &[&str]) -> String {
    let profile = tempdir("profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2400",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dump(chromium: &Path, url: &str, extra: &[&str]) -> String {
    let mut args = vec!["--dump-dom"];
    args.extend_from_slice(extra);
    let dom = browse(chromium, url, &args);
    assert!(
        dom.contains("data-ready=\"true\""),
        "the page did not finish:\n{dom}"
    );
    dom
}

fn screenshot(chromium: &Path, url: &str, name: &str, size: &str) {
    let Some(dir) = std::env::var_os("WARREN_PAGE_SCREENSHOTS") else {
        return;
    };
    let path = Path::new(&dir).join(name);
    let shot = format!("--screenshot={}", path.display());
    browse(chromium, url, &[shot.as_str(), size]);
    eprintln!("screenshot: {}", path.display());
}

/// The text from `start` to the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} is not in the page:\n{text}"));
    let rest = &text[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// The trace view's rows: (connection, direction, method).
fn arrows(dom: &str) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("data-seq=\"") {
        rest = &rest[at..];
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            let from = rest.find(&key).expect("row attribute") + key.len();
            rest[from..from + rest[from..].find('"').unwrap()].to_owned()
        };
        out.push((
            attr("data-connection").parse().unwrap(),
            attr("data-direction"),
            attr("data-method"),
        ));
        rest = &rest[10..];
    }
    out
}

/// The connection id the overview's connections table gives a client name.
fn connection_of(dom: &str, name: &str) -> u64 {
    let table = between(dom, "<table id=\"connections\">", "</table>");
    let cell = format!("<td>{name}</td>");
    let at = table
        .find(&cell)
        .unwrap_or_else(|| panic!("no connection {name} in {table}"));
    let row = &table[..at];
    let id = &row[row.rfind("<tr><td>").expect("the row's first cell") + 8..];
    id[..id.find("</td>").unwrap()].parse().unwrap()
}

/// The queue's row of the overview: (ready, unacked, consumers).
fn counts(dom: &str) -> (String, String, String) {
    let row = between(dom, "<tr data-queue=\"task_queue\">", "</tr>");
    let cell = |class: &str| {
        between(row, &format!("<td class=\"num {class}\">"), "</td>")
            [format!("<td class=\"num {class}\">").len()..]
            .to_owned()
    };
    (cell("ready"), cell("unacked"), cell("consumers"))
}

/// POST /api/warren/wait/queue for task_queue; panics when the conditions do
/// not come to hold.
fn wait_queue(base: &str, conditions: serde_json::Value) {
    let mut body = conditions;
    body["timeout_ms"] = serde_json::json!(STEP.as_millis() as u64);
    let url = format!("{base}/api/warren/wait/queue/%2F/task_queue");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, text) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(&url)
            .basic_auth("guest", Some("guest"))
            .json(&body)
            .send()
            .await
            .expect("the management listener answers");
        (r.status(), r.text().await.unwrap())
    });
    assert!(status.is_success(), "{url} {body}: {status} {text}");
}

/// Lines of every worker's stdout, tagged with the worker's index.
fn next_line(lines: &mpsc::Receiver<(usize, String)>) -> (usize, String) {
    lines
        .recv_timeout(STEP)
        .expect("a worker printed nothing more within 30 s")
}

#[test]
fn the_page_shows_the_seed_work_queue_drain_with_every_publish_deliver_and_ack() {
    if !process::python_has("pika") {
        eprintln!(
            "SKIPPED: python3 with pika is not installed (pip install pika); .ci/run installs it"
        );
        return;
    }
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium (apt-get install chromium, or set WARREN_CHROMIUM); .ci/run \
             installs it"
        );
        return;
    };
    let broker = Warren::start(&["--management-bind", "127.0.0.1:0"]);
    let base = broker.management.clone().unwrap();
    let port = broker.port();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let dir = tempdir("scripts");
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/seed/worker_task_new.py"),
    )
    .unwrap();
    let target = "pika.ConnectionParameters('localhost')";
    assert!(seed.contains(target), "the seed's producer changed");
    let producer = dir.join("new_task.py");
    std::fs::write(
        &producer,
        seed.replace(
            target,
            &format!("pika.ConnectionParameters(host='127.0.0.1', port={port})"),
        ),
    )
    .unwrap();
    let worker = dir.join("worker.py");
    std::fs::write(&worker, WORKER).unwrap();

    // Two workers; each one's stdout is read on a thread of its own.
    let (tx, lines) = mpsc::channel();
    let mut workers = Vec::new();
    let mut gates: Vec<ChildStdin> = Vec::new();
    for i in 0..2 {
        let mut w = Command::new("python3")
            .arg(&worker)
            .args([format!("worker-{}", i + 1), port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a worker");
        gates.push(w.stdin.take().unwrap());
        let out = BufReader::new(w.stdout.take().unwrap());
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send((i, l));
            }
        });
        workers.push(Killed(w));
        // basic_consume is synchronous in pika: this line means it consumes.
        assert_eq!(
            next_line(&lines),
            (
                i,
                " [*] Waiting for messages. To exit press CTRL+C".to_owned()
            )
        );
    }

    for task in ["task 1.", "task 2..", "task 3...", "task 4...."] {
        let out = Command::new("python3")
            .arg(&producer)
            .arg(task)
            .output()
            .expect("run new_task.py");
        assert!(
            out.status.success(),
            "new_task.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("[x] Sent {task}")
        );
    }
    // Each worker is inside its callback, holding one task; prefetch 1 keeps
    // the other two ready.
    let mut received = [0; 2];
    while received != [1, 1] {
        let (i, l) = next_line(&lines);
        assert!(l.starts_with(" [x] Received b'task "), "{l}");
        received[i] += 1;
    }

    let overview = dump(&chromium, &format!("{base}/#overview"), &[]);
    let queue_url = format!("{base}/#queue/%2F/task_queue");
    let queue = dump(&chromium, &queue_url, &[]);
    screenshot(
        &chromium,
        &queue_url,
        "page-work-queues.png",
        "--window-size=1280,1000",
    );
    assert_eq!(
        counts(&overview),
        ("2".into(), "2".into(), "2".into()),
        "ready, unacked, consumers while the workers hold a task each"
    );
    let w1 = connection_of(&overview, "worker-1");
    let w2 = connection_of(&overview, "worker-2");
    assert_ne!(w1, w2);
    // The queue's view: each worker's unacked delivery, where it sits.
    let unacked = between(&queue, "Unacked deliveries", "Ready, in delivery order");
    for w in [w1, w2] {
        let at = format!("delivery tag 1 on connection {w} channel 1");
        assert!(unacked.contains(&at), "no {at:?} in {unacked}");
    }
    assert!(unacked.contains("task 1.") && unacked.contains("task 2.."));
    let ready = between(&queue, "Ready, in delivery order", "</section>");
    assert!(
        ready.contains("task 3...") && ready.contains("task 4...."),
        "{ready}"
    );

    // The work is done: every task is acked as it comes.
    drop(gates);
    let mut done = 0;
    while done < 4 {
        let (_, l) = next_line(&lines);
        done += usize::from(l == " [x] Done");
    }
    wait_queue(
        &base,
        serde_json::json!({"empty": true, "no_unacked": true}),
    );

    let overview = dump(&chromium, &format!("{base}/#overview"), &[]);
    assert_eq!(
        counts(&overview),
        ("0".into(), "0".into(), "2".into()),
        "the queue drained"
    );
    // Tall enough that every row of this short trace is drawn.
    let tall = "--window-size=1280,12000";
    let trace = dump(&chromium, &format!("{base}/#trace"), &[tall]);
    screenshot(
        &chromium,
        &format!("{base}/#trace"),
        "page-work-queues-trace.png",
        "--window-size=1280,1000",
    );
    let arrows = arrows(&trace);
    // The count the trace view shows: "N of N frames".
    let end = trace.find(" frames</span>").expect("the frame count");
    let shown = &trace[trace[..end].rfind('>').unwrap() + 1..end];
    let total: usize = shown.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(arrows.len(), total, "every frame is drawn");
    check_arrows(&arrows, [w1, w2]);
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every publish came from a producer of its own; every delivery went to a
/// worker and was acked by it, after the delivery; four of each.
fn check_arrows(arrows: &[(u64, String, String)], workers: [u64; 2]) {
    let of = |dir: &str, method: &str| -> Vec<(usize, u64)> {
        arrows
            .iter()
            .enumerate()
            .filter(|(_, (_, d, m))| d == dir && m == method)
            .map(|(i, (c, _, _))| (i, *c))
            .collect()
    };
    let publishes = of("in", "basic.publish");
    let delivers = of("out", "basic.deliver");
    let acks = of("in", "basic.ack");
    let list = || format!("{arrows:?}");
    assert_eq!(publishes.len(), 4, "{}", list());
    assert_eq!(delivers.len(), 4, "{}", list());
    assert_eq!(acks.len(), 4, "{}", list());
    let mut producers: Vec<u64> = publishes.iter().map(|p| p.1).collect();
    producers.sort_unstable();
    producers.dedup();
    assert_eq!(producers.len(), 4, "one connection per new_task.py");
    assert!(producers.iter().all(|p| !workers.contains(p)));
    for w in workers {
        let d: Vec<usize> = delivers.iter().filter(|x| x.1 == w).map(|x| x.0).collect();
        let a: Vec<usize> = acks.iter().filter(|x| x.1 == w).map(|x| x.0).collect();
        assert!(
            !d.is_empty(),
            "worker connection {w} got nothing: {}",
            list()
        );
        assert_eq!(d.len(), a.len(), "{}", list());
        // One task at a time: each ack follows its delivery, before the next.
        for (k, (deliver, ack)) in d.iter().zip(&a).enumerate() {
            assert!(deliver < ack, "{}", list());
            if let Some(next) = d.get(k + 1) {
                assert!(ack < next, "prefetch 1: {}", list());
            }
        }
    }
}
