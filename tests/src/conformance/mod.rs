//! A black-box conformance runner for spec/protocol.md.
//!
//! [`run`] connects to any qexec server (not only qexecd) with the certificates in a
//! [`Config`] and runs one check per requirement it can observe from the wire, each
//! named by its requirement id. Checks speak the protocol with their own raw framing
//! where they must send invalid input (bad length prefixes, oversized declared lengths,
//! truncated frames, unknown variants, frames on the wrong stream kind, streams reset
//! mid-frame), so a server's behaviour is seen exactly as a peer sees it.
//!
//! Every check that makes the server close one stream also checks that the connection
//! and another stream opened before the fault keep working (spec: QX-FRAME-5).
//! The list of requirements and how each is checked (or why it cannot be) is
//! spec/conformance.md.

mod auth;
mod frames;
mod info;
mod lifetime;
mod limits;
mod list;
mod messages;
mod output_streams;
mod streams;
mod terminal;
pub mod wire;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use qexec_tls::CertKeyPem;

/// Where the server is and who the runner is.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's UDP address.
    pub addr: SocketAddr,
    /// The name the server certificate must be valid for.
    pub server_name: String,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_pem: String,
    /// The main identity: a client with role `user` (or `admin`).
    pub user: CertKeyPem,
    /// A second identity with role `user`, for the authorization checks.
    pub user2: Option<CertKeyPem>,
    /// An identity with role `admin`.
    pub admin: Option<CertKeyPem>,
    /// An identity with role `viewer`.
    pub viewer: Option<CertKeyPem>,
    /// Longest wait for any single answer.
    pub wait: Duration,
    /// How long the server allows for a request to arrive complete; the runner waits
    /// this plus [`Config::wait`] for the `Timeout` reset (spec: QX-LIMIT-9).
    pub request_deadline: Duration,
}

impl Config {
    /// A configuration with the default waits (10 s per answer, the protocol's 10 s
    /// request deadline) and no extra identities.
    pub fn new(addr: SocketAddr, ca_pem: String, user: CertKeyPem) -> Self {
        Self {
            addr,
            server_name: "localhost".to_owned(),
            ca_pem,
            user,
            user2: None,
            admin: None,
            viewer: None,
            wait: Duration::from_secs(10),
            request_deadline: qexec_protocol::limits::REQUEST_DEADLINE,
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server behaved as the requirement says; what was seen.
    Pass(String),
    /// It did not: what was expected and what was seen.
    Fail(String),
    /// The check could not run against this server/configuration: why.
    Skip(String),
}

impl Outcome {
    fn pass(what: impl Into<String>) -> Self {
        Self::Pass(what.into())
    }

    fn fail(what: impl Into<String>) -> Self {
        Self::Fail(what.into())
    }

    fn skip(why: impl Into<String>) -> Self {
        Self::Skip(why.into())
    }
}

/// A check's future.
type CheckFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One check: a requirement id, what is checked, and the check itself.
#[derive(Clone, Copy)]
pub struct Check {
    /// The requirement id in spec/protocol.md.
    pub id: &'static str,
    /// What the check sends and expects, in a few words.
    pub what: &'static str,
    run: for<'a> fn(&'a Config) -> CheckFuture<'a>,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("id", &self.id)
            .field("what", &self.what)
            .finish()
    }
}

/// Builds a [`Check`] from an `async fn(&Config) -> Outcome`.
macro_rules! check {
    ($id:literal, $what:literal, $f:path) => {
        $crate::conformance::Check::new($id, $what, |c| Box::pin($f(c)))
    };
}
use check;

impl Check {
    const fn new(
        id: &'static str,
        what: &'static str,
        run: for<'a> fn(&'a Config) -> CheckFuture<'a>,
    ) -> Self {
        Self { id, what, run }
    }
}

/// Every check, in the order of spec/protocol.md.
pub fn checks() -> Vec<Check> {
    let mut all = Vec::new();
    all.extend(frames::checks());
    all.extend(streams::checks());
    all.extend(lifetime::checks());
    all.extend(messages::checks());
    all.extend(list::checks());
    all.extend(info::checks());
    all.extend(limits::checks());
    all.extend(auth::checks());
    all.extend(terminal::checks());
    all
}

/// The result of one check run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The requirement id.
    pub id: &'static str,
    /// What was checked.
    pub what: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tag, detail) = match &self.outcome {
            Outcome::Pass(d) => ("PASS", d),
            Outcome::Fail(d) => ("FAIL", d),
            Outcome::Skip(d) => ("SKIP", d),
        };
        write!(f, "{tag} {} — {}: {detail}", self.id, self.what)
    }
}

/// The results of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One result per check run, in order.
    pub results: Vec<CheckResult>,
}

impl Report {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    /// Checks that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass(_)))
    }

    /// Checks that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }

    /// Checks that were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }

    /// The summary line: `N passed, M failed` and `, K skipped` when some were.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            s.push_str(&format!(", {} skipped", self.skipped()));
        }
        s
    }
}

/// Why `--only` could not be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no conformance check for requirement {id}; run without --only to list every check, \
     or see spec/conformance.md"
)]
pub struct UnknownCheck {
    /// The id asked for.
    pub id: String,
}

/// The checks to run: all, or those whose id is in `only` (exact ids, or a prefix
/// ending in `-` such as `QX-FRAME-`).
pub fn select(only: &[String]) -> Result<Vec<Check>, UnknownCheck> {
    let all = checks();
    if only.is_empty() {
        return Ok(all);
    }
    let matches = |c: &Check, o: &str| c.id == o || (o.ends_with('-') && c.id.starts_with(o));
    if let Some(o) = only.iter().find(|o| !all.iter().any(|c| matches(c, o))) {
        return Err(UnknownCheck { id: o.clone() });
    }
    Ok(all
        .into_iter()
        .filter(|c| only.iter().any(|o| matches(c, o)))
        .collect())
}

/// Runs `checks` one after the other against the server of `config`, calling
/// `on_result` as each one ends (the binary prints there).
pub async fn run(
    config: &Config,
    checks: &[Check],
    mut on_result: impl FnMut(&CheckResult),
) -> Report {
    let mut report = Report::default();
    // A generous bound per check: the slowest waits for the request deadline.
    let bound = config.request_deadline + config.wait * 3;
    for check in checks {
        let outcome = match tokio::time::timeout(bound, (check.run)(config)).await {
            Ok(o) => o,
            Err(_) => Outcome::fail(format!("check did not finish within {bound:?}")),
        };
        let result = CheckResult {
            id: check.id,
            what: check.what,
            outcome,
        };
        on_result(&result);
        report.results.push(result);
    }
    report
}
