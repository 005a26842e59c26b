//! The durable job records: one SQLite database (`<state_dir>/jobs.db`, WAL) beside
//! the job directories holding the output logs (spec: QX-DUR-*).
//!
//! # Writes
//! The manager never waits for the database on a request's path. Records go to one
//! writer thread over a bounded channel ([`WRITE_QUEUE`] operations); the thread
//! takes whatever has queued up and commits it in one transaction. With
//! `synchronous = NORMAL` in WAL mode a commit does not wait for the disk, so a record
//! survives a crash of qexecd as soon as its transaction committed (typically well
//! under a millisecond after the job started or ended); a power loss may lose the
//! last transactions. A full queue makes the sender wait (backpressure, never loss).
//! Chosen over `spawn_blocking` per write because one thread keeps the writes in
//! order (a job's start record before its end record) and batches them.
//!
//! # Reads
//! Only at start-up ([`Store::open`]): every record is loaded into the manager's
//! table, which answers `Status` and `List` from then on. A record that does not
//! decode is reported and skipped; a database that cannot be read at all is moved
//! aside (kept for the operator) and a new one started with what could be salvaged.
//!
//! # Sequence numbers
//! A job's `seq` (spec: QX-LIST-1) is handed out by the manager from a block reserved
//! in the database first (`meta.seq_reserved`, [`SEQ_BLOCK`] at a time, written
//! synchronously), so a number is never handed out twice, even when its job's record
//! was lost in a crash.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use qexec_protocol::{JobState, JobStatus, StopReason, Termination};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// Operations the writer thread may have queued.
pub(crate) const WRITE_QUEUE: usize = 4096;
/// Operations committed in one transaction at most.
const BATCH: usize = 512;
/// Sequence numbers reserved at a time.
pub(crate) const SEQ_BLOCK: u64 = 1024;
/// The database's file name in the state directory.
pub(crate) const DB_FILE: &str = "jobs.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq           INTEGER PRIMARY KEY,   -- order key (QX-LIST-1)
    id            TEXT NOT NULL UNIQUE,  -- 32 lowercase hex digits
    owner         TEXT NOT NULL,
    command       TEXT NOT NULL,         -- argv for people (lossy UTF-8, space separated)
    cwd           TEXT,
    env_names     TEXT NOT NULL,         -- names only, space separated; never values
    timeout_ms    INTEGER,
    state         TEXT NOT NULL,         -- running | exited | stopped | failed_to_start
    exit_code     INTEGER,
    signal        INTEGER,
    stop_reason   TEXT,                  -- requested | timeout | output_limit | detached | shutdown
    stopped_by    TEXT,
    oom_killed    INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    stdout_bytes  INTEGER NOT NULL,
    stderr_bytes  INTEGER NOT NULL,
    log_len       INTEGER NOT NULL,      -- bytes of the output log file
    status        BLOB NOT NULL          -- the JobStatus, postcard: what Status answers
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
";

/// What a start adds to the record beyond the status (kept for operators).
#[derive(Debug, Clone, Default)]
pub(crate) struct StartFacts {
    /// Working directory.
    pub(crate) cwd: Option<String>,
    /// Environment variable names (never values).
    pub(crate) env_names: Vec<String>,
    /// Wall-clock timeout.
    pub(crate) timeout_ms: Option<u64>,
}

/// One record as stored.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) status: JobStatus,
    pub(crate) log_len: u64,
}

enum Op {
    Put {
        record: Box<Record>,
        facts: Option<Box<StartFacts>>,
    },
    Delete(u64),
    Flush(std::sync::mpsc::Sender<()>),
}

/// What [`Store::open`] found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Every record that decoded, in `seq` order.
    pub(crate) records: Vec<Record>,
    /// What could not be read, for the log.
    pub(crate) problems: Vec<String>,
    /// The first sequence number not reserved yet.
    pub(crate) next_seq: u64,
    /// The database opened without damage: job directories it does not name are
    /// leftovers and may be deleted.
    pub(crate) intact: bool,
}

/// The job database cannot be used at all (a damaged one is moved aside instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed on the database file.
    #[error("job database {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file could not be created with its permissions, or its writer
    /// thread could not be started.
    #[error("job database {}: {source}", path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The job database: a writer thread and a connection for sequence reservations.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    tx: Mutex<Option<SyncSender<Op>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    seq_conn: Mutex<Connection>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { record, .. } => write!(f, "Put({})", record.seq),
            Op::Delete(seq) => write!(f, "Delete({seq})"),
            Op::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Creates `path` with mode 0600 if it does not exist, and makes it 0600 if it does.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Reads every record it can; decoding problems go to `problems`.
fn read_records(conn: &Connection, problems: &mut Vec<String>) -> rusqlite::Result<Vec<Record>> {
    let mut stmt = conn.prepare("SELECT seq, id, status, log_len FROM jobs ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                problems.push(format!("reading stopped after {} records: {e}", out.len()));
                break;
            }
        };
        let seq: rusqlite::Result<i64> = row.get(0);
        let id: rusqlite::Result<String> = row.get(1);
        let blob: rusqlite::Result<Vec<u8>> = row.get(2);
        let log_len: rusqlite::Result<i64> = row.get(3);
        match (seq, blob, log_len) {
            (Ok(seq), Ok(blob), Ok(log_len)) => match postcard::from_bytes::<JobStatus>(&blob) {
                Ok(status) => out.push(Record {
                    seq: u64::try_from(seq).unwrap_or(0),
                    status,
                    log_len: u64::try_from(log_len).unwrap_or(0),
                }),
                Err(e) => problems.push(format!(
                    "record {} (job {}) does not decode: {e}",
                    seq,
                    id.unwrap_or_default()
                )),
            },
            (seq, _, _) => problems.push(format!(
                "record {:?} (job {}) has unreadable columns",
                seq.ok(),
                id.unwrap_or_default()
            )),
        }
    }
    Ok(out)
}

fn reserved(conn: &Connection) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'seq_reserved'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

fn set_reserved(conn: &Connection, upto: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('seq_reserved', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![i64::try_from(upto).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// Loads an intact database; `Err` means it is damaged (with what was salvaged).
fn load(path: &Path) -> Result<(Connection, Loaded), (String, Vec<Record>)> {
    let conn = match connect(path) {
        Ok(c) => c,
        Err(e) => return Err((e.to_string(), Vec::new())),
    };
    let check: rusqlite::Result<String> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    let mut problems = Vec::new();
    let damaged = match check {
        Ok(s) if s == "ok" => None,
        Ok(s) => Some(format!("integrity check failed: {s}")),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = damaged {
        let salvaged = read_records(&conn, &mut problems).unwrap_or_default();
        return Err((why, salvaged));
    }
    if let Err(e) = conn.execute_batch(SCHEMA) {
        return Err((e.to_string(), Vec::new()));
    }
    let records = match read_records(&conn, &mut problems) {
        Ok(r) => r,
        Err(e) => return Err((e.to_string(), Vec::new())),
    };
    let next = match reserved(&conn) {
        Ok(r) => r,
        Err(e) => return Err((e.to_string(), records)),
    };
    let max_seq = records.last().map_or(0, |r| r.seq);
    Ok((
        conn,
        Loaded {
            records,
            problems,
            next_seq: next.max(max_seq + 1),
            intact: true,
        },
    ))
}

impl Store {
    /// Opens (or creates) the database in `state_dir`, loads every record, and starts
    /// the writer thread. A damaged database never stops the start (spec: QX-DUR-6):
    /// it is renamed `jobs.db.damaged-<ms>`, and a new one holds what could be read.
    pub(crate) fn open(state_dir: &Path, now_ms: u64) -> Result<(Self, Loaded), StoreError> {
        let path = state_dir.join(DB_FILE);
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        // Records hold every user's argv: readable by the server only (SQLite gives
        // its -wal and -shm files the database file's permissions).
        create_private(&path).map_err(io_err)?;
        let (conn, mut loaded) = match load(&path) {
            Ok(ok) => ok,
            Err((why, salvaged)) => {
                let aside = state_dir.join(format!("{DB_FILE}.damaged-{now_ms}"));
                let mut problems = vec![format!(
                    "the job database is damaged ({why}); moved aside to {}, {} records salvaged",
                    aside.display(),
                    salvaged.len()
                )];
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                    if from.exists()
                        && let Err(e) = std::fs::rename(&from, &to)
                    {
                        problems.push(format!("cannot move {} aside: {e}", from.display()));
                        let _ = std::fs::remove_file(&from);
                    }
                }
                create_private(&path).map_err(io_err)?;
                let conn = connect(&path).map_err(err)?;
                conn.execute_batch(SCHEMA).map_err(err)?;
                let max_seq = salvaged.iter().map(|r| r.seq).max().unwrap_or(0);
                {
                    let mut put = conn.prepare(PUT).map_err(err)?;
                    for r in &salvaged {
                        put_record(&mut put, r, None).map_err(err)?;
                    }
                }
                (
                    conn,
                    Loaded {
                        records: salvaged,
                        problems,
                        // Numbers of lost records may have been handed out: skip a block.
                        next_seq: max_seq + 1 + SEQ_BLOCK,
                        intact: false,
                    },
                )
            }
        };
        set_reserved(&conn, loaded.next_seq + SEQ_BLOCK).map_err(err)?;
        let writer = connect(&path).map_err(err)?;
        let (tx, rx) = sync_channel(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("qexec-job-db".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(io_err)?;
        loaded.records.sort_by_key(|r| r.seq);
        Ok((
            Self {
                path,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                seq_conn: Mutex::new(conn),
            },
            loaded,
        ))
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reserves sequence numbers up to `upto` (exclusive) before they are handed out.
    pub(crate) fn reserve_seqs(&self, upto: u64) -> Result<(), StoreError> {
        let conn = self.seq_conn.lock().unwrap_or_else(PoisonError::into_inner);
        set_reserved(&conn, upto).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn send(&self, op: Op) {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(tx) = tx
            && tx.send(op).is_err()
        {
            tracing::error!(path = %self.path.display(), "the job database writer is gone; a record was not written");
        }
    }

    /// Writes (inserts or replaces) a job's record; `facts` only at its start.
    pub(crate) fn put(&self, record: Record, facts: Option<StartFacts>) {
        self.send(Op::Put {
            record: Box::new(record),
            facts: facts.map(Box::new),
        });
    }

    /// Deletes a job's record.
    pub(crate) fn delete(&self, seq: u64) {
        self.send(Op::Delete(seq));
    }

    /// Waits until everything sent before was committed.
    pub(crate) fn flush(&self) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.send(Op::Flush(done_tx));
        let _ = done_rx.recv();
    }

    /// Commits what is queued and stops the writer thread.
    pub(crate) fn close(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

const PUT: &str = "
INSERT INTO jobs (seq, id, owner, command, cwd, env_names, timeout_ms, state, exit_code,
    signal, stop_reason, stopped_by, oom_killed, started_at_ms, ended_at_ms, stdout_bytes,
    stderr_bytes, log_len, status)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
ON CONFLICT(seq) DO UPDATE SET
    state = excluded.state, exit_code = excluded.exit_code, signal = excluded.signal,
    stop_reason = excluded.stop_reason, stopped_by = excluded.stopped_by,
    oom_killed = excluded.oom_killed, ended_at_ms = excluded.ended_at_ms,
    stdout_bytes = excluded.stdout_bytes, stderr_bytes = excluded.stderr_bytes,
    log_len = excluded.log_len, status = excluded.status";

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The readable columns of a state: (state, exit code, signal, stop reason, by).
fn state_columns(
    state: &JobState,
) -> (
    &'static str,
    Option<i32>,
    Option<i32>,
    Option<&'static str>,
    Option<&str>,
) {
    let term = |t: &Termination| match t {
        Termination::Exited(c) => (Some(*c), None),
        Termination::Signaled(s) => (None, Some(*s)),
    };
    match state {
        JobState::Running => ("running", None, None, None, None),
        JobState::Exited { termination } => {
            let (c, s) = term(termination);
            ("exited", c, s, None, None)
        }
        JobState::Stopped {
            reason,
            termination,
        } => {
            let (c, s) = term(termination);
            let (why, by) = match reason {
                StopReason::Requested { by } => ("requested", Some(by.as_str())),
                StopReason::Timeout => ("timeout", None),
                StopReason::OutputLimit => ("output_limit", None),
                StopReason::Detached => ("detached", None),
                StopReason::Shutdown => ("shutdown", None),
            };
            ("stopped", c, s, Some(why), by)
        }
        JobState::FailedToStart { .. } => ("failed_to_start", None, None, None, None),
    }
}

fn put_record(
    stmt: &mut rusqlite::Statement<'_>,
    r: &Record,
    facts: Option<&StartFacts>,
) -> rusqlite::Result<()> {
    let s = &r.status;
    let blob =
        postcard::to_stdvec(s).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let command = s
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let (state, exit_code, signal, reason, by) = state_columns(&s.state);
    let facts = facts.cloned().unwrap_or_default();
    stmt.execute(params![
        int(r.seq),
        s.id.to_string(),
        s.owner,
        command,
        facts.cwd,
        facts.env_names.join(" "),
        facts.timeout_ms.map(int),
        state,
        exit_code,
        signal,
        reason,
        by,
        s.oom_killed,
        int(s.started_at_ms),
        s.ended_at_ms.map(int),
        int(s.stdout_bytes),
        int(s.stderr_bytes),
        int(r.log_len),
        blob,
    ])?;
    Ok(())
}

/// The writer thread: batches of queued operations, one transaction each.
fn write_loop(mut conn: Connection, rx: Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut flushed = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut put = tx.prepare_cached(PUT)?;
                let mut delete = tx.prepare_cached("DELETE FROM jobs WHERE seq = ?1")?;
                for op in batch {
                    match op {
                        Op::Put { record, facts } => {
                            put_record(&mut put, &record, facts.as_deref())?
                        }
                        Op::Delete(seq) => {
                            delete.execute(params![int(seq)])?;
                        }
                        Op::Flush(done) => flushed.push(done),
                    }
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write job records to the database; they are lost if qexecd restarts");
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qexec_protocol::{JobId, Limits, ResourceUsage, SpawnFailure};

    fn status(n: u128, state: JobState) -> JobStatus {
        JobStatus {
            id: JobId::from_u128(n),
            owner: "alice".into(),
            argv: vec![b"echo".to_vec(), vec![0xff, b'x']],
            state,
            pid: Some(42),
            started_at_ms: 1000 + n as u64,
            ended_at_ms: None,
            stdout_bytes: 3,
            stderr_bytes: 1,
            output_truncated: false,
            oom_killed: false,
            limits: Limits::default(),
            usage: ResourceUsage::default(),
        }
    }

    #[test]
    fn records_survive_a_reopen_and_sequence_numbers_are_never_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = Store::open(dir.path(), 1).unwrap();
        assert!(loaded.records.is_empty() && loaded.intact);
        let first = loaded.next_seq;
        let running = status(1, JobState::Running);
        store.put(
            Record {
                seq: first,
                status: running.clone(),
                log_len: 0,
            },
            Some(StartFacts {
                cwd: Some("/".into()),
                env_names: vec!["PATH".into()],
                timeout_ms: None,
            }),
        );
        let failed = status(
            2,
            JobState::FailedToStart {
                failure: SpawnFailure::NotFound,
                message: "no".into(),
            },
        );
        store.put(
            Record {
                seq: first + 1,
                status: failed.clone(),
                log_len: 0,
            },
            None,
        );
        let mut ended = running.clone();
        ended.state = JobState::Exited {
            termination: Termination::Exited(3),
        };
        ended.ended_at_ms = Some(5000);
        store.put(
            Record {
                seq: first,
                status: ended.clone(),
                log_len: 14,
            },
            None,
        );
        store.put(
            Record {
                seq: first + 2,
                status: status(3, JobState::Running),
                log_len: 0,
            },
            None,
        );
        store.delete(first + 2);
        store.flush();
        drop(store);

        let (store, loaded) = Store::open(dir.path(), 2).unwrap();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let got: Vec<_> = loaded
            .records
            .iter()
            .map(|r| (r.seq, r.status.clone(), r.log_len))
            .collect();
        assert_eq!(got, vec![(first, ended, 14), (first + 1, failed, 0)]);
        // Only the server may read the records (every user's argv).
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Past the block reserved before: nothing handed out before is reused.
        assert!(loaded.next_seq >= first + SEQ_BLOCK);
        // The readable columns are there for operators.
        let conn = Connection::open(store.path()).unwrap();
        let (env, code): (String, i64) = conn
            .query_row(
                "SELECT env_names, exit_code FROM jobs WHERE seq = ?1",
                [int(first)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((env.as_str(), code), ("PATH", 3));
    }

    #[test]
    fn a_damaged_database_is_moved_aside_and_never_stops_the_open() {
        // spec: QX-DUR-6
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(
            &path,
            b"this is not a database, just some bytes ............",
        )
        .unwrap();
        let (store, loaded) = Store::open(dir.path(), 7).unwrap();
        assert!(!loaded.intact);
        assert!(
            loaded.problems[0].contains("damaged"),
            "{:?}",
            loaded.problems
        );
        assert!(dir.path().join(format!("{DB_FILE}.damaged-7")).exists());
        store.put(
            Record {
                seq: loaded.next_seq,
                status: status(1, JobState::Running),
                log_len: 0,
            },
            None,
        );
        store.flush();
        drop(store);
        let (_, loaded) = Store::open(dir.path(), 8).unwrap();
        assert!(loaded.intact);
        assert_eq!(loaded.records.len(), 1);
    }
}
