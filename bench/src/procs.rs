//! Processes the bench drives: the `warren` binary, the Go load generator, and the
//! RabbitMQ node's beam process (read only, for its RSS).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// A `warren` process on a free port. Killed when dropped, so a failed run leaves no
/// broker behind.
pub struct Warren {
    child: Child,
    /// Kept open so that the broker never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub url: String,
    pub pid: u32,
}

impl Warren {
    /// Starts `warren --bind 127.0.0.1:0 [extra]` and reads the URL from the first
    /// stdout line, as any tool would.
    pub async fn start(binary: &Path, extra: &[&str]) -> Result<Warren> {
        let mut child = Command::new(binary)
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("warren exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(format!("warren {extra:?} exited without a URL").into()),
            Err(_) => return Err("warren printed no URL within 10 s".into()),
        }
        Ok(Warren {
            child,
            _stdout: reader,
            url: line.trim().to_owned(),
            pid,
        })
    }

    /// SIGTERM (its graceful shutdown), then waits up to 5 s before killing.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// VmRSS of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// The RabbitMQ node's Erlang VM (`beam.smp`), if it runs on this machine.
pub fn beam_pid() -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() != "beam.smp" {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("rabbit") {
            return Some(pid);
        }
    }
    None
}

/// The Go amqp091 load generator (bench/go/loadgen), built by `cargo xtask bench`.
#[derive(Clone)]
pub struct Go {
    pub binary: PathBuf,
}

impl Go {
    /// Runs one scenario and returns its `RESULT key=value ...` pairs. The run is
    /// bounded twice: the program's own `-timeout`, and a kill 5 s after it.
    pub async fn run(
        &self,
        mode: &str,
        url: &str,
        args: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Vec<(String, f64)>> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(mode)
            .arg("-url")
            .arg(url)
            .arg("-timeout")
            .arg(timeout.as_secs().to_string());
        for (k, v) in args {
            cmd.arg(format!("-{k}")).arg(v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run loadgen: {e}"))?;
        let out = tokio::time::timeout(timeout + Duration::from_secs(5), child.wait_with_output())
            .await
            .map_err(|_| format!("loadgen {mode} did not finish"))??;
        if !out.status.success() {
            return Err(format!(
                "loadgen {mode}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or_else(|| format!("loadgen {mode}: no RESULT line in {stdout:?}"))?;
        Ok(parse_result(line))
    }
}

fn parse_result(line: &str) -> Vec<(String, f64)> {
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

pub fn get(result: &[(String, f64)], key: &str) -> Result<f64> {
    result
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("no {key} in loadgen result").into())
}

/// "2 × Intel(R) Xeon(R) Processor, 2026-11-27 19:50 UTC, load 1.2": the machine
/// statement the table carries.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpus} × {model}, {date}")
}

/// Waits until the machine is quiet: at least 80 % of its CPU time idle over a
/// 100 ms window, for at most 5 s. A broker keeps working after a run (RabbitMQ
/// deletes the queue and collects garbage for some 400 ms after a 200 000-message
/// run here), and on 2 cores that work would land on the next run, whichever
/// broker it measures.
pub async fn settle() {
    fn idle_and_total() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        (fields.len() == 8).then(|| (fields[3] + fields[4], fields.iter().sum()))
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let Some(mut last) = idle_and_total() else {
        return;
    };
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Some(now) = idle_and_total() else {
            return;
        };
        let (idle, total) = (now.0 - last.0, now.1 - last.1);
        if total > 0 && idle * 10 >= total * 8 {
            return;
        }
        last = now;
    }
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_loadgen_result() {
        let r = super::parse_result("secs=0.5 client_secs=0.25 junk");
        assert_eq!(super::get(&r, "secs").unwrap(), 0.5);
        assert_eq!(super::get(&r, "client_secs").unwrap(), 0.25);
        assert!(super::get(&r, "p99_us").is_err());
    }
}
