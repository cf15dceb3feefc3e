//! Transcripts: what a scenario observed, normalized so two brokers can be compared.
//!
//! Names that differ between runs for reasons no client may rely on are replaced:
//! the random suffix of the scenario's own names is stripped, and server-generated
//! queue names and consumer tags become numbered placeholders in order of appearance.

use std::collections::HashMap;
use std::sync::Mutex;

/// State shared by one scenario run: its transcript and the entities to clean up.
#[derive(Debug, Default)]
pub struct Shared {
    /// The random suffix appended to every name the scenario makes.
    pub suffix: String,
    // std Mutex: never held across an await.
    lines: Mutex<Vec<String>>,
    queues: Mutex<Vec<String>>,
    exchanges: Mutex<Vec<String>>,
}

impl Shared {
    /// A run whose names end in `-{suffix}`.
    pub fn new(suffix: String) -> Self {
        Shared {
            suffix,
            ..Default::default()
        }
    }

    /// Appends one observation.
    pub fn log(&self, line: String) {
        lock(&self.lines).push(line);
    }

    /// Remembers a queue to delete after the scenario.
    pub fn created_queue(&self, name: &str) {
        let mut q = lock(&self.queues);
        if !name.is_empty() && !q.iter().any(|n| n == name) {
            q.push(name.to_string());
        }
    }

    /// Remembers an exchange to delete after the scenario.
    pub fn created_exchange(&self, name: &str) {
        let mut x = lock(&self.exchanges);
        if !name.is_empty() && !name.starts_with("amq.") && !x.iter().any(|n| n == name) {
            x.push(name.to_string());
        }
    }

    /// Queues and exchanges the scenario declared.
    pub fn created(&self) -> (Vec<String>, Vec<String>) {
        (lock(&self.queues).clone(), lock(&self.exchanges).clone())
    }

    /// The normalized transcript.
    pub fn transcript(&self) -> Vec<String> {
        normalize(&lock(&self.lines), &self.suffix)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in one scenario must not hide the transcript of the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Strips `-{suffix}` and replaces server-generated names with placeholders.
pub fn normalize(lines: &[String], suffix: &str) -> Vec<String> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let strip = format!("-{suffix}");
    lines
        .iter()
        .map(|line| {
            let mut line = if suffix.is_empty() {
                line.clone()
            } else {
                line.replace(&strip, "")
            };
            for (prefix, kind, extra) in [
                ("amq.gen-", "gen", "-_"),
                ("amq.ctag-", "ctag", "-_"),
                // Direct reply-to names are base64 with dots between parts.
                ("amq.rabbitmq.reply-to.", "reply", "-_.=+/"),
            ] {
                line = replace_generated(&line, prefix, kind, extra, &mut names, &mut counts);
            }
            mask_timestamps(&line)
        })
        .collect()
}

/// Replaces the value of every `Timestamp(N)` in a printed field table (the `time` of
/// an `x-death` entry) with `_`: a clock reading no two runs share.
fn mask_timestamps(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("Timestamp(") {
        let head = at + "Timestamp(".len();
        out.push_str(&rest[..head]);
        let tail = &rest[head..];
        let len = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        out.push('_');
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

fn replace_generated(
    line: &str,
    prefix: &str,
    kind: &'static str,
    extra: &str,
    names: &mut HashMap<String, String>,
    counts: &mut HashMap<&'static str, usize>,
) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        let tail = &rest[at + prefix.len()..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || extra.contains(c)))
            .unwrap_or(tail.len());
        let name = &rest[at..at + prefix.len() + len];
        let placeholder = names.entry(name.to_string()).or_insert_with(|| {
            let n = counts.entry(kind).or_insert(0);
            *n += 1;
            format!("<{kind}{n}>")
        });
        out.push_str(placeholder);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// The first place where two transcripts differ, as `expected X, got Y`, taking
/// `expected` as the reference broker's.
pub fn first_difference(expected: &[String], got: &[String]) -> Option<String> {
    let n = expected.len().max(got.len());
    (0..n).find_map(|i| match (expected.get(i), got.get(i)) {
        (Some(e), Some(g)) if e == g => None,
        (Some(e), Some(g)) => Some(format!("line {}: expected `{e}`, got `{g}`", i + 1)),
        (Some(e), None) => Some(format!("line {}: expected `{e}`, got nothing", i + 1)),
        (None, Some(g)) => Some(format!("line {}: expected nothing, got `{g}`", i + 1)),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suffix_is_stripped_and_generated_names_numbered() {
        let lines = v(&[
            "ch1 queue.declare-ok queue=amq.gen-AbC_12-x messages=0 consumers=0",
            "ch1 basic.consume-ok tag=amq.ctag-zz9",
            "ch1 basic.deliver tag=amq.ctag-zz9 exchange=x-k3y routing_key=amq.gen-AbC_12-x",
            "ch2 queue.declare-ok queue=amq.gen-Other messages=0 consumers=0",
        ]);
        assert_eq!(
            normalize(&lines, "k3y"),
            v(&[
                "ch1 queue.declare-ok queue=<gen1> messages=0 consumers=0",
                "ch1 basic.consume-ok tag=<ctag1>",
                "ch1 basic.deliver tag=<ctag1> exchange=x routing_key=<gen1>",
                "ch2 queue.declare-ok queue=<gen2> messages=0 consumers=0",
            ])
        );
    }

    #[test]
    fn generated_name_inside_quotes_ends_at_the_quote() {
        let lines = v(&["channel close 405 'queue 'amq.gen-Q1' in use'"]);
        assert_eq!(
            normalize(&lines, ""),
            v(&["channel close 405 'queue '<gen1>' in use'"])
        );
    }

    #[test]
    fn timestamps_masked_and_reply_to_names_numbered() {
        let lines = v(&[
            r#"get-ok headers={x-death: [{count: LongLongInt(1), time: Timestamp(1764270000)}]}"#,
            "deliver reply_to=amq.rabbitmq.reply-to.g1h2AA==.xY+/z= expiration=5",
        ]);
        assert_eq!(
            normalize(&lines, ""),
            v(&[
                r#"get-ok headers={x-death: [{count: LongLongInt(1), time: Timestamp(_)}]}"#,
                "deliver reply_to=<reply1> expiration=5",
            ])
        );
    }

    #[test]
    fn first_difference_names_the_line() {
        let a = v(&["x", "channel close 406"]);
        let b = v(&["x", "channel close 404"]);
        assert_eq!(
            first_difference(&a, &b).as_deref(),
            Some("line 2: expected `channel close 406`, got `channel close 404`")
        );
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(
            first_difference(&a, &a[..1]).as_deref(),
            Some("line 2: expected `channel close 406`, got nothing")
        );
    }
}
