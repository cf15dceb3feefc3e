//! The `warren` binary's contract: the first stdout line is the URL it serves, the
//! credentials and vhosts on the command line take effect, `--cpu-binding spread`
//! binds the runtime's workers, and SIGTERM closes every connection with 320
//! CONNECTION_FORCED before exiting 0.

mod common;

use amq_protocol::protocol::connection;
use common::Warren;

#[tokio::test]
async fn first_stdout_line_is_the_url_and_clients_connect_there() {
    let w = Warren::start(&["--bind", "127.0.0.1:0"]).await;
    let port = w.port();
    assert_ne!(port, 0);
    assert_eq!(w.url, format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    let t = w.target();
    let mut c = common::open1(&t).await;
    c.assert_alive().await;
    c.close().await;
    w.signal("TERM").await;
    let (status, log) = w.exit().await;
    assert!(status.success(), "{status}\n{log}");
    // Without --data-dir the start log says that nothing survives the exit.
    assert!(log.contains("memory"), "log at start: {log}");
}

#[tokio::test]
async fn ipv6_loopback_bind_works() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("note: no IPv6 loopback on this machine; skipping the [::1] bind test");
        return;
    }
    let w = Warren::start(&["--bind", "[::1]:0"]).await;
    let port = w.port();
    assert_eq!(w.url, format!("amqp://guest:guest@[::1]:{port}/%2f"));
    let t = w.target();
    let mut c = common::open1(&t).await;
    c.assert_alive().await;
    c.close().await;
    w.signal("TERM").await;
    let (status, log) = w.exit().await;
    assert!(status.success(), "{status}\n{log}");
}

#[tokio::test]
async fn management_bind_prints_the_api_url_on_the_second_line() {
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let bind = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
    let w = Warren::start(&["--bind", "127.0.0.1:0", "--management-bind", bind]).await;
    let base = w.management.clone().expect("a second stdout line");
    let host = if v6 {
        "http://[::1]:"
    } else {
        "http://127.0.0.1:"
    };
    assert!(base.starts_with(host), "{base}");
    let port: u16 = base.rsplit_once(':').unwrap().1.parse().expect("a port");
    assert_ne!(port, 0);
    let resp = reqwest::Client::new()
        .get(format!("{base}/api/overview"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("the management API answers");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    w.signal("TERM").await;
    let (status, log) = w.exit().await;
    assert!(status.success(), "{status}\n{log}");
}

#[tokio::test]
async fn user_password_and_vhost_options_take_effect() {
    let w = Warren::start(&[
        "--bind",
        "127.0.0.1:0",
        "--user",
        "alice",
        "--password",
        "s3cret",
        "--vhost",
        "staging",
    ])
    .await;
    let port = w.port();
    assert_eq!(w.url, format!("amqp://alice:s3cret@127.0.0.1:{port}/%2f"));
    let t = w.target();

    // The configured user gets in, on `/` and on the extra vhost.
    for vhost in ["/", "staging"] {
        let mut c = t.connect().await;
        c.handshake("alice", "s3cret", vhost).await;
        c.assert_alive().await;
        c.close().await;
    }
    // guest no longer does.
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok("guest", "guest").await;
    c.expect_connection_close(403, (0, 0), "ACCESS_REFUSED - ")
        .await;
    // A vhost that was not named does not exist.
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok("alice", "s3cret").await;
    c.tune().await;
    c.send(
        0,
        connection::Open {
            virtual_host: "production".into(),
        },
    )
    .await;
    c.expect_connection_close(530, (10, 40), "NOT_ALLOWED - vhost production not found")
        .await;

    w.signal("TERM").await;
    let (status, log) = w.exit().await;
    assert!(status.success(), "{status}\n{log}");
}

#[tokio::test]
async fn sigterm_closes_connections_with_320_and_exits_0() {
    let w = Warren::start(&["--bind", "127.0.0.1:0"]).await;
    let t = w.target();
    let mut a = common::open1(&t).await;
    let mut b = t.open().await;
    w.signal("TERM").await;
    for c in [&mut a, &mut b] {
        c.expect_connection_close(320, (0, 0), "CONNECTION_FORCED - ")
            .await;
    }
    let (status, log) = w.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
}

#[tokio::test]
async fn sigint_also_shuts_down_gracefully() {
    let w = Warren::start(&["--bind", "127.0.0.1:0"]).await;
    let t = w.target();
    let mut a = common::open1(&t).await;
    w.signal("INT").await;
    a.expect_connection_close(320, (0, 0), "CONNECTION_FORCED - ")
        .await;
    let (status, log) = w.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
}

#[tokio::test]
async fn sigterm_right_after_the_url_line_is_graceful() {
    // Tools read the URL line and may stop the broker at once: by then the signal
    // handlers must be in place.
    for _ in 0..5 {
        let w = Warren::start(&["--bind", "127.0.0.1:0"]).await;
        w.signal("TERM").await;
        let (status, log) = w.exit().await;
        assert_eq!(status.code(), Some(0), "{status}\n{log}");
    }
}

#[tokio::test]
async fn heartbeat_option_sets_the_proposed_interval() {
    let w = Warren::start(&["--bind", "127.0.0.1:0", "--heartbeat", "5"]).await;
    let t = w.target();
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok(&t.user, &t.password).await;
    assert_eq!(c.tune().await.heartbeat, 5);
    c.open_vhost(&t.vhost).await;
    c.close().await;
    w.signal("TERM").await;
    let (status, log) = w.exit().await;
    assert!(status.success(), "{status}\n{log}");
}

/// Each thread of a process: its name and the CPUs it may run on, as
/// /proc/PID/task/TID/status lists them ("0-1", "3").
#[cfg(target_os = "linux")]
fn threads_and_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc") {
        let status =
            std::fs::read_to_string(task.expect("task").path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        out.push((field("Name:"), field("Cpus_allowed_list:")));
    }
    out
}

/// `--cpu-binding spread` binds each runtime worker to a CPU of its own and leaves
/// the main thread free; without it no thread is bound.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn cpu_binding_spread_binds_each_worker_to_one_cpu() {
    let ours = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .unwrap();
    if !ours.contains(['-', ',']) {
        eprintln!("skipped: this process may run on one CPU only ({ours}), nothing to spread");
        return;
    }
    let free = Warren::start(&["--bind", "127.0.0.1:0"]).await;
    let threads = threads_and_cpus(free.pid());
    assert!(
        threads.iter().all(|(_, cpus)| *cpus == ours),
        "by default no thread is bound: {threads:?}"
    );
    free.signal("TERM").await;
    assert!(free.exit().await.0.success());

    let bound = Warren::start(&["--bind", "127.0.0.1:0", "--cpu-binding", "spread"]).await;
    // A worker binds itself the first time it parks, which may follow the URL line.
    let mut threads = Vec::new();
    for _ in 0..100 {
        threads = threads_and_cpus(bound.pid());
        let workers: Vec<&String> = threads
            .iter()
            .filter(|(name, _)| name.starts_with("tokio-rt"))
            .map(|(_, cpus)| cpus)
            .collect();
        if !workers.is_empty() && workers.iter().all(|c| !c.contains(['-', ','])) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut workers: Vec<&str> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("tokio-rt"))
        .map(|(_, cpus)| cpus.as_str())
        .collect();
    assert!(!workers.is_empty(), "no runtime worker found: {threads:?}");
    assert!(
        workers.iter().all(|c| !c.contains(['-', ','])),
        "each worker on one CPU: {threads:?}"
    );
    let count = workers.len();
    workers.sort();
    workers.dedup();
    assert_eq!(
        workers.len() >= 2,
        count >= 2,
        "two workers or more go to different CPUs: {threads:?}"
    );
    let main = threads.iter().find(|(name, _)| name == "warren");
    assert_eq!(
        main.map(|(_, c)| c.as_str()),
        Some(ours.as_str()),
        "the main thread stays free: {threads:?}"
    );
    bound.signal("TERM").await;
    assert!(bound.exit().await.0.success());
}
