//! Shared helpers of the client library tests: the shared in-process qexecd
//! ([`BlockingLocalServer`]) in a runtime of its own, and client settings for it.

use std::path::Path;
use std::time::Duration;

use qexec_client::ClientConfig;
use qexec_server::local::BlockingLocalServer;

/// Generous bound for anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// qexecd on 127.0.0.1 (random port, isolation off) with a throwaway PKI on disk.
pub(crate) struct TestServer(BlockingLocalServer);

impl TestServer {
    pub(crate) fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// As [`TestServer::start`], with the server's configuration adjusted first.
    pub(crate) fn start_with(
        adjust: impl FnOnce(&mut qexec_server::service::ServerConfig),
    ) -> Self {
        Self(BlockingLocalServer::start(adjust).expect("start the in-process qexecd"))
    }

    pub(crate) fn dir(&self) -> &Path {
        self.0.local().pki_dir()
    }

    /// Client settings for the default identity (`None`) or `users/<name>`.
    pub(crate) fn config(&self, user: Option<&str>) -> ClientConfig {
        let base = match user {
            Some(u) => ClientConfig::for_user(self.dir(), u),
            None => ClientConfig::from_pki_dir(self.dir()),
        };
        base.with_addr(self.0.local().addr.to_string())
    }

    /// Runs a future on the server's runtime.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.0.block_on(f)
    }
}
