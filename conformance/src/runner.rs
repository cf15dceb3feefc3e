//! Runs scenarios against a URL and compares the outcomes of two brokers.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ctx::Ctx;
use crate::driver::Url;
use crate::scenarios::Scenario;
use crate::transcript::first_difference;

/// No scenario may take longer than this, whatever its individual waits add up to.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);

/// What one scenario did against one broker.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario's name.
    pub name: &'static str,
    /// `None` if its expectations held, else why not.
    pub error: Option<String>,
    /// Its normalized transcript.
    pub transcript: Vec<String>,
}

impl Outcome {
    /// Whether the scenario's own expectations held.
    pub fn passed(&self) -> bool {
        self.error.is_none()
    }
}

/// A random suffix, so that runs never collide with each other or with old leftovers.
pub fn suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", h.finish() as u32)
}

/// Runs one scenario against `url` and cleans up after it.
pub async fn run_one(scenario: &Scenario, url: &Url) -> Outcome {
    let cx = Ctx::new(url.clone(), suffix());
    let fut = (scenario.run)(cx.clone());
    // Spawned so that a panic in a scenario is reported rather than tearing down the run.
    let handle = tokio::spawn(tokio::time::timeout(SCENARIO_TIMEOUT, fut));
    let error = match handle.await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(fail))) => Some(fail.to_string()),
        Ok(Err(_)) => Some(format!("scenario took longer than {SCENARIO_TIMEOUT:?}")),
        Err(e) => Some(format!("scenario panicked: {e}")),
    };
    cx.cleanup().await;
    Outcome {
        name: scenario.name,
        error,
        transcript: cx.shared().transcript(),
    }
}

/// Runs every scenario against `url`, `jobs` at a time; outcomes keep the input order.
pub async fn run_all(scenarios: &[Scenario], url: &Url, jobs: usize) -> Vec<Outcome> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut handles = Vec::new();
    for s in scenarios {
        let s = *s;
        let url = url.clone();
        let semaphore = semaphore.clone();
        handles.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            run_one(&s, &url).await
        }));
    }
    let mut out = Vec::new();
    for (h, s) in handles.into_iter().zip(scenarios) {
        out.push(h.await.unwrap_or_else(|e| Outcome {
            name: s.name,
            error: Some(format!("runner task failed: {e}")),
            transcript: Vec::new(),
        }));
    }
    out
}

/// The comparison of Warren's outcomes with RabbitMQ's (either may be absent).
#[derive(Debug, Default)]
pub struct Report {
    /// One row per scenario: name, warren, rabbitmq, difference.
    pub rows: Vec<[String; 4]>,
    /// Scenarios passed and run against Warren.
    pub warren: (usize, usize),
    /// Scenarios passed and run against RabbitMQ.
    pub rabbitmq: (usize, usize),
    /// Scenarios where both ran and their outcome or transcript differ.
    pub divergent: usize,
}

fn status(o: Option<&Outcome>) -> String {
    match o {
        None => "-".into(),
        Some(o) if o.passed() => "pass".into(),
        Some(_) => "FAIL".into(),
    }
}

/// Compares outcomes row by row; RabbitMQ's transcript is the expected one.
pub fn compare(warren: Option<&[Outcome]>, rabbitmq: Option<&[Outcome]>) -> Report {
    let mut report = Report::default();
    let n = warren
        .map_or(0, <[_]>::len)
        .max(rabbitmq.map_or(0, <[_]>::len));
    for i in 0..n {
        let w = warren.and_then(|o| o.get(i));
        let r = rabbitmq.and_then(|o| o.get(i));
        let name = w.or(r).map_or("", |o| o.name);
        if let Some(w) = w {
            report.warren.1 += 1;
            report.warren.0 += usize::from(w.passed());
        }
        if let Some(r) = r {
            report.rabbitmq.1 += 1;
            report.rabbitmq.0 += usize::from(r.passed());
        }
        let mut diff = Vec::new();
        if let Some(e) = w.and_then(|w| w.error.as_ref()) {
            diff.push(format!("warren: {e}"));
        }
        if let Some(e) = r.and_then(|r| r.error.as_ref()) {
            diff.push(format!("rabbitmq: {e}"));
        }
        if let (Some(w), Some(r)) = (w, r) {
            let transcript = first_difference(&r.transcript, &w.transcript);
            if w.passed() != r.passed() || transcript.is_some() {
                report.divergent += 1;
            }
            if let Some(t) = transcript {
                diff.push(format!("transcript {t}"));
            }
        }
        report
            .rows
            .push([name.to_string(), status(w), status(r), diff.join("; ")]);
    }
    report
}

impl Report {
    /// The summary line the xtask contract promises.
    pub fn summary(&self) -> String {
        format!(
            "conformance: warren {}/{}, rabbitmq {}/{}, divergent {}",
            self.warren.0, self.warren.1, self.rabbitmq.0, self.rabbitmq.1, self.divergent
        )
    }

    /// True when every scenario that ran passed and nothing diverged.
    pub fn ok(&self) -> bool {
        self.warren.0 == self.warren.1 && self.rabbitmq.0 == self.rabbitmq.1 && self.divergent == 0
    }

    /// The table, one scenario per line, columns padded.
    pub fn table(&self) -> String {
        let header = ["scenario", "warren", "rabbitmq", "difference"].map(String::from);
        let width = self
            .rows
            .iter()
            .chain([&header])
            .map(|r| r[0].len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let line = format!("{:width$}  {:6}  {:8}  {}", row[0], row[1], row[2], row[3]);
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(name: &'static str, error: Option<&str>, t: &[&str]) -> Outcome {
        Outcome {
            name,
            error: error.map(String::from),
            transcript: t.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn divergence_counts_transcript_and_status_differences() {
        let w = [
            o("a", None, &["x"]),
            o("b", None, &["channel close 404"]),
            o("c", Some("boom"), &[]),
        ];
        let r = [
            o("a", None, &["x"]),
            o("b", None, &["channel close 406"]),
            o("c", None, &[]),
        ];
        let report = compare(Some(&w), Some(&r));
        assert_eq!(
            report.summary(),
            "conformance: warren 2/3, rabbitmq 3/3, divergent 2"
        );
        assert!(!report.ok());
        assert_eq!(
            report.rows[1][3],
            "transcript line 1: expected `channel close 406`, got `channel close 404`"
        );
        assert_eq!(report.rows[2][3], "warren: boom");
    }

    #[test]
    fn one_side_only_never_diverges() {
        let w = [o("a", None, &["x"])];
        let report = compare(Some(&w), None);
        assert_eq!(
            report.summary(),
            "conformance: warren 1/1, rabbitmq 0/0, divergent 0"
        );
        assert!(report.ok());
    }
}
