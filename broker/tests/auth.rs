//! Who may log in and what they may touch: several users, per-vhost permissions
//! refused with RabbitMQ's 403 texts on every method that checks them,
//! `connection.open` refused without vhost access, and `loopback_users` tried from
//! a network namespace the test makes (a veth pair), as RabbitMQ 3.10 does them.

mod common;

use amq_protocol::protocol::{basic, exchange, queue};
use amq_protocol::types::{AMQPValue, FieldTable};
use common::{unique, Raw, Target};
use warren_broker::auth::Permissions;
use warren_broker::Broker;

/// A broker with `alice`, who may configure, write and read only names holding
/// `alice-` (an expression matches anywhere in a name, as in RabbitMQ), and
/// may not enter vhost `other`.
async fn broker() -> Option<Target> {
    Target::start_with(
        Broker::builder()
            .vhost("other")
            .user("alice", "secret", &["management"])
            .permissions("alice", "/", "alice-", "alice-", "alice-"),
    )
    .await
}

async fn alice(t: &Target) -> Raw {
    let mut c = t.connect().await;
    c.handshake("alice", "secret", "/").await;
    c.open_channel(1).await;
    c
}

fn refused(kind: &str, name: &str) -> String {
    format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user 'alice'")
}

#[tokio::test]
async fn each_method_checks_its_permission_with_rabbitmq_s_text() {
    let Some(t) = broker().await else { return };
    let mut guest = t.open().await;
    guest.open_channel(1).await;
    let theirs = unique("bob");
    guest.declare_queue(1, &theirs).await;
    let mine = unique("alice");

    let mut c = alice(&t).await;
    // What alice may do works.
    c.declare_queue(1, &mine).await;
    c.declare_exchange(1, &format!("{mine}-x"), "direct").await;

    // queue.declare needs configure.
    c.send(1, common::queue_decl(&theirs)).await;
    c.expect_channel_close(1, 403, (50, 10), &refused("queue", &theirs))
        .await;
    // queue.delete needs configure; queue.purge, basic.get and consume read.
    for (op, ids) in [
        (Op::Delete, (50, 40)),
        (Op::Purge, (50, 30)),
        (Op::Get, (60, 70)),
        (Op::Consume, (60, 20)),
    ] {
        c.open_channel(1).await;
        op.send(&mut c, &theirs).await;
        c.expect_channel_close(1, 403, ids, &refused("queue", &theirs))
            .await;
    }

    // Publishing to the default exchange is writing to amq.default.
    c.open_channel(1).await;
    c.publish(1, "", &mine, b"m").await;
    c.expect_channel_close(1, 403, (60, 40), &refused("exchange", "amq.default"))
        .await;
    // queue.bind writes to the queue and reads from the exchange.
    c.open_channel(1).await;
    c.send(
        1,
        queue::Bind {
            queue: mine.as_str().into(),
            exchange: "amq.direct".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
    )
    .await;
    c.expect_channel_close(1, 403, (50, 20), &refused("exchange", "amq.direct"))
        .await;
    // exchange.declare and exchange.delete need configure.
    c.open_channel(1).await;
    c.send(1, common::exchange_decl("bob-x", "direct")).await;
    c.expect_channel_close(1, 403, (40, 10), &refused("exchange", "bob-x"))
        .await;
    // A new queue's dead-letter exchange needs write on it, and read on the queue.
    c.open_channel(1).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("amq.fanout".into()),
    );
    c.send(
        1,
        queue::Declare {
            arguments: args,
            ..common::queue_decl(&format!("{mine}-dl"))
        },
    )
    .await;
    c.expect_channel_close(1, 403, (50, 10), &refused("exchange", "amq.fanout"))
        .await;

    // The default user still may do all of it.
    guest.publish(1, "", &theirs, b"m").await;
    guest.delete_queue(1, &theirs).await;
    c.open_channel(1).await;
    c.delete_queue(1, &mine).await;
    t.stop().await;
}

/// Methods on a queue that RabbitMQ checks a permission for.
enum Op {
    Delete,
    Purge,
    Get,
    Consume,
}

impl Op {
    async fn send(self, c: &mut Raw, q: &str) {
        let queue = q.into();
        match self {
            Op::Delete => {
                let m = queue::Delete {
                    queue,
                    ..Default::default()
                };
                c.send(1, m).await
            }
            Op::Purge => {
                let m = queue::Purge {
                    queue,
                    ..Default::default()
                };
                c.send(1, m).await
            }
            Op::Get => {
                c.send(
                    1,
                    basic::Get {
                        queue,
                        no_ack: true,
                    },
                )
                .await
            }
            Op::Consume => {
                let m = basic::Consume {
                    queue,
                    ..Default::default()
                };
                c.send(1, m).await
            }
        }
    }
}

#[tokio::test]
async fn a_vhost_without_permissions_is_refused_at_open() {
    let Some(t) = broker().await else { return };
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok("alice", "secret").await;
    c.tune().await;
    c.send(
        0,
        amq_protocol::protocol::connection::Open {
            virtual_host: "other".into(),
        },
    )
    .await;
    c.expect_connection_close(
        530,
        (10, 40),
        "NOT_ALLOWED - access to vhost 'other' refused for user 'alice'",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn wrong_and_blank_passwords_are_refused() {
    let Some(t) = broker().await else { return };
    for password in ["wrong", ""] {
        let mut c = t.connect().await;
        c.start().await;
        c.start_ok("alice", password).await;
        c.expect_connection_close(
            403,
            (0, 0),
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
        )
        .await;
    }
    t.stop().await;
}

#[tokio::test]
async fn permissions_changed_at_run_time_apply_to_open_connections() {
    let Some(t) = broker().await else { return };
    let q = unique("shared");
    let mut c = alice(&t).await;
    c.send(1, common::queue_decl(&q)).await;
    c.expect_channel_close(1, 403, (50, 10), &refused("queue", &q))
        .await;
    let users = t.warren().unwrap().users();
    users
        .set_permissions("alice", "/", Permissions::full())
        .unwrap();
    c.open_channel(1).await;
    c.declare_queue(1, &q).await;
    c.delete_queue(1, &q).await;
    assert!(users.authenticate("alice", "secret").is_some());
    assert!(users.delete_user("alice"));
    let mut again = t.connect().await;
    again.start().await;
    again.start_ok("alice", "secret").await;
    again
        .expect_connection_close(403, (0, 0), "ACCESS_REFUSED - Login was refused")
        .await;
    t.stop().await;
}

fn publish(queue: &str) -> basic::Publish {
    basic::Publish {
        routing_key: queue.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn user_id_must_be_the_user_s_unless_an_impersonator() {
    let Some(t) = Target::start_with(
        Broker::builder()
            .user("alice", "secret", &[])
            .user("imp", "secret", &["impersonator"])
            .permissions("alice", "/", ".*", ".*", ".*")
            .permissions("imp", "/", ".*", ".*", ".*"),
    )
    .await
    else {
        return;
    };
    let q = unique("uid");
    let props = amq_protocol::protocol::BasicProperties::default().with_user_id("guest".into());
    let mut imp = t.connect().await;
    imp.handshake("imp", "secret", "/").await;
    imp.open_channel(1).await;
    imp.declare_queue(1, &q).await;
    imp.publish_with(1, publish(&q), props.clone(), b"m").await;
    let ok = imp.declare_queue(1, &q).await;
    assert_eq!(ok.message_count, 1);

    let mut c = alice(&t).await;
    c.publish_with(1, publish(&q), props, b"m").await;
    c.expect_channel_close(
        1,
        406,
        (60, 40),
        "PRECONDITION_FAILED - user_id property set to 'guest' but authenticated user was 'alice'",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn alternate_exchange_needs_read_on_the_new_exchange_and_write_on_it() {
    let Some(t) = broker().await else { return };
    let mut c = alice(&t).await;
    let x = unique("alice");
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("amq.fanout".into()),
    );
    c.send(
        1,
        exchange::Declare {
            arguments: args,
            ..common::exchange_decl(&x, "direct")
        },
    )
    .await;
    c.expect_channel_close(1, 403, (40, 10), &refused("exchange", "amq.fanout"))
        .await;
    t.stop().await;
}

/// A network namespace joined to this one by a veth pair, removed on drop.
struct Netns {
    name: String,
    host_if: String,
    /// The address on this side, and the one inside the namespace.
    host: String,
    inside: String,
}

impl Netns {
    /// `None`, with the reason printed, where the machine does not allow it.
    fn create() -> Option<Netns> {
        let id = std::process::id() % 200 + 20;
        let n = Netns {
            name: format!("warren-auth-{}", std::process::id()),
            host_if: format!("wa{}h", std::process::id() % 100_000),
            host: format!("10.213.{id}.1"),
            inside: format!("10.213.{id}.2"),
        };
        let inside_if = format!("wa{}n", std::process::id() % 100_000);
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), n.name.clone()],
            vec![
                "link".into(),
                "add".into(),
                n.host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                inside_if.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                inside_if.clone(),
                "netns".into(),
                n.name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/30", n.host),
                "dev".into(),
                n.host_if.clone(),
            ],
            vec!["link".into(), "set".into(), n.host_if.clone(), "up".into()],
            vec![
                "-n".into(),
                n.name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/30", n.inside),
                "dev".into(),
                inside_if.clone(),
            ],
            vec![
                "-n".into(),
                n.name.clone(),
                "link".into(),
                "set".into(),
                inside_if,
                "up".into(),
            ],
        ];
        for step in steps {
            let out = std::process::Command::new("ip").args(&step).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    eprintln!(
                        "SKIPPED: cannot make a network namespace here (ip {}: {})",
                        step.join(" "),
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    return None;
                }
                Err(e) => {
                    eprintln!("SKIPPED: cannot run `ip` to make a network namespace: {e}");
                    return None;
                }
            }
        }
        Some(n)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Starts the `warren` binary inside the namespace; returns it and its URL.
fn warren_in(ns: &Netns, extra: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_warren")])
        .args(["--bind", &format!("{}:0", ns.inside)])
        .args(["--user-add", "alice:secret"])
        .args(["--permissions", "alice", "/", ".*", ".*", ".*"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start warren in the namespace");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("warren's URL");
    (child, line.trim().to_owned())
}

#[tokio::test]
async fn guest_may_log_in_only_over_loopback() {
    if std::env::var("RAW_TARGET").is_ok_and(|u| !u.is_empty()) {
        eprintln!("note: RAW_TARGET set; this test starts its own warren");
        return;
    }
    let Some(ns) = Netns::create() else { return };
    // From the host side of the veth pair the broker sees a non-loopback peer.
    let (mut child, url) = warren_in(&ns, &[]);
    let t = Target::at(&url);
    let mut c = t.connect().await;
    c.start().await;
    c.start_ok("guest", "guest").await;
    c.expect_connection_close(
        403,
        (0, 0),
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
    )
    .await;
    // Another user may.
    let mut c = t.connect().await;
    c.handshake("alice", "secret", "/").await;
    c.close().await;
    let _ = child.kill();
    let _ = child.wait();

    // With no loopback users guest may too.
    let (mut child, url) = warren_in(&ns, &["--loopback-users", "none"]);
    let t = Target::at(&url);
    let mut c = t.connect().await;
    c.handshake("guest", "guest", "/").await;
    c.close().await;
    let _ = child.kill();
    let _ = child.wait();
}
