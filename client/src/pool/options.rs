//! What a pool is made of ([`Worker`]) and how it behaves ([`PoolOptions`]).

use std::time::Duration;

use crate::config::ClientConfig;
use crate::pool::PoolError;

/// One qexecd the pool places jobs on.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The name results and snapshots carry (a host name, a profile name…).
    pub name: String,
    /// How to connect to it. Its `connect_timeout` bounds every connection attempt
    /// and its `request_timeout` the answer to each `Start`.
    pub config: ClientConfig,
}

/// How a [`Pool`](crate::pool::Pool) queues, places and recovers.
///
/// Every field has a default ([`PoolOptions::default`]); change what you need:
///
/// ```
/// use std::time::Duration;
/// use qexec_client::pool::PoolOptions;
///
/// let options = PoolOptions {
///     queue: 64,
///     give_up_after: Duration::from_secs(5),
///     ..PoolOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Submissions accepted but not yet placed; [`Pool::submit`](crate::pool::Pool::submit)
    /// waits while this many are queued. Default 1024.
    pub queue: usize,
    /// Results finished but not yet taken by
    /// [`PoolResults::next`](crate::pool::PoolResults::next); a job whose result does
    /// not fit waits (its worker slot is already free). Default 1024.
    pub results: usize,
    /// First wait before reconnecting to a dead worker; doubled after every failed
    /// attempt up to [`PoolOptions::backoff_max`]. Default 250 ms.
    pub backoff_min: Duration,
    /// Longest wait between two reconnection attempts. Default 10 s.
    pub backoff_max: Duration,
    /// How often each live worker is asked `Info` (its running jobs and limits). The
    /// same request tells a live connection from a lost one. Default 1 s.
    pub info_interval: Duration,
    /// A worker that does not answer `Info` this soon gets no new job until a later
    /// `Info` answers; its connection and the jobs on it stay. Only a connection that
    /// fails (silent for [`PoolOptions::dead_after`] despite keep-alives; a closed
    /// port is noticed sooner) makes the worker dead: its unfinished jobs come back
    /// [`Outcome::Lost`](crate::pool::Outcome::Lost), and it is reconnected with
    /// back-off. A first connection whose `Info` is late counts as a failed attempt.
    /// Default 10 s.
    pub info_timeout: Duration,
    /// How many of the pool's jobs a worker may hold at once when its capacity is
    /// unknown: a qexecd older than the `Info` request answers `Unsupported`.
    /// Default 4.
    pub default_capacity: u32,
    /// Most of the pool's jobs on any one worker, below what the server allows (a
    /// fuzzing farm may want one job per CPU of a server whose `--max-jobs` is
    /// higher). `None` (the default): only the servers' limits count.
    pub max_per_worker: Option<u32>,
    /// After [`Pool::close`](crate::pool::Pool::close) (or the last `Pool` handle is
    /// dropped), a dead worker keeps trying to reconnect for this long after the later
    /// of the close and its death, then gives up. Once every worker gave up, each
    /// submission still queued comes back [`Outcome::NoWorker`](crate::pool::Outcome::NoWorker),
    /// at most `give_up_after` + `backoff_max` + the workers' `connect_timeout` +
    /// `info_timeout` after the later of the close and the death of the last live
    /// worker (a connection silently lost is found dead within
    /// [`PoolOptions::dead_after`]). Before the close, dead workers are retried for ever and queued
    /// submissions wait. Default 30 s.
    pub give_up_after: Duration,
    /// A worker whose connection is silent this long (the client sends keep-alives
    /// every third of it) is dead: a killed or unplugged server's jobs come back
    /// [`Outcome::Lost`](crate::pool::Outcome::Lost) this soon. It caps each worker's
    /// [`ClientConfig::idle_timeout`] (30 s by default, for one interactive
    /// connection). Default 10 s.
    pub dead_after: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            queue: 1024,
            results: 1024,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            info_interval: Duration::from_secs(1),
            info_timeout: Duration::from_secs(10),
            default_capacity: 4,
            max_per_worker: None,
            give_up_after: Duration::from_secs(30),
            dead_after: Duration::from_secs(10),
        }
    }
}

impl PoolOptions {
    /// Checks that the options describe a pool that can work.
    pub(crate) fn validate(&self) -> Result<(), PoolError> {
        let bad = |reason: &str| {
            Err(PoolError::InvalidOptions {
                reason: reason.to_owned(),
            })
        };
        if self.queue == 0 {
            return bad("queue must hold at least 1 submission");
        }
        if self.results == 0 {
            return bad("results must hold at least 1 result");
        }
        if self.backoff_min.is_zero() {
            return bad("backoff_min must be above zero");
        }
        if self.backoff_max < self.backoff_min {
            return bad("backoff_max must be at least backoff_min");
        }
        if self.info_interval.is_zero() {
            return bad("info_interval must be above zero");
        }
        if self.info_timeout.is_zero() {
            return bad("info_timeout must be above zero");
        }
        if self.default_capacity == 0 {
            return bad("default_capacity must be at least 1");
        }
        if self.max_per_worker == Some(0) {
            return bad("max_per_worker must be at least 1 (or None)");
        }
        if self.dead_after < Duration::from_secs(1) {
            return bad("dead_after must be at least 1 s (keep-alives go every third of it)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PoolOptions::default().validate().expect("defaults work");
    }

    #[test]
    fn a_fixed_backoff_is_valid() {
        // backoff_max == backoff_min: no doubling, a fixed wait.
        let o = PoolOptions {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
            ..PoolOptions::default()
        };
        o.validate().expect("equal bounds work");
    }

    /// An option's name and a change that makes it unusable.
    type Breakage = (&'static str, fn(&mut PoolOptions));

    #[test]
    fn unusable_options_are_refused() {
        let cases: [Breakage; 9] = [
            ("queue", |o| o.queue = 0),
            ("results", |o| o.results = 0),
            ("backoff_min", |o| o.backoff_min = Duration::ZERO),
            ("backoff_max", |o| o.backoff_max = Duration::from_millis(1)),
            ("info_interval", |o| o.info_interval = Duration::ZERO),
            ("info_timeout", |o| o.info_timeout = Duration::ZERO),
            ("default_capacity", |o| o.default_capacity = 0),
            ("max_per_worker", |o| o.max_per_worker = Some(0)),
            ("dead_after", |o| o.dead_after = Duration::from_millis(500)),
        ];
        for (field, change) in cases {
            let mut o = PoolOptions::default();
            change(&mut o);
            let err = o.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
