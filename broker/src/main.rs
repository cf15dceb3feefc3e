//! The `warren` binary: the broker on TCP ports, for clients in any language.

mod cpu_binding;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use warren_broker::config::MemoryHighWatermark;
use warren_broker::{DeprecatedFeature, RabbitVersion};

/// An AMQP 0-9-1 broker that stands in for RabbitMQ in tests.
#[derive(Parser, Debug)]
#[command(name = "warren", version)]
struct Args {
    /// Address to listen on (repeatable; port 0 picks a free port; [::1]:0 works).
    #[arg(long = "bind", default_value = "127.0.0.1:5672")]
    bind: Vec<SocketAddr>,
    /// Keep durable state in this directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "guest")]
    user: String,
    #[arg(long, default_value = "guest")]
    password: String,
    /// A further user, NAME:PASSWORD[:TAGS] (tags comma-separated, e.g.
    /// alice:secret:administrator,management; repeatable; the password cannot
    /// hold a ':'). It has no permissions until --permissions gives some.
    #[arg(long = "user-add", value_name = "NAME:PASSWORD[:TAGS]", value_parser = parse_user)]
    user_add: Vec<(String, String, Vec<String>)>,
    /// USER VHOST CONFIGURE WRITE READ: what USER may do in VHOST, as regular
    /// expressions over exchange and queue names (rabbitmqctl set_permissions;
    /// repeatable). The default user has '.*' everywhere unless named here.
    #[arg(long = "permissions", num_args = 5,
          value_names = ["USER", "VHOST", "CONFIGURE", "WRITE", "READ"])]
    permissions: Vec<String>,
    /// Users who may log in only from a loopback address, comma-separated
    /// (RabbitMQ's loopback_users); "none" or "" for nobody.
    #[arg(long, default_value = "guest")]
    loopback_users: String,
    /// Virtual host to create besides `/` (repeatable).
    #[arg(long = "vhost")]
    vhosts: Vec<String>,
    /// Heartbeat interval proposed to clients, in seconds (0 disables).
    #[arg(long, default_value_t = 60)]
    heartbeat: u16,
    /// Process memory above which publishers are blocked (RabbitMQ's
    /// vm_memory_high_watermark): a fraction of the memory the process may use
    /// (the cgroup limit where there is one, else physical memory) such as 0.4,
    /// or bytes (268435456, 256MiB, 2GB); 0: never.
    #[arg(long, default_value = "0.4", value_parser = warren_broker::config::MemoryHighWatermark::parse)]
    memory_high_watermark: warren_broker::config::MemoryHighWatermark,
    /// With --data-dir: free bytes on its file system below which publishers
    /// are blocked (RabbitMQ's disk_free_limit; 50MB, 1GiB, ...); 0: never.
    #[arg(long, default_value = "50000000", value_parser = warren_broker::config::parse_size)]
    disk_free_limit: u64,
    /// Milliseconds a delivery may stay unacknowledged before its channel is
    /// closed with 406, as RabbitMQ's `consumer_timeout` (0: never).
    #[arg(long, default_value_t = 1_800_000)]
    consumer_timeout: u64,
    /// Serve the management HTTP API here (RabbitMQ's subset and Warren's
    /// `/api/warren/`); its base URL is the second line on stdout.
    #[arg(long)]
    management_bind: Option<SocketAddr>,
    /// TTLs, queue expiry and consumer timeouts follow a clock that only
    /// `POST /api/warren/clock/advance` moves.
    #[arg(long)]
    virtual_clock: bool,
    /// Which RabbitMQ to behave like: 3.10 (the default), 3.11, 3.12, 3.13, 4.0,
    /// 4.1, 4.2 or 4.3.
    #[arg(long, default_value = "3.10")]
    rabbitmq_version: RabbitVersion,
    /// Permit a deprecated feature the version denies by default, as
    /// rabbitmq.conf's `deprecated_features.permit.NAME = true` (repeatable).
    #[arg(long = "permit-deprecated", value_name = "NAME")]
    permit_deprecated: Vec<DeprecatedFeature>,
    /// Deny a deprecated feature the version still permits, as
    /// `deprecated_features.permit.NAME = false` (repeatable).
    #[arg(long = "deny-deprecated", value_name = "NAME")]
    deny_deprecated: Vec<DeprecatedFeature>,
    /// `spread` binds each runtime worker thread to one CPU, as RabbitMQ binds its
    /// schedulers: shorter round trips for clients that use several threads, longer
    /// ones for a single-threaded client such as pika on a small machine. `none`
    /// (the default) leaves them to the kernel.
    #[arg(long, value_enum, default_value_t = CpuBinding::None)]
    cpu_binding: CpuBinding,
    /// Microseconds a connection keeps polling its socket after traffic (and all
    /// the while its client streams) before it sleeps; 0 never polls. One
    /// connection polls at a time, yielding to any thread that wants its CPU, so
    /// at most one idle CPU is spent, and only while clients are busy. An idle CPU
    /// between a client's messages makes multi-threaded clients (lapin, Go) far
    /// slower on a small machine.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 1000)]
    busy_wait: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CpuBinding {
    Spread,
    None,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if args.cpu_binding == CpuBinding::Spread {
        if let Some((start, park)) = cpu_binding::hooks() {
            runtime.on_thread_start(start).on_thread_park(park);
        }
    }
    match runtime.build() {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("warren: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: CI logs and files stay readable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Installed before the URL line: a tool may signal as soon as it read it.
    let signals = Signals::install();
    let mut builder = warren_broker::Broker::builder()
        .credentials(&args.user, &args.password)
        .heartbeat(args.heartbeat)
        .disk_free_limit(args.disk_free_limit)
        .busy_wait(std::time::Duration::from_micros(args.busy_wait))
        .rabbitmq_version(args.rabbitmq_version);
    for feature in &args.permit_deprecated {
        builder = builder.permit_deprecated(*feature);
    }
    for feature in &args.deny_deprecated {
        builder = builder.deny_deprecated(*feature);
    }
    builder = match args.memory_high_watermark {
        MemoryHighWatermark::Relative(f) => builder.memory_high_watermark_relative(f),
        MemoryHighWatermark::Absolute(b) => {
            builder.memory_high_watermark(usize::try_from(b).unwrap_or(usize::MAX))
        }
    };
    builder = match args.consumer_timeout {
        0 => builder.no_consumer_timeout(),
        ms => builder.consumer_timeout(std::time::Duration::from_millis(ms)),
    };
    for addr in &args.bind {
        builder = builder.bind(*addr);
    }
    for vhost in &args.vhosts {
        builder = builder.vhost(vhost);
    }
    for (name, password, tags) in &args.user_add {
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        builder = builder.user(name, password, &tags);
    }
    for p in args.permissions.chunks_exact(5) {
        builder = builder.permissions(&p[0], &p[1], &p[2], &p[3], &p[4]);
    }
    let loopback: Vec<&str> = match args.loopback_users.as_str() {
        "none" => Vec::new(),
        list => list.split(',').filter(|u| !u.is_empty()).collect(),
    };
    builder = builder.loopback_users(&loopback);
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(addr) = args.management_bind {
        builder = builder.management(addr);
    }
    if args.virtual_clock {
        builder = builder.virtual_clock();
    }
    let broker = match builder.start().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The first line on stdout is the contract: tools wait for it.
    println!("{}", broker.url());
    if let Some(url) = broker.management_url() {
        println!("{url}");
    }
    let imitates = format!(
        "Warren {} behaving as RabbitMQ {}",
        env!("CARGO_PKG_VERSION"),
        args.rabbitmq_version.release()
    );
    match broker.data_dir() {
        Some(dir) => tracing::info!(
            addrs = ?broker.local_addrs(),
            "{imitates} ready; durable state kept in {}",
            dir.display()
        ),
        None => tracing::info!(
            addrs = ?broker.local_addrs(),
            "{imitates} ready; storage in memory: everything is gone at exit"
        ),
    }
    signals.wait().await;
    tracing::info!("shutting down");
    broker.shutdown().await;
    ExitCode::SUCCESS
}

/// `NAME:PASSWORD[:TAGS]` for `--user-add`.
fn parse_user(s: &str) -> Result<(String, String, Vec<String>), String> {
    let mut parts = s.splitn(3, ':');
    let name = parts.next().unwrap_or_default();
    let Some(password) = parts.next() else {
        return Err("expected NAME:PASSWORD[:TAGS]".into());
    };
    if name.is_empty() || password.is_empty() {
        return Err("the name and the password cannot be empty".into());
    }
    let tags = parts
        .next()
        .map(|t| {
            t.split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok((name.to_owned(), password.to_owned(), tags))
}

/// SIGINT and SIGTERM, registered up front.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
                term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
