//! Shared helpers of the client library tests: the shared in-process qexecd
//! ([`LocalServer`]) in a runtime of its own, and client settings for it.

use std::path::Path;
use std::time::Duration;

use qexec_client::ClientConfig;
use qexec_server::local::LocalServer;

/// Generous bound for anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// qexecd on 127.0.0.1 (random port, isolation off) with a throwaway PKI on disk.
pub(crate) struct TestServer {
    local: Option<LocalServer>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    pub(crate) fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let local = rt
            .block_on(LocalServer::start(|_| {}))
            .expect("start the in-process qexecd");
        Self {
            local: Some(local),
            rt: Some(rt),
        }
    }

    fn local(&self) -> &LocalServer {
        self.local.as_ref().expect("server running")
    }

    pub(crate) fn dir(&self) -> &Path {
        self.local().pki_dir()
    }

    /// Client settings for the default identity (`None`) or `users/<name>`.
    pub(crate) fn config(&self, user: Option<&str>) -> ClientConfig {
        let base = match user {
            Some(u) => ClientConfig::for_user(self.dir(), u),
            None => ClientConfig::from_pki_dir(self.dir()),
        };
        base.with_addr(self.local().addr.to_string())
    }

    /// Runs a future on the server's runtime.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime").block_on(f)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let (Some(rt), Some(local)) = (self.rt.take(), self.local.take()) {
            let stopped = rt.block_on(local.shutdown());
            rt.shutdown_timeout(Duration::from_secs(5));
            if let Err(e) = stopped
                && !std::thread::panicking()
            {
                panic!("{e}");
            }
        }
    }
}
