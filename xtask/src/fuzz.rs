//! `cargo xtask fuzz`: builds the libFuzzer targets of `fuzz/libfuzzer` with
//! coverage instrumentation on stable Rust and runs each for a while.
//!
//! Stable rustc can instrument for libFuzzer without `-Z` flags: the sancov pass
//! and its LLVM options are plain `-C` options, and libfuzzer-sys builds libFuzzer
//! itself from C++ (a C++ compiler is all it needs), so neither nightly nor
//! cargo-fuzz is required.
//!
//! Usage: `cargo xtask fuzz [--seconds N] [--target NAME]...`. Every target (or
//! each named one) runs N seconds (default 10) from its seeds (`fuzz/seeds/NAME`)
//! plus the corpus kept from earlier runs (`TARGET_DIR/fuzz/corpus/NAME`), with
//! the AMQP dictionary `fuzz/seeds/amqp.dict`. A crash leaves its input in
//! `fuzz/artifacts/NAME/` and makes the command fail. The last line is
//! `fuzz: T targets, E execs, C crashes`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The targets in `fuzz/libfuzzer/fuzz_targets/`, in the order they run.
const TARGETS: &[&str] = &["frame_decode", "connection", "session"];

/// What cargo-fuzz passes for `--sanitizer none`: coverage counters, the PC table
/// and comparison tracing (which lets libFuzzer solve magic values such as method
/// ids), plus `--cfg fuzzing`.
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing";

struct Options {
    seconds: u64,
    targets: Vec<String>,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut opts = Options {
        seconds: 10,
        targets: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                opts.seconds = v.parse().map_err(|_| format!("bad --seconds {v}"))?;
            }
            "--target" => {
                let v = it.next().ok_or("--target needs a name")?;
                if !TARGETS.contains(&v.as_str()) {
                    return Err(format!("unknown target {v}; targets: {TARGETS:?}"));
                }
                opts.targets.push(v);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if opts.targets.is_empty() {
        opts.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(opts)
}

pub fn run(args: Vec<String>) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\nusage: cargo xtask fuzz [--seconds N] [--target NAME]...");
            return ExitCode::from(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fuzz");
    let bins = match build(&root, &target_dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("fuzz: build failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut execs, mut crashes) = (0u64, 0usize);
    for t in &opts.targets {
        match run_target(&root, &target_dir, &bins, t, opts.seconds) {
            Ok(r) => {
                execs += r.execs;
                crashes += r.crashes.len();
                println!(
                    "{t}: {} execs in {:.1} s ({:.0}/s), corpus {} inputs{}",
                    r.execs,
                    r.secs,
                    r.execs as f64 / r.secs.max(0.001),
                    r.corpus,
                    if r.crashes.is_empty() {
                        ""
                    } else {
                        ", CRASHED"
                    }
                );
                for c in &r.crashes {
                    println!(
                        "  reproducer: {} (run: {} {})",
                        c.display(),
                        bins.join(t).display(),
                        c.display()
                    );
                }
            }
            Err(e) => {
                eprintln!("{t}: {e}");
                crashes += 1;
            }
        }
    }
    println!(
        "fuzz: {} targets, {execs} execs, {crashes} crashes",
        opts.targets.len()
    );
    if crashes == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Builds every target; returns the folder holding the binaries.
fn build(root: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let host = host_triple()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        // Not --locked: fuzz/libfuzzer/Cargo.lock must follow when the broker gains
        // a dependency, or the fuzz pass would break on every such change.
        .args(["build", "--release", "--bins", "--target", &host])
        .arg("--manifest-path")
        .arg(root.join("fuzz/libfuzzer/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir.join("build"))
        // An explicit --target keeps RUSTFLAGS off build scripts and proc macros,
        // which must not be instrumented.
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build exited with {status}"));
    }
    Ok(target_dir.join("build").join(host).join("release"))
}

fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV names no host".into())
}

struct Report {
    execs: u64,
    secs: f64,
    corpus: usize,
    crashes: Vec<PathBuf>,
}

fn run_target(
    root: &Path,
    target_dir: &Path,
    bins: &Path,
    name: &str,
    seconds: u64,
) -> Result<Report, String> {
    let corpus = target_dir.join("corpus").join(name);
    let artifacts = root.join("fuzz/artifacts").join(name);
    let logs = target_dir.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let before = list(&artifacts);
    let log_path = logs.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{e}"))?;
    let started = Instant::now();
    // libFuzzer's artifact prefix is a plain string prefix: the slash matters.
    let mut prefix = artifacts.clone().into_os_string();
    prefix.push("/");
    let status = Command::new(bins.join(name))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!(
            "-dict={}",
            root.join("fuzz/seeds/amqp.dict").display()
        ))
        .arg(format!("-artifact_prefix={}", prefix.to_string_lossy()))
        .arg(&corpus)
        .arg(root.join("fuzz/seeds").join(name))
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bins.join(name).display()))?;
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut crashes: Vec<PathBuf> = list(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !status.success() && crashes.is_empty() {
        // A failure that left no input (libFuzzer itself broke): still a failure.
        crashes.push(log_path.clone());
    }
    if !crashes.is_empty() {
        eprintln!("{name}: libFuzzer log {}:", log_path.display());
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
    }
    Ok(Report {
        execs: executions(&text),
        secs,
        corpus: list(&corpus).len(),
        crashes,
    })
}

/// The number of inputs run, from libFuzzer's final stats, or from its last
/// progress line when it stopped on a crash before printing them.
fn executions(log: &str) -> u64 {
    let stat = log.lines().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|v| v.trim().parse().ok())
    });
    stat.unwrap_or_else(|| {
        log.lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .max()
            .unwrap_or(0)
    })
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}
