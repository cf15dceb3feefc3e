//! `rabbitmqadmin`, the CLI that ships inside RabbitMQ's management plugin
//! (and that testcontainers uses), run unmodified against Warren's management
//! listener: declare, list, publish, get, purge, close connection, delete,
//! export and import. Skipped with a note when `rabbitmqadmin` is not
//! installed (`.ci/run` fetches it from RabbitMQ's management listener).

use std::process::Command;

use lapin::{Connection, ConnectionProperties};
use warren_broker::Broker;

fn admin_path() -> Option<String> {
    let path = std::env::var("RABBITMQADMIN").unwrap_or_else(|_| "rabbitmqadmin".to_owned());
    let runs = Command::new(&path).arg("--version").output();
    runs.is_ok_and(|o| o.status.success()).then_some(path)
}

/// Runs rabbitmqadmin against the broker; panics with its output if it fails.
fn admin(path: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new(path)
        .args([
            "-H",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "guest",
            "-p",
            "guest",
        ])
        .args(["-f", "tsv"])
        .args(args)
        .output()
        .expect("run rabbitmqadmin");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rabbitmqadmin {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqadmin_manages_warren_unmodified() {
    let Some(path) = admin_path() else {
        eprintln!("note: rabbitmqadmin is not installed; skipping the rabbitmqadmin test");
        return;
    };
    let broker = Broker::builder()
        .management("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let port: u16 = broker
        .management_url()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    // rabbitmqadmin blocks: each run goes to a blocking thread.
    let run = |args: &[&str]| {
        let path = path.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            admin(&path, port, &args)
        })
    };

    run(&["declare", "queue", "name=jobs", "durable=true"])
        .await
        .unwrap();
    run(&["declare", "exchange", "name=fan", "type=fanout"])
        .await
        .unwrap();
    run(&["declare", "binding", "source=fan", "destination=jobs"])
        .await
        .unwrap();
    run(&["publish", "exchange=fan", "routing_key=x", "payload=hello"])
        .await
        .unwrap();
    broker.queue("jobs").assert_bodies(&["hello"]);

    let listed = run(&["list", "queues", "name", "messages"]).await.unwrap();
    assert!(listed.lines().any(|l| l == "jobs\t1"), "{listed}");
    let got = run(&["get", "queue=jobs", "ackmode=ack_requeue_true"])
        .await
        .unwrap();
    assert!(got.contains("hello"), "{got}");
    broker.queue("jobs").assert_bodies(&["hello"]);
    run(&["purge", "queue", "name=jobs"]).await.unwrap();
    broker.queue("jobs").assert_empty();

    let exported = std::env::temp_dir().join(format!("warren-defs-{}.json", std::process::id()));
    let file = exported.display().to_string();
    run(&["export", &file]).await.unwrap();
    run(&["delete", "queue", "name=jobs"]).await.unwrap();
    run(&["delete", "exchange", "name=fan"]).await.unwrap();
    assert!(broker.try_queue("jobs").is_none());
    run(&["import", &file]).await.unwrap();
    let _ = std::fs::remove_file(&exported);
    assert!(broker.queue("jobs").durable);
    assert!(broker
        .bindings()
        .iter()
        .any(|b| b.source == "fan" && b.destination == "jobs"));

    let conn = Connection::connect(&broker.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let names = run(&["list", "connections", "name"]).await.unwrap();
    let name = names
        .lines()
        .find(|l| l.contains(" -> "))
        .expect("the connection")
        .to_owned();
    run(&["close", "connection", &format!("name={name}")])
        .await
        .unwrap();
    broker
        .wait_for(std::time::Duration::from_secs(5), |s| {
            s.connections.is_empty()
        })
        .await
        .expect("the connection closes");
    assert!(!conn.status().connected());
}
