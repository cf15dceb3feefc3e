//! Resource alarms on by default, as RabbitMQ's: the `warren` binary in a
//! memory-limited cgroup, flooded by a lapin publisher with confirms, stays up,
//! blocks the publisher (`connection.blocked`), serves a consumer meanwhile,
//! unblocks once the queue is drained, and every confirmed message is in the
//! queue; the same with a data directory on a small tmpfs and the disk free
//! limit; and near its file descriptor limit it refuses new connections and
//! goes on serving, while 5,000 connections are served where the limit allows.
//!
//! The cgroup and the tmpfs are made by the test where the machine allows it
//! (root, cgroup v1 or v2 with the memory controller); elsewhere the test says
//! it skipped. Every wait is bounded; no assertion is about time.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Target;
use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The longest any one step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(60);

fn skip_under_raw_target() -> bool {
    let set = std::env::var("RAW_TARGET").is_ok_and(|u| !u.is_empty());
    if set {
        eprintln!("note: RAW_TARGET set; these tests start their own warren");
    }
    set
}

/// A memory cgroup made for one test, removed on drop (once empty).
struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    fn create(limit: u64) -> Option<MemoryCgroup> {
        let name = format!("warren-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_memory = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (dir, file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), "memory.limit_in_bytes")
        } else if v2_memory {
            (v2.join(&name), "memory.max")
        } else {
            eprintln!("SKIPPED: no cgroup memory controller to limit the broker with");
            return None;
        };
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("SKIPPED: cannot make a cgroup at {}: {e}", dir.display());
            return None;
        }
        let cgroup = MemoryCgroup { dir };
        if let Err(e) = std::fs::write(cgroup.dir.join(file), limit.to_string()) {
            eprintln!("SKIPPED: cannot set the cgroup's memory limit: {e}");
            return None;
        }
        Some(cgroup)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The broker was killed and waited for: the group is empty.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A tmpfs of `size` mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("warren-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The `warren` binary, started by `sh` so that `prelude` (entering a cgroup,
/// lowering a limit) applies to it from its first instruction; killed on drop.
struct Warren {
    child: Child,
    url: String,
}

impl Warren {
    fn start(prelude: &str, args: &[&str]) -> Warren {
        let script = format!("{prelude} exec \"$0\" --bind 127.0.0.1:0 --heartbeat 0 \"$@\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            // The alarms' lines, not one line per refused connection.
            .env("WARREN_LOG", "info,warren_broker::server=error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start warren");
        let mut url = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut url)
            .expect("warren's URL");
        assert!(url.starts_with("amqp://"), "warren did not start: {url:?}");
        Warren {
            child,
            url: url.trim().to_owned(),
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn step<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// `true` while the broker says the connection is blocked.
fn watch_blocked(conn: &Connection) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::ConnectionBlocked(_) => tx.send_replace(true),
                Event::ConnectionUnblocked => tx.send_replace(false),
                _ => continue,
            };
        }
    });
    rx
}

/// Publishes `size`-byte messages carrying their index, with confirms, until
/// the connection is blocked (or `max` were sent); returns the indexes
/// confirmed and whether it was blocked.
async fn flood(
    conn: &Connection,
    queue: &str,
    size: usize,
    max: u32,
    persistent: bool,
) -> (BTreeSet<u32>, bool) {
    let mut blocked = watch_blocked(conn);
    let ch = step("channel", conn.create_channel()).await.unwrap();
    step(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut confirmed = BTreeSet::new();
    let mut pending = VecDeque::new();
    let mut body = vec![0u8; size];
    let mut was_blocked = false;
    'publish: for i in 0..max {
        body[..4].copy_from_slice(&i.to_be_bytes());
        let publish = ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            props.clone(),
        );
        // A publish fails when the connection died (the broker with it).
        let confirm = tokio::select! {
            c = publish => match c {
                Ok(c) => c,
                Err(_) => break 'publish,
            },
            _ = blocked.wait_for(|b| *b) => { was_blocked = true; break 'publish; }
        };
        pending.push_back((i, confirm));
        while pending.len() > 64 {
            let (i, confirm) = pending.pop_front().unwrap();
            tokio::select! {
                c = confirm => {
                    if matches!(c, Ok(Confirmation::Ack(_))) {
                        confirmed.insert(i);
                    }
                }
                _ = blocked.wait_for(|b| *b) => { was_blocked = true; break 'publish; }
            }
        }
    }
    // Confirms for what the broker read before it stopped reading come at once;
    // the rest come only after the alarm clears, so they are not waited for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    for (i, confirm) in pending {
        if let Ok(Ok(Confirmation::Ack(_))) = tokio::time::timeout_at(deadline, confirm).await {
            confirmed.insert(i);
        }
    }
    (confirmed, was_blocked)
}

/// Consumes from `queue` until every index in `expected` was seen.
async fn drain_until_seen(conn: &Connection, queue: &str, expected: &BTreeSet<u32>) {
    let ch = step("channel", conn.create_channel()).await.unwrap();
    let mut consumer = step(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let mut missing = expected.clone();
    while !missing.is_empty() {
        let first = *missing.first().unwrap();
        let delivery = step(
            &format!(
                "the delivery of confirmed message {first} ({} missing)",
                missing.len()
            ),
            consumer.next(),
        )
        .await
        .expect("the consumer ended")
        .expect("a delivery");
        let i = u32::from_be_bytes(delivery.data[..4].try_into().unwrap());
        missing.remove(&i);
    }
}

async fn declare(conn: &Connection, queue: &str, durable: bool) {
    let ch = step("channel", conn.create_channel()).await.unwrap();
    let opts = QueueDeclareOptions {
        durable,
        ..Default::default()
    };
    step(
        "queue.declare",
        ch.queue_declare(queue.into(), opts, FieldTable::default()),
    )
    .await
    .unwrap();
}

async fn connect(url: &str) -> Connection {
    step(
        "connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_in_a_memory_limited_cgroup_blocks_publishers_and_keeps_every_confirmed_message() {
    if skip_under_raw_target() {
        return;
    }
    // The default watermark, 0.4 of 192 MiB, is about 77 MiB: some 1,200 messages
    // of 64 KiB. 4,000 of them (250 MiB) would not fit in the cgroup at all.
    let Some(cgroup) = MemoryCgroup::create(192 << 20) else {
        return;
    };
    let procs = cgroup.dir.join("cgroup.procs");
    let mut warren = Warren::start(&format!("echo $$ > {} &&", procs.display()), &[]);
    let publisher = connect(&warren.url).await;
    declare(&publisher, "flood", false).await;
    let (confirmed, blocked) = flood(&publisher, "flood", 64 << 10, 4_000, false).await;
    assert!(warren.is_running(), "the broker died under the flood");
    assert!(blocked, "the publisher was never blocked");
    assert!(!confirmed.is_empty());
    assert!(
        confirmed.len() < 4_000,
        "all 4,000 messages were confirmed before the alarm"
    );

    // Consumers are served while the publisher is blocked; once they drained
    // the queue the alarm clears and the publisher is unblocked.
    let mut unblocked = watch_blocked(&publisher);
    let consumer = connect(&warren.url).await;
    drain_until_seen(&consumer, "flood", &confirmed).await;
    step("connection.unblocked", unblocked.wait_for(|b| !*b))
        .await
        .unwrap();
    assert!(warren.is_running());
    drop(warren);
    drop(cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_low_on_disk_blocks_publishers_and_keeps_every_confirmed_message() {
    if skip_under_raw_target() {
        return;
    }
    // 64 MiB with the default limit of 50 MB: about 14 MB, some 200 persistent
    // messages of 64 KiB, go in before the alarm; 1,500 would fill the disk.
    let Some(tmpfs) = Tmpfs::mount("64m") else {
        return;
    };
    let dir = tmpfs.dir.join("data");
    let mut warren = Warren::start("", &["--data-dir", dir.to_str().unwrap()]);
    let publisher = connect(&warren.url).await;
    declare(&publisher, "disk-flood", true).await;
    let (confirmed, blocked) = flood(&publisher, "disk-flood", 64 << 10, 1_500, true).await;
    assert!(warren.is_running(), "the broker died under the flood");
    assert!(blocked, "the publisher was never blocked");
    assert!(!confirmed.is_empty());
    let consumer = connect(&warren.url).await;
    drain_until_seen(&consumer, "disk-flood", &confirmed).await;
    assert!(warren.is_running());
    drop(warren);
    drop(tmpfs);
}

/// Opens a TCP connection and sends the protocol header: `true` if the broker
/// answered with `connection.start` (the socket is kept in `open`), `false` if
/// it closed the connection.
async fn try_connection(addr: &str, open: &mut Vec<tokio::net::TcpStream>) -> bool {
    let Ok(mut s) = step("connect", tokio::net::TcpStream::connect(addr)).await else {
        return false;
    };
    if s.write_all(b"AMQP\x00\x00\x09\x01").await.is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    match step("connection.start", s.read(&mut byte)).await {
        Ok(1) if byte[0] == 1 => {
            open.push(s);
            true
        }
        _ => false,
    }
}

fn addr_of(url: &str) -> String {
    url.rsplit_once('@')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_descriptor_limit_new_connections_are_refused_and_others_served() {
    if skip_under_raw_target() {
        return;
    }
    // `ulimit -n` in sh lowers the hard limit too, so the broker cannot raise it.
    // About 200 connections fit: (512 less what is open and a reserve of 64) / 2.
    let mut warren = Warren::start("ulimit -n 512 &&", &[]);
    let addr = addr_of(&warren.url);
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        if !try_connection(&addr, &mut open).await {
            refused += 1;
        }
    }
    let served = open.len();
    assert!(warren.is_running(), "the broker died near its limit");
    assert!(refused > 0, "400 connections fit in 512 descriptors");
    assert!(served >= 100, "only {served} connections were served");
    // Once the held connections go, new ones are served again. The broker learns
    // of each close only when it reads the end of that socket, so the first
    // connections after the drop may still meet the limit: wait for one to be
    // greeted, within a deadline, before the full handshake.
    let first = Target::at(&warren.url);
    drop(open);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut greeted = Vec::new();
    while !try_connection(&addr, &mut greeted).await {
        assert!(
            std::time::Instant::now() < deadline,
            "no new connection was served within 10 s of closing {served}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(greeted);
    let mut c = first.connect().await;
    c.handshake("guest", "guest", "/").await;
    c.open_channel(1).await;
    c.declare_queue(1, "after-the-limit").await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_connections_are_served_where_the_limit_allows() {
    if skip_under_raw_target() {
        return;
    }
    // The test holds 5,000 sockets, the broker two descriptors per connection.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_files = |column: usize| {
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(column))
            .and_then(|n| n.parse::<u64>().ok())
    };
    if open_files(3).is_some_and(|n| n < 5_200) || open_files(4).is_some_and(|n| n < 10_200) {
        eprintln!("SKIPPED: the descriptor limits here do not allow 5,000 connections");
        return;
    }
    let mut warren = Warren::start("", &[]);
    let addr = addr_of(&warren.url);
    let mut open = Vec::new();
    for i in 0..5_000 {
        assert!(
            try_connection(&addr, &mut open).await,
            "connection {i} was refused"
        );
    }
    assert!(warren.is_running());
}
