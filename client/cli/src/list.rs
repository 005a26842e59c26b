//! `qexec list`: the jobs visible to us, newest first.

use clap::{Args, ValueEnum};

use qexec_client::Client;
use qexec_protocol::limits::MAX_LIST_LIMIT;
use qexec_protocol::{ErrorCode, JobStatus, ListQuery, ListStateFilter};

use super::render::{JobJson, json_pretty, list_human};
use super::{CliError, ConnArgs};

pub(super) const HELP: &str = "\
Admins and viewers see every job; users see their own. Newest first. Columns: ID (the
shortest unique prefix, at least 8 hex digits; every command takes it), OWNER, STATE,
STARTED (UTC, MM-DD HH:MM), TIME (run time so far), COMMAND (cut to fit 80 columns).
With --json: an array of status objects (full ids).
With several hosts (-s GROUP, --hosts, --hosts-file): one table with a HOST column in
front, newest first across hosts, --limit per host (--json: each object has `host`);
a host that cannot be asked is one line on stderr and the exit status is 255.

Examples:
  qexec list
  qexec list --state running
  qexec list --user alice --limit 10
  qexec -s rack1 list --running
  qexec list --json | jq -r '.[] | select(.state == \"running\") | .id'";

/// `--state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StateArg {
    /// Still running.
    Running,
    /// Ran and ended (exited, or stopped).
    Ended,
    /// Could not start.
    Failed,
}

/// Arguments of `qexec list`.
#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Only jobs that are still running (same as --state running).
    #[arg(long, conflicts_with = "state")]
    running: bool,
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Only jobs of this user (the name in their certificate).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// At most N jobs, the newest; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub(super) limit: u32,
}

impl ListArgs {
    /// The first page's query these flags ask for.
    pub(super) fn query(&self) -> ListQuery {
        let state = match (self.running, self.state) {
            (true, _) | (false, Some(StateArg::Running)) => ListStateFilter::Running,
            (false, Some(StateArg::Ended)) => ListStateFilter::Ended,
            (false, Some(StateArg::Failed)) => ListStateFilter::FailedToStart,
            (false, None) => ListStateFilter::Any,
        };
        ListQuery {
            state,
            owner: self.user.clone(),
            newest_first: true,
            ..ListQuery::all(1)
        }
    }
}

/// The jobs `query` selects, newest first, at most `limit` (0: all), page by page;
/// through the plain `List` (filtered here) for a server without `ListQuery`.
pub(super) async fn query_all(
    client: &Client,
    mut query: ListQuery,
    limit: u32,
) -> Result<Vec<JobStatus>, CliError> {
    let mut jobs = Vec::new();
    loop {
        let want = if limit == 0 {
            MAX_LIST_LIMIT
        } else {
            (limit - jobs.len() as u32).min(MAX_LIST_LIMIT)
        };
        query.limit = want;
        match client.list_query(query.clone()).await {
            Ok((page, next)) => {
                jobs.extend(page.into_iter().map(|e| e.status));
                let full = limit != 0 && jobs.len() as u32 >= limit;
                match next {
                    Some(cursor) if !full => query.cursor = Some(cursor),
                    _ => return Ok(jobs),
                }
            }
            Err(e) if e.code() == Some(ErrorCode::Unsupported) && query.cursor.is_none() => {
                let mut all: Vec<JobStatus> = client
                    .list(query.state == ListStateFilter::Running)
                    .await?
                    .into_iter()
                    .filter(|s| {
                        query.state.selects(&s.state)
                            && query.owner.as_ref().is_none_or(|o| &s.owner == o)
                    })
                    .collect();
                all.sort_by_key(|s| std::cmp::Reverse(s.started_at_ms));
                if limit != 0 {
                    all.truncate(limit as usize);
                }
                return Ok(all);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) async fn list(conn: &ConnArgs, json: bool, args: ListArgs) -> Result<u8, CliError> {
    let query = args.query();
    let client = conn.connect().await?;
    let jobs = query_all(&client, query, args.limit).await?;
    super::finish(&client).await;
    let text = if json {
        json_pretty(&jobs.iter().map(JobJson::from).collect::<Vec<_>>())
    } else {
        let mut text = list_human(&jobs, super::now_ms());
        if super::stdout_colour() {
            text = super::render::colour_state(&text);
        }
        text
    };
    super::print_out(&text)?;
    Ok(0)
}
