//! The farm's accounts: counts per class and per worker, the findings, the inputs that
//! did not run; the live progress line, the final summary (text and `--json`) and the
//! farm's exit status.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use qexec_client::units::format_duration;

use super::classify::Class;
use crate::render::escape_str;

/// Exit status: every input ran, nothing found.
pub(super) const EXIT_CLEAN: u8 = 0;
/// Exit status: every input ran, at least one finding (crash, OOM, timeout).
pub(super) const EXIT_FINDINGS: u8 = 1;
/// Exit status: the farm could not do all its work (see [`Tally::exit_status`]).
pub(super) const EXIT_FARM_ERROR: u8 = 2;

/// Findings listed in the human summary (all of them are under `--out` and in
/// `--json`).
const LISTED_FINDINGS: usize = 50;

/// The classes in the order the summary gives them.
const KINDS: [&str; 9] = [
    "ok",
    "exit",
    "crash",
    "oom",
    "timeout",
    "failed-to-start",
    "killed",
    "stopped",
    "lost",
];

/// What one worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WorkerJson {
    /// Its name (the profile name).
    pub(super) name: String,
    /// Jobs that ran to an end on it.
    pub(super) runs: u64,
    /// Of those, findings.
    pub(super) findings: u64,
    /// Jobs lost with it (worker died or went away).
    pub(super) lost: u64,
}

/// An input that did not run to an end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NotRunJson {
    /// The input file.
    pub(super) input: String,
    /// Why: `lost on w2 (…)`, `interrupted`, `unreadable: …`, `no worker: …`.
    pub(super) reason: String,
}

/// One finding in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FindingRef {
    /// `crash SIGSEGV`, `oom`, `timeout`.
    pub(super) label: String,
    /// The input file.
    pub(super) input: String,
    /// Its stored copy under `--out`.
    pub(super) entry: String,
    /// False when the same input with the same kind was already stored.
    pub(super) new: bool,
}

/// The final `--json` line: `{"event":"summary", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SummaryJson {
    /// Input files found under `--corpus`.
    pub(super) inputs: u64,
    /// Inputs whose job ran to an end (any class but lost).
    pub(super) finished: u64,
    /// Jobs that ran to an end, retries included.
    pub(super) execs: u64,
    /// Wall-clock time of the farm, ms.
    pub(super) elapsed_ms: u64,
    /// `execs` per second of `elapsed_ms`.
    pub(super) execs_per_s: f64,
    /// Inputs per class (`ok`, `exit`, `crash`, `oom`, `timeout`, `failed_to_start`,
    /// `killed`, `stopped`, `lost`), each input counted once, by its last run.
    pub(super) counts: BTreeMap<String, u64>,
    /// Inputs per non-zero exit code.
    pub(super) exit_codes: BTreeMap<i32, u64>,
    /// Jobs resubmitted after their worker was lost.
    pub(super) retried: u64,
    /// Findings stored new in this run.
    pub(super) new_findings: u64,
    /// Findings already stored (same input, same kind).
    pub(super) known_findings: u64,
    /// Per worker.
    pub(super) workers: Vec<WorkerJson>,
    /// Inputs that did not run to an end.
    pub(super) not_run: Vec<NotRunJson>,
    /// True after Ctrl-C (or SIGTERM).
    pub(super) interrupted: bool,
    /// Why the farm stopped early, if it did (a refusal, no worker).
    pub(super) error: Option<String>,
    /// The farm's exit status.
    pub(super) exit: u8,
}

/// The running accounts of one farm.
#[derive(Debug, Default)]
pub(super) struct Tally {
    inputs: u64,
    counts: BTreeMap<&'static str, u64>,
    exit_codes: BTreeMap<i32, u64>,
    execs: u64,
    retried: u64,
    workers: BTreeMap<String, WorkerJson>,
    findings: Vec<FindingRef>,
    not_run: Vec<NotRunJson>,
    interrupted: bool,
    error: Option<String>,
}

impl Tally {
    /// Accounts for a corpus of `inputs` files; `workers` are listed even when they
    /// run nothing.
    pub(super) fn new(inputs: usize, workers: impl IntoIterator<Item = String>) -> Self {
        Self {
            inputs: inputs as u64,
            workers: workers
                .into_iter()
                .map(|name| {
                    (
                        name.clone(),
                        WorkerJson {
                            name,
                            ..WorkerJson::default()
                        },
                    )
                })
                .collect(),
            ..Self::default()
        }
    }

    fn worker(&mut self, name: &str) -> &mut WorkerJson {
        self.workers
            .entry(name.to_owned())
            .or_insert_with(|| WorkerJson {
                name: name.to_owned(),
                ..WorkerJson::default()
            })
    }

    /// A job that ran to an end, with the class of its input.
    pub(super) fn ran(&mut self, worker: Option<&str>, class: &Class) {
        self.execs += 1;
        *self.counts.entry(class.kind()).or_default() += 1;
        if let Class::Exit(code) = class {
            *self.exit_codes.entry(*code).or_default() += 1;
        }
        if let Some(w) = worker {
            let w = self.worker(w);
            w.runs += 1;
            w.findings += u64::from(class.is_finding());
        }
    }

    /// A job lost with its worker; `retry` when it is resubmitted, else the input is
    /// reported as not run with `reason`.
    pub(super) fn lost(&mut self, worker: Option<&str>, input: &str, retry: bool, reason: &str) {
        if let Some(w) = worker {
            self.worker(w).lost += 1;
        }
        if retry {
            self.retried += 1;
        } else {
            *self.counts.entry("lost").or_default() += 1;
            self.not_run.push(NotRunJson {
                input: input.to_owned(),
                reason: reason.to_owned(),
            });
        }
    }

    /// An input that was never run (unreadable, no worker, interrupted).
    pub(super) fn not_run(&mut self, input: &str, reason: &str) {
        self.not_run.push(NotRunJson {
            input: input.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// A finding, stored (`new`) or already known.
    pub(super) fn finding(&mut self, finding: FindingRef) {
        self.findings.push(finding);
    }

    /// The farm was interrupted (Ctrl-C).
    pub(super) fn interrupt(&mut self) {
        self.interrupted = true;
    }

    /// The farm stopped early because of `error` (the first one is kept).
    pub(super) fn fail(&mut self, error: String) {
        self.error.get_or_insert(error);
    }

    /// Inputs with a final class (lost ones included).
    pub(super) fn done(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The farm's exit status: [`EXIT_FARM_ERROR`] when an input did not run to an end
    /// (lost beyond `--retries-lost`, unreadable, no worker), after Ctrl-C, or after an
    /// error that stopped the farm; else [`EXIT_FINDINGS`] when something was found;
    /// else [`EXIT_CLEAN`]. An incomplete run says so first: its findings are still
    /// stored and listed.
    pub(super) fn exit_status(&self) -> u8 {
        if self.interrupted || self.error.is_some() || !self.not_run.is_empty() {
            EXIT_FARM_ERROR
        } else if !self.findings.is_empty() {
            EXIT_FINDINGS
        } else {
            EXIT_CLEAN
        }
    }

    /// The live progress line (no newline): `12.3s  1200/2000 inputs  345 execs/s
    /// crash 3  oom 0  timeout 1  lost 0  workers 4/4`.
    pub(super) fn progress(&self, elapsed: Duration, live: usize, workers: usize) -> String {
        let count = |k| self.counts.get(k).copied().unwrap_or(0);
        format!(
            "{:.1}s  {}/{} inputs  {:.0} execs/s  crash {}  oom {}  timeout {}  lost {}  \
             workers {live}/{workers} live",
            elapsed.as_secs_f64(),
            self.done(),
            self.inputs,
            rate(self.execs, elapsed),
            count("crash"),
            count("oom"),
            count("timeout"),
            count("lost") + self.retried,
        )
    }

    /// The summary of the run so far, taking `elapsed` as its wall-clock time.
    pub(super) fn summary(&self, elapsed: Duration) -> SummaryJson {
        let new_findings = self.findings.iter().filter(|f| f.new).count() as u64;
        SummaryJson {
            inputs: self.inputs,
            finished: self.done() - self.counts.get("lost").copied().unwrap_or(0),
            execs: self.execs,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            execs_per_s: (rate(self.execs, elapsed) * 10.0).round() / 10.0,
            counts: KINDS
                .iter()
                .map(|k| {
                    (
                        k.replace('-', "_"),
                        self.counts.get(k).copied().unwrap_or(0),
                    )
                })
                .collect(),
            exit_codes: self.exit_codes.clone(),
            retried: self.retried,
            new_findings,
            known_findings: self.findings.len() as u64 - new_findings,
            workers: self.workers.values().cloned().collect(),
            not_run: self.not_run.clone(),
            interrupted: self.interrupted,
            error: self.error.clone(),
            exit: self.exit_status(),
        }
    }

    /// The human summary (stdout): totals, classes, workers, the findings (the first
    /// [`LISTED_FINDINGS`]), the inputs not run, and what the exit status means.
    /// Names from the corpus are escaped (a file name can hold control characters).
    pub(super) fn summary_text(&self, elapsed: Duration, out_dir: &str) -> String {
        let s = self.summary(elapsed);
        let mut text = format!(
            "farm: {} inputs, {} finished, {} execs in {}: {:.1} execs/s\n",
            s.inputs,
            s.finished,
            s.execs,
            format_duration(elapsed),
            s.execs_per_s
        );
        let classes: Vec<String> = KINDS
            .iter()
            .filter_map(|k| {
                let n = self.counts.get(k).copied().unwrap_or(0);
                (n > 0).then(|| match *k {
                    "exit" => {
                        let codes: Vec<String> = self
                            .exit_codes
                            .iter()
                            .map(|(c, n)| format!("{c}: {n}"))
                            .collect();
                        format!("exit {n} ({})", codes.join(", "))
                    }
                    _ => format!("{k} {n}"),
                })
            })
            .collect();
        if !classes.is_empty() {
            text.push_str(&format!("  {}\n", classes.join("  ")));
        }
        if s.retried > 0 {
            text.push_str(&format!(
                "  {} job(s) resubmitted after their worker was lost\n",
                s.retried
            ));
        }
        if !s.workers.is_empty() {
            text.push_str("workers:\n");
            let width = s
                .workers
                .iter()
                .map(|w| escape_str(&w.name).chars().count())
                .max()
                .unwrap_or(0);
            for w in &s.workers {
                let name = escape_str(&w.name);
                let pad = width - name.chars().count();
                text.push_str(&format!(
                    "  {name}{}  {} runs  {} findings  {} lost\n",
                    " ".repeat(pad),
                    w.runs,
                    w.findings,
                    w.lost
                ));
            }
        }
        if self.findings.is_empty() {
            text.push_str("findings: none\n");
        } else {
            text.push_str(&format!(
                "findings: {} new, {} already kept (under {}/crashes)\n",
                s.new_findings,
                s.known_findings,
                escape_str(out_dir)
            ));
            for f in self.findings.iter().take(LISTED_FINDINGS) {
                text.push_str(&format!(
                    "  {:<14} {}  -> {}{}\n",
                    f.label,
                    escape_str(&f.input),
                    escape_str(&f.entry),
                    if f.new { "" } else { " (known)" }
                ));
            }
            if self.findings.len() > LISTED_FINDINGS {
                text.push_str(&format!(
                    "  … and {} more (all of them under {}/crashes, and with --json)\n",
                    self.findings.len() - LISTED_FINDINGS,
                    escape_str(out_dir)
                ));
            }
        }
        if !s.not_run.is_empty() {
            text.push_str(&format!("not run: {} input(s)\n", s.not_run.len()));
            for n in s.not_run.iter().take(LISTED_FINDINGS) {
                text.push_str(&format!(
                    "  {}: {}\n",
                    escape_str(&n.input),
                    escape_str(&n.reason)
                ));
            }
            if s.not_run.len() > LISTED_FINDINGS {
                text.push_str(&format!(
                    "  … and {} more (with --json)\n",
                    s.not_run.len() - LISTED_FINDINGS
                ));
            }
        }
        if let Some(e) = &s.error {
            text.push_str(&format!("stopped early: {}\n", escape_str(e)));
        }
        if s.interrupted {
            text.push_str("interrupted: the inputs not run yet were skipped\n");
        }
        text.push_str(match s.exit {
            EXIT_CLEAN => "exit 0: every input ran, nothing found\n",
            EXIT_FINDINGS => "exit 1: every input ran, findings kept\n",
            _ => "exit 2: not every input ran to an end (see above)\n",
        });
        text
    }
}

/// `n` per second of `elapsed` (0 for no time).
fn rate(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(label: &str, input: &str, new: bool) -> FindingRef {
        FindingRef {
            label: label.into(),
            input: input.into(),
            entry: format!("out/crashes/{input}"),
            new,
        }
    }

    #[test]
    fn exit_status_rule() {
        let mut t = Tally::new(3, ["w1".to_owned()]);
        t.ran(Some("w1"), &Class::Ok);
        t.ran(Some("w1"), &Class::Exit(3));
        assert_eq!(t.exit_status(), EXIT_CLEAN);
        t.ran(Some("w1"), &Class::Crash(11));
        t.finding(finding("crash SIGSEGV", "c", true));
        assert_eq!(t.exit_status(), EXIT_FINDINGS);
        // A retried loss is not an input left out; a final one is.
        t.lost(Some("w1"), "d", true, "lost on w1");
        assert_eq!(t.exit_status(), EXIT_FINDINGS);
        t.lost(Some("w1"), "d", false, "lost on w1");
        assert_eq!(t.exit_status(), EXIT_FARM_ERROR);
        let mut i = Tally::new(1, []);
        i.interrupt();
        assert_eq!(i.exit_status(), EXIT_FARM_ERROR);
        let mut e = Tally::new(1, []);
        e.fail("refused".into());
        assert_eq!(e.exit_status(), EXIT_FARM_ERROR);
    }

    #[test]
    fn summary_counts_each_input_once_and_each_worker() {
        let mut t = Tally::new(6, ["w1".to_owned(), "w2".to_owned(), "idle".to_owned()]);
        t.ran(Some("w1"), &Class::Ok);
        t.ran(Some("w2"), &Class::Exit(3));
        t.ran(Some("w2"), &Class::Exit(3));
        t.ran(Some("w1"), &Class::Timeout);
        t.finding(finding("timeout", "loop", true));
        t.lost(Some("w2"), "x", true, "lost on w2");
        t.ran(Some("w1"), &Class::Crash(6));
        t.finding(finding("crash SIGABRT", "abrt", false));
        t.lost(Some("w1"), "y", false, "lost on w1 (connection closed)");
        let s = t.summary(Duration::from_secs(2));
        assert_eq!(s.inputs, 6);
        assert_eq!(s.finished, 5);
        assert_eq!(s.execs, 5);
        assert_eq!(s.execs_per_s, 2.5);
        assert_eq!(s.counts["ok"], 1);
        assert_eq!(s.counts["exit"], 2);
        assert_eq!(s.counts["timeout"], 1);
        assert_eq!(s.counts["crash"], 1);
        assert_eq!(s.counts["lost"], 1);
        assert_eq!(s.counts["failed_to_start"], 0);
        assert_eq!(s.exit_codes[&3], 2);
        assert_eq!(s.retried, 1);
        assert_eq!((s.new_findings, s.known_findings), (1, 1));
        assert_eq!(
            s.workers,
            [
                WorkerJson {
                    name: "idle".into(),
                    ..WorkerJson::default()
                },
                WorkerJson {
                    name: "w1".into(),
                    runs: 3,
                    findings: 2,
                    lost: 1
                },
                WorkerJson {
                    name: "w2".into(),
                    runs: 2,
                    findings: 0,
                    lost: 1
                },
            ]
        );
        assert_eq!(s.exit, EXIT_FARM_ERROR);
        assert_eq!(
            t.summary_text(Duration::from_secs(2), "out"),
            "farm: 6 inputs, 5 finished, 5 execs in 2.00s: 2.5 execs/s
  ok 1  exit 2 (3: 2)  crash 1  timeout 1  lost 1
  1 job(s) resubmitted after their worker was lost
workers:
  idle  0 runs  0 findings  0 lost
  w1    3 runs  2 findings  1 lost
  w2    2 runs  0 findings  1 lost
findings: 1 new, 1 already kept (under out/crashes)
  timeout        loop  -> out/crashes/loop
  crash SIGABRT  abrt  -> out/crashes/abrt (known)
not run: 1 input(s)
  y: lost on w1 (connection closed)
exit 2: not every input ran to an end (see above)
"
        );
    }

    #[test]
    fn a_clean_run_says_so_and_names_are_escaped() {
        let mut t = Tally::new(1, ["w\x1b1".to_owned()]);
        t.ran(Some("w\x1b1"), &Class::Ok);
        let text = t.summary_text(Duration::from_millis(500), "out");
        assert!(text.contains("  ok 1\n"), "{text}");
        assert!(text.contains("findings: none\n"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.ends_with("exit 0: every input ran, nothing found\n"));
        assert_eq!(
            t.progress(Duration::from_secs(1), 1, 2),
            "1.0s  1/1 inputs  1 execs/s  crash 0  oom 0  timeout 0  lost 0  workers 1/2 live"
        );
    }
}
