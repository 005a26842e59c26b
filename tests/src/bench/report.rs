//! The results of one harness run: figures (several runs each), ratios against the
//! baselines of the same run, targets, notes; rendered as markdown and JSON.

use serde_json::{Value, json};

use super::stats::median;

/// One measured quantity: a value per run.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// Stable key for tracking (`cold.qexec_run`, …).
    pub(crate) key: String,
    /// Section number and title (bench/README.md) (`1 cold CLI`, …).
    pub(crate) section: &'static str,
    /// What was measured, for a reader.
    pub(crate) what: String,
    /// Unit of every value.
    pub(crate) unit: &'static str,
    /// One value per run.
    pub(crate) runs: Vec<f64>,
}

impl Figure {
    /// The median over runs.
    pub(crate) fn median(&self) -> f64 {
        median(&self.runs)
    }

    fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// How a ratio is judged against its target.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
    /// The value must be below this.
    Below(f64),
}

impl Goal {
    fn met(self, v: f64) -> bool {
        match self {
            Self::AtLeast(t) => v >= t,
            Self::AtMost(t) => v <= t,
            Self::Below(t) => v < t,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::AtLeast(t) => format!("≥ {}", fmt_num(t)),
            Self::AtMost(t) => format!("≤ {}", fmt_num(t)),
            Self::Below(t) => format!("< {}", fmt_num(t)),
        }
    }
}

/// A ratio of two figures' medians (or one figure against a fixed target).
#[derive(Debug, Clone)]
pub(crate) struct Ratio {
    /// Stable key.
    pub(crate) key: String,
    /// What it compares, for a reader.
    pub(crate) what: String,
    /// The value.
    pub(crate) value: f64,
    /// Unit (`×`, `%`, `MiB`, …).
    pub(crate) unit: &'static str,
    /// The target bench/README.md gives, if any.
    pub(crate) goal: Option<Goal>,
}

/// Where and when the run happened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Machine {
    pub(crate) date_utc: String,
    pub(crate) hostname: String,
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
    pub(crate) mem_total_mib: u64,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) build: &'static str,
    /// The source tree's commit ([`super::procs::source_commit`]).
    pub(crate) commit: String,
    pub(crate) mode: &'static str,
    pub(crate) openssh: String,
    pub(crate) elapsed_s: f64,
}

/// Everything one run produced.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) figures: Vec<Figure>,
    pub(crate) ratios: Vec<Ratio>,
    pub(crate) notes: Vec<String>,
}

/// A number with a sensible count of significant digits.
pub(crate) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    /// Adds a figure; returns its median.
    pub(crate) fn figure(
        &mut self,
        key: &str,
        section: &'static str,
        what: impl Into<String>,
        unit: &'static str,
        runs: Vec<f64>,
    ) -> f64 {
        let f = Figure {
            key: key.into(),
            section,
            what: what.into(),
            unit,
            runs,
        };
        let m = f.median();
        println!(
            "  {:<58} {:>10} {:<5} (min {} – max {}, {} runs)",
            f.what,
            fmt_num(m),
            f.unit,
            fmt_num(f.min()),
            fmt_num(f.max()),
            f.runs.len()
        );
        self.figures.push(f);
        m
    }

    /// Adds a ratio.
    pub(crate) fn ratio(
        &mut self,
        key: &str,
        what: impl Into<String>,
        value: f64,
        unit: &'static str,
        goal: Option<Goal>,
    ) {
        let r = Ratio {
            key: key.into(),
            what: what.into(),
            value,
            unit,
            goal,
        };
        println!(
            "  => {:<55} {:>10} {:<3} {}",
            r.what,
            fmt_num(r.value),
            r.unit,
            match r.goal {
                Some(g) => format!(
                    "target {} {}: {}",
                    g.describe(),
                    r.unit,
                    if g.met(r.value) { "met" } else { "MISSED" }
                ),
                None => String::new(),
            }
        );
        self.ratios.push(r);
    }

    /// Adds a note (a skipped part, a caveat) and prints it.
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  note: {text}");
        self.notes.push(text);
    }

    /// The report as a markdown document.
    pub(crate) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        out.push_str(&format!(
            "### qexec benchmark — {} ({} mode, {} build of {})\n\n",
            m.date_utc, m.mode, m.build, m.commit
        ));
        out.push_str(&format!(
            "Machine: `{}`, {} × {} CPUs, {} MiB RAM, Linux {}; {}. \
             Load average (1/5/15 min) before: {}, after: {}. Run took {:.0} s.\n\n",
            m.hostname,
            m.cpu,
            m.cpus,
            m.mem_total_mib,
            m.kernel,
            if m.openssh.is_empty() {
                "no OpenSSH".to_owned()
            } else {
                m.openssh.clone()
            },
            m.load_before,
            m.load_after,
            m.elapsed_s
        ));
        out.push_str("| # | measurement | median | min – max | runs |\n");
        out.push_str("|---|---|---:|---:|---:|\n");
        for f in &self.figures {
            out.push_str(&format!(
                "| {} | {} | {} {} | {} – {} | {} |\n",
                f.section,
                f.what,
                fmt_num(f.median()),
                f.unit,
                fmt_num(f.min()),
                fmt_num(f.max()),
                f.runs.len()
            ));
        }
        out.push_str("\n| ratio / target check (medians, same run) | value | target | |\n");
        out.push_str("|---|---:|---:|---|\n");
        for r in &self.ratios {
            let (target, verdict) = match r.goal {
                Some(g) => (
                    format!("{} {}", g.describe(), r.unit),
                    if g.met(r.value) { "met" } else { "**missed**" },
                ),
                None => ("—".to_owned(), ""),
            };
            out.push_str(&format!(
                "| {} | {} {} | {} | {} |\n",
                r.what,
                fmt_num(r.value),
                r.unit,
                target,
                verdict
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }

    /// The report as JSON (for tracking across runs).
    pub(crate) fn json(&self) -> Value {
        let m = &self.machine;
        json!({
            "schema": "qexec-bench/1",
            "date_utc": m.date_utc,
            "mode": m.mode,
            "build": m.build,
            "commit": m.commit,
            "machine": {
                "hostname": m.hostname,
                "kernel": m.kernel,
                "cpu": m.cpu,
                "cpus": m.cpus,
                "mem_total_mib": m.mem_total_mib,
                "openssh": m.openssh,
                "load_before": m.load_before,
                "load_after": m.load_after,
            },
            "elapsed_s": m.elapsed_s,
            "figures": self.figures.iter().map(|f| json!({
                "key": f.key,
                "section": f.section,
                "what": f.what,
                "unit": f.unit,
                "median": finite(f.median()),
                "min": finite(f.min()),
                "max": finite(f.max()),
                "runs": f.runs.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "ratios": self.ratios.iter().map(|r| json!({
                "key": r.key,
                "what": r.what,
                "value": finite(r.value),
                "unit": r.unit,
                "target": r.goal.map(Goal::describe),
                "met": r.goal.map(|g| g.met(r.value)),
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// Targets that were missed, by key.
    pub(crate) fn missed(&self) -> Vec<&str> {
        self.ratios
            .iter()
            .filter(|r| r.goal.is_some_and(|g| !g.met(r.value)))
            .map(|r| r.key.as_str())
            .collect()
    }
}

/// JSON has no NaN or infinity: those become null.
fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_and_rendering() {
        let mut r = Report::default();
        let m = r.figure("a", "1 x", "thing", "ms", vec![3.0, 1.0, 2.0]);
        assert_eq!(m, 2.0);
        r.ratio("fast", "a vs b", 40.0, "×", Some(Goal::AtLeast(30.0)));
        r.ratio("slow", "c vs d", 2.0, "×", Some(Goal::AtMost(1.5)));
        r.ratio("info", "e vs f", 2.0, "×", None);
        assert_eq!(r.missed(), vec!["slow"]);
        let md = r.markdown();
        assert!(
            md.contains("| 1 x | thing | 2.00 ms | 1.00 – 3.00 | 3 |"),
            "{md}"
        );
        assert!(md.contains("**missed**"));
        let j = r.json();
        assert_eq!(j["figures"][0]["median"], json!(2.0));
        assert_eq!(j["ratios"][0]["met"], json!(true));
        assert_eq!(j["ratios"][2]["met"], Value::Null);
    }
}
