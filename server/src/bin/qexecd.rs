//! `qexecd`, the qexec server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use qexec_server::pki;
use qexec_server::service::{Server, ServerConfig, TlsSource, default_state_dir};

/// qexecd: run jobs for qexec clients over QUIC with mutual TLS.
///
/// With no flags it uses the PKI written by `qexec certs init` (ca.pem, server.pem,
/// server-key.pem in $QEXEC_CONFIG_DIR, else $XDG_CONFIG_HOME/qexec, else
/// ~/.config/qexec) and listens on 127.0.0.1:7443.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  qexec certs init && qexecd\n  qexecd --listen [::1]:7443\n  \
                  qexecd --ca pki/ca.pem --cert pki/server.pem --key pki/server-key.pem\n\n\
                  Logs: RUST_LOG=info (default), RUST_LOG=qexec::audit=info,warn …"
)]
struct Args {
    /// UDP address to listen on (IPv6: [::1]:7443).
    #[arg(long, env = "QEXECD_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// PKI directory to take ca.pem, server.pem and server-key.pem from.
    #[arg(long, env = "QEXECD_PKI_DIR")]
    pki_dir: Option<PathBuf>,
    /// CA certificate that signs client certificates (PEM) [default: <pki-dir>/ca.pem].
    #[arg(long, env = "QEXECD_CA")]
    ca: Option<PathBuf>,
    /// Server certificate chain (PEM) [default: <pki-dir>/server.pem].
    #[arg(long, env = "QEXECD_CERT")]
    cert: Option<PathBuf>,
    /// Server private key (PEM) [default: <pki-dir>/server-key.pem].
    #[arg(long, env = "QEXECD_KEY")]
    key: Option<PathBuf>,
    /// Where job output logs are kept [default: /var/lib/qexec for root, else
    /// $XDG_STATE_HOME/qexec].
    #[arg(long, env = "QEXECD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Run jobs without namespace isolation.
    #[arg(long, env = "QEXECD_NO_ISOLATION")]
    no_isolation: bool,
    /// Most jobs running at once.
    #[arg(long, env = "QEXECD_MAX_JOBS", default_value_t = 1024)]
    max_jobs: usize,
    /// Most jobs one user may have running at once.
    #[arg(long, env = "QEXECD_MAX_JOBS_PER_USER", default_value_t = 256)]
    max_jobs_per_user: usize,
    /// Most client connections at once.
    #[arg(long, env = "QEXECD_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Most concurrent control streams per connection.
    #[arg(long, env = "QEXECD_MAX_STREAMS", default_value_t = 256)]
    max_streams: u32,
    /// Most concurrent subscriptions (output streams) per connection.
    #[arg(long, env = "QEXECD_MAX_SUBSCRIPTIONS", default_value_t = 1024)]
    max_subscriptions: usize,
    /// Seconds without traffic after which a connection is closed.
    #[arg(long, env = "QEXECD_IDLE_TIMEOUT", default_value_t = 60)]
    idle_timeout: u64,
}

impl Args {
    fn config(&self) -> ServerConfig {
        let dir = self.pki_dir.clone().unwrap_or_else(pki::default_dir);
        let paths = pki::PkiPaths::new(&dir);
        let tls = TlsSource::Files {
            ca: self.ca.clone().unwrap_or(paths.ca),
            cert: self.cert.clone().unwrap_or(paths.server),
            key: self.key.clone().unwrap_or(paths.server_key),
        };
        let mut c = ServerConfig::new(tls);
        c.listen = self.listen;
        c.state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        c.isolation = !self.no_isolation;
        c.max_jobs = self.max_jobs;
        c.max_jobs_per_user = self.max_jobs_per_user;
        c.max_connections = self.max_connections;
        c.max_streams_per_connection = self.max_streams;
        c.max_subscriptions_per_connection = self.max_subscriptions;
        c.idle_timeout = Duration::from_secs(self.idle_timeout);
        c
    }
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let server = Server::bind(args.config()).await?;
    let run = server.run();
    tokio::pin!(run);
    tokio::select! {
        () = &mut run => server.shutdown().await,
        sig = shutdown_signal() => {
            tracing::info!(signal = sig?, "shutdown requested");
            // The accept loop keeps owning its connection tasks until they end.
            tokio::join!(server.shutdown(), run);
        }
    }
    Ok(())
}
