//! The `warren` binary as a child process, for tests that hand its URL to a
//! program nobody here wrote (pika, kombu, Go's amqp091, Chromium): started with
//! the arguments given, its stdout's URL lines read, killed when the guard drops,
//! whichever way the test ends.

// Each test binary that includes this uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `warren`; dropping it kills the process and reaps it.
pub struct Warren {
    /// The first line it printed: the AMQP URL it serves.
    pub url: String,
    /// The second line, when started with `--management-bind`.
    pub management: Option<String>,
    child: Child,
}

impl Warren {
    /// `warren --bind 127.0.0.1:0` with `args` after it.
    pub fn start(args: &[&str]) -> Warren {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start warren");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = || {
            let mut s = String::new();
            stdout.read_line(&mut s).expect("read a URL line");
            s.trim().to_owned()
        };
        let url = line();
        let management = args.contains(&"--management-bind").then(line);
        Warren {
            url,
            management,
            child,
        }
    }

    /// The port in the AMQP URL.
    pub fn port(&self) -> u16 {
        let after = self.url.rsplit_once(':').expect("a port").1;
        after
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a numeric port")
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `python3` can import every one of `modules` (comma-separated).
pub fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
