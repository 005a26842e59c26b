//! The conformance runner against an in-process qexecd: every check the runner has must
//! pass (spec/conformance.md lists each requirement and its check, or why it cannot be
//! observed from the wire).
//!
//! One test per requirement id, each with its own server, so a failure names the
//! requirement and the others still run.

use std::time::Duration;

use qexec_tests::TestServer;
use qexec_tests::conformance::{self, Config, Outcome};

/// The server's request deadline in these tests (the protocol's is 10 s; the runner is
/// told, so QX-STREAM-18 waits 3 s instead of 10).
const REQUEST_DEADLINE: Duration = Duration::from_secs(3);

async fn server() -> TestServer {
    TestServer::start_with(|c| c.request_timeout = REQUEST_DEADLINE)
        .await
        .expect("in-process qexecd starts")
}

fn config(server: &TestServer) -> Config {
    let id = |name: &str| {
        server
            .identity(name)
            .expect("default test identity")
            .clone()
    };
    let mut c = Config::new(
        server.addr,
        server.pki.ca.cert_pem().to_owned(),
        id("alice"),
    );
    c.user2 = Some(id("bob"));
    c.admin = Some(id("admin"));
    c.viewer = Some(id("auditor"));
    c.request_deadline = REQUEST_DEADLINE;
    c
}

/// Runs the check for requirement `id` and asserts it passed.
async fn check(id: &str) {
    let server = server().await;
    let checks = conformance::select(&[id.to_owned()]).expect("the runner has this check");
    assert_eq!(checks.len(), 1, "{id} selects exactly one check");
    let report = conformance::run(&config(&server), &checks, |r| println!("{r}")).await;
    let result = &report.results[0];
    assert!(
        matches!(result.outcome, Outcome::Pass(_)),
        "qexecd does not conform: {result}"
    );
    server.stop().await.expect("server stops cleanly");
}

macro_rules! requirements {
    ($($(#[$attr:meta])* $name:ident => $id:literal,)*) => {
        $(
            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                check($id).await;
            }
        )*

        /// Every check of the runner has a test here, and every test names a check.
        #[test]
        fn every_check_has_a_test() {
            let tested = [$($id),*];
            let mut ids: Vec<&str> = conformance::checks().iter().map(|c| c.id).collect();
            ids.sort_unstable();
            let mut sorted = tested.to_vec();
            sorted.sort_unstable();
            assert_eq!(ids, sorted, "tests/tests/conformance.rs and the runner's checks differ");
        }
    };
}

requirements! {
    trans_3 => "QX-TRANS-3",
    trans_4 => "QX-TRANS-4",
    trans_5 => "QX-TRANS-5",
    ver_1 => "QX-VER-1",
    frame_1 => "QX-FRAME-1",
    frame_2 => "QX-FRAME-2",
    frame_3 => "QX-FRAME-3",
    frame_4 => "QX-FRAME-4",
    frame_5 => "QX-FRAME-5",
    frame_6 => "QX-FRAME-6",
    ver_3 => "QX-VER-3",
    msg_err_1 => "QX-MSG-ERR-1",
    err_2 => "QX-ERR-2",
    err_3 => "QX-ERR-3",
    stream_20 => "QX-STREAM-20",
    stream_2 => "QX-STREAM-2",
    stream_3 => "QX-STREAM-3",
    stream_4 => "QX-STREAM-4",
    stream_5 => "QX-STREAM-5",
    stream_6 => "QX-STREAM-6",
    stream_7 => "QX-STREAM-7",
    stream_8 => "QX-STREAM-8",
    stream_9 => "QX-STREAM-9",
    stream_10 => "QX-STREAM-10",
    stream_11 => "QX-STREAM-11",
    stream_12 => "QX-STREAM-12",
    stream_13 => "QX-STREAM-13",
    stream_14 => "QX-STREAM-14",
    stream_15 => "QX-STREAM-15",
    stream_16 => "QX-STREAM-16",
    stream_17 => "QX-STREAM-17",
    stream_18 => "QX-STREAM-18",
    stream_19 => "QX-STREAM-19",
    stream_21 => "QX-STREAM-21",
    stream_22 => "QX-STREAM-22",
    stream_23 => "QX-STREAM-23",
    msg_ctrl_9 => "QX-MSG-CTRL-10",
    limit_14 => "QX-LIMIT-18",
    limit_15 => "QX-LIMIT-19",
    msg_enc_4 => "QX-MSG-ENC-4",
    msg_enc_3 => "QX-MSG-ENC-3",
    msg_id_1 => "QX-MSG-ID-1",
    msg_ctrl_1 => "QX-MSG-CTRL-1",
    msg_ctrl_2 => "QX-MSG-CTRL-2",
    msg_ctrl_3 => "QX-MSG-CTRL-3",
    msg_ctrl_4 => "QX-MSG-CTRL-4",
    list_1 => "QX-LIST-1",
    list_2 => "QX-LIST-2",
    list_3 => "QX-LIST-3",
    dur_5 => "QX-DUR-5",
    info_1 => "QX-INFO-1",
    info_4 => "QX-INFO-4",
    info_7 => "QX-INFO-7",
    msg_ctrl_5 => "QX-MSG-CTRL-5",
    msg_ctrl_6 => "QX-MSG-CTRL-6",
    msg_ctrl_7 => "QX-MSG-CTRL-7",
    msg_ctrl_8 => "QX-MSG-CTRL-8",
    msg_srv_1 => "QX-MSG-SRV-1",
    msg_srv_6 => "QX-MSG-SRV-6",
    err_4 => "QX-ERR-4",
    err_5 => "QX-ERR-5",
    err_9 => "QX-ERR-9",
    sec_5 => "QX-SEC-5",
    sec_8 => "QX-SEC-8",
    limit_2 => "QX-LIMIT-2",
    limit_3 => "QX-LIMIT-3",
    limit_4 => "QX-LIMIT-4",
    limit_5 => "QX-LIMIT-5",
    limit_6 => "QX-LIMIT-6",
    limit_7 => "QX-LIMIT-7",
    limit_8 => "QX-LIMIT-8",
    limit_10 => "QX-LIMIT-10",
    limit_11 => "QX-LIMIT-11",
    limit_12 => "QX-LIMIT-12",
    limit_13 => "QX-LIMIT-13",
    limit_17 => "QX-LIMIT-17",
    err_6 => "QX-ERR-6",
    sec_3 => "QX-SEC-3",
    err_7 => "QX-ERR-7",
    sec_1 => "QX-SEC-1",
    term_1 => "QX-TERM-1",
    term_3 => "QX-TERM-3",
    term_4 => "QX-TERM-4",
    term_6 => "QX-TERM-6",
    term_7 => "QX-TERM-7",
}

/// The whole runner in one go, as an implementer would run it: the summary line and
/// the counts agree with the results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_counts_and_summary() {
    let server = server().await;
    let only = ["QX-FRAME-".to_owned()];
    let checks = conformance::select(&only).unwrap();
    let report = conformance::run(&config(&server), &checks, |_| {}).await;
    assert_eq!(report.results.len(), 6);
    assert_eq!(report.passed() + report.failed() + report.skipped(), 6);
    assert_eq!(
        report.summary(),
        format!("{} passed, {} failed", report.passed(), report.failed())
    );
    assert!(conformance::select(&["QX-NOPE-1".to_owned()]).is_err());
    server.stop().await.unwrap();
}
