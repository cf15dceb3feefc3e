//! `cargo xtask`: project automation, kept to the standard library.
//!
//! - `cargo xtask conformance [ARGS]`: builds and runs `warren-conformance` with ARGS
//!   (`--rabbitmq URL`, `--target URL`, `--only SUBSTRING`, `--jobs N`, `--verbose`).
//! - `cargo xtask bench [--quick]`, `cargo xtask fuzz [--seconds N]`: see their modules.
//! - `cargo xtask tidy [--verbose]`: the house rules over the whole workspace (module
//!   docs, file sizes, `unsafe`, leftovers, import circles); `--graph` prints every
//!   crate's module graph instead.

mod bench;
mod charts;
mod fuzz;
mod tidy;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("conformance") => conformance(args.collect()),
        Some("bench") => bench::bench(args.collect()),
        Some("fuzz") => fuzz::run(args.collect()),
        Some("tidy") => {
            let args: Vec<String> = args.collect();
            if args.iter().any(|a| a == "--graph") {
                tidy::report()
            } else {
                tidy::run(args)
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask conformance [--rabbitmq URL | --target URL] [--only SUBSTRING]\n       cargo xtask bench [--quick] | fuzz [--seconds N] | tidy [--verbose | --graph]"
            );
            ExitCode::from(2)
        }
    }
}

/// Runs the conformance binary, passing its exit status through.
fn conformance(args: Vec<String>) -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--package",
            "warren-conformance",
            "--bin",
            "warren-conformance",
            "--",
        ])
        .args(args)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
