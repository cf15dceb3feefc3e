//! `cargo xtask bench [--quick] [--rabbitmq URL] [--rounds N] [--out FILE]`: builds the
//! release `warren` binary, the `warren-bench` orchestrator and the Go load generator,
//! then runs the comparison with RabbitMQ.
//!
//! The full run writes `docs/bench.md`; `--quick` (a smoke run for CI, under a minute)
//! writes into the target directory unless `--out` says otherwise, so that smoke
//! numbers never replace the published table. Charts of the table (`bench-rates.svg`,
//! `bench-times.svg`) go beside it; `cargo xtask bench --charts FILE` redraws them
//! from a report already written, without running anything.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Debian's golang-github-rabbitmq-amqp091-go-dev installs the client here; GOPATH
/// mode builds against it with no module download.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

pub fn bench(args: Vec<String>) -> ExitCode {
    if let Some(i) = args.iter().position(|a| a == "--charts") {
        let Some(report) = args.get(i + 1) else {
            eprintln!("xtask bench: --charts needs the report's path");
            return ExitCode::from(2);
        };
        return charts(Path::new(report));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    eprintln!("xtask bench: building warren and warren-bench (release)");
    let built = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "--package",
            "warren-broker",
            "--package",
            "warren-bench",
            "--bins",
        ])
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        eprintln!("xtask bench: cargo build failed");
        return ExitCode::FAILURE;
    }

    let out_dir = target.join("bench");
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("xtask bench: cannot create {}: {e}", out_dir.display());
        return ExitCode::FAILURE;
    }
    let loadgen = out_dir.join("loadgen");
    eprintln!("xtask bench: building the Go load generator (bench/go/loadgen)");
    let gopath = std::env::var("WARREN_BENCH_GOPATH").unwrap_or_else(|_| DEBIAN_GOPATH.into());
    let go = Command::new("go")
        .current_dir(root.join("bench/go/loadgen"))
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", out_dir.join("gocache"))
        .arg("build")
        .arg("-o")
        .arg(&loadgen)
        .arg(".")
        .status();
    match go {
        Ok(s) if s.success() => {}
        Ok(_) => {
            eprintln!(
                "xtask bench: go build failed; is Go's amqp091 in {gopath}? \
                 (apt-get install golang-github-rabbitmq-amqp091-go-dev)"
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!(
                "xtask bench: cannot run go ({e}); install it with \
                 `apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev`"
            );
            return ExitCode::FAILURE;
        }
    }

    // The `clients` section's other clients: Go's amqp091 as above, pika and
    // amqplib from their registries into the target directory. A client that does
    // not install leaves its rows saying so; the rest of the bench still runs.
    let go_clients = out_dir.join("go-clients");
    let built = Command::new("go")
        .current_dir(root.join("bench/go/clients"))
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", out_dir.join("gocache"))
        .arg("build")
        .arg("-o")
        .arg(&go_clients)
        .arg(".")
        .status();
    let go_clients = matches!(built, Ok(s) if s.success()).then_some(go_clients);
    install_clients(&out_dir);

    let quick = args.iter().any(|a| a == "--quick");
    let mut pass = args.clone();
    let report: PathBuf = match args.iter().position(|a| a == "--out") {
        Some(i) => args.get(i + 1).map(PathBuf::from).unwrap_or_default(),
        None => {
            let out = if quick {
                out_dir.join("bench-quick.md")
            } else {
                root.join("docs/bench.md")
            };
            pass.push("--out".into());
            pass.push(out.to_string_lossy().into_owned());
            out
        }
    };
    let status = Command::new(target.join("release/warren-bench"))
        .current_dir(&root)
        .arg("--warren")
        .arg(target.join("release/warren"))
        .arg("--go")
        .arg(&loadgen)
        .args(
            go_clients
                .iter()
                .flat_map(|p| [std::ffi::OsStr::new("--go-clients"), p.as_os_str()]),
        )
        .arg("--bench-dir")
        .arg(&out_dir)
        .args(pass)
        .status();
    match status {
        Ok(s) if s.success() => charts(&report),
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask bench: cannot run warren-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Draws the report's charts beside it.
fn charts(report: &Path) -> ExitCode {
    match crate::charts::write_beside(report) {
        Ok(written) => {
            for path in written {
                eprintln!("xtask bench: wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "xtask bench: cannot draw the charts of {}: {e}",
                report.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// pika in a virtualenv (`venv/`) and amqplib in `node/`, both under `dir`; each step
/// skipped when already there, and only warned about when it fails.
fn install_clients(dir: &Path) {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let has_pika = || {
        Command::new(&python)
            .args(["-c", "import pika"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_pika() {
        eprintln!("xtask bench: installing pika into {}", venv.display());
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status();
        let installed = made.is_ok_and(|s| s.success())
            && Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "pika",
                ])
                .status()
                .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("xtask bench: pika could not be installed; its rows will say so");
        }
    }
    let node = dir.join("node");
    if !node.join("node_modules/amqplib").exists() {
        eprintln!("xtask bench: installing amqplib into {}", node.display());
        let _ = std::fs::create_dir_all(&node);
        let installed = Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&node)
            .args(["--silent", "--no-audit", "--no-fund", "amqplib"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("xtask bench: amqplib could not be installed; its rows will say so");
        }
    }
}
