//! Issue 18 (the everyday CLI) and issue 14 item 10 (terminal injection): each bug a
//! new user hit, reproduced with the `qexec` binary against an in-process qexecd.

mod common;

use std::process::{Output, Stdio};

use common::{PipeReader, TestServer, WAIT, stderr, stdout, wait_child};
use qexec_cli::render::{EventJson, JobJson, StartedJson};

fn code(out: &Output) -> i32 {
    out.status.code().expect("qexec exited normally")
}

/// `qexec …` as the `users/<name>` identity of the test PKI.
fn as_user(s: &TestServer, user: &str, args: &[&str]) -> Output {
    let cert = s.dir().join(format!("users/{user}.pem"));
    let key = s.dir().join(format!("users/{user}-key.pem"));
    let mut all = vec![
        "--cert".to_owned(),
        cert.display().to_string(),
        "--key".to_owned(),
        key.display().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    s.run(&all)
}

/// Starts a job and returns its id.
fn start(s: &TestServer, argv: &[&str]) -> String {
    let mut args = vec!["--json", "start", "--"];
    args.extend_from_slice(argv);
    let out = s.run(&args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_str::<StartedJson>(&stdout(&out))
        .expect("start --json")
        .job
}

// Bug 1: `--memory 4096` used to start a job that died before exec with a bare 127.
#[test]
fn a_memory_limit_too_small_to_start_is_refused_up_front() {
    // spec: QX-LIMIT-17
    let s = TestServer::start();
    for typed in ["4096", "512", "4095K"] {
        let out = s.run(&["run", "--memory", typed, "--", "echo", "hello"]);
        assert_eq!(code(&out), 255, "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "qexec: --memory {typed} is below the minimum of 4 MiB: no program can start \
                 with less memory (see --help)\n"
            )
        );
        assert_eq!(stdout(&out), "");
    }
    // The minimum itself is accepted (isolation is off here; the limit is recorded).
    let out = s.run(&["run", "--memory", "4M", "--", "echo", "hello"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    // Nothing was started for the refused ones.
    let list = s.run(&["--json", "list"]);
    let jobs: Vec<JobJson> = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
}

// Bug 4: `--json run -- nosuchcmd` printed nothing on stdout; `start` exited 255.
#[test]
fn a_program_that_is_not_found_says_so_in_every_form() {
    let s = TestServer::start();
    let out = s.run(&["--json", "run", "--", "nosuchcmd"]);
    assert_eq!(code(&out), 127, "{}", stderr(&out));
    let events: Vec<EventJson> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    match events.as_slice() {
        [
            EventJson::FailedToStart {
                spawn_failure,
                message,
                exit,
            },
        ] => {
            assert_eq!(spawn_failure, "not_found");
            assert!(message.contains("nosuchcmd"), "{message}");
            assert_eq!(*exit, 127);
        }
        other => panic!("expected one failed_to_start event, got {other:?}"),
    }
    // With --json the error on stderr is JSON too.
    let err: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(err["code"], "spawn_failed");

    let out = s.run(&["start", "--", "nosuchcmd"]);
    assert_eq!(code(&out), 127, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // The server's advice is not followed by a second one.
    let e = stderr(&out);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("qexec: the job could not start: program nosuchcmd not found in PATH "),
        "{e}"
    );
    assert_eq!(
        e.matches("install it, fix PATH, or give its full path")
            .count(),
        1,
        "{e}"
    );
    // The failed start is a job record the user can look at (spec: QX-DUR-5).
    assert!(
        e.contains("(recorded as job ") && e.ends_with(", state FailedToStart)\n"),
        "{e}"
    );
}

// Bug 6: errors named wire fields and spec ids; clap's own format for usage errors.
#[test]
fn errors_name_the_flags_the_user_typed() {
    let s = TestServer::start();
    let cases: [(&[&str], &str); 5] = [
        (
            &["run", "-C", "etc", "--", "true"],
            "qexec: -C etc is not an absolute path: give a path starting with / (see --help)\n",
        ),
        (
            &["run", "--pids", "0", "--", "true"],
            "qexec: --pids 0 must be at least 1 (see --help)\n",
        ),
        (
            &["run", "--cpu", "0", "--", "true"],
            "qexec: invalid value '0' for '--cpu <CPUS>': \"0\" CPUs is no CPU at all: expected \
             more than 0, e.g. 0.5 or 250m (see `qexec run --help`)\n",
        ),
        (
            &["run", "--bogus", "--", "true"],
            "qexec: unexpected argument '--bogus' found (see `qexec run --help`)\n",
        ),
        (
            &["run", "-e", "=x", "--", "true"],
            "qexec: --env \"=x\" has an empty name (see --help)\n",
        ),
    ];
    for (args, expected) in cases {
        let out = s.run(args);
        assert_eq!(code(&out), 255, "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), expected, "{args:?}");
        assert!(!stderr(&out).contains("QX-"), "{args:?}");
    }
    // With --json, a usage error is a JSON object on stderr.
    let out = s.run(&["--json", "status", "nothex"]);
    assert_eq!(code(&out), 255);
    let err: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("nothex"),
        "{}",
        stderr(&out)
    );
    assert_eq!(err["code"], serde_json::Value::Null);
}

// Issue 14 item 10: ESC, BEL, CR in argv (and in anything else from the server) reach
// the terminal escaped, like `ls --quoting-style=shell-escape`.
#[test]
fn status_and_list_escape_control_characters() {
    // spec: QX-SEC-6
    let s = TestServer::start();
    let hostile = "x\x1b]0;pwned\x07\rX";
    let id = start(&s, &["echo", hostile]);
    assert_eq!(code(&s.run(&["logs", "-f", &id])), 0);
    let escaped = r"echo $'x\e]0;pwned\a\rX'";

    let status = s.run(&["status", &id]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let text = stdout(&status);
    assert!(text.contains(&format!("command   {escaped}\n")), "{text:?}");
    let list = s.run(&["list"]);
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    let table = stdout(&list);
    assert!(table.contains(escaped), "{table:?}");
    for out in [&text, &table] {
        assert!(
            !out.contains(['\x1b', '\x07', '\r']),
            "raw control characters: {out:?}"
        );
    }
    // JSON keeps the exact text (it is escaped by JSON itself).
    let json = s.run(&["--json", "status", &id]);
    let job: JobJson = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(job.argv, ["echo", hostile]);
    // The job's own output is its bytes, unchanged.
    let logs = s.run(&["logs", &id]);
    assert_eq!(stdout(&logs), format!("{hostile}\n"));
}

// Bug 5: a `run` job stopped by someone else ended with 143 and no word of who.
#[test]
fn a_run_job_stopped_by_another_user_says_who() {
    let s = TestServer::start();
    let mut cmd = s.qexec();
    cmd.args(["--json", "run", "--", "sleep", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = PipeReader::new(child.stdout.take().unwrap());
    let mut err = PipeReader::new(child.stderr.take().unwrap());
    out.wait_for("\"event\":\"started\"", WAIT);
    let started = String::from_utf8_lossy(&out.seen).into_owned();
    let first = started.lines().next().unwrap();
    let EventJson::Started { job, .. } = serde_json::from_str(first).unwrap() else {
        panic!("{first}")
    };
    let stop = as_user(&s, "admin", &["stop", "--grace", "1s", &job]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    let done = wait_child(child, WAIT);
    assert_eq!(done.status.code(), Some(143));
    // --json: the end event carries it.
    out.read_to_end(WAIT);
    assert!(
        String::from_utf8_lossy(&out.seen).contains("\"stopped_by\":\"admin\""),
        "{}",
        String::from_utf8_lossy(&out.seen)
    );
    drop(err.read_to_end(WAIT));

    // Human mode: one line on stderr.
    let mut cmd = s.qexec();
    cmd.args(["run", "--", "sh", "-c", "echo up; exec sleep 600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = PipeReader::new(child.stdout.take().unwrap());
    let mut err = PipeReader::new(child.stderr.take().unwrap());
    out.wait_for("up\n", WAIT);
    let list = s.run(&["--json", "list", "--running"]);
    let jobs: Vec<JobJson> = serde_json::from_str(&stdout(&list)).unwrap();
    let job = &jobs
        .iter()
        .find(|j| j.argv[0] == "sh")
        .expect("the run job")
        .id;
    let stop = as_user(&s, "admin", &["stop", "--grace", "1s", job]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    let done = wait_child(child, WAIT);
    assert_eq!(done.status.code(), Some(143));
    assert_eq!(
        err.read_to_end(WAIT),
        format!("qexec: job {job} stopped by admin, SIGTERM\n")
    );
}

// Bug 2: after Ctrl-C the client kept printing ~1 GB of backlog; the second Ctrl-C
// spoke of a job stopped long ago.
#[test]
fn ctrl_c_skips_the_backlog_and_says_how_the_job_ended() {
    let s = TestServer::start();
    let mut cmd = s.qexec();
    cmd.args(["run", "--", "yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let mut out = PipeReader::new(child.stdout.take().unwrap());
    let mut err = PipeReader::new(child.stderr.take().unwrap());
    // Output is flowing (the reader thread keeps draining the pipe).
    out.wait_for("y\ny\ny\n", WAIT);
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let done = wait_child(child, WAIT);
    assert_eq!(done.status.code(), Some(143));
    let e = err.read_to_end(WAIT);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with("qexec: stopping job ")
            && lines[0].ends_with("; output not shown yet is skipped (Ctrl-C again to detach)"),
        "{e}"
    );
    assert!(
        lines[1].starts_with("qexec: job ")
            && lines[1].ends_with(" stopped (Ctrl-C): stopped by tester, SIGTERM"),
        "{e}"
    );
}

// Bug 9: a server that is down cost the whole connect timeout.
#[test]
fn a_closed_port_fails_at_once_not_after_the_connect_timeout() {
    let s = TestServer::start();
    // A port nothing listens on (bound, then released).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // A connect timeout longer than the test's bound: only the ICMP answer ends it.
    let out = s.run(&["--addr", &addr, "--connect-timeout", "1h", "list"]);
    assert_eq!(code(&out), 255);
    assert_eq!(
        stderr(&out),
        format!(
            "qexec: cannot reach qexecd at {addr}: nothing listens on that UDP port (the host \
             answered port unreachable): is qexecd running, and on this port? (--addr / \
             QEXEC_ADDR)\n"
        )
    );
}

// Bug 3: a suspended or briefly disconnected `run` lost its job ("stopped (detached)").
// The connection here idles out on both sides while the job is silent (the server's
// idle timeout is far below the client's keep-alive interval): a lost connection, not
// a close. The server keeps the job (grace period), `run` reconnects, takes it over
// and continues from the byte it had reached. (With `detach_grace` 0 this fails: the
// job is stopped `Detached`, exit 143.)
#[test]
fn run_survives_a_lost_connection_and_resumes_from_its_offset() {
    // spec: QX-STREAM-24
    let s = TestServer::start_with(|c| {
        c.idle_timeout = std::time::Duration::from_millis(300);
        c.keep_alive = std::time::Duration::from_secs(60);
    });
    let out = s.run(&[
        "run",
        "--",
        "sh",
        "-c",
        // Silent for longer than the idle timeout: the connection is lost meanwhile.
        "echo one; sleep 3; echo two",
    ]);
    let e = stderr(&out);
    assert_eq!(code(&out), 0, "{e}");
    assert_eq!(stdout(&out), "one\ntwo\n");
    // Said once, though each new connection idles out again while the job is silent.
    assert_eq!(e.matches("reconnecting").count(), 1, "{e}");
    assert!(
        e.contains("reconnecting to job ") && e.contains(" from byte 4"),
        "{e}"
    );
}

/// Starts a job as `users/<user>` and returns its id.
fn start_as(s: &TestServer, user: &str, argv: &[&str]) -> String {
    let mut args = vec!["--json", "start", "--"];
    args.extend_from_slice(argv);
    let out = as_user(s, user, &args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_str::<StartedJson>(&stdout(&out))
        .expect("start --json")
        .job
}

// Short ids: any unique prefix of 4+ hex digits among the jobs the caller can see;
// another user's job never matches; ambiguity lists the candidates; `@last`.
#[test]
fn jobs_are_named_by_unique_prefix_or_at_last() {
    let s = TestServer::start();
    // Enough jobs of alice that two share their first 4 digits (16^4 = 65536 prefixes:
    // with 400 ids a shared one is all but certain; the test finds it rather than
    // assuming it).
    let mut alice = Vec::new();
    for _ in 0..400 {
        alice.push(start_as(&s, "alice", &["true"]));
    }
    let last = alice.last().unwrap().clone();
    let bob = start_as(&s, "bob", &["sleep", "600"]);

    // A unique prefix: status shows the job.
    let mine = &alice[0];
    let unique = (4..=32)
        .map(|n| &mine[..n])
        .find(|p| {
            alice
                .iter()
                .chain([&bob])
                .filter(|id| id.starts_with(p))
                .count()
                == 1
        })
        .unwrap();
    let out = as_user(&s, "alice", &["status", unique]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&format!("job       {mine}\n")));

    // Another user's job never matches, even by its full prefix; admin sees it.
    let out = as_user(&s, "alice", &["status", &bob[..12]]);
    assert_eq!(code(&out), 255);
    assert_eq!(
        stderr(&out),
        format!(
            "qexec: no job id starts with {} (among the jobs this certificate's identity can \
             see): check it with `qexec list`\n",
            &bob[..12]
        )
    );
    let out = as_user(&s, "admin", &["status", &bob[..12]]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Ambiguous: the candidates are named.
    let mut by4: std::collections::HashMap<&str, Vec<&String>> = Default::default();
    for id in &alice {
        by4.entry(&id[..4]).or_default().push(id);
    }
    if let Some((prefix, ids)) = by4.iter().find(|(_, ids)| ids.len() > 1) {
        let out = as_user(&s, "alice", &["status", prefix]);
        assert_eq!(code(&out), 255);
        let e = stderr(&out);
        assert!(
            e.starts_with(&format!(
                "qexec: job id prefix {prefix} is ambiguous: it matches "
            )),
            "{e}"
        );
        for id in ids {
            assert!(e.contains(id.as_str()), "{e}");
        }
    }

    // @last is the caller's newest job, not anyone's.
    let out = as_user(&s, "alice", &["status", "@last"]);
    assert!(
        stdout(&out).starts_with(&format!("job       {last}\n")),
        "{}",
        stdout(&out)
    );
    let out = as_user(&s, "admin", &["status", "@last"]);
    assert_eq!(code(&out), 255);
    assert!(
        stderr(&out).contains("@last: admin has started no job"),
        "{}",
        stderr(&out)
    );
    let out = as_user(&s, "bob", &["stop", "--grace", "0s", "@last"]);
    assert_eq!(
        stdout(&out),
        format!("job {bob}: stopped by bob, SIGKILL\n")
    );
}

#[test]
fn wait_exits_with_the_jobs_status_and_kill_signals_it() {
    let s = TestServer::start();
    let seven = start(&s, &["sh", "-c", "exit 7"]);
    let out = s.run(&["wait", &seven[..10]]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    // A running job: kill -s TERM, then wait gives 128+15.
    let sleeper = start(&s, &["sleep", "600"]);
    let out = s.run(&["kill", "-s", "term", "@last"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("job {sleeper}: sent SIGTERM; ")),
        "{}",
        stdout(&out)
    );
    let out = s.run(&["--json", "wait", &seven, &sleeper]);
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    let ends: Vec<JobJson> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[0].exit_code, Some(7));
    assert_eq!(ends[1].signal, Some(15));

    let out = s.run(&["kill", "-s", "NOPE", "@last"]);
    assert_eq!(code(&out), 255);
    assert!(
        stderr(&out).contains("unknown signal \"NOPE\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn logs_tail_and_timestamps() {
    let s = TestServer::start();
    // One stream only: the order of stdout and stderr in the combined output is the
    // order the server captured them in.
    let id = start(&s, &["sh", "-c", "seq 1 5000; printf last"]);
    assert_eq!(code(&s.run(&["wait", &id])), 0);
    let out = s.run(&["logs", "--tail", "3", &id]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A last line without its newline counts.
    assert_eq!(stdout(&out), "4999\n5000\nlast");
    let out = s.run(&["logs", "-n", "0", &id]);
    assert_eq!((stdout(&out).as_str(), code(&out)), ("", 0));
    // More lines than there are: everything.
    let out = s.run(&["logs", "--tail", "100000", &id]);
    assert_eq!(stdout(&out).lines().count(), 5001);

    let out = s.run(&["--json", "logs", "--timestamps", "--tail", "1", &id]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events: Vec<EventJson> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventJson::Output { ts_ms: Some(t), .. } if *t > 0)),
        "{events:?}"
    );
    let out = s.run(&["logs", "--timestamps", &id]);
    assert_eq!(code(&out), 255);
    assert!(stderr(&out).contains("--timestamps needs --json"));
}

#[test]
fn list_is_newest_first_and_filters() {
    let s = TestServer::start();
    let old = start_as(&s, "alice", &["true"]);
    assert_eq!(code(&s.run(&["wait", &old])), 0);
    let running = start_as(&s, "bob", &["sleep", "600"]);
    let long = "x".repeat(200);
    let newest = start_as(&s, "alice", &["echo", &long]);
    assert_eq!(code(&s.run(&["wait", &newest])), 0);

    let out = s.run(&["list"]);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[1].starts_with(&newest[..8]), "{table}");
    assert!(rows[3].starts_with(&old[..8]), "{table}");
    assert!(rows.iter().all(|r| r.chars().count() <= 80), "{table}");
    assert!(rows[1].ends_with('…'), "{table}");

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--json", "list"];
        all.extend_from_slice(args);
        let out = s.run(&all);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_str::<Vec<JobJson>>(&stdout(&out))
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    assert_eq!(ids(&[]), [newest.clone(), running.clone(), old.clone()]);
    assert_eq!(ids(&["--state", "running"]), std::slice::from_ref(&running));
    assert_eq!(ids(&["--running"]), std::slice::from_ref(&running));
    assert_eq!(ids(&["--state", "ended"]), [newest.clone(), old.clone()]);
    assert_eq!(ids(&["--user", "alice"]), [newest.clone(), old.clone()]);
    assert_eq!(ids(&["--limit", "1"]), std::slice::from_ref(&newest));
    assert_eq!(ids(&["--state", "failed"]), Vec::<String>::new());
}

// Named servers in $QEXEC_CONFIG_DIR/config.toml, chosen with -s / QEXEC_SERVER.
#[test]
fn named_servers_from_config_toml() {
    let s = TestServer::start();
    std::fs::write(
        s.dir().join("config.toml"),
        format!(
            "[servers.here]\naddr = \"{}\"\n\n[servers.alice]\naddr = \"{}\"\ncert = \
             \"users/alice.pem\"\nkey = \"users/alice-key.pem\"\n",
            s.addr, s.addr
        ),
    )
    .unwrap();
    let qexec = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = s.qexec();
        cmd.env_remove("QEXEC_ADDR").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        common::output_within(cmd, WAIT)
    };
    let out = qexec(&[], &["-s", "here", "run", "--", "echo", "hi"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "hi\n"),
        "{}",
        stderr(&out)
    );
    // The profile's certificate is used: the job is alice's.
    let out = qexec(
        &[("QEXEC_SERVER", "alice")],
        &["--json", "start", "--", "true"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = qexec(&[("QEXEC_SERVER", "alice")], &["--json", "status", "@last"]);
    let job: JobJson = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(job.owner, "alice");
    // A flag wins over the profile: --addr of a closed port fails.
    let out = qexec(&[], &["-s", "here", "--addr", "127.0.0.1:1", "list"]);
    assert_eq!(code(&out), 255);
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    // An unknown name is one clear line.
    let out = qexec(&[], &["-s", "nope", "list"]);
    assert_eq!(code(&out), 255);
    assert_eq!(
        stderr(&out),
        format!(
            "qexec: no server named \"nope\" in {} (it has alice, here): add a \
             [servers.nope] table, or fix the name (-s / QEXEC_SERVER)\n",
            s.dir().join("config.toml").display()
        )
    );
}

// `-e NAME` passes the local value; `--env-file`; -e wins over the file.
#[test]
fn environment_from_local_values_and_files() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.env");
    std::fs::write(&file, "# comment\n\nA=from file\nB=file\nLOCAL_ONE\n").unwrap();
    let mut cmd = s.qexec();
    cmd.env("LOCAL_ONE", "local value").args([
        "run",
        "--env-file",
        file.to_str().unwrap(),
        "-e",
        "B=flag",
        "-e",
        "LOCAL_ONE",
        "--",
        "sh",
        "-c",
        "echo \"$A|$B|$LOCAL_ONE\"; env | grep -c '^B='",
    ]);
    let out = common::output_within(cmd, WAIT);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "from file|flag|local value\n1\n");

    let out = s.run(&["run", "-e", "QEXEC_TEST_SURELY_UNSET", "--", "true"]);
    assert_eq!(code(&out), 255);
    assert_eq!(
        stderr(&out),
        "qexec: --env \"QEXEC_TEST_SURELY_UNSET\": QEXEC_TEST_SURELY_UNSET is not set here \
         (give NAME=VALUE to set it) (see --help)\n"
    );
}

// `qexec certs issue-server` reissues only the server certificate.
#[test]
fn certs_issue_server_keeps_the_ca_and_clients() {
    let s = TestServer::start();
    let pki = common::make_pki();
    let dir = pki.path();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (ca, client, server) = (read("ca.pem"), read("client.pem"), read("server.pem"));
    let out = s.run(&[
        "certs",
        "issue-server",
        "--dir",
        dir.to_str().unwrap(),
        "--san",
        "build-01.example.org",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(
            "issued a new server certificate (names localhost, 127.0.0.1, ::1, \
             build-01.example.org)\n"
        ),
        "{}",
        stdout(&out)
    );
    assert_eq!(read("ca.pem"), ca);
    assert_eq!(read("client.pem"), client);
    assert_ne!(read("server.pem"), server);
    // Without a CA there: one clear line.
    let empty = tempfile::tempdir().unwrap();
    let out = s.run(&[
        "certs",
        "issue-server",
        "--dir",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 255);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

// `qexec man --out DIR`: pages made from the clap definitions.
#[test]
fn man_pages_are_written() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = s.run(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for page in [
        "qexec.1",
        "qexec-run.1",
        "qexec-kill.1",
        "qexec-certs-issue-server.1",
        "qexec-info.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let run = std::fs::read_to_string(dir.path().join("qexec-run.1")).unwrap();
    assert!(run.contains("timestamps"), "{run}");
}

// `qexec info`: the server's load and limits, human and --json (spec: QX-INFO-1 to
// QX-INFO-6); a viewer may ask (spec: QX-AUTHZ-6).
#[test]
fn info_shows_load_limits_and_your_own_jobs() {
    use qexec_cli::InfoJson;
    let s = TestServer::start_with(|c| {
        c.max_jobs = 9;
        c.max_jobs_per_user = 4;
    });
    let job = start(&s, &["sleep", "600"]);
    let out = s.run(&["--json", "info"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let info: InfoJson = serde_json::from_str(&stdout(&out)).expect("info --json");
    assert_eq!(info.server_version, env!("CARGO_PKG_VERSION"));
    assert_eq!((info.running_jobs, info.max_jobs), (1, 9));
    assert_eq!((info.caller_running_jobs, info.max_jobs_per_user), (1, 4));
    assert_eq!(info.free_slots, 3);
    assert!(info.cpus >= 1);

    let out = s.run(&["info"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["server", "version", "jobs", "yours", "free", "cpus"]);
    assert!(
        text.contains("\njobs    1 running of 9 (all users)\n"),
        "{text}"
    );
    assert!(
        text.contains("\nyours   1 running of 4 per user\n"),
        "{text}"
    );
    assert!(text.contains("\nfree    3\n"), "{text}");

    // Another identity: the server's count, not the job's owner's.
    let out = as_user(&s, "auditor", &["--json", "info"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let seen: InfoJson = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((seen.running_jobs, seen.caller_running_jobs), (1, 0));
    let out = s.run(&["stop", &job]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

// A closed stdout (`qexec run -- yes | head -1`) must stop the job: the close frame
// alone could be lost under the flood of output, leaving the job running.
#[test]
fn a_closed_stdout_stops_the_job() {
    let s = TestServer::start();
    for round in 0..5 {
        let mut cmd = s.qexec();
        cmd.args(["run", "--", "yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdout.take().unwrap();
        let mut first = [0u8; 2];
        std::io::Read::read_exact(&mut pipe, &mut first).unwrap();
        assert_eq!(&first, b"y\n");
        drop(pipe); // the reader is gone, as `head -1` exits
        let done = wait_child(child, WAIT);
        assert_eq!(
            done.status.code(),
            Some(141),
            "round {round}: {}",
            stderr(&done)
        );
        let status = s.run(&["status", "@last"]);
        let text = stdout(&status);
        assert!(
            !text.contains("running"),
            "round {round}: the job still runs after its client exited: {text}"
        );
    }
}

// Bug: about a third of short commands lost their goodbye. quinn-proto gates the
// packet carrying CONNECTION_CLOSE by the congestion window, which the path-MTU probes
// had just filled (quinn-rs/quinn#2785), so the server kept those connections until
// its idle timeout and a shell loop of `qexec` commands was refused with "user …
// already has 64 connections open".
#[test]
fn commands_in_a_loop_never_hit_the_per_user_connection_cap() {
    let s = TestServer::start_with(|c| c.max_connections_per_identity = 2);
    for i in 0..40 {
        let args: &[&str] = if i % 2 == 0 {
            &["run", "--", "/bin/true"]
        } else {
            &["list"]
        };
        let out = s.run(args);
        assert_eq!(code(&out), 0, "command {i} ({args:?}): {}", stderr(&out));
    }
}
