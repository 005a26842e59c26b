//! An in-process qexecd on loopback for the demo and the tests: the qexec service on
//! 127.0.0.1 (a random port) with a throwaway PKI (in memory, and written to a
//! temporary directory laid out as `qexec certs init` writes it) and a throwaway job
//! state directory. One harness for `qexec demo`, the client and CLI tests and the
//! integration suites.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qexec_tls::{CertKeyPem, ClientPaths, InMemoryPki, InitOptions, PkiError, PkiPaths, TlsSource};
use tokio::task::JoinHandle;

use crate::service::{ServeError, Server, ServerConfig};

/// How long [`LocalServer::shutdown`] waits for the accept loop to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(20);

/// How a [`LocalServer`] is made.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Name of the default client certificate (role admin).
    pub client_name: String,
    /// Prefix of the temporary directories' names (`<prefix>-pki-…`, `<prefix>-state-…`).
    pub prefix: String,
}

impl Default for LocalOptions {
    /// Default client `tester`, directories `qexec-local-…`.
    fn default() -> Self {
        Self {
            client_name: "tester".to_owned(),
            prefix: "qexec-local".to_owned(),
        }
    }
}

/// Failure to run a [`LocalServer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A temporary directory could not be made.
    #[error("cannot create a temporary {what} directory: {source}")]
    TempDir {
        /// Which one (`pki`, `state`).
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The throwaway PKI could not be made or written.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The in-process qexecd could not start.
    #[error("cannot start the in-process qexecd: {0}")]
    Serve(#[from] ServeError),
    /// The accept loop did not end after shutdown.
    #[error("the in-process qexecd did not stop within {after:?} of its shutdown")]
    Stuck {
        /// How long we waited.
        after: Duration,
    },
    /// The accept loop panicked.
    #[error("the in-process qexecd failed: {reason}")]
    Failed {
        /// The task's error.
        reason: String,
    },
}

/// A qexecd running in this process on 127.0.0.1; see the module docs. Dropping it
/// aborts the server; [`LocalServer::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct LocalServer {
    /// The server.
    pub server: Arc<Server>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its PKI: CA, server certificate, default client and the default users.
    pub pki: InMemoryPki,
    serve: Option<JoinHandle<()>>,
    pki_dir: tempfile::TempDir,
    state_dir: tempfile::TempDir,
}

fn temp_dir(prefix: &str, what: &'static str) -> Result<tempfile::TempDir, LocalError> {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-{what}-"))
        .tempdir()
        .map_err(|source| LocalError::TempDir { what, source })
}

impl LocalServer {
    /// Starts a server with the default [`LocalOptions`], job isolation off, after
    /// `adjust` changed its configuration. Must run inside a tokio runtime.
    pub async fn start(adjust: impl FnOnce(&mut ServerConfig)) -> Result<Self, LocalError> {
        Self::start_with(&LocalOptions::default(), adjust).await
    }

    /// Starts a server made as `options` say, job isolation off, after `adjust`
    /// changed its configuration.
    pub async fn start_with(
        options: &LocalOptions,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> Result<Self, LocalError> {
        let pki = qexec_tls::generate_in_memory(&InitOptions {
            client_name: Some(options.client_name.clone()),
            ..InitOptions::default()
        })?;
        let pki_dir = temp_dir(&options.prefix, "pki")?;
        qexec_tls::write_pki(pki_dir.path(), &pki)?;
        let state_dir = temp_dir(&options.prefix, "state")?;
        let mut config = ServerConfig::new(TlsSource::Pem {
            ca: pki.ca.cert_pem().to_owned(),
            cert: pki.server.cert_pem.clone(),
            key: pki.server.key_pem.clone(),
        });
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.state_dir = state_dir.path().to_owned();
        config.isolation = false;
        // Without isolation there is no sandbox and jobs run as host root, which
        // qexecd refuses to `user` certificates unless told otherwise (spec:
        // QX-SBX-13); a local test server accepts it. Callers that turn isolation on
        // get the sandbox.
        config.sandbox.insecure_root_jobs = true;
        adjust(&mut config);
        let server = Arc::new(Server::bind(config).await?);
        let addr = server.local_addr();
        let serve = tokio::spawn({
            let server = server.clone();
            async move { server.run().await }
        });
        Ok(Self {
            server,
            addr,
            pki,
            serve: Some(serve),
            pki_dir,
            state_dir,
        })
    }

    /// The PKI directory (`ca.pem`, `client.pem`, `users/…`), as `qexec certs init`
    /// lays it out.
    pub fn pki_dir(&self) -> &Path {
        self.pki_dir.path()
    }

    /// The job state directory.
    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// Certificate and key files of the default client (`None`) or of a user.
    pub fn client_paths(&self, user: Option<&str>) -> ClientPaths {
        let paths = PkiPaths::new(self.pki_dir());
        match user {
            Some(name) => paths.user(name),
            None => ClientPaths {
                cert: paths.client,
                key: paths.client_key,
            },
        }
    }

    /// The certificate of the default client (by its name) or of a default user
    /// (`alice`, `bob`, `admin`, `auditor`).
    pub fn identity(&self, user: &str) -> Option<&CertKeyPem> {
        if user == self.pki.client.0 {
            return Some(&self.pki.client.1);
        }
        self.pki.user(user)
    }

    /// The shared client TLS configuration, trusting this server's CA and presenting
    /// `identity` (none: a client the server refuses).
    pub fn client_tls(
        &self,
        identity: Option<&CertKeyPem>,
    ) -> Result<qexec_tls::ClientTls, qexec_tls::TlsError> {
        qexec_tls::client_config_pem(self.pki.ca.cert_pem(), identity)
    }

    /// Graceful shutdown: stops the jobs, closes every connection, waits for the
    /// accept loop to end.
    pub async fn shutdown(mut self) -> Result<(), LocalError> {
        self.server.shutdown().await;
        if let Some(serve) = self.serve.take() {
            tokio::time::timeout(SHUTDOWN_WAIT, serve)
                .await
                .map_err(|_| LocalError::Stuck {
                    after: SHUTDOWN_WAIT,
                })?
                .map_err(|e| LocalError::Failed {
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(serve) = self.serve.take() {
            serve.abort();
        }
    }
}

/// A [`LocalServer`] in a tokio runtime of its own, for synchronous callers (the CLI
/// and client-library tests drive it from plain `#[test]` functions). Dropping it shuts
/// the server down gracefully and then the runtime.
#[derive(Debug)]
pub struct BlockingLocalServer {
    local: Option<LocalServer>,
    rt: Option<tokio::runtime::Runtime>,
}

impl BlockingLocalServer {
    /// Starts a [`LocalServer`] (after `adjust` changed its configuration) on a new
    /// two-thread runtime.
    pub fn start(adjust: impl FnOnce(&mut ServerConfig)) -> Result<Self, LocalError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| LocalError::Failed {
                reason: format!("cannot build a tokio runtime: {e}"),
            })?;
        let local = rt.block_on(LocalServer::start(adjust))?;
        Ok(Self {
            local: Some(local),
            rt: Some(rt),
        })
    }

    /// The running server.
    pub fn local(&self) -> &LocalServer {
        self.local
            .as_ref()
            .expect("the server runs until the wrapper is dropped")
    }

    /// Runs a future on the server's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("the runtime lives until the wrapper is dropped")
            .block_on(f)
    }
}

impl Drop for BlockingLocalServer {
    /// Graceful shutdown; a server that does not shut down panics the test (unless it
    /// is already panicking).
    fn drop(&mut self) {
        if let (Some(rt), Some(local)) = (self.rt.take(), self.local.take()) {
            let stopped = rt.block_on(local.shutdown());
            rt.shutdown_timeout(SHUTDOWN_WAIT);
            if let Err(e) = stopped
                && !std::thread::panicking()
            {
                panic!("{e}");
            }
        }
    }
}
