//! The results table: one row per figure, Warren beside RabbitMQ, medians of the
//! alternating rounds, and the ratio Warren ÷ RabbitMQ.

use std::fmt::Write as _;

/// A goal from issue 7, checked against the medians.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Warren ÷ RabbitMQ at least this.
    RatioAtLeast(f64),
    /// Warren ÷ RabbitMQ at most this.
    RatioAtMost(f64),
    /// Warren's own figure below this (in the row's unit).
    WarrenBelow(f64),
    /// Warren's own figure above this (in the row's unit).
    WarrenAbove(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast(r) => format!("≥ {r}×"),
            Target::RatioAtMost(r) => format!("≤ {r}×"),
            Target::WarrenBelow(v) => format!("< {} {unit}", fmt_num(v)),
            Target::WarrenAbove(v) => format!("> {} {unit}", fmt_num(v)),
        }
    }

    fn met(self, warren: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::RatioAtLeast(r) => ratio.map(|x| x >= r),
            Target::RatioAtMost(r) => ratio.map(|x| x <= r),
            Target::WarrenBelow(v) => warren.map(|w| w < v),
            Target::WarrenAbove(v) => warren.map(|w| w > v),
        }
    }
}

#[derive(Debug)]
pub struct Row {
    pub figure: String,
    pub unit: &'static str,
    pub target: Option<Target>,
    pub warren: Vec<f64>,
    pub rabbitmq: Vec<f64>,
    /// Printed instead of a value when a side has no samples (e.g. "n/a (no durable
    /// storage yet)").
    pub warren_missing: String,
    pub rabbitmq_missing: String,
    /// The client's ceiling on this row's load (`sink`), where measured: a ratio
    /// target above it is out of any broker's reach, and the row says so.
    pub ceiling: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

/// Which broker a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    Warren,
    RabbitMq,
}

impl Table {
    /// Declares a row (in print order) if it is not there yet.
    pub fn row(&mut self, figure: &str, unit: &'static str, target: Option<Target>) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.figure == figure) {
            return &mut self.rows[i];
        }
        self.rows.push(Row {
            figure: figure.to_owned(),
            unit,
            target,
            warren: Vec::new(),
            rabbitmq: Vec::new(),
            warren_missing: "n/a".into(),
            rabbitmq_missing: "n/a".into(),
            ceiling: None,
        });
        self.rows.last_mut().expect("just pushed")
    }

    pub fn add(&mut self, figure: &str, side: Side, value: f64) {
        let row = self
            .rows
            .iter_mut()
            .find(|r| r.figure == figure)
            .unwrap_or_else(|| panic!("row {figure:?} not declared"));
        match side {
            Side::Warren => row.warren.push(value),
            Side::RabbitMq => row.rabbitmq.push(value),
        }
    }

    /// Markdown, which reads as a table on a terminal too.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| figure | Warren | RabbitMQ | Warren ÷ RabbitMQ | target |\n");
        out.push_str("| --- | ---: | ---: | ---: | --- |\n");
        for r in &self.rows {
            let w = median(&r.warren);
            let q = median(&r.rabbitmq);
            let ratio = match (w, q) {
                (Some(w), Some(q)) if q > 0.0 => Some(w / q),
                _ => None,
            };
            let show = |v: Option<f64>, missing: &str| match v {
                Some(v) => format!("{} {}", fmt_num(v), r.unit),
                None => missing.to_owned(),
            };
            let target = match r.target {
                Some(t) => {
                    let mark = match t.met(w, ratio) {
                        Some(true) => " ✔".to_owned(),
                        Some(false) => match (t, r.ceiling, q) {
                            (Target::RatioAtLeast(want), Some(c), Some(q))
                                if q > 0.0 && c / q < want =>
                            {
                                format!(" ✘ (the client's ceiling: {:.2}×)", c / q)
                            }
                            _ => " ✘".to_owned(),
                        },
                        None => String::new(),
                    };
                    format!("{}{mark}", t.describe(r.unit))
                }
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.figure,
                show(w, &r.warren_missing),
                show(q, &r.rabbitmq_missing),
                ratio.map_or_else(|| "—".to_owned(), |x| format!("{x:.2}×")),
                target
            );
        }
        out
    }
}

pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Three significant figures at most, thousands grouped with a thin space, so rates,
/// microseconds and megabytes all read at a glance.
pub fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push('\u{202f}');
            }
            out.push(c);
        }
        out
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(fmt_num(1_234_567.0), "1\u{202f}234\u{202f}567");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(1.234), "1.23");
    }

    #[test]
    fn table_shows_ratio_target_and_missing() {
        let mut t = Table::default();
        t.row("publish", "msg/s", Some(Target::RatioAtLeast(3.0)));
        t.add("publish", Side::Warren, 300.0);
        t.add("publish", Side::RabbitMq, 100.0);
        t.row("confirmed", "msg/s", None).warren_missing = "n/a (x)".into();
        let md = t.markdown();
        assert!(
            md.contains("| publish | 300 msg/s | 100 msg/s | 3.00× | ≥ 3× ✔ |"),
            "{md}"
        );
        assert!(md.contains("| confirmed | n/a (x) | n/a | — |  |"), "{md}");
    }

    #[test]
    fn a_target_above_the_clients_ceiling_says_so() {
        let mut t = Table::default();
        for (figure, ceiling) in [("bound", 250.0), ("free", 400.0)] {
            t.row(figure, "msg/s", Some(Target::RatioAtLeast(3.0)))
                .ceiling = Some(ceiling);
            t.add(figure, Side::Warren, 200.0);
            t.add(figure, Side::RabbitMq, 100.0);
        }
        let md = t.markdown();
        assert!(
            md.contains(
                "| bound | 200 msg/s | 100 msg/s | 2.00× | ≥ 3× ✘ (the client's ceiling: 2.50×) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| free | 200 msg/s | 100 msg/s | 2.00× | ≥ 3× ✘ |"),
            "{md}"
        );
    }
}
