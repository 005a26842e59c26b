//! How a user names a job on the command line: the full id, any unique prefix of at
//! least 4 hex digits, or `@last` (the caller's newest job); resolved with the
//! server's `ListQuery`, so only jobs the caller can see ever match.

use std::fmt;
use std::str::FromStr;

use qexec_client::{Client, ClientError};
use qexec_protocol::limits::MIN_ID_PREFIX;
use qexec_protocol::{ErrorCode, JobId, JobStatus, ListQuery};

use crate::CliError;

/// How many candidates an ambiguous prefix error names.
const SHOWN_CANDIDATES: u32 = 10;

/// A job as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobRef {
    /// All 32 hex digits.
    Full(JobId),
    /// 4 to 31 hex digits (lowercase).
    Prefix(String),
    /// `@last`: the newest job the caller started.
    Last,
}

/// Not a job id, prefix or `@last`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid job {text:?}: give its id, a unique prefix of at least 4 hex digits \
     (as `qexec list` shows), or @last"
)]
pub(crate) struct BadJobRef {
    text: String,
}

impl FromStr for JobRef {
    type Err = BadJobRef;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "@last" {
            return Ok(Self::Last);
        }
        if let Ok(id) = text.parse::<JobId>() {
            return Ok(Self::Full(id));
        }
        let hex = text.bytes().all(|b| b.is_ascii_hexdigit());
        if hex && (MIN_ID_PREFIX..32).contains(&text.len()) {
            return Ok(Self::Prefix(text.to_ascii_lowercase()));
        }
        Err(BadJobRef {
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(id) => write!(f, "{id}"),
            Self::Prefix(p) => f.write_str(p),
            Self::Last => f.write_str("@last"),
        }
    }
}

/// A job reference that matches no job, or more than one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No visible job has an id with this prefix.
    #[error(
        "no job id starts with {prefix} (among the jobs this certificate's identity can see): \
         check it with `qexec list`"
    )]
    NoMatch {
        /// The prefix.
        prefix: String,
    },
    /// Several visible jobs do.
    #[error("job id prefix {prefix} is ambiguous: it matches {}{more}; type more digits",
        candidates.join(", "),
        more = if *more { ", …" } else { "" })]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// Full ids of (some of) the matching jobs, newest first.
        candidates: Vec<String>,
        /// More match than are named.
        more: bool,
    },
    /// `@last` with no job of ours.
    #[error("@last: {owner} has started no job on this server (that it still lists)")]
    NoLastJob {
        /// Our identity.
        owner: String,
    },
}

/// Our own identity name (the CN of our certificate).
fn own_name(cert: &std::path::Path) -> Result<String, CliError> {
    qexec_tls::identity_of_cert_file(cert)
        .map(|i| i.name)
        .map_err(CliError::from)
}

/// The matches of `query` (newest first), through `ListQuery`, or — for a server that
/// predates it (`Unsupported`) — the plain `List` filtered here.
async fn matches(client: &Client, query: ListQuery) -> Result<Vec<JobStatus>, ClientError> {
    match client.list_query(query.clone()).await {
        Ok((entries, _)) => Ok(entries.into_iter().map(|e| e.status).collect()),
        Err(e) if e.code() == Some(ErrorCode::Unsupported) => {
            let mut jobs: Vec<JobStatus> = client
                .list(false)
                .await?
                .into_iter()
                .filter(|s| {
                    query.state.selects(&s.state)
                        && query.owner.as_ref().is_none_or(|o| &s.owner == o)
                        && query.id_prefix.as_ref().is_none_or(|p| s.id.has_prefix(p))
                })
                .collect();
            jobs.sort_by_key(|s| std::cmp::Reverse(s.started_at_ms));
            jobs.truncate(query.limit as usize);
            Ok(jobs)
        }
        Err(e) => Err(e),
    }
}

impl JobRef {
    /// The job this names, among the jobs the caller can see (`cert` is our
    /// certificate, for `@last`).
    pub(crate) async fn resolve(
        &self,
        client: &Client,
        cert: &std::path::Path,
    ) -> Result<JobId, CliError> {
        let newest = |limit| ListQuery {
            newest_first: true,
            ..ListQuery::all(limit)
        };
        match self {
            Self::Full(id) => Ok(*id),
            Self::Prefix(prefix) => {
                let found = matches(
                    client,
                    ListQuery {
                        id_prefix: Some(prefix.clone()),
                        ..newest(SHOWN_CANDIDATES + 1)
                    },
                )
                .await?;
                match found.as_slice() {
                    [one] => Ok(one.id),
                    [] => Err(ResolveError::NoMatch {
                        prefix: prefix.clone(),
                    }
                    .into()),
                    many => Err(ResolveError::Ambiguous {
                        prefix: prefix.clone(),
                        candidates: many
                            .iter()
                            .take(SHOWN_CANDIDATES as usize)
                            .map(|s| s.id.to_string())
                            .collect(),
                        more: many.len() > SHOWN_CANDIDATES as usize,
                    }
                    .into()),
                }
            }
            Self::Last => {
                let owner = own_name(cert)?;
                let found = matches(
                    client,
                    ListQuery {
                        owner: Some(owner.clone()),
                        ..newest(1)
                    },
                )
                .await?;
                found
                    .first()
                    .map(|s| s.id)
                    .ok_or_else(|| ResolveError::NoLastJob { owner }.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            id.parse::<JobRef>().unwrap(),
            JobRef::Full(id.parse().unwrap())
        );
        assert_eq!(
            "0123".parse::<JobRef>().unwrap(),
            JobRef::Prefix("0123".into())
        );
        assert_eq!(
            "ABCDEF".parse::<JobRef>().unwrap(),
            JobRef::Prefix("abcdef".into())
        );
        assert_eq!("@last".parse::<JobRef>().unwrap(), JobRef::Last);
        for bad in ["012", "", "xyz1", "@first", &format!("{id}0")] {
            assert!(bad.parse::<JobRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ambiguity_names_the_candidates() {
        let e = ResolveError::Ambiguous {
            prefix: "abcd".into(),
            candidates: vec!["abcd1".into(), "abcd2".into()],
            more: false,
        };
        assert_eq!(
            e.to_string(),
            "job id prefix abcd is ambiguous: it matches abcd1, abcd2; type more digits"
        );
    }
}
