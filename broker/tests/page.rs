//! Warren's page in a real browser: headless Chromium loads it against a broker
//! the test filled (queues, an unacked delivery, a nacked confirm, hostile names),
//! and the test reads the rendered DOM for the queue names, the counts and the
//! order of the trace's arrows; the same for the self-contained trace file with
//! the network off, and for a trace of 100 000 frames.
//!
//! Chromium is found as `$WARREN_CHROMIUM`, else `chromium`, `chromium-browser`
//! or `google-chrome` on the PATH (Debian: `apt-get install chromium`); without
//! it the browser tests say so and pass. `WARREN_PAGE_SCREENSHOTS=DIR` keeps a
//! screenshot of each view in DIR (docs/page.png comes from there).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_broker::{Broker, Fault};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .expect("no answer within 30 s")
}

/// Names a page must show as text: markup that would run if it were parsed as
/// HTML, quotes, and characters beyond ASCII.
const SCRIPT_NAME: &str = "<script>document.body.dataset.pwned='script'</script>";
const IMG_NAME: &str = "<img src=x onerror=\"document.body.dataset.pwned='img'\">";
const QUOTED_NAME: &str = "\"quoted\" 'single' ünïcødé ✓ ουρά";

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

fn skip_without_chromium() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        eprintln!(
            "skipped: no Chromium (install it with `apt-get install chromium`, or set \
             WARREN_CHROMIUM to a Chrome binary)"
        );
    }
    found
}

/// Runs headless Chromium on `url` with the flags that keep it quiet and
/// self-contained, and returns what it printed (the DOM for `--dump-dom`).
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
            // The page's scripts and its first fetches run within this much
            // virtual time; the clock stops while a fetch is in flight.
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

/// Keeps a screenshot of `url` when `WARREN_PAGE_SCREENSHOTS` names a directory.
fn screenshot(chromium: &Path, url: &str, name: &str, extra: &[&str]) {
    let Some(dir) = std::env::var_os("WARREN_PAGE_SCREENSHOTS") else {
        return;
    };
    let path = Path::new(&dir).join(name);
    let shot = format!("--screenshot={}", path.display());
    let mut args = vec![shot.as_str(), "--window-size=1280,900"];
    args.extend_from_slice(extra);
    browse(chromium, url, &args);
    eprintln!("screenshot: {}", path.display());
}

fn tempdir(what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("warren-page-{}-{what}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} is not in the page:\n{text}"));
    let rest = &text[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// The HTML-escaped form a name takes in a DOM dump (text and attribute values).
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn open(broker: &Broker, name: &str) -> (Connection, Channel) {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let conn = within(Connection::connect(&broker.url(), props))
        .await
        .unwrap();
    let ch = within(conn.create_channel()).await.unwrap();
    (conn, ch)
}

async fn declare(ch: &Channel, name: &str) {
    within(ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
}

/// What the page is to show: queue "tasks" with 2 ready and 1 unacked (held by
/// the "worker" connection), whose first publish was nacked by a fault; queues
/// with hostile names, one holding a 1 MB body and a binary one.
/// Everything is held: lapin closes a channel whose handles are all dropped,
/// which would requeue the unacked delivery.
struct Filled {
    _publisher: (Connection, Channel),
    _worker: (Connection, Channel, lapin::Consumer),
    _delivery: lapin::message::Delivery,
}

async fn fill(broker: &Broker) -> Filled {
    broker.set_tracing(true);
    let (publisher, ch) = open(broker, "publisher").await;
    for q in ["tasks", SCRIPT_NAME, IMG_NAME, QUOTED_NAME] {
        declare(&ch, q).await;
    }
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    broker.inject(Fault::on_publish_routed_to("tasks").times(1).nack_confirm());
    let mut acks = Vec::new();
    for (queue, body) in [
        ("tasks", b"task 1".to_vec()),
        ("tasks", b"task 2".to_vec()),
        ("tasks", b"task 3".to_vec()),
        (SCRIPT_NAME, vec![b'x'; 1_000_000]),
        (IMG_NAME, vec![0xff, 0x00, 0xfe]),
        (QUOTED_NAME, "<b>bold</b> ✓".as_bytes().to_vec()),
    ] {
        let confirm = within(ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        ))
        .await
        .unwrap();
        acks.push(within(confirm).await.unwrap().is_ack());
    }
    assert_eq!(
        acks,
        [false, true, true, true, true, true],
        "the first is nacked"
    );

    let (worker, wch) = open(broker, "worker").await;
    within(wch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = within(wch.basic_consume(
        "tasks".into(),
        "worker-1".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let delivery = within(consumer.next()).await.unwrap().unwrap();
    assert_eq!(delivery.data, b"task 1");
    broker.wait_until_idle().await;
    let tasks = broker.queue("tasks");
    assert_eq!((tasks.messages.len(), tasks.unacked.len()), (2, 1));
    Filled {
        _publisher: (publisher, ch),
        _worker: (worker, wch, consumer),
        _delivery: delivery,
    }
}

/// The overview shows every queue by its name, as text, with its counts.
fn check_overview(dom: &str) {
    let tasks = between(dom, "<tr data-queue=\"tasks\">", "</tr>");
    assert!(tasks.contains("<td class=\"num ready\">2</td>"), "{tasks}");
    assert!(
        tasks.contains("<td class=\"num unacked\">1</td>"),
        "{tasks}"
    );
    assert!(
        tasks.contains("<td class=\"num consumers\">1</td>"),
        "{tasks}"
    );
    assert!(tasks.contains("task 2"), "first bodies: {tasks}");
    for name in [SCRIPT_NAME, IMG_NAME, QUOTED_NAME] {
        let shown = format!(">{}</a>", escaped(name).replace("&quot;", "\""));
        assert!(dom.contains(&shown), "{name} not shown as text:\n{dom}");
    }
    assert!(!dom.contains("data-pwned"), "a name ran as markup:\n{dom}");
    // The 1 MB body is cut, not poured into the page.
    assert!(!dom.contains(&"x".repeat(1000)), "a huge body was not cut");
    // The worker's name and the binary body in hex.
    assert!(dom.contains(">worker</td>"), "{dom}");
    assert!(dom.contains("0xff00fe"), "{dom}");
}

/// The frames as the trace view lists them: (connection, direction, method).
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

/// The arrows come in the order the broker saw the frames: the nacked publish
/// before its nack, the consume before the delivery, each where it belongs.
fn check_trace(dom: &str) {
    let arrows = arrows(dom);
    let find = |what: (&str, &str), from: usize| {
        arrows[from..]
            .iter()
            .position(|(_, d, m)| (d.as_str(), m.as_str()) == what)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no {what:?} after arrow {from} in {arrows:?}"))
    };
    let publish = find(("in", "basic.publish"), 0);
    let nack = find(("out", "basic.nack"), publish);
    let ack = find(("out", "basic.ack"), nack);
    let consume = find(("in", "basic.consume"), ack);
    let deliver = find(("out", "basic.deliver"), consume);
    assert_eq!(arrows[publish].0, arrows[nack].0, "publisher's own nack");
    assert_eq!(
        arrows[consume].0, arrows[deliver].0,
        "worker's own delivery"
    );
    assert_ne!(arrows[publish].0, arrows[deliver].0);
    // The fault fired on the first message's body, and is marked there.
    let marked = between(dom, "class=\"row content faulted\"", "</div></div>");
    assert!(marked.contains("fault fired: nack_confirm"), "{marked}");
    assert!(marked.contains("task 1"), "{marked}");
    assert!(!dom.contains("data-pwned"), "a name ran as markup:\n{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_queues_counts_and_the_arrows_of_a_filled_broker() {
    let Some(chromium) = skip_without_chromium() else {
        return;
    };
    let broker = Broker::builder()
        .management("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let _filled = fill(&broker).await;
    let base = broker.management_url().unwrap();
    let chromium2 = chromium.clone();
    let (overview, trace) = tokio::task::spawn_blocking(move || {
        let overview = dump(&chromium2, &format!("{base}/#overview"), &[]);
        let trace = dump(&chromium2, &format!("{base}/#trace"), &[]);
        screenshot(&chromium2, &format!("{base}/#overview"), "page.png", &[]);
        screenshot(&chromium2, &format!("{base}/#trace"), "page-trace.png", &[]);
        let q = format!("{base}/#queue/%2F/tasks");
        screenshot(&chromium2, &q, "page-queue.png", &[]);
        (overview, trace)
    })
    .await
    .unwrap();
    // On loopback the page logs in by itself.
    assert!(overview.contains("id=\"login\" hidden"), "{overview}");
    check_overview(&overview);
    check_trace(&trace);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_file_renders_the_same_with_the_network_off() {
    let Some(chromium) = skip_without_chromium() else {
        return;
    };
    let broker = Broker::start().await.unwrap();
    let _filled = fill(&broker).await;
    let dir = tempdir("file");
    let path = dir.join("trace.html");
    broker.trace_html(&path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    // It loads nothing: no script, style, image or frame from elsewhere (the
    // names in its data are inside a JSON string, their `<` escaped).
    for tag in ["<script src", "<link", "<img", "<iframe", "url(", "@import"] {
        assert!(!html.contains(tag), "the file has {tag}");
    }
    let url = format!("file://{}", path.display());
    // Every request goes to a proxy that is not there: with anything to fetch,
    // the page would break.
    let offline = [
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
    ];
    let (overview, trace) = tokio::task::spawn_blocking(move || {
        let overview = dump(&chromium, &format!("{url}#overview"), &offline);
        let trace = dump(&chromium, &format!("{url}#trace"), &offline);
        for (view, name) in [
            ("overview", "trace-file.png"),
            ("trace", "trace-file-trace.png"),
        ] {
            screenshot(&chromium, &format!("{url}#{view}"), name, &offline);
        }
        (overview, trace)
    })
    .await
    .unwrap();
    check_overview(&overview);
    check_trace(&trace);
    let _ = std::fs::remove_dir_all(&dir);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_of_100_000_frames_loads() {
    let Some(chromium) = skip_without_chromium() else {
        return;
    };
    let broker = Broker::start().await.unwrap();
    broker.set_tracing(true);
    let (conn, ch) = open(&broker, "flood").await;
    declare(&ch, "flood").await;
    // Each message is three frames in: publish, header, body.
    for i in 0..34_000 {
        ch.basic_publish(
            "".into(),
            "flood".into(),
            BasicPublishOptions::default(),
            format!("message {i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    within(async {
        while broker.queue("flood").messages.len() < 34_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let frames = broker.trace_all().len();
    assert_eq!(frames, 100_000, "the trace keeps its last 100 000 frames");
    let dir = tempdir("flood");
    let path = dir.join("trace.html");
    broker.trace_html(&path).unwrap();
    let url = format!("file://{}#trace", path.display());
    let dom = tokio::task::spawn_blocking(move || dump(&chromium, &url, &[]))
        .await
        .unwrap();
    assert!(dom.contains(">100000 of 100000 frames</span>"), "{dom}");
    // A window's worth of rows is in the DOM, not 100 000.
    let rows = arrows(&dom).len();
    assert!((50..1000).contains(&rows), "{rows} rows rendered");
    let load = between(&dom, "data-load-ms=\"", "\" ");
    let load = &load["data-load-ms=\"".len()..];
    eprintln!(
        "a trace of 100 000 frames: the page loaded in {load} ms (navigation start to the \
         first rows drawn)"
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(conn);
    broker.shutdown().await;
}

/// GET / over plain HTTP/1.1.
async fn get_page(base: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within(s.read_to_string(&mut out)).await.unwrap();
    out
}

#[tokio::test]
async fn only_a_loopback_listener_hands_the_page_its_credentials() {
    let local = Broker::builder()
        .management("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let page = get_page(&local.management_url().unwrap()).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // guest:guest
    assert!(
        page.contains("\"auth\":\"Basic Z3Vlc3Q6Z3Vlc3Q=\""),
        "{page}"
    );
    local.shutdown().await;

    let open = Broker::builder()
        .management("0.0.0.0:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let port = open.management_url().unwrap();
    let port = port.rsplit(':').next().unwrap();
    let page = get_page(&format!("http://127.0.0.1:{port}")).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("\"auth\":null") && !page.contains("Z3Vlc3Q6Z3Vlc3Q="),
        "{page}"
    );
    open.shutdown().await;
}
