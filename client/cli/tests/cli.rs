//! The `qexec` binary against an in-process qexecd over real QUIC + mTLS.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{PipeReader, TestServer, WAIT, make_pki, stderr, stdout, wait_child};
use qexec_cli::render::{EventJson, JobJson, StartedJson};

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("qexec exited normally")
}

#[test]
fn run_propagates_exit_codes() {
    let s = TestServer::start();
    let ok = s.run(&["run", "--", "true"]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));

    let three = s.run(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(code(&three), 3, "{}", stderr(&three));
    assert_eq!(stdout(&three), "out\n");
    assert_eq!(stderr(&three), "err\n");

    let killed = s.run(&["run", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(code(&killed), 128 + 9, "{}", stderr(&killed));
    assert!(
        stderr(&killed).contains("was killed by SIGKILL"),
        "{}",
        stderr(&killed)
    );

    let missing = s.run(&["run", "--", "/nonexistent/program"]);
    assert_eq!(code(&missing), 127, "{}", stderr(&missing));
    assert!(
        stderr(&missing).starts_with("qexec: "),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn run_forwards_stdin_with_eof() {
    let s = TestServer::start();
    let mut cmd = s.qexec();
    cmd.args(["run", "-i", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    // Dropping our end of the pipe is the EOF that must reach the job.
    let out = wait_child(child, WAIT);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");

    // More than one StdinData frame (64 KiB each), byte-exact.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut cmd = s.qexec();
    cmd.args(["run", "-i", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let payload = data.clone();
    let writer = std::thread::spawn(move || pipe.write_all(&payload));
    let out = wait_child(child, WAIT);
    writer.join().unwrap().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stdout == data, "stdin round trip changed the bytes");
}

#[test]
fn logs_follow_a_running_job() {
    let s = TestServer::start();
    let go = s.dir().join("go");
    let script = format!(
        "echo one; while [ ! -e {} ]; do sleep 0.02; done; echo two >&2; echo three",
        go.display()
    );
    let started = s.run(&["start", "--", "sh", "-c", &script]);
    assert_eq!(code(&started), 0, "{}", stderr(&started));
    let id = stdout(&started).trim().to_owned();
    assert_eq!(id.len(), 32, "{id:?}");

    let mut cmd = s.qexec();
    cmd.args(["logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = PipeReader::new(child.stdout.take().unwrap());
    let mut err = PipeReader::new(child.stderr.take().unwrap());
    // The job is blocked until `go` exists: seeing "one" proves live following.
    out.wait_for("one\n", WAIT);
    std::fs::write(&go, b"").unwrap();
    assert_eq!(out.read_to_end(WAIT), "one\nthree\n");
    assert_eq!(err.read_to_end(WAIT), "two\n");
    let status = wait_child(child, WAIT);
    assert_eq!(status.status.code(), Some(0));

    // Without -f, from an offset: the rest of the combined output, then exit.
    let tail = s.run(&["logs", "--from", "4", &id]);
    assert_eq!(code(&tail), 0, "{}", stderr(&tail));
    assert_eq!(stdout(&tail), "three\n");
    assert_eq!(stderr(&tail), "two\n");
}

#[test]
fn json_output_parses_back() {
    let s = TestServer::start();
    let started = s.run(&[
        "--json", "start", "--memory", "256M", "--", "sh", "-c", "exit 4",
    ]);
    assert_eq!(code(&started), 0, "{}", stderr(&started));
    let started: StartedJson = serde_json::from_str(&stdout(&started)).unwrap();
    assert_eq!(started.job.len(), 32);
    // Wait for its end by following it.
    let follow = s.run(&["logs", "-f", &started.job]);
    assert_eq!(code(&follow), 0, "{}", stderr(&follow));

    let status = s.run(&["status", "--json", &started.job]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let status: JobJson = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status.id, started.job);
    assert_eq!(status.owner, "tester");
    assert_eq!(status.state, "exited");
    assert_eq!(status.exit_code, Some(4));
    assert_eq!(status.argv, ["sh", "-c", "exit 4"]);
    assert_eq!(status.argv_hex, None);

    let list = s.run(&["list", "--json"]);
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    let list: Vec<JobJson> = serde_json::from_str(&stdout(&list)).unwrap();
    assert!(list.iter().any(|j| j.id == started.job), "{list:?}");

    let run = s.run(&["run", "--json", "--", "printf", "a\\377"]);
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    let events: Vec<EventJson> = stdout(&run)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        matches!(&events[0], EventJson::Started { .. }),
        "{events:?}"
    );
    let data: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EventJson::Output { data_hex, .. } => data_hex.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(data, ["61ff"]);
    match events.last().unwrap() {
        EventJson::End { status } => assert_eq!(status.exit_code, Some(0)),
        other => panic!("last event {other:?}"),
    }
}

/// Replaces the volatile parts of human output (ids, pids, times) with placeholders.
fn normalise(text: &str, ids: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (id, name) in ids {
        text = text.replace(id, name);
        // `qexec list` shows short ids (unique prefixes of at least 8 digits).
        text = text.replace(&id[..8], name);
    }
    let volatile = ["pid", "started", "ended", "ran", "running", "usage"];
    let stable = [
        "job", "command", "owner", "state", "reason", "output", "oom", "limits",
    ];
    text.lines()
        .map(|line| {
            let key = line.split_whitespace().next().unwrap_or("");
            if volatile.contains(&key) {
                format!("{key:<9} <{key}>")
            } else if stable.contains(&key) {
                line.to_owned()
            } else if line.contains("  ") {
                // A table row: cells are separated by two or more spaces.
                let cells: Vec<&str> = line
                    .split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                let mut cells: Vec<String> = cells.iter().map(|c| c.to_string()).collect();
                if cells.len() == 6 && cells[0] != "ID" {
                    cells[3] = "<started>".into();
                    cells[4] = "<time>".into();
                }
                cells.join(" | ")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(actual, expected, "differs from {}", path.display());
}

#[test]
fn human_output_matches_golden_files() {
    let s = TestServer::start();
    let a = s.run(&[
        "start",
        "--pids",
        "64",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    let a = stdout(&a).trim().to_owned();
    assert_eq!(code(&s.run(&["logs", "-f", &a])), 0);

    let b = s.run(&["start", "--", "sleep", "600"]);
    let b = stdout(&b).trim().to_owned();
    let stopped = s.run(&["stop", "--grace", "1s", &b]);
    assert_eq!(code(&stopped), 0, "{}", stderr(&stopped));
    assert_eq!(
        stdout(&stopped),
        format!("job {b}: stopped by tester, SIGTERM\n")
    );

    let ids = [(a.as_str(), "<ID-A>"), (b.as_str(), "<ID-B>")];
    let status = s.run(&["status", &a]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    golden("cli-status.txt", &normalise(&stdout(&status), &ids));
    let list = s.run(&["list"]);
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    golden("cli-list.txt", &normalise(&stdout(&list), &ids));
}

#[test]
fn ctrl_c_stops_the_remote_job() {
    let s = TestServer::start();
    let mut cmd = s.qexec();
    cmd.args(["run", "--json", "--", "sleep", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut out = PipeReader::new(child.stdout.take().unwrap());
    let mut err = PipeReader::new(child.stderr.take().unwrap());
    out.wait_for("\"event\":\"started\"", WAIT);
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    err.wait_for("stopping job", WAIT);
    let status = wait_child(child, WAIT);
    // sleep dies of the SIGTERM qexecd sends on stop: 128 + 15.
    assert_eq!(
        status.status.code(),
        Some(128 + 15),
        "{}",
        err.read_to_end(WAIT)
    );

    // A job that ignores SIGTERM keeps running through the grace period: a second
    // Ctrl-C detaches at once and names the job.
    let mut cmd = s.qexec();
    cmd.args(["run", "--json", "--", "sh", "-c", "trap '' TERM; sleep 600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let mut out = PipeReader::new(child.stdout.take().unwrap());
    let mut err = PipeReader::new(child.stderr.take().unwrap());
    out.wait_for("\"event\":\"started\"", WAIT);
    let interrupt = || {
        let kill = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        assert!(kill.unwrap().success());
    };
    interrupt();
    err.wait_for("stopping job", WAIT);
    interrupt();
    err.wait_for("detached from job", WAIT);
    let status = wait_child(child, WAIT);
    assert_eq!(status.status.code(), Some(255));
}

#[test]
fn errors_are_one_clear_line() {
    let s = TestServer::start();
    let one_line = |out: &std::process::Output| {
        let e = stderr(out);
        assert_eq!(code(out), 255, "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with("qexec: "), "{e}");
        e
    };

    // Unreachable: a UDP port that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let out = s.run(&["--addr", &addr, "--connect-timeout", "300ms", "list"]);
    let e = one_line(&out);
    assert!(
        e.contains(&format!(
            "cannot reach qexecd at {addr} (timed out after 0.3s)"
        )),
        "{e}"
    );

    // A server certificate our CA did not sign.
    let other = make_pki();
    let other_ca = other.path().join("ca.pem");
    let out = s.run(&["--ca", other_ca.to_str().unwrap(), "list"]);
    let e = one_line(&out);
    assert!(
        e.contains(&format!(
            "server certificate is not signed by the CA in {}",
            other_ca.display()
        )),
        "{e}"
    );

    // Our certificate is from another CA.
    let cert = other.path().join("client.pem");
    let key = other.path().join("client-key.pem");
    let out = s.run(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "list",
    ]);
    let e = one_line(&out);
    assert!(e.contains("the server rejected our certificate"), "{e}");

    // A job that does not exist.
    let id = "0123456789abcdef0123456789abcdef";
    let e = one_line(&s.run(&["status", id]));
    assert!(e.contains(&format!("job {id} not found")), "{e}");

    // A viewer may not start jobs.
    let viewer = s.dir().join("users/auditor.pem");
    let viewer_key = s.dir().join("users/auditor-key.pem");
    let out = s.run(&[
        "--cert",
        viewer.to_str().unwrap(),
        "--key",
        viewer_key.to_str().unwrap(),
        "run",
        "--",
        "true",
    ]);
    let e = one_line(&out);
    assert!(e.contains("permission_denied"), "{e}");

    // Usage errors are qexec's own failures too.
    let out = s.run(&["run", "--memory", "12X", "--", "true"]);
    assert_eq!(code(&out), 255);
    assert!(
        stderr(&out).contains("invalid size \"12X\""),
        "{}",
        stderr(&out)
    );
}

// Over the wire (spec: QX-ERR-5): a limit above qexecd's maximum is refused by
// the server with InvalidArgument, and the CLI names the flag, what was typed and the
// maximum in the flag's unit, on one line, exit 255.
#[test]
fn limit_above_server_maximum_is_one_clear_line() {
    let s = TestServer::start_with(|c| c.max_limits.memory_bytes = Some(64 << 20));
    let out = s.run(&["run", "--memory", "1G", "--", "true"]);
    let e = stderr(&out);
    assert_eq!(code(&out), 255, "{e}");
    assert_eq!(
        e,
        "qexec: --memory 1G is above the server maximum (64 MiB): ask for less, or raise \
         qexecd's maximum\n"
    );
    assert_eq!(stdout(&out), "");
    // No job was started for it.
    let list = s.run(&["list", "--json"]);
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    let list: Vec<JobJson> = serde_json::from_str(&stdout(&list)).unwrap();
    assert!(list.is_empty(), "a refused start left a job: {list:?}");
}

#[test]
fn demo_tour_and_demo_command() {
    let demo = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qexec"));
        cmd.args(args)
            .env_remove("QEXEC_ADDR")
            .env_remove("QEXEC_CONFIG_DIR")
            .stdin(Stdio::null());
        common::output_within(cmd, WAIT)
    };
    let out = demo(&["demo"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "[follower 1] tick 4",
        "[follower 2] tick 4",
        "both followers saw the end: exited 0 / exited 0",
        "state     exited 0",
        "stopped by",
        "4. A job with resource limits",
        "done: qexecd shut down",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    let out = demo(&["demo", "--", "sh", "-c", "echo hi; exit 5"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stdout(&out).ends_with("hi\n"), "{}", stdout(&out));
}

/// The demo must work for a non-root user too (limits reported as off). As root, run
/// it as `nobody` with setpriv; as non-root, the test above already does.
#[test]
fn demo_works_without_root() {
    // Without root, demo_tour_and_demo_command already runs the demo without root.
    if !qexec_server::job::testkit::require_root("demo_works_without_root") {
        return;
    }
    let out = common::output_within(
        {
            let mut cmd = std::process::Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_qexec"))
                .arg("demo")
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", "/nonexistent")
                .current_dir("/")
                .stdin(Stdio::null());
            cmd
        },
        WAIT,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("limits are off"), "{text}");
    assert!(text.contains("both followers saw the end"), "{text}");
}

/// The server is verified for the host we dial: its IP (IPv4 or IPv6) or name must be
/// in the certificate (the dev PKI has localhost, 127.0.0.1 and ::1).
#[test]
fn server_name_is_checked_for_the_dialled_address() {
    let v6 = TestServer::start_with(|c| c.listen = "[::1]:0".parse().unwrap());
    let addr = format!("[::1]:{}", v6.addr.port());
    let out = v6.run(&["--addr", &addr, "run", "--", "echo", "v6"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "v6\n");

    let other_ip = TestServer::start_with(|c| c.listen = "127.0.0.2:0".parse().unwrap());
    let by_name = format!("localhost:{}", other_ip.addr.port());
    let by_ip = format!("127.0.0.2:{}", other_ip.addr.port());
    let out = other_ip.run(&["--addr", &by_ip, "list"]);
    assert_eq!(code(&out), 255);
    assert!(
        stderr(&out).contains("server certificate is not valid for 127.0.0.2"),
        "{}",
        stderr(&out)
    );
    // localhost resolves to 127.0.0.1 here, where nothing listens on that port: the
    // name is fine but the server is not there.
    let out = other_ip.run(&["--addr", &by_name, "--connect-timeout", "300ms", "list"]);
    assert_eq!(code(&out), 255);
    assert!(
        stderr(&out).contains("cannot reach qexecd"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn certs_issue_and_completions() {
    let s = TestServer::start();
    let dir = s.dir().to_str().unwrap().to_owned();
    let out = s.run(&["certs", "issue", "carol", "--role", "user", "--dir", &dir]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let cert = s.dir().join("users/carol.pem");
    let key = s.dir().join("users/carol-key.pem");
    let as_carol = |args: &[&str]| {
        let mut all = vec![
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        s.run(&all)
    };
    let started = as_carol(&["--json", "start", "--", "true"]);
    assert_eq!(code(&started), 0, "{}", stderr(&started));
    let started: StartedJson = serde_json::from_str(&stdout(&started)).unwrap();
    let status = as_carol(&["--json", "status", &started.job]);
    let status: JobJson = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status.owner, "carol");

    // Issuing the same name twice is refused, one line, 255.
    let again = s.run(&["certs", "issue", "carol", "--role", "user", "--dir", &dir]);
    assert_eq!(code(&again), 255);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // A fresh init refuses to overwrite the CA.
    let init = s.run(&["certs", "init", "--dir", &dir]);
    assert_eq!(code(&init), 255);
    assert!(
        stderr(&init).contains("refusing to overwrite"),
        "{}",
        stderr(&init)
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = s.run(&["completions", shell]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(stdout(&out).contains("qexec"), "{shell}");
        assert!(stdout(&out).contains("logs"), "{shell}");
    }
}
