//! `qexec-conformance`: checks a qexec server against spec/protocol.md from the wire.
//!
//! Prints one line per check (`PASS`/`FAIL`/`SKIP`, the requirement id, what was
//! checked, what was seen), then `N passed, M failed[, K skipped]`. Exit status 1 if
//! any check failed, 2 if the runner could not start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use qexec_tests::conformance::{self, Config};
use qexec_tls::CertKeyPem;

/// Check a qexec server against the protocol specification.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  qexec-conformance --addr 127.0.0.1:7443 --ca pki/ca.pem \\\n      --cert pki/users/alice.pem --key pki/users/alice-key.pem \\\n      --cert2 pki/users/bob.pem --key2 pki/users/bob-key.pem\n  qexec-conformance ... --only QX-FRAME-2 --only QX-STREAM-\n\nspec/conformance.md lists every requirement and the check for it."
)]
struct Args {
    /// Server address (UDP), e.g. 127.0.0.1:7443.
    #[arg(long)]
    addr: SocketAddr,
    /// Name the server certificate is valid for.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// CA certificate (PEM) that signed the server's and the clients' certificates.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM) with role user (or admin).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Certificate of a second user (role user), for the authorization checks.
    #[arg(long, requires = "key2")]
    cert2: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "cert2")]
    key2: Option<PathBuf>,
    /// Certificate with role admin.
    #[arg(long, requires = "admin_key")]
    admin_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "admin_cert")]
    admin_key: Option<PathBuf>,
    /// Certificate with role viewer.
    #[arg(long, requires = "viewer_key")]
    viewer_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "viewer_cert")]
    viewer_key: Option<PathBuf>,
    /// Run only these requirement ids (repeatable; `QX-FRAME-` selects a group).
    #[arg(long, value_name = "ID")]
    only: Vec<String>,
    /// Longest wait for one answer, in seconds.
    #[arg(long, default_value_t = 10)]
    wait: u64,
    /// The server's request deadline, in seconds (QX-LIMIT-9).
    #[arg(long, default_value_t = 10)]
    request_deadline: u64,
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn pair(cert: Option<&Path>, key: Option<&Path>, what: &str) -> anyhow::Result<Option<CertKeyPem>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(CertKeyPem {
            cert_pem: read(c, &format!("{what} certificate"))?,
            key_pem: read(k, &format!("{what} key"))?,
        })),
        _ => Ok(None),
    }
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let user = CertKeyPem {
        cert_pem: read(&args.cert, "client certificate")?,
        key_pem: read(&args.key, "client key")?,
    };
    let mut c = Config::new(args.addr, read(&args.ca, "CA certificate")?, user);
    c.server_name = args.server_name.clone();
    c.user2 = pair(args.cert2.as_deref(), args.key2.as_deref(), "second user")?;
    c.admin = pair(
        args.admin_cert.as_deref(),
        args.admin_key.as_deref(),
        "admin",
    )?;
    c.viewer = pair(
        args.viewer_cert.as_deref(),
        args.viewer_key.as_deref(),
        "viewer",
    )?;
    c.wait = Duration::from_secs(args.wait);
    c.request_deadline = Duration::from_secs(args.request_deadline);
    Ok(c)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let prepared = config(&args).and_then(|c| Ok((conformance::select(&args.only)?, c)));
    let (checks, config) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("qexec-conformance: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report = conformance::run(&config, &checks, |r| println!("{r}")).await;
    println!("{}", report.summary());
    if report.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
