//! `warren-conformance`: runs the scenarios and prints the comparison table.
//!
//! Usage: `warren-conformance [--target URL | [--rabbitmq URL [--rabbitmq-management URL]]] [--only SUBSTRING]
//! [--jobs N] [--verbose] [--list] [--differential [--cases N] [--max-len N]
//! [--without PATTERN]...]`. Without `--target` the scenarios run against an embedded
//! Warren and, given `--rabbitmq` or `AMQP_URL`, against RabbitMQ as well.
//! `--differential` runs random operation sequences against both instead of the
//! scenarios (against `--target` instead of Warren when given).
//!
//! The scenarios expect what the target's RabbitMQ release does (`versions::`
//! differ by release): the release is read from `connection.start`, RabbitMQ's
//! or `--target`'s, and the embedded Warren imitates RabbitMQ's. Without a
//! RabbitMQ, `--profile X.Y` runs Warren imitating X.Y against the expectations
//! recorded in the scenarios (3.10 by default). With `--differential` and a
//! RabbitMQ, `--profile X.Y` runs the embedded Warren as X.Y against that
//! RabbitMQ's release, on the operations both answer alike.

use std::process::ExitCode;

use warren_conformance::runner::{compare, run_all, Outcome};
use warren_conformance::{all, Url};

struct Args {
    target: Option<String>,
    rabbitmq: Option<String>,
    /// RabbitMQ's management API, for the `http::` scenarios.
    rabbitmq_management: Option<String>,
    only: Vec<String>,
    jobs: usize,
    verbose: bool,
    list: bool,
    differential: bool,
    cases: u32,
    max_len: usize,
    without: Vec<String>,
    /// The release the embedded Warren imitates when no RabbitMQ is given.
    profile: Option<warren_broker::RabbitVersion>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: None,
        rabbitmq: std::env::var("AMQP_URL").ok().filter(|s| !s.is_empty()),
        rabbitmq_management: None,
        only: Vec::new(),
        jobs: 4,
        verbose: false,
        list: false,
        differential: false,
        cases: 100,
        max_len: 12,
        without: Vec::new(),
        profile: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--target" => args.target = Some(value("--target")?),
            "--rabbitmq" => args.rabbitmq = Some(value("--rabbitmq")?),
            "--rabbitmq-management" => {
                args.rabbitmq_management = Some(value("--rabbitmq-management")?)
            }
            "--only" => args.only.push(value("--only")?),
            "--jobs" => {
                args.jobs = value("--jobs")?
                    .parse()
                    .map_err(|e| format!("--jobs: {e}"))?
            }
            "--verbose" | "-v" => args.verbose = true,
            "--list" => args.list = true,
            "--differential" => args.differential = true,
            "--without" => args.without.push(value("--without")?),
            "--profile" => {
                args.profile = Some(
                    value("--profile")?
                        .parse()
                        .map_err(|e| format!("--profile: {e}"))?,
                )
            }
            "--cases" => {
                args.cases = value("--cases")?
                    .parse()
                    .map_err(|e| format!("--cases: {e}"))?
            }
            "--max-len" => {
                args.max_len = value("--max-len")?
                    .parse()
                    .map_err(|e| format!("--max-len: {e}"))?
            }
            "--help" | "-h" => {
                return Err("usage: warren-conformance [--target URL | --rabbitmq URL \
                     [--rabbitmq-management URL] | --profile X.Y] [--only SUBSTRING]... [--jobs N] [--verbose] [--list] \
                     [--differential [--cases N] [--max-len N] [--without PATTERN]...]"
                    .into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn print_details(label: &str, outcomes: &[Outcome], other: Option<&[Outcome]>) {
    for (i, o) in outcomes.iter().enumerate() {
        let differs = other
            .and_then(|x| x.get(i))
            .is_some_and(|x| x.transcript != o.transcript);
        if o.passed() && !differs {
            continue;
        }
        println!(
            "--- {} on {label}: {}",
            o.name,
            o.error.as_deref().unwrap_or("passed")
        );
        for line in &o.transcript {
            println!("    {line}");
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let scenarios: Vec<_> = all()
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o.as_str())))
        .collect();
    if args.list {
        for s in &scenarios {
            println!("{}", s.name);
        }
        println!("{} scenarios", scenarios.len());
        return ExitCode::SUCCESS;
    }
    let parse = |u: &str| Url::parse(u).map_err(|e| e.to_string());

    if let (true, Some(target)) = (args.differential, &args.target) {
        // Against a given URL instead of the embedded Warren (RabbitMQ against itself
        // shows whether the sequences are reproducible).
        let (Ok(target), Some(Ok(rabbit))) = (parse(target), args.rabbitmq.as_deref().map(parse))
        else {
            eprintln!("--differential --target URL needs a valid URL and --rabbitmq URL");
            return ExitCode::from(2);
        };
        return differential(target, rabbit, &args).await;
    }

    if let Some(target) = &args.target {
        let mut url = match parse(target) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        match warren_conformance::ctx::detect_version(&url).await {
            Ok(v) => url.profile = warren_broker::Profile::new(v),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        println!("target: RabbitMQ {}", url.profile.version());
        let outcomes = run_all(&scenarios, &url, args.jobs).await;
        let report = compare(None, Some(&outcomes));
        print!("{}", report.table().replace("rabbitmq", "target  "));
        if args.verbose {
            print_details("target", &outcomes, None);
        }
        let (p, n) = report.rabbitmq;
        println!("conformance: target {p}/{n}");
        return if p == n {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let rabbit_url = match args.rabbitmq.as_deref().map(parse).transpose() {
        // The management API on its default port unless told otherwise; its
        // login is the AMQP URL's.
        Ok(u) => u.map(|mut u| {
            u.management = Some(
                args.rabbitmq_management
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:15672".to_owned()),
            );
            u
        }),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut rabbit_url = rabbit_url;
    let version = match &mut rabbit_url {
        Some(u) => match warren_conformance::ctx::detect_version(u).await {
            Ok(v) => {
                // The differential test compares what both releases answer
                // alike, so it may run Warren as another release.
                if !args.differential && args.profile.is_some_and(|p| p != v) {
                    eprintln!(
                        "--profile {} and the RabbitMQ at {} ({v}) differ: give one of them",
                        args.profile.unwrap_or_default(),
                        u.addr
                    );
                    return ExitCode::from(2);
                }
                u.profile = warren_broker::Profile::new(v);
                args.profile.unwrap_or(v)
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => args.profile.unwrap_or_default(),
    };
    let from = match &rabbit_url {
        Some(u) if u.profile.version() != version => format!(
            " (Warren) against RabbitMQ {}, on what both releases answer alike",
            u.profile.version()
        ),
        Some(_) => ", read from the RabbitMQ given".to_owned(),
        None => ", against the recorded expectations".to_owned(),
    };
    println!("profile: RabbitMQ {version}{from}");
    let profile = warren_broker::Profile::new(version);
    // Without a RabbitMQ of that release, only the versions:: scenarios have
    // expectations for it (each cites its source line); the rest were recorded
    // against RabbitMQ 3.10 and would report 3.10's answers as Warren's failures
    // (a 4.3 refuses their transient queues, for one).
    let scenarios: Vec<_> =
        if rabbit_url.is_none() && version != warren_broker::RabbitVersion::default() {
            let only: Vec<_> = scenarios
                .into_iter()
                .filter(|s| s.name.starts_with("versions::"))
                .collect();
            println!(
                "profile {version}: the {} versions:: scenarios (the others expect 3.10)",
                only.len()
            );
            only
        } else {
            scenarios
        };
    let warren = match warren_conformance::embedded::Warren::start(&profile).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot start an embedded Warren: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.differential {
        let Some(rabbit) = rabbit_url else {
            eprintln!("--differential needs --rabbitmq URL or AMQP_URL");
            return ExitCode::from(2);
        };
        let code = differential(warren.url().clone(), rabbit, &args).await;
        warren.shutdown().await;
        return code;
    }
    let warren_out = run_all(&scenarios, warren.url(), args.jobs).await;
    warren.shutdown().await;
    let rabbit_out = match &rabbit_url {
        Some(u) => Some(run_all(&scenarios, u, args.jobs).await),
        None => None,
    };
    let report = compare(Some(&warren_out), rabbit_out.as_deref());
    print!("{}", report.table());
    if args.verbose {
        print_details("warren", &warren_out, rabbit_out.as_deref());
        if let Some(r) = &rabbit_out {
            print_details("rabbitmq", r, Some(&warren_out));
        }
    }
    println!("{}", report.summary());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the differential property test and reports the minimal divergence, if any.
async fn differential(warren_url: Url, rabbit: Url, args: &Args) -> ExitCode {
    let handle = tokio::runtime::Handle::current();
    let (cases, max_len, without) = (args.cases, args.max_len, args.without.clone());
    if args.verbose {
        warren_conformance::differential::show_first(3);
    }
    // proptest's runner is synchronous; it drives the async cases from a blocking thread.
    let result = tokio::task::spawn_blocking(move || {
        warren_conformance::differential::run(
            &handle,
            &warren_url,
            &rabbit,
            cases,
            max_len,
            &without,
        )
    })
    .await;
    match result {
        Ok(Ok(n)) => {
            let skipped = warren_conformance::differential::irreproducible();
            println!(
                "differential: {n} cases, divergent 0 ({skipped} not reproducible on RabbitMQ)"
            );
            ExitCode::SUCCESS
        }
        Ok(Err((ops, why))) => {
            println!(
                "differential: divergence after shrinking to {} operations:",
                ops.len()
            );
            for op in &ops {
                println!("    {op:?},");
            }
            println!("{why}");
            println!("differential: divergent 1");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("differential runner failed: {e}");
            ExitCode::FAILURE
        }
    }
}
