//! Filtered, paginated listing of jobs (spec: QX-MSG-CTRL-9, QX-LIST-*).

use qexec_protocol::{JobId, JobStatus, ListStateFilter};

/// Most bytes of argv a page holds before the manager ends it early (with a cursor),
/// whatever its `limit`: the memory one page can pin (spec: QX-LIST-4).
pub const MAX_PAGE_ARGV_BYTES: usize = 1 << 20;

/// Which jobs a page selects, and how many. The caller has already applied its
/// authorization: `owner` is the owner every job must have when the caller may see
/// only its own jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// Only jobs in these states.
    pub state: ListStateFilter,
    /// Only jobs of this owner.
    pub owner: Option<String>,
    /// Only jobs started at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only jobs whose id's text form starts with these hexadecimal digits.
    pub id_prefix: Option<String>,
    /// At most this many entries.
    pub limit: usize,
    /// Only jobs after this sequence number (in the page's direction).
    pub cursor: Option<u64>,
    /// Highest sequence number first.
    pub newest_first: bool,
}

impl ListFilter {
    /// Every job, oldest first, `limit` at a time.
    pub fn all(limit: usize) -> Self {
        Self {
            state: ListStateFilter::Any,
            owner: None,
            since_ms: None,
            id_prefix: None,
            limit,
            cursor: None,
            newest_first: false,
        }
    }

    /// Whether a job's fixed facts (sequence number, id, owner, start time) pass the
    /// filter; the state is checked on the status.
    pub(crate) fn admits(&self, seq: u64, id: JobId, owner: &str, started_at_ms: u64) -> bool {
        let after_cursor = match (self.cursor, self.newest_first) {
            (None, _) => true,
            (Some(c), false) => seq > c,
            (Some(c), true) => seq < c,
        };
        after_cursor
            && self.owner.as_deref().is_none_or(|o| o == owner)
            && self.since_ms.is_none_or(|s| started_at_ms >= s)
            && self.id_prefix.as_deref().is_none_or(|p| id.has_prefix(p))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// `(sequence number, status)` in the page's order.
    pub entries: Vec<(u64, JobStatus)>,
    /// The cursor of the next page; `None` when no more jobs match.
    pub next: Option<u64>,
}

/// Collects a page from candidates already admitted and sorted in the page's order:
/// stops at `limit` entries or once argv bytes pass [`MAX_PAGE_ARGV_BYTES`].
pub(crate) fn collect_page(
    filter: &ListFilter,
    candidates: impl IntoIterator<Item = (u64, JobStatus)>,
) -> ListPage {
    let mut page = ListPage::default();
    let mut bytes = 0usize;
    let mut candidates = candidates
        .into_iter()
        .filter(|(_, s)| filter.state.selects(&s.state))
        .peekable();
    while let Some((seq, status)) = candidates.next() {
        bytes += status.argv.iter().map(Vec::len).sum::<usize>();
        page.entries.push((seq, status));
        let full = page.entries.len() >= filter.limit || bytes >= MAX_PAGE_ARGV_BYTES;
        if full {
            if candidates.peek().is_some() {
                page.next = Some(seq);
            }
            break;
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use qexec_protocol::{JobState, Limits, ResourceUsage, Termination};

    fn status(n: u128, owner: &str, state: JobState, argv_len: usize) -> JobStatus {
        JobStatus {
            id: JobId::from_u128(n),
            owner: owner.into(),
            argv: vec![vec![b'x'; argv_len]],
            state,
            pid: None,
            started_at_ms: n as u64,
            ended_at_ms: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_truncated: false,
            oom_killed: false,
            limits: Limits::default(),
            usage: ResourceUsage::default(),
        }
    }

    #[test]
    fn cursor_owner_since_and_prefix_filter() {
        let id = JobId::from_u128(0xabcd << 112);
        let mut f = ListFilter::all(10);
        assert!(f.admits(5, id, "alice", 100));
        f.cursor = Some(5);
        assert!(!f.admits(5, id, "alice", 100));
        assert!(f.admits(6, id, "alice", 100));
        f.newest_first = true;
        assert!(f.admits(4, id, "alice", 100));
        assert!(
            !f.admits(5, id, "alice", 100),
            "the cursor itself is never repeated"
        );
        assert!(!f.admits(6, id, "alice", 100));
        f.cursor = None;
        f.owner = Some("bob".into());
        assert!(!f.admits(1, id, "alice", 100));
        assert!(f.admits(1, id, "bob", 100));
        f.since_ms = Some(100);
        assert!(f.admits(1, id, "bob", 100));
        assert!(!f.admits(1, id, "bob", 99));
        f.id_prefix = Some("ABCD".into());
        assert!(f.admits(1, id, "bob", 100));
        f.id_prefix = Some("abce".into());
        assert!(!f.admits(1, id, "bob", 100));
    }

    #[test]
    fn pages_end_at_the_limit_with_a_cursor_only_when_more_match() {
        let ended = JobState::Exited {
            termination: Termination::Exited(0),
        };
        let all: Vec<(u64, JobStatus)> = (1..=5)
            .map(|n| (n as u64, status(n, "a", ended.clone(), 1)))
            .collect();
        let page = collect_page(&ListFilter::all(2), all.clone());
        assert_eq!(page.entries.len(), 2);
        assert_eq!(page.next, Some(2));
        let page = collect_page(&ListFilter::all(5), all.clone());
        assert_eq!(page.entries.len(), 5);
        assert_eq!(page.next, None);
        // Only running jobs: none match, no cursor.
        let mut f = ListFilter::all(2);
        f.state = ListStateFilter::Running;
        assert_eq!(collect_page(&f, all), ListPage::default());
    }

    #[test]
    fn a_page_stops_at_its_byte_budget() {
        // spec: QX-LIST-4
        let big = MAX_PAGE_ARGV_BYTES / 3 + 1;
        let all: Vec<(u64, JobStatus)> = (1..=10)
            .map(|n| (n as u64, status(n, "a", JobState::Running, big)))
            .collect();
        let page = collect_page(&ListFilter::all(1000), all);
        assert_eq!(page.entries.len(), 3);
        assert_eq!(page.next, Some(3));
    }
}
