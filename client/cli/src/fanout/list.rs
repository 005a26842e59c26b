//! `qexec list` on several hosts: every host asked at once (at most
//! [`DEFAULT_PARALLEL`](super::DEFAULT_PARALLEL) connections), one table with a HOST
//! column, newest first.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use qexec_client::Client;
use qexec_protocol::JobStatus;

use super::super::list::{ListArgs, query_all};
use super::super::render::{JobJson, json_pretty, list_human};
use super::super::{CliError, ConnArgs, EXIT_QEXEC_ERROR, now_ms, print_out, report_with_code};
use super::DEFAULT_PARALLEL;

/// One job in `qexec list --json` over several hosts: the status object plus `host`.
#[derive(Serialize)]
struct HostJob<'a> {
    host: &'a str,
    #[serde(flatten)]
    job: JobJson,
}

/// The table of `list_human` with a HOST column in front (`hosts[i]` is the host of
/// row `i`).
fn with_hosts(table: &str, hosts: &[&str]) -> String {
    let width = hosts
        .iter()
        .map(|h| h.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = String::with_capacity(table.len() + hosts.len() * (width + 2));
    for (i, line) in table.lines().enumerate() {
        let host = match i {
            0 => "HOST",
            i => hosts.get(i - 1).copied().unwrap_or(""),
        };
        let pad = width - host.chars().count();
        out.push_str(host);
        out.push_str(&" ".repeat(pad + 2));
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `qexec list` on every host the connection flags select (`--limit` per host).
pub(crate) async fn list(conn: &ConnArgs, json: bool, args: ListArgs) -> Result<u8, CliError> {
    let hosts = super::hosts(conn)?;
    let query = args.query();
    let turns = Arc::new(Semaphore::new(DEFAULT_PARALLEL as usize));
    let mut tasks = JoinSet::new();
    for (i, (label, config)) in hosts.into_iter().enumerate() {
        let (query, turns, limit) = (query.clone(), Arc::clone(&turns), args.limit);
        tasks.spawn(async move {
            let _turn = turns.acquire_owned().await;
            let jobs = async {
                let client = Client::connect(&config).await?;
                let jobs = query_all(&client, query, limit).await;
                crate::finish(&client).await;
                jobs
            }
            .await;
            (i, label, jobs)
        });
    }
    let mut answers: Vec<(usize, String, Result<Vec<JobStatus>, CliError>)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answers.push(done.map_err(|e| CliError::Runtime {
            source: std::io::Error::other(e),
        })?);
    }
    answers.sort_by_key(|(i, ..)| *i);
    let mut failed = false;
    let mut jobs: Vec<(&str, &JobStatus)> = Vec::new();
    for (_, label, answer) in &answers {
        match answer {
            Ok(list) => jobs.extend(list.iter().map(|s| (label.as_str(), s))),
            Err(e) => {
                failed = true;
                let code = match e {
                    CliError::Client(c) => c.code(),
                    _ => None,
                };
                report_with_code(&format!("{label}: {e}"), code);
            }
        }
    }
    // Newest first across hosts (stable: hosts in the order given at equal times).
    jobs.sort_by_key(|(_, s)| std::cmp::Reverse(s.started_at_ms));
    let text = if json {
        json_pretty(
            &jobs
                .iter()
                .map(|(host, s)| HostJob {
                    host,
                    job: JobJson::from(*s),
                })
                .collect::<Vec<_>>(),
        )
    } else if jobs.is_empty() {
        "no jobs\n".to_owned()
    } else {
        let statuses: Vec<JobStatus> = jobs.iter().map(|(_, s)| (*s).clone()).collect();
        let labels: Vec<&str> = jobs.iter().map(|(h, _)| *h).collect();
        with_hosts(&list_human(&statuses, now_ms()), &labels)
    };
    print_out(&text)?;
    Ok(if failed { EXIT_QEXEC_ERROR } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_column_goes_in_front() {
        let table = "ID        STATE\n0123abcd  running\nfedc9876  exited 0\n";
        assert_eq!(
            with_hosts(table, &["build-01", "b2"]),
            "HOST      ID        STATE\n\
             build-01  0123abcd  running\n\
             b2        fedc9876  exited 0\n"
        );
        assert_eq!(with_hosts("HEAD\nx\n", &["a"]), "HOST  HEAD\na     x\n");
    }
}
