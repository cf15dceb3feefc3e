//! Warren's page to watch a run, and the files a failing test can leave behind:
//! the page served live at `/` of the management listener, the same page as one
//! self-contained HTML file holding a trace and a snapshot, and the trace as
//! Mermaid text.
//!
//! The page is plain HTML, CSS and JavaScript kept in `page/` and compiled into
//! the binary: no build step, and nothing fetched from elsewhere, because the
//! machines that run tests are often offline.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::trace::{Direction, TraceEntry, TraceValue};

const TEMPLATE: &str = include_str!("page/page.html");
const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// The page served at `/`. With `auth` (an `Authorization` header value) it calls
/// the API with those credentials at once; without, it asks for a user first.
/// Only a listener on loopback should hand out its credentials this way.
pub fn live(auth: Option<&str>) -> String {
    let config = serde_json::json!({"mode": "live", "auth": auth});
    fill(&config, &serde_json::Value::Null)
}

/// A trace as Mermaid, its connections named as their clients named them in
/// `connection.start-ok` (`connection_name`, else `product`).
pub fn mermaid_named(trace: &[TraceEntry]) -> String {
    let mut names = BTreeMap::new();
    for e in trace.iter().filter(|e| e.method == "connection.start-ok") {
        let name = ["connection_name", "product"]
            .into_iter()
            .find_map(|k| match e.field(k) {
                Some(TraceValue::Text(s)) => Some(s.clone()),
                _ => None,
            });
        names.insert(e.connection, name.unwrap_or_default());
    }
    mermaid(trace, &names)
}

/// The page as one file that needs no server and no network: the trace and the
/// snapshot are inside it. `generated` is when, in ms since the Unix epoch.
pub fn trace_file(snapshot: serde_json::Value, trace: &[TraceEntry], generated: u64) -> String {
    let config = serde_json::json!({"mode": "file"});
    let entries: Vec<serde_json::Value> = trace.iter().map(TraceEntry::to_json).collect();
    let data = serde_json::json!({
        "generated_ms": generated,
        "snapshot": snapshot,
        "trace": entries,
    });
    fill(&config, &data)
}

/// Puts the style, script and data into the template, each at its own marker:
/// the template is cut at the markers first, so nothing in the data is ever read
/// as a marker.
fn fill(config: &serde_json::Value, data: &serde_json::Value) -> String {
    let parts = [
        ("/*STYLE*/", STYLE.to_owned()),
        ("/*CONFIG*/", script_json(config)),
        ("/*DATA*/", script_json(data)),
        ("/*SCRIPT*/", SCRIPT.to_owned()),
    ];
    let mut out = String::with_capacity(TEMPLATE.len() + STYLE.len() + SCRIPT.len());
    let mut rest = TEMPLATE;
    for (marker, value) in parts {
        let (before, after) = rest
            .split_once(marker)
            .expect("the template has every marker");
        out.push_str(before);
        out.push_str(&value);
        rest = after;
    }
    out.push_str(rest);
    out
}

/// JSON to put inside `<script type="application/json">`: `<`, `>` and `&`
/// only ever occur inside JSON strings, where their `\u` escapes mean the same,
/// so a name such as `</script><script>` cannot end the element. U+2028 and
/// U+2029 are escaped too, for any reader that takes the text as JavaScript.
pub fn script_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The trace as a Mermaid sequence diagram: the broker and one participant per
/// connection (named as in `names`, by connection id), an arrow per frame but
/// heartbeats, and a note where a fault fired.
pub fn mermaid(trace: &[TraceEntry], names: &BTreeMap<u64, String>) -> String {
    let mut out = String::from("sequenceDiagram\n    participant B as broker\n");
    let mut seen: Vec<u64> = trace.iter().map(|e| e.connection).collect();
    seen.sort_unstable();
    seen.dedup();
    for id in &seen {
        let name = names.get(id).map(String::as_str).unwrap_or("");
        let label = if name.is_empty() {
            format!("connection {id}")
        } else {
            format!("connection {id} {name}")
        };
        let _ = writeln!(out, "    participant C{id} as {}", mermaid_text(&label));
    }
    for e in trace.iter().filter(|e| e.method != "heartbeat") {
        let (from, to) = match e.direction {
            Direction::In => (format!("C{}", e.connection), "B".to_owned()),
            Direction::Out => ("B".to_owned(), format!("C{}", e.connection)),
        };
        let arrow = if e.method.starts_with("content-") {
            "-->>"
        } else {
            "->>"
        };
        let text = format!("ch{} {}", e.channel, e.summary());
        let _ = writeln!(out, "    {from}{arrow}{to}: {}", mermaid_text(&text));
        for mark in &e.faults {
            let note = format!("fault fired: {} {}", mark.action, mark.detail);
            let _ = writeln!(out, "    Note over B: {}", mermaid_text(note.trim_end()));
        }
    }
    out
}

/// Text Mermaid shows as written: its entity codes for the characters it reads
/// as syntax (`;` ends a statement, `#` starts an entity, `<>` would be HTML in
/// a label), a line break as a space, and long texts cut.
fn mermaid_text(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        match c {
            '#' | ';' | '<' | '>' | '&' | '"' | '%' | '{' | '}' | ':' => {
                let _ = write!(out, "#{};", c as u32);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, direction: Direction, method: &str, key: &str) -> TraceEntry {
        TraceEntry {
            seq,
            connection: 3,
            direction,
            channel: 1,
            method: method.into(),
            fields: vec![("routing_key", TraceValue::Text(key.into()))],
            frame: String::new(),
            faults: Vec::new(),
        }
    }

    #[test]
    fn data_cannot_end_its_script_element() {
        let v = serde_json::json!({"name": "</script><script>alert(1)</script> & \u{2028}"});
        let s = script_json(&v);
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn markers_in_the_data_stay_data() {
        let trace = [entry(
            1,
            Direction::In,
            "basic.publish",
            "/*SCRIPT*/ /*DATA*/",
        )];
        let page = trace_file(serde_json::json!({}), &trace, 0);
        assert_eq!(page.matches("\"use strict\"").count(), 1);
        assert!(page.contains("/*SCRIPT*/ /*DATA*/"));
        assert!(!page.contains("/*CONFIG*/"));
        // Nothing is loaded from elsewhere.
        assert!(!page.contains("src=") && !page.contains("href=\"http"));
    }

    #[test]
    fn mermaid_escapes_what_it_reads_as_syntax() {
        let mut publish = entry(1, Direction::In, "basic.publish", "a;b#c<script>\nd");
        publish.faults.push(crate::trace::FaultMark {
            action: "nack_confirm",
            detail: String::new(),
        });
        let trace = [publish, entry(2, Direction::Out, "basic.nack", "x")];
        let names = BTreeMap::from([(3, "worker: 1".to_owned())]);
        let text = mermaid(&trace, &names);
        assert_eq!(
            text,
            "sequenceDiagram\n    participant B as broker\n    \
             participant C3 as connection 3 worker#58; 1\n    \
             C3->>B: ch1 basic.publish routing_key=#34;a#59;b#35;c#60;script#62;\\nd#34;\n    \
             Note over B: fault fired#58; nack_confirm\n    \
             B->>C3: ch1 basic.nack routing_key=#34;x#34;\n"
        );
    }
}
