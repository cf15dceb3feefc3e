//! SVG charts of a bench report: rates and times, Warren beside RabbitMQ, drawn
//! from the Markdown tables `warren-bench` writes (so any section that adds a
//! table with `Warren` and `RabbitMQ` columns shows up without code here).
//!
//! Hand-written SVG: a few rectangles and texts need no plotting library.

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// One figure of a table: its label (with the section it sits in when the label
/// does not say the client) and one value per series.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub label: String,
    pub values: Vec<(String, f64)>,
}

/// What a chart plots: rates (higher is better) or times (lower is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rate,
    Time,
}

impl Kind {
    fn title(self) -> &'static str {
        match self {
            Kind::Rate => "Rates (messages per second, log scale; longer is better)",
            Kind::Time => "Times (µs, log scale; shorter is better)",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Rate => "/s",
            Kind::Time => "µs",
        }
    }
}

/// Writes `bench-rates.svg` and `bench-times.svg` beside `report`; returns the
/// files written (none for a kind with no figure).
pub fn write_beside(report: &Path) -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(report)?;
    let dir = report.parent().unwrap_or(Path::new("."));
    let mut written = Vec::new();
    for (kind, name) in [
        (Kind::Rate, "bench-rates.svg"),
        (Kind::Time, "bench-times.svg"),
    ] {
        let figures = figures(&text, kind);
        if figures.is_empty() {
            continue;
        }
        let path = dir.join(name);
        std::fs::write(&path, svg(&figures, kind))?;
        written.push(path);
    }
    Ok(written)
}

/// Every row of every table that has a `Warren` and a `RabbitMQ` column, whose
/// values are of `kind`. The series are the columns naming a broker (`Warren`,
/// `Warren --data-dir`, `RabbitMQ`), not the ratios.
pub fn figures(markdown: &str, kind: Kind) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix('#') {
            heading = h.trim_start_matches('#').trim().to_owned();
            continue;
        }
        if !line.starts_with('|') {
            continue;
        }
        let header = cells(line);
        // The separator row follows a header.
        if !lines
            .peek()
            .is_some_and(|l| l.starts_with("| ---") || l.starts_with("|---"))
        {
            continue;
        }
        lines.next();
        let series: Vec<(usize, &str)> = header
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, h)| {
                (h.starts_with("Warren") || h.starts_with("RabbitMQ")) && !h.contains('÷')
            })
            .map(|(i, h)| (i, h.as_str()))
            .collect();
        let has = |name: &str| series.iter().any(|(_, h)| *h == name);
        let chart = has("Warren") && has("RabbitMQ");
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            if !chart {
                continue;
            }
            let row = cells(row);
            let Some(label) = row.first() else { continue };
            let values: Vec<(String, f64)> = series
                .iter()
                .filter_map(|(i, h)| {
                    let (v, unit) = value(row.get(*i)?)?;
                    (kind_of(unit, label) == Some(kind)).then(|| ((*h).to_owned(), v))
                })
                .collect();
            // Only figures measured on both brokers compare.
            let named = |n: &str| values.iter().any(|(h, _)| h == n);
            if named("Warren") && named("RabbitMQ") {
                let label = if label.contains('(') || heading.is_empty() {
                    label.clone()
                } else {
                    format!("{label} ({heading})")
                };
                out.push(Figure { label, values });
            }
        }
    }
    out
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

/// `159 319 msg/s` → (159319, "msg/s"); `51.9 µs` → (51.9, "µs"); `1 040` →
/// (1040, ""). Digits are grouped with spaces (`fmt_num` writes U+202F, the
/// narrow no-break space).
fn value(cell: &str) -> Option<(f64, &str)> {
    let cell = cell.trim();
    let end = cell
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || c.is_whitespace()))
        .map_or(cell.len(), |(i, _)| i);
    let digits: String = cell[..end]
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v: f64 = digits.parse().ok()?;
    Some((v, cell[end..].trim()))
}

/// A unit says what a value is; a bare number (the clients' tables say their
/// units in prose) is a time when its label names one.
fn kind_of(unit: &str, label: &str) -> Option<Kind> {
    match unit {
        u if u.ends_with("/s") => Some(Kind::Rate),
        "µs" | "us" | "ms" => Some(Kind::Time),
        "" => {
            let l = label.to_ascii_lowercase();
            let timed = ["round trip", "latency", "p50", "p99", "connect"];
            Some(if timed.iter().any(|t| l.contains(t)) {
                Kind::Time
            } else {
                Kind::Rate
            })
        }
        _ => None,
    }
}

/// Each series' colour: Warren's blues, RabbitMQ's orange (its brand colour).
fn colour(series: &str) -> &'static str {
    match series {
        "Warren" => "#2563eb",
        "RabbitMQ" => "#f97316",
        _ if series.starts_with("Warren") => "#93c5fd",
        _ => "#9ca3af",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0} k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A power of ten as an axis says it: 0.1, 1, 10, 100, 1 k, 10 k, 100 k, 1 M.
fn decade(v: f64) -> String {
    let (scaled, suffix) = if v >= 1e6 {
        (v / 1e6, " M")
    } else if v >= 1e3 {
        (v / 1e3, " k")
    } else {
        (v, "")
    };
    format!("{}{suffix}", (scaled * 10.0).round() / 10.0)
}

/// Grouped horizontal bars on a log scale: one group per figure, one bar per
/// series, the value written at the end of each bar.
pub fn svg(figures: &[Figure], kind: Kind) -> String {
    const LABEL_W: f64 = 430.0;
    const PLOT_W: f64 = 420.0;
    const BAR_H: f64 = 11.0;
    const GAP: f64 = 10.0;
    const TOP: f64 = 52.0;
    let all = figures
        .iter()
        .flat_map(|f| f.values.iter().map(|(_, v)| *v));
    let max = all.clone().fold(f64::MIN, f64::max).max(1.0);
    let min = all.fold(f64::MAX, f64::min).max(0.1);
    let lo = 10f64.powf(min.log10().floor());
    let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0);
    let x =
        |v: f64| LABEL_W + PLOT_W * ((v.max(lo)).log10() - lo.log10()) / (hi.log10() - lo.log10());
    let mut series: Vec<&str> = Vec::new();
    for f in figures {
        for (s, _) in &f.values {
            if !series.contains(&s.as_str()) {
                series.push(s);
            }
        }
    }
    let group_h = |f: &Figure| f.values.len() as f64 * BAR_H + GAP;
    let height = TOP + figures.iter().map(group_h).sum::<f64>() + 30.0;
    let width = LABEL_W + PLOT_W + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="8" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(kind.title())
    );
    let mut lx = 8.0;
    for name in &series {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="28" width="12" height="10" fill="{}"/><text x="{}" y="37">{}</text>"#,
            colour(name),
            lx + 16.0,
            escape(name)
        );
        lx += 28.0 + 7.0 * name.chars().count() as f64;
    }
    // Decades, as grid lines.
    let mut tick = lo;
    while tick <= hi * 1.001 {
        let tx = x(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{:.1}" stroke="#e5e7eb"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#6b7280">{}{}</text>"##,
            height - 24.0,
            height - 10.0,
            decade(tick),
            if kind == Kind::Time { " µs" } else { "" }
        );
        tick *= 10.0;
    }
    let mut y = TOP;
    for f in figures {
        let mid = y + f.values.len() as f64 * BAR_H / 2.0 + 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{mid:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            escape(&f.label)
        );
        for (name, v) in &f.values {
            let w = (x(*v) - LABEL_W).max(1.0);
            let _ = writeln!(
                s,
                r##"<rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{} {}: {} {}</title></rect><text x="{:.1}" y="{:.1}" fill="#374151">{}</text>"##,
                BAR_H - 2.0,
                colour(name),
                escape(&f.label),
                escape(name),
                human(*v),
                kind.unit(),
                LABEL_W + w + 4.0,
                y + BAR_H - 3.0,
                human(*v)
            );
            y += BAR_H;
        }
        y += GAP;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "# Benchmarks\n\n\
| figure | Warren | RabbitMQ | Warren ÷ RabbitMQ | target |\n\
| --- | ---: | ---: | ---: | --- |\n\
| publish 16 B (Go amqp091) | 159 319 msg/s | 97 477 msg/s | 1.63× | ≥ 3× ✘ |\n\
| round trip, p50 (lapin) | 43.7 µs | 108 µs | 0.40× |  |\n\
| idle RSS | 4.41 MB | 378 MB | 0.01× |  |\n\
| in-process cycle | 214 µs | n/a (a node takes seconds to start) | — |  |\n\
\n\
| client | into the read-only sink | into Warren | into RabbitMQ |\n\
| --- | ---: | ---: | ---: |\n\
| lapin | 93 508 msg/s | 75 783 msg/s | 69 404 msg/s |\n\
\n\
### pika <script>\n\n\
| pattern | Warren | Warren --data-dir | RabbitMQ | Warren ÷ RabbitMQ | --data-dir ÷ RabbitMQ |\n\
| --- | ---: | ---: | ---: | ---: | ---: |\n\
| publish | 12 000 | 9 000 | 6 000 | 2.00× | 1.50× |\n\
| round trip p50 | 150 | 160 | 300 | 0.50× | 0.53× |\n";

    #[test]
    fn rows_of_any_table_with_both_brokers_are_read_generically() {
        let rates = figures(REPORT, Kind::Rate);
        assert_eq!(
            rates,
            vec![
                Figure {
                    label: "publish 16 B (Go amqp091)".into(),
                    values: vec![("Warren".into(), 159_319.0), ("RabbitMQ".into(), 97_477.0)],
                },
                Figure {
                    label: "publish (pika <script>)".into(),
                    values: vec![
                        ("Warren".into(), 12_000.0),
                        ("Warren --data-dir".into(), 9_000.0),
                        ("RabbitMQ".into(), 6_000.0)
                    ],
                },
            ]
        );
        let times = figures(REPORT, Kind::Time);
        let labels: Vec<&str> = times.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(
            labels,
            ["round trip, p50 (lapin)", "round trip p50 (pika <script>)"]
        );
        assert_eq!(times[0].values[0], ("Warren".into(), 43.7));
    }

    #[test]
    fn the_chart_draws_a_bar_per_value_and_escapes_labels() {
        let svg = svg(&figures(REPORT, Kind::Rate), Kind::Rate);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<title>").count(), 5);
        assert!(svg.contains("pika &lt;script&gt;") && !svg.contains("<script>"));
        assert!(svg.contains(">159 k</text>"));
    }
}
