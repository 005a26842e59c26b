//! Starting a job: its directory and log, its cgroup, the spawn, its table entry
//! and its supervisor.

use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use qexec_protocol::{JobState, ResourceUsage, StopReason};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cgroup::{CgroupVersion, Cgroups, JobCgroup};
use crate::output::LogWriter;
use crate::spawn::{self, IsolationConfig, SpawnConfig};
use crate::{JobSpec, JobStdin, JobTerminal, StartError, StartedJob};

use super::cgroups::create_cgroup;
use super::limits::effective_limits;
use super::store::StartFacts;
use super::supervisor::Supervisor;
use super::table::{Job, ProcessHandle, RunState, Shared, lock, now_ms, remove_dir};
use crate::sandbox::JobNetwork;

/// Refuses a start that would run as host root for a caller not trusted with it
/// while the sandbox is not active. spec: QX-SBX-13
fn check_host_root(shared: &Shared, spec: &JobSpec) -> Result<(), StartError> {
    let config = &shared.config;
    if shared.sandbox.is_some()
        || spec.host_root_allowed
        || config.sandbox.insecure_root_jobs
        || config.job_credentials.is_some()
        || !nix::unistd::geteuid().is_root()
    {
        return Ok(());
    }
    Err(StartError::HostRootRefused {
        reason: shared
            .capabilities
            .sandbox_unavailable
            .clone()
            .unwrap_or_else(|| "not probed".to_owned()),
    })
}

/// Starts a job and its supervisor (owned by `tasks`).
pub(super) async fn start(
    shared: &Arc<Shared>,
    tasks: &Mutex<JoinSet<()>>,
    spec: JobSpec,
) -> Result<StartedJob, StartError> {
    check_host_root(shared, &spec)?;
    let limits = effective_limits(shared, &spec.limits)?;
    let mut slot = shared.reserve()?;
    let id = slot.id;
    let dir = shared.jobs_dir.join(id.to_string());
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| StartError::Io {
            path: dir.clone(),
            source,
        })?;
    let output = dir.join("output");
    let log = LogWriter::create(output.clone(), shared.config.output_cap).map_err(|source| {
        remove_dir(&dir);
        StartError::Io {
            path: output,
            source,
        }
    })?;

    let facts = StartFacts {
        cwd: Some(
            spec.cwd
                .as_deref()
                .unwrap_or(std::path::Path::new("/"))
                .to_string_lossy()
                .into_owned(),
        ),
        env_names: spec
            .env
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect(),
        timeout_ms: spec
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
    };
    let mut env = spec.env;
    if !env.iter().any(|(k, _)| k == b"PATH") {
        env.push((b"PATH".to_vec(), spawn::DEFAULT_PATH.as_bytes().to_vec()));
    }
    // spec: QX-TERM-6 — the terminal's type is the job's TERM.
    let terminal = spec.terminal.map(|t| {
        env.retain(|(k, _)| k != b"TERM");
        env.push((b"TERM".to_vec(), t.term.into_bytes()));
        crate::terminal::win(t.size)
    });
    let cwd = spec.cwd.unwrap_or_else(|| PathBuf::from("/"));
    let argv = spec.argv;
    let want_stdin = spec.stdin;
    let mut isolation = shared
        .capabilities
        .isolation
        .then(|| IsolationConfig::for_job(&id));
    let mut uid_slot = None;
    if let Some(iso) = &mut isolation {
        iso.own_network = shared.config.sandbox.network == JobNetwork::None;
        // spec: QX-SBX-2 (a host id slot of its own while it runs)
        if let Some(sandbox) = &shared.sandbox {
            let (job_sandbox, taken) = sandbox.for_job().map_err(|e| {
                remove_dir(&dir);
                StartError::NoUidSlot {
                    message: e.to_string(),
                }
            })?;
            iso.sandbox = Some(job_sandbox);
            uid_slot = Some(taken);
        }
    }
    let blocking_shared = Arc::clone(shared);
    let job_limits = limits.clone();
    // Creating the cgroup and spawn() block (cgroupfs writes; spawn until exec or its
    // failure); keep them off the runtime threads.
    let (argv, spawned) = tokio::task::spawn_blocking(move || {
        let shared = blocking_shared;
        let cgroups = shared.cgroups();
        // spec: the job is in its cgroup before it executes anything (the child writes
        // to these fds before exec), so it never runs unconstrained.
        let mut cgroup = match cgroups
            .map(|c| create_cgroup(c, &shared.config, id, &job_limits, &cwd))
            .transpose()
        {
            Ok(cgroup) => cgroup,
            Err(source) => return (argv, Err(StartError::Cgroup { id, source })),
        };
        let procs = cgroup.as_ref().map(JobCgroup::procs_fds).unwrap_or_default();
        let config = SpawnConfig {
            argv: &argv,
            env: &env,
            cwd: &cwd,
            stdin: want_stdin,
            isolation: isolation.as_ref(),
            cgroup_procs: &procs,
            credentials: shared.config.job_credentials,
            seccomp: shared.seccomp.as_ref(),
            terminal,
        };
        let r = spawn::spawn(&config);
        drop(procs);
        let r = match r {
            Ok(child) => {
                if let Some(cg) = &mut cgroup {
                    cg.release_procs_fds();
                }
                Ok((child, cgroup))
            }
            Err(e) => {
                if let Some(mut cg) = cgroup
                    && let Err(err) = cg.remove()
                {
                    tracing::warn!(job = %id, error = %err, "cannot remove the cgroup of a job that failed to start");
                }
                Err(StartError::Spawn {
                    failure: e.failure,
                    message: e.message,
                    job: None,
                })
            }
        };
        (argv, r)
    })
    .await
    .map_err(|e| StartError::Internal {
        what: "spawn task",
        message: e.to_string(),
    })?;
    let (child, cgroup) = match spawned {
        Ok(spawned) => spawned,
        Err(StartError::Spawn {
            failure, message, ..
        }) => {
            // spec: QX-DUR-5 (a spawn failure is a job in state FailedToStart)
            let job = Arc::new(Job {
                id,
                seq: slot.seq,
                owner: spec.owner,
                argv,
                limits,
                pid: None,
                started_at_ms: now_ms(),
                dir,
                log: Arc::clone(log.shared()),
                run: Mutex::new(RunState {
                    state: JobState::FailedToStart {
                        failure,
                        message: message.clone(),
                    },
                    ended_at_ms: Some(now_ms()),
                    usage: ResourceUsage::default(),
                    oom_killed: false,
                }),
                pending_stop: Mutex::new(None),
                stop_notify: Notify::new(),
                process: Mutex::new(None),
                cgroup: Mutex::new(None),
            });
            // Ends the (empty) log: a follower gets `End` at once.
            drop(log);
            shared.record(&job, Some(facts));
            shared.insert_ended(job);
            return Err(StartError::Spawn {
                failure,
                message: format!("{message} (recorded as job {id}, state FailedToStart)"),
                job: Some(id),
            });
        }
        Err(e) => {
            remove_dir(&dir);
            return Err(e);
        }
    };
    let cgroup = cgroup.map(Arc::new);
    // v1 has no `memory.oom.group`: the supervisor checks the OOM flag itself.
    let check_oom = cgroup.is_some()
        && limits.memory_bytes.is_some()
        && shared.cgroups().and_then(Cgroups::layout) == Some(CgroupVersion::V1);
    let started_at_ms = now_ms();
    let pid = child.pid;
    // The reactor watches a duplicate of the pidfd (same open file description), so
    // the process itself stays shared with `signal`.
    let watched_pidfd = child.process.as_fd().try_clone_to_owned();
    let handle = Arc::new(ProcessHandle {
        process: Mutex::new(child.process),
        _uid_slot: uid_slot,
    });
    let job = Arc::new(Job {
        id,
        seq: slot.seq,
        owner: spec.owner,
        argv,
        limits,
        pid: Some(pid),
        started_at_ms,
        dir,
        log: Arc::clone(log.shared()),
        run: Mutex::new(RunState {
            state: JobState::Running,
            ended_at_ms: None,
            usage: ResourceUsage::default(),
            oom_killed: false,
        }),
        pending_stop: Mutex::new(None),
        stop_notify: Notify::new(),
        process: Mutex::new(Some(Arc::clone(&handle))),
        cgroup: Mutex::new(cgroup.clone()),
    });
    {
        let mut table = lock(&shared.table);
        table.jobs.insert(id, Arc::clone(&job));
        if table.shutting_down {
            // A shutdown began while this job was being spawned: it did not see it.
            job.request_stop(StopReason::Shutdown, shared.config.default_grace);
        }
    }
    shared.record(&job, Some(facts));
    slot.armed = false;
    // From here on the supervisor owns the cleanup (its Drop kills and reaps).
    let mut sup = Supervisor::new(
        Arc::clone(shared),
        Arc::clone(&job),
        handle,
        log,
        spec.timeout.map(|t| Instant::now() + t),
        cgroup,
        check_oom,
    );
    let on_terminal = child.terminal.is_some();
    let registered = sup
        .register(watched_pidfd, child.stdout, child.stderr)
        .and_then(|()| {
            child
                .stdin
                .map(|fd| {
                    if on_terminal {
                        JobStdin::terminal(id, fd)
                    } else {
                        JobStdin::new(id, fd)
                    }
                })
                .transpose()
        });
    let terminal = child.terminal.map(|fd| JobTerminal::new(id, fd));
    let stdin = match registered {
        Ok(stdin) => stdin,
        Err(source) => {
            drop(sup);
            return Err(StartError::Internal {
                what: "registering the job's pipes with the runtime",
                message: source.to_string(),
            });
        }
    };
    let mut set = lock(tasks);
    while set.try_join_next().is_some() {}
    set.spawn(sup.run());
    Ok(StartedJob {
        id,
        pid,
        stdin,
        terminal,
    })
}
