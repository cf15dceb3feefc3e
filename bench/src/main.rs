//! `warren-bench`: Warren measured beside RabbitMQ in one run, through the same
//! third-party clients (Go's amqp091 as the load that can saturate a broker, lapin as
//! the Rust client users test with), with the ratio Warren ÷ RabbitMQ per figure.
//!
//! Run it through `cargo xtask bench [--quick]`, which builds the `warren` binary, this
//! crate and the Go load generator first. Direct use:
//! `warren-bench --warren PATH --go PATH [--rabbitmq URL] [--quick] [--rounds N] [--out FILE]`.
//!
//! Every figure is measured in rounds that alternate which broker goes first, so that
//! machine noise (two cores shared with other work) hits both; the table shows medians.
//! Every run is bounded in time and count, works on uniquely named queues, and deletes
//! them afterwards.

mod clients;
mod inprocess;
mod lapin_load;
mod procs;
mod raw_rt;
mod report;
mod sink;
mod wc_load;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use procs::{get, Go, Result, Warren};
use report::{fmt_num, median, Side, Table, Target};

const DEFAULT_RABBITMQ: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PREFETCH: u16 = 1000;
const FANOUT_QUEUES: usize = 10;

struct Args {
    warren: PathBuf,
    go: PathBuf,
    rabbitmq: String,
    quick: bool,
    rounds: Option<usize>,
    out: Option<PathBuf>,
    /// Only the figures whose name contains this (for profiling and debugging).
    only: Option<String>,
    /// The Go build of `bench/go/clients`, when it built.
    go_clients: Option<PathBuf>,
    /// Where `cargo xtask bench` installed pika and amqplib.
    bench_dir: Option<PathBuf>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut warren = None;
    let mut go = None;
    let mut rabbitmq = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_RABBITMQ.into());
    let mut quick = false;
    let mut rounds = None;
    let mut out = None;
    let mut only = None;
    let mut go_clients = None;
    let mut bench_dir = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--warren" => warren = Some(PathBuf::from(value()?)),
            "--go" => go = Some(PathBuf::from(value()?)),
            "--rabbitmq" => rabbitmq = value()?,
            "--quick" => quick = true,
            "--rounds" => rounds = Some(value()?.parse().map_err(|e| format!("--rounds: {e}"))?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--only" => only = Some(value()?),
            "--go-clients" => go_clients = Some(PathBuf::from(value()?)),
            "--bench-dir" => bench_dir = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args {
        warren: warren.ok_or("--warren PATH is required")?,
        go: go.ok_or("--go PATH is required")?,
        rabbitmq,
        quick,
        rounds,
        out,
        only,
        go_clients,
        bench_dir,
    })
}

/// Counts per run: the full run stays under ~10 minutes on 2 cores, `--quick` under one.
struct Sizes {
    rounds: usize,
    timeout: Duration,
    go_publish: usize,
    go_publish_4k: usize,
    go_consume: usize,
    go_fanout: usize,
    lapin_publish: usize,
    lapin_publish_4k: usize,
    lapin_consume: usize,
    lapin_fanout: usize,
    latency: usize,
    connect: usize,
    confirm: usize,
    fill: usize,
    cycles: usize,
    inproc: usize,
    inproc_ack: usize,
    end_to_end: usize,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            rounds: 5,
            timeout: Duration::from_secs(120),
            go_publish: 200_000,
            go_publish_4k: 50_000,
            go_consume: 100_000,
            go_fanout: 20_000,
            lapin_publish: 50_000,
            lapin_publish_4k: 20_000,
            lapin_consume: 30_000,
            lapin_fanout: 5_000,
            latency: 2_000,
            connect: 50,
            confirm: 50_000,
            fill: 1_000_000,
            cycles: 300,
            inproc: 500_000,
            inproc_ack: 200_000,
            end_to_end: 300_000,
        }
    }

    fn quick() -> Self {
        Sizes {
            rounds: 1,
            timeout: Duration::from_secs(30),
            go_publish: 20_000,
            go_publish_4k: 5_000,
            go_consume: 10_000,
            go_fanout: 2_000,
            lapin_publish: 5_000,
            lapin_publish_4k: 2_000,
            lapin_consume: 5_000,
            lapin_fanout: 500,
            latency: 300,
            connect: 10,
            confirm: 5_000,
            fill: 100_000,
            cycles: 30,
            inproc: 50_000,
            inproc_ack: 20_000,
            end_to_end: 30_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Go,
    Lapin,
    /// lapin with its threads bound to one CPU (`lapin_load::on_one_cpu`).
    LapinOneCpu,
    /// warren-client.
    Wc,
}

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::Go => "Go amqp091",
            Client::Lapin => "lapin",
            Client::LapinOneCpu => "lapin, threads on one CPU",
            Client::Wc => "warren-client",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Publish { size: usize, conns: usize },
    Consume,
    Fanout,
    Latency,
    Connect,
    Confirm,
}

/// The rows a scenario fills, in the order `Bench::run` returns its values. Targets
/// (issue 7) apply to the Go load: lapin rows show the client as much as the broker.
fn rows_for(s: Scenario, c: Client) -> Vec<(String, &'static str, Option<Target>)> {
    let l = c.label();
    let go_target = |t| (c == Client::Go).then_some(t);
    match s {
        Scenario::Publish { size, conns } => vec![(
            format!(
                "publish {}, fire-and-forget{} ({l})",
                size_label(size),
                if conns > 1 {
                    format!(", {conns} connections")
                } else {
                    String::new()
                }
            ),
            "msg/s",
            go_target(Target::RatioAtLeast(3.0)),
        )],
        Scenario::Consume => vec![(
            format!("consume, manual ack, prefetch {PREFETCH} ({l})"),
            "msg/s",
            go_target(Target::RatioAtLeast(3.0)),
        )],
        Scenario::Fanout => vec![(
            format!("fan-out to {FANOUT_QUEUES} queues, all consumed ({l})"),
            "pub/s",
            go_target(Target::RatioAtLeast(3.0)),
        )],
        Scenario::Latency => vec![
            (
                format!("round trip publish → delivery, p50 ({l})"),
                "µs",
                go_target(Target::RatioAtMost(0.5)),
            ),
            (
                format!("round trip publish → delivery, p99 ({l})"),
                "µs",
                None,
            ),
        ],
        Scenario::Connect => vec![(
            format!("connect (TCP + AMQP handshake), p50 ({l})"),
            "µs",
            None,
        )],
        Scenario::Confirm => vec![(
            format!("confirmed persistent publish, durable queue, pipelined ({l})"),
            "msg/s",
            go_target(Target::RatioAtLeast(3.0)),
        )],
    }
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{} M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{} k", n / 1000)
    } else {
        n.to_string()
    }
}

struct Bench {
    args: Args,
    sizes: Sizes,
    go: Go,
    table: Table,
    errors: Vec<String>,
    notes: Vec<String>,
    seq: u64,
    /// Client ceilings: a figure of the main table, and that load's samples against
    /// a peer that does no broker work.
    ceilings: Vec<(String, Vec<f64>)>,
    /// The `clients` section: per client and pattern, the samples on each broker.
    clients: Vec<ClientRow>,
}

/// One cell row of the `clients` section.
struct ClientRow {
    client: &'static str,
    pattern: clients::Pattern,
    /// Samples on Warren in memory, Warren with `--data-dir`, RabbitMQ.
    samples: [Vec<f64>; 3],
    /// Why a side has no samples (a client that is not installed).
    missing: Option<String>,
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Bench {
    fn wanted(&self, figure: &str) -> bool {
        self.args
            .only
            .as_deref()
            .map_or(true, |o| figure.contains(o))
    }

    fn fresh_name(&mut self) -> String {
        self.seq += 1;
        format!("warren-bench.{}.{}", std::process::id(), self.seq)
    }

    /// One run of one scenario through one client against one broker.
    async fn run(&self, s: Scenario, c: Client, url: &str, name: &str) -> Result<Vec<f64>> {
        let z = &self.sizes;
        let t = z.timeout;
        let exchange = format!("{name}.x");
        let go_args = |n: usize, size: usize| {
            vec![
                ("queue", name.to_owned()),
                ("exchange", exchange.clone()),
                ("n", n.to_string()),
                ("size", size.to_string()),
                ("prefetch", PREFETCH.to_string()),
                ("queues", FANOUT_QUEUES.to_string()),
            ]
        };
        let bounded = |what: &'static str| move |_| format!("{what}: no result within {t:?}");
        let body16 = [b'x'; 16];
        Ok(match (s, c) {
            (Scenario::Publish { size, conns }, Client::Go) => {
                let n = if size > 16 {
                    z.go_publish_4k
                } else {
                    z.go_publish
                };
                let mut args = go_args(n, size);
                args.push(("conns", conns.to_string()));
                let r = self.go.run("publish", url, &args, t).await?;
                vec![rate(n, get(&r, "secs")?)]
            }
            (Scenario::Publish { size, .. }, Client::Wc) => {
                let n = if size > 16 {
                    z.go_publish_4k
                } else {
                    z.go_publish
                };
                let body = vec![b'x'; size];
                let took = tokio::time::timeout(t, wc_load::publish(url, name, n, &body))
                    .await
                    .map_err(bounded("warren-client publish"))??;
                vec![rate(n, took.as_secs_f64())]
            }
            (Scenario::Consume, Client::Wc) => {
                let n = z.go_consume;
                let took =
                    tokio::time::timeout(t, wc_load::consume(url, name, n, &body16, PREFETCH))
                        .await
                        .map_err(bounded("warren-client consume"))??;
                vec![rate(n, took.as_secs_f64())]
            }
            (Scenario::Confirm, Client::Wc) => {
                let n = z.confirm;
                let took = tokio::time::timeout(t, wc_load::confirm(url, name, n, &body16))
                    .await
                    .map_err(bounded("warren-client confirm"))??;
                vec![rate(n, took.as_secs_f64())]
            }
            (s, Client::Wc) => return Err(format!("{s:?} is not run through warren-client").into()),
            (Scenario::Publish { size, .. }, Client::Lapin) => {
                let n = if size > 16 {
                    z.lapin_publish_4k
                } else {
                    z.lapin_publish
                };
                let body = vec![b'x'; size];
                let took = tokio::time::timeout(t, lapin_load::publish(url, name, n, &body))
                    .await
                    .map_err(bounded("lapin publish"))??;
                vec![rate(n, took.as_secs_f64())]
            }
            (Scenario::Publish { size, .. }, Client::LapinOneCpu) => {
                let n = z.lapin_publish;
                let (url, name) = (url.to_owned(), name.to_owned());
                let body = vec![b'x'; size];
                let took = lapin_load::on_one_cpu(t, move || async move {
                    lapin_load::publish(&url, &name, n, &body).await
                })
                .await?;
                vec![rate(n, took.as_secs_f64())]
            }
            (s, Client::LapinOneCpu) => {
                return Err(format!("{s:?} is not run through lapin on one CPU").into())
            }
            (Scenario::Consume, Client::Go) => {
                let n = z.go_consume;
                let r = self.go.run("consume", url, &go_args(n, 16), t).await?;
                vec![rate(n, get(&r, "secs")?)]
            }
            (Scenario::Consume, Client::Lapin) => {
                let n = z.lapin_consume;
                let took =
                    tokio::time::timeout(t, lapin_load::consume(url, name, n, &body16, PREFETCH))
                        .await
                        .map_err(bounded("lapin consume"))??;
                vec![rate(n, took.as_secs_f64())]
            }
            (Scenario::Fanout, Client::Go) => {
                let n = z.go_fanout;
                let r = self.go.run("fanout", url, &go_args(n, 16), t).await?;
                vec![rate(n, get(&r, "secs")?)]
            }
            (Scenario::Fanout, Client::Lapin) => {
                let n = z.lapin_fanout;
                let took = tokio::time::timeout(
                    t,
                    lapin_load::fanout(url, &exchange, name, FANOUT_QUEUES, n, &body16, PREFETCH),
                )
                .await
                .map_err(bounded("lapin fanout"))??;
                vec![rate(n, took.as_secs_f64())]
            }
            (Scenario::Latency, Client::Go) => {
                let r = self
                    .go
                    .run("latency", url, &go_args(z.latency, 16), t)
                    .await?;
                vec![get(&r, "p50_us")?, get(&r, "p99_us")?]
            }
            (Scenario::Latency, Client::Lapin) => {
                let samples =
                    tokio::time::timeout(t, lapin_load::latency(url, name, z.latency, &body16))
                        .await
                        .map_err(bounded("lapin latency"))??;
                vec![
                    micros(lapin_load::percentile(&samples, 0.50)),
                    micros(lapin_load::percentile(&samples, 0.99)),
                ]
            }
            (Scenario::Connect, Client::Go) => {
                let r = self
                    .go
                    .run("connect", url, &go_args(z.connect, 16), t)
                    .await?;
                vec![get(&r, "p50_us")?]
            }
            (Scenario::Connect, Client::Lapin) => {
                let samples = tokio::time::timeout(t, lapin_load::connect_times(url, z.connect))
                    .await
                    .map_err(bounded("lapin connect"))??;
                vec![micros(lapin_load::percentile(&samples, 0.50))]
            }
            (Scenario::Confirm, Client::Go) => {
                let n = z.confirm;
                let r = self.go.run("confirm", url, &go_args(n, 16), t).await?;
                vec![rate(n, get(&r, "secs")?)]
            }
            (Scenario::Confirm, Client::Lapin) => {
                return Err("confirms are not run through lapin".into());
            }
        })
    }

    /// Every queue and exchange a run may have declared under `name`.
    async fn cleanup(&self, url: &str, name: &str) {
        let mut queues = vec![name.to_owned()];
        queues.extend((0..FANOUT_QUEUES).map(|k| format!("{name}.{k}")));
        let exchanges = [format!("{name}.x")];
        if let Err(e) = lapin_load::cleanup(url, &queues, &exchanges).await {
            eprintln!("warning: cleanup of {name} on {url}: {e}");
        }
    }

    /// All rounds of one scenario through one client, alternating the broker that goes
    /// first.
    async fn measure(&mut self, s: Scenario, c: Client, warren_url: &str) {
        let rows = rows_for(s, c);
        if !rows.iter().any(|(f, _, _)| self.wanted(f)) {
            return;
        }
        for (figure, unit, target) in &rows {
            self.table.row(figure, unit, *target);
        }
        for round in 0..self.sizes.rounds {
            let order = if round % 2 == 0 {
                [Side::Warren, Side::RabbitMq]
            } else {
                [Side::RabbitMq, Side::Warren]
            };
            for side in order {
                let url = match side {
                    Side::Warren => warren_url.to_owned(),
                    Side::RabbitMq => self.args.rabbitmq.clone(),
                };
                let name = self.fresh_name();
                procs::settle().await;
                let started = Instant::now();
                let result = self.run(s, c, &url, &name).await;
                self.cleanup(&url, &name).await;
                match result {
                    Ok(values) => {
                        for ((figure, unit, _), v) in rows.iter().zip(&values) {
                            eprintln!(
                                "  {figure} [{side:?}, round {}]: {} {unit} ({:.1} s)",
                                round + 1,
                                fmt_num(*v),
                                started.elapsed().as_secs_f64()
                            );
                            self.table.add(figure, side, *v);
                        }
                    }
                    Err(e) => {
                        let msg = format!("{:?} via {} on {side:?}: {e}", s, c.label());
                        eprintln!("  FAILED {msg}");
                        self.errors.push(msg);
                    }
                }
            }
        }
    }

    /// Idle RSS and RSS with `fill` 16-byte messages queued, on a fresh `warren` and
    /// on the RabbitMQ node (its beam.smp process: the whole node, as `top` shows it).
    async fn memory(&mut self) -> Result<()> {
        let fill = self.sizes.fill;
        let idle = "idle RSS (fresh warren; RabbitMQ: beam.smp VmRSS)";
        let full = format!("RSS with {} × 16 B messages queued", count_label(fill));
        let per = "RSS added per queued 16 B message";
        self.table.row(idle, "MB", Some(Target::WarrenBelow(10.0)));
        let full_target = (fill == 1_000_000).then_some(Target::WarrenBelow(150.0));
        self.table.row(&full, "MB", full_target);
        self.table.row(per, "B", None);
        let mb = 1024.0 * 1024.0;
        let t = self.sizes.timeout;
        let args = |name: &str| vec![("queue", name.to_owned()), ("n", fill.to_string())];

        // Warren: its own process, so that the other runs' allocations do not count.
        let w = Warren::start(&self.args.warren, &[]).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = procs::rss_bytes(w.pid).ok_or("no RSS for warren")?;
        let name = self.fresh_name();
        let r = self.go.run("fill", &w.url, &args(&name), t).await;
        let after = procs::rss_bytes(w.pid).ok_or("no RSS for warren")?;
        w.stop().await;
        r?;
        self.table.add(idle, Side::Warren, before / mb);
        self.table.add(&full, Side::Warren, after / mb);
        self.table
            .add(per, Side::Warren, (after - before) / fill as f64);

        let local = ["@127.0.0.1:", "@localhost:", "@[::1]:"]
            .iter()
            .any(|h| self.args.rabbitmq.contains(h));
        let Some(pid) = procs::beam_pid().filter(|_| local) else {
            self.notes
                .push("RabbitMQ's memory: no local beam.smp process found, not measured.".into());
            return Ok(());
        };
        let before = procs::rss_bytes(pid).ok_or("no RSS for beam.smp")?;
        let name = self.fresh_name();
        let url = self.args.rabbitmq.clone();
        let r = self.go.run("fill", &url, &args(&name), t).await;
        let after = procs::rss_bytes(pid).ok_or("no RSS for beam.smp")?;
        self.cleanup(&url, &name).await;
        r?;
        self.table.add(idle, Side::RabbitMq, before / mb);
        self.table.add(&full, Side::RabbitMq, after / mb);
        self.table
            .add(per, Side::RabbitMq, (after - before) / fill as f64);
        Ok(())
    }

    /// Confirmed persistent publishes need `--data-dir`; until the binary accepts it,
    /// the row says so instead of measuring memory-only confirms.
    async fn confirmed_persistent(&mut self) {
        let clients = [Client::Go, Client::Wc];
        if !clients
            .iter()
            .flat_map(|c| rows_for(Scenario::Confirm, *c))
            .any(|(f, _, _)| self.wanted(&f))
        {
            return;
        }
        let dir = std::env::temp_dir().join(format!("warren-bench-data.{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let durable =
            Warren::start(&self.args.warren, &["--data-dir", &dir.to_string_lossy()]).await;
        match durable {
            Ok(w) => {
                let url = w.url.clone();
                for c in clients {
                    self.measure(Scenario::Confirm, c, &url).await;
                }
                w.stop().await;
            }
            Err(_) => {
                for (figure, unit, target) in
                    clients.iter().flat_map(|c| rows_for(Scenario::Confirm, *c))
                {
                    self.table.row(&figure, unit, target).warren_missing =
                        "n/a (no durable storage yet)".into();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn in_process(&mut self) {
        let cycle = "in-process cycle: Broker::start → declare → publish → consume → shutdown (warren-client)";
        let noack = "in-process publish → consume, no_ack, no socket (warren-client)";
        let ack = "in-process publish → consume, manual ack, prefetch 1000 (warren-client)";
        // `--only` may name any one of these rows (or a substring of several).
        if ![cycle, noack, ack].iter().any(|f| self.wanted(f)) {
            return;
        }
        self.table
            .row(cycle, "µs", Some(Target::WarrenBelow(1000.0)))
            .rabbitmq_missing = "n/a (a node takes seconds to start)".into();
        self.table
            .row(noack, "msg/s", Some(Target::WarrenAbove(1_000_000.0)))
            .rabbitmq_missing = "n/a (no in-process mode)".into();
        self.table.row(ack, "msg/s", None).rabbitmq_missing = "n/a (no in-process mode)".into();
        let t = self.sizes.timeout;
        let mut cycles = Vec::new();
        let cycle_count = if self.wanted(cycle) {
            self.sizes.cycles
        } else {
            0
        };
        for _ in 0..cycle_count {
            match tokio::time::timeout(t, inprocess::cycle()).await {
                Ok(Ok(d)) => cycles.push(micros(d)),
                Ok(Err(e)) => {
                    self.errors.push(format!("in-process cycle: {e}"));
                    break;
                }
                Err(_) => {
                    self.errors.push("in-process cycle timed out".into());
                    break;
                }
            }
        }
        if let Some(m) = median(&cycles) {
            self.table.add(cycle, Side::Warren, m);
            eprintln!("  {cycle}: {} µs", fmt_num(m));
        }
        let body = [b'x'; 16];
        for _ in 0..self.sizes.rounds {
            for (figure, n, with_ack) in [
                (noack, self.sizes.inproc, false),
                (ack, self.sizes.inproc_ack, true),
            ] {
                if !self.wanted(figure) {
                    continue;
                }
                match tokio::time::timeout(t, inprocess::publish_consume(n, &body, with_ack)).await
                {
                    Ok(Ok(d)) => {
                        let r = rate(n, d.as_secs_f64());
                        eprintln!("  {figure}: {} msg/s", fmt_num(r));
                        self.table.add(figure, Side::Warren, r);
                    }
                    Ok(Err(e)) => self.errors.push(format!("{figure}: {e}")),
                    Err(_) => self.errors.push(format!("{figure}: timed out")),
                }
            }
        }
    }

    /// The loads of the main table whose targets ask the broker for more than the
    /// client may give, run against a peer that does no broker work (`sink`): each
    /// client's ceiling on that load, whatever the broker.
    async fn ceilings(&mut self) -> Result<()> {
        let url = sink::start()?;
        let publish = |size, conns| Scenario::Publish { size, conns };
        // The 4-connection Go rows are the loads the throughput targets are judged
        // by; their ceilings say how much of the gap the client leaves to close.
        for (s, client) in [
            (publish(16, 1), Client::Go),
            (publish(16, 4), Client::Go),
            (publish(16, 1), Client::Lapin),
            (publish(16, 1), Client::LapinOneCpu),
            (publish(16, 1), Client::Wc),
            (publish(4096, 1), Client::Go),
            (publish(4096, 4), Client::Go),
            (publish(4096, 1), Client::Lapin),
            (publish(4096, 1), Client::Wc),
            (Scenario::Consume, Client::Go),
            (Scenario::Consume, Client::Lapin),
            (Scenario::Consume, Client::Wc),
            (Scenario::Fanout, Client::Go),
            (Scenario::Fanout, Client::Lapin),
            (Scenario::Confirm, Client::Go),
            (Scenario::Confirm, Client::Wc),
        ] {
            let Some((figure, unit, _)) = rows_for(s, client).into_iter().next() else {
                continue;
            };
            let mut v = Vec::new();
            for _ in 0..self.sizes.rounds {
                let name = self.fresh_name();
                match self.run(s, client, &url, &name).await {
                    Ok(r) => v.extend(r),
                    Err(e) => self.errors.push(format!("ceiling of {figure}: {e}")),
                }
            }
            eprintln!(
                "  {figure}, against a peer that does no broker work: {} {unit}",
                median(&v).map_or("n/a".into(), fmt_num)
            );
            if let Some(row) = self.table.rows.iter_mut().find(|r| r.figure == figure) {
                row.ceiling = median(&v);
            }
            self.ceilings.push((figure, v));
        }
        Ok(())
    }

    /// The `clients` section: every pattern through every client, on a fresh Warren
    /// in memory, a fresh Warren with `--data-dir` and RabbitMQ, the three in an
    /// order that rotates with each round.
    async fn clients_section(&mut self) -> Result<()> {
        let bench_dir = self
            .args
            .bench_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("warren-bench"));
        let programs = clients::programs(&bench_dir, self.args.go_clients.clone());
        let figure = |c: &clients::ClientProgram, p: clients::Pattern| {
            format!("clients: {} {}", c.name, p.label())
        };
        if !programs.iter().any(|c| {
            clients::PATTERNS
                .iter()
                .any(|p| self.wanted(&figure(c, *p)))
        }) {
            return Ok(());
        }
        let dir = std::env::temp_dir().join(format!("warren-bench-clients.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let memory = Warren::start(&self.args.warren, &[]).await?;
        let durable =
            Warren::start(&self.args.warren, &["--data-dir", &dir.to_string_lossy()]).await?;
        let urls = [
            memory.url.clone(),
            durable.url.clone(),
            self.args.rabbitmq.clone(),
        ];
        let names = ["Warren", "Warren --data-dir", "RabbitMQ"];
        for c in &programs {
            for p in clients::PATTERNS {
                if !self.wanted(&figure(c, p)) {
                    continue;
                }
                let mut row = ClientRow {
                    client: c.name,
                    pattern: p,
                    samples: Default::default(),
                    missing: c.missing.clone(),
                };
                if c.missing.is_none() {
                    let n = clients::count(p, self.args.quick, c.slow);
                    for round in 0..self.sizes.rounds {
                        for k in 0..3 {
                            let side = (round + k) % 3;
                            let name = self.fresh_name();
                            procs::settle().await;
                            let r =
                                clients::run(c, p, &urls[side], &name, n, self.sizes.timeout).await;
                            let queues = [name.clone()];
                            if let Err(e) = lapin_load::cleanup(&urls[side], &queues, &[]).await {
                                eprintln!("warning: cleanup of {name} on {}: {e}", names[side]);
                            }
                            match r {
                                Ok(v) => {
                                    eprintln!(
                                        "  {} [{}, round {}]: {} {}",
                                        figure(c, p),
                                        names[side],
                                        round + 1,
                                        fmt_num(v),
                                        p.unit()
                                    );
                                    row.samples[side].push(v);
                                }
                                Err(e) => {
                                    let msg = format!("{} on {}: {e}", figure(c, p), names[side]);
                                    eprintln!("  FAILED {msg}");
                                    self.errors.push(msg);
                                }
                            }
                        }
                    }
                }
                self.clients.push(row);
            }
        }
        memory.stop().await;
        durable.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// One producer and one consumer over TCP through warren-client (no-ack, and a
    /// manual ack each), the round trip of one message, and the loopback floor: a
    /// plain TCP ping-pong of the same bytes in this process.
    async fn end_to_end(&mut self, warren_url: &str) {
        let noack = "end to end, 1 producer + 1 consumer, 16 B, no-ack (warren-client)";
        let ack = "end to end, 1 producer + 1 consumer, 16 B, manual ack (warren-client)";
        let rt = "round trip publish → delivery, p50 (warren-client)";
        let raw = "round trip publish → delivery, p50 (raw frames, one task, no client library)";
        let floor = "loopback floor: TCP ping-pong of the same bytes, p50";
        if ![noack, ack, rt, raw, floor].iter().any(|f| self.wanted(f)) {
            return;
        }
        self.table
            .row(noack, "msg/s", Some(Target::WarrenAbove(800_000.0)));
        self.table.row(ack, "msg/s", None);
        self.table.row(rt, "µs", Some(Target::RatioAtMost(0.5)));
        self.table.row(raw, "µs", None);
        self.table.row(floor, "µs", None).rabbitmq_missing = "n/a (no broker)".into();
        let n = self.sizes.end_to_end;
        let t = self.sizes.timeout;
        let body = [b'x'; 16];
        for round in 0..self.sizes.rounds {
            let order = if round % 2 == 0 {
                [Side::Warren, Side::RabbitMq]
            } else {
                [Side::RabbitMq, Side::Warren]
            };
            for side in order {
                let url = match side {
                    Side::Warren => warren_url.to_owned(),
                    Side::RabbitMq => self.args.rabbitmq.clone(),
                };
                for (figure, with_ack) in [(noack, false), (ack, true)] {
                    let name = self.fresh_name();
                    procs::settle().await;
                    let r = tokio::time::timeout(
                        t,
                        wc_load::end_to_end(&url, &name, n, &body, with_ack),
                    )
                    .await;
                    let _ = lapin_load::cleanup(&url, &[name], &[]).await;
                    match r {
                        Ok(Ok(d)) => {
                            let v = rate(n, d.as_secs_f64());
                            eprintln!("  {figure} [{side:?}]: {} msg/s", fmt_num(v));
                            self.table.add(figure, side, v);
                        }
                        Ok(Err(e)) => self.errors.push(format!("{figure} on {side:?}: {e}")),
                        Err(_) => self.errors.push(format!("{figure} on {side:?}: timed out")),
                    }
                }
                // Through warren-client, then with raw frames and no client library.
                for (figure, raw_frames) in [(rt, false), (raw, true)] {
                    let name = self.fresh_name();
                    procs::settle().await;
                    let n = self.sizes.latency;
                    let r = if raw_frames {
                        tokio::time::timeout(t, raw_rt::round_trip(&url, &name, n)).await
                    } else {
                        tokio::time::timeout(t, wc_load::round_trip(&url, &name, n, &body)).await
                    };
                    let _ = lapin_load::cleanup(&url, &[name], &[]).await;
                    match r {
                        Ok(Ok(d)) => self.table.add(figure, side, micros(d)),
                        Ok(Err(e)) => self.errors.push(format!("{figure} on {side:?}: {e}")),
                        Err(_) => self.errors.push(format!("{figure} on {side:?}: timed out")),
                    }
                }
            }
            // A 16 B publish from warren-client is 82 bytes of frames on a short
            // queue name, its delivery about 120.
            match tokio::time::timeout(t, wc_load::loopback_floor(self.sizes.latency, 82, 120))
                .await
            {
                Ok(Ok(d)) => self.table.add(floor, Side::Warren, micros(d)),
                Ok(Err(e)) => self.errors.push(format!("{floor}: {e}")),
                Err(_) => self.errors.push(format!("{floor}: timed out")),
            }
        }
    }

    /// The `clients` section as Markdown: one table per client.
    fn render_clients(&self) -> String {
        let mut out = String::new();
        if self.clients.is_empty() {
            return out;
        }
        out.push_str(
            "\n## Clients as their users write them\n\nEach client's own idiom (lapin's \
             `basic_publish(..).await?.await?`, amqp091's `PublishWithContext`, pika's \
             `BlockingConnection`, amqplib's `sendToQueue`), 16 B bodies, against a fresh \
             Warren in memory, a fresh Warren with `--data-dir` and RabbitMQ, in an order that \
             rotates each round; medians. Rates are msg/s, round trips µs (lower is better). \
             The publish patterns are timed until a passive `queue.declare` counts every \
             message in the queue; the consume patterns start on a filled queue; pika's \
             confirms are one publish at a time, since its `BlockingChannel` waits for each \
             confirm inside `basic_publish`.\n",
        );
        let mut clients: Vec<&str> = Vec::new();
        for r in &self.clients {
            if !clients.contains(&r.client) {
                clients.push(r.client);
            }
        }
        for client in clients {
            out.push_str(&format!(
                "\n### {client}\n\n| pattern | Warren | Warren --data-dir | RabbitMQ | Warren ÷ RabbitMQ | --data-dir ÷ RabbitMQ |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
            ));
            for r in self.clients.iter().filter(|r| r.client == client) {
                let m: Vec<Option<f64>> = r.samples.iter().map(|v| median(v)).collect();
                let cell = |v: Option<f64>| match (v, &r.missing) {
                    (Some(v), _) => fmt_num(v),
                    (None, Some(why)) => why.clone(),
                    (None, None) => "n/a".into(),
                };
                let ratio = |w: Option<f64>| match (w, m[2]) {
                    (Some(w), Some(rb)) if rb > 0.0 => {
                        let x = w / rb;
                        // Better is above 1 for rates, below 1 for times; the cell
                        // says which way it went.
                        let worse = if r.pattern.is_time() {
                            x > 1.0
                        } else {
                            x < 1.0
                        };
                        format!("{x:.2}×{}", if worse { " ✘" } else { "" })
                    }
                    _ => "—".into(),
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.pattern.label(),
                    cell(m[0]),
                    cell(m[1]),
                    cell(m[2]),
                    ratio(m[0]),
                    ratio(m[1]),
                ));
            }
        }
        out
    }

    fn render(&self, load_before: f64, load_after: f64, took: Duration, machine: &str) -> String {
        let mut out = String::new();
        let mut mode = String::from(if self.args.quick {
            "cargo xtask bench --quick"
        } else {
            "cargo xtask bench"
        });
        if let Some(rounds) = self.args.rounds {
            mode.push_str(&format!(" --rounds {rounds}"));
        }
        out.push_str(&format!(
            "Machine: {machine}. Command: `{mode}` ({} round{} per figure, brokers alternating; \
             medians). Took {:.0} s. Load average before: {load_before:.2}, after: {load_after:.2}.\n\n",
            self.sizes.rounds,
            if self.sizes.rounds == 1 { "" } else { "s" },
            took.as_secs_f64()
        ));
        out.push_str(&self.table.markdown());
        out.push_str(
            "\nWarren ÷ RabbitMQ: above 1 is better for rates, below 1 for times and memory. \
             Warren is the release `warren` binary on 127.0.0.1 port 0, in memory; RabbitMQ is \
             the node at the URL given, measured in the same run. Rates are the broker's: a \
             publish run is timed until the queue holds every message (polled with a passive \
             queue.declare), a consume run until the last delivery is acked, a fan-out run \
             until every queue's consumer has acked every copy. Every run starts once the \
             machine is at least 80 % idle (at most 5 s of waiting), so that what a broker does \
             after a run does not land on the next one. The Go and lapin rows are bounded by \
             the client as much as by the broker (see the ceilings below): amqp091 writes \
             every frame with its own system call, and lapin hands every publish and every \
             ack from the caller's thread to its I/O thread and back. On an otherwise idle \
             machine Linux puts those two threads on different CPUs, so each hand-over wakes \
             an idle CPU; a broker that keeps one CPU awake, RabbitMQ with its own work per \
             message, Warren by polling its socket for a while after traffic (`--busy-wait`), \
             leaves them sharing the other, where a hand-over is cheap. The row with lapin's \
             threads bound to one CPU shows the client without that cost (bench/PROFILE.md). \
             The warren-client rows (pipelined) show the brokers.\n",
        );
        out.push_str(
            "\nClient ceilings: the same loads against a local peer that does no broker work \
             (it completes the handshake, counts publishes for the passive queue.declare, \
             serves consumers from an endless supply of 16 B deliveries within their \
             prefetch (a fan-out's consumers, as many as their exchange was sent), confirms what each read brought with one ack, and reads once a \
             millisecond: a peer parked on the socket would make \
             every write pay for waking it). No broker can show more than the client's \
             ceiling, so the last column is the highest ratio any broker could reach.\n\n",
        );
        out.push_str(
            "| load | the client's ceiling | into Warren | into RabbitMQ | ceiling ÷ RabbitMQ |\n\
             | --- | ---: | ---: | ---: | ---: |\n",
        );
        for (figure, v) in &self.ceilings {
            let row = self.table.rows.iter().find(|r| &r.figure == figure);
            let unit = row.map_or("msg/s", |r| r.unit);
            let show =
                |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{} {unit}", fmt_num(v)));
            let ceiling = median(v);
            let rabbitmq = row.and_then(|r| median(&r.rabbitmq));
            out.push_str(&format!(
                "| {figure} | {} | {} | {} | {} |\n",
                show(ceiling),
                show(row.and_then(|r| median(&r.warren))),
                show(rabbitmq),
                match (ceiling, rabbitmq) {
                    (Some(c), Some(r)) if r > 0.0 => format!("{:.2}×", c / r),
                    _ => "—".into(),
                },
            ));
        }
        out.push_str(&self.render_clients());
        if !self.notes.is_empty() || !self.errors.is_empty() || load_before > 0.7 {
            out.push_str("\nNotes:\n");
            if load_before > 0.7 {
                out.push_str(&format!(
                    "- The machine was busy when this ran (load average {load_before:.2} on {} cores \
                     before the first run): other work shared the cores, so absolute figures are \
                     noisy; the ratios, measured in alternating rounds, are the better guide.\n",
                    std::thread::available_parallelism().map_or(0, |n| n.get())
                ));
            }
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
            for e in &self.errors {
                out.push_str(&format!("- FAILED: {e}\n"));
            }
        }
        out
    }
}

async fn reachable(url: &str) -> Result<()> {
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()),
    )
    .await
    .map_err(|_| format!("{url}: no answer within 10 s"))??;
    let _ = conn.close(200, "OK".into()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("warren-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(r) = args.rounds {
        sizes.rounds = r.max(1);
    }
    if let Err(e) = reachable(&args.rabbitmq).await {
        eprintln!("warren-bench: RabbitMQ at {}: {e}", args.rabbitmq);
        return ExitCode::FAILURE;
    }
    let machine = procs::machine();
    let load_before = procs::load_average();
    eprintln!("warren-bench: {machine}; load average {load_before:.2}");
    let started = Instant::now();
    let go = Go {
        binary: args.go.clone(),
    };
    let mut bench = Bench {
        args,
        sizes,
        go,
        table: Table::default(),
        errors: Vec::new(),
        notes: Vec::new(),
        seq: 0,
        ceilings: Vec::new(),
        clients: Vec::new(),
    };
    let warren = match Warren::start(&bench.args.warren, &[]).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("warren-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = warren.url.clone();
    eprintln!(
        "warren-bench: warren at {url}, RabbitMQ at {}",
        bench.args.rabbitmq
    );

    use Client::{Go as G, Lapin as L, LapinOneCpu as L1, Wc as W};
    // One Go connection is capped by amqp091 itself (it flushes every frame); four
    // show what each broker takes.
    let plan: [(Scenario, &[Client]); 8] = [
        (Scenario::Publish { size: 16, conns: 1 }, &[G, L, L1, W]),
        (Scenario::Publish { size: 16, conns: 4 }, &[G]),
        (
            Scenario::Publish {
                size: 4096,
                conns: 1,
            },
            &[G, L, W],
        ),
        (
            Scenario::Publish {
                size: 4096,
                conns: 4,
            },
            &[G],
        ),
        (Scenario::Consume, &[G, L, W]),
        (Scenario::Fanout, &[G, L]),
        (Scenario::Latency, &[G, L]),
        (Scenario::Connect, &[G, L]),
    ];
    for (s, clients) in plan {
        for &c in clients {
            bench.measure(s, c, &url).await;
        }
    }
    bench.end_to_end(&url).await;
    warren.stop().await;
    bench.confirmed_persistent().await;
    if bench.wanted("RSS") {
        if let Err(e) = bench.memory().await {
            bench.errors.push(format!("memory: {e}"));
        }
    }
    bench.in_process().await;
    if bench.wanted("sink") {
        if let Err(e) = bench.ceilings().await {
            bench.errors.push(format!("client ceilings: {e}"));
        }
    }
    if let Err(e) = bench.clients_section().await {
        bench.errors.push(format!("clients: {e}"));
    }

    let report = bench.render(
        load_before,
        procs::load_average(),
        started.elapsed(),
        &machine,
    );
    println!("\n{report}");
    if let Some(out) = &bench.args.out {
        let doc = format!(
            "# Benchmarks: Warren beside RabbitMQ\n\n\
             Produced by `cargo xtask bench`; rerun it to refresh this page. How each figure \
             is taken: [bench/README.md](../bench/README.md). Where Warren's time goes per \
             message, with instruction counts: [bench/PROFILE.md](../bench/PROFILE.md).\n\n{report}"
        );
        if let Err(e) = std::fs::write(out, doc) {
            eprintln!("warren-bench: cannot write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        eprintln!("warren-bench: wrote {}", out.display());
    }
    if bench.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
