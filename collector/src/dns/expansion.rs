//! Search-list expansion: telling "one intended name tried under each search suffix"
//! from independent lookups, using only what the wire shows.
//!
//! A stub resolver (glibc, musl) given `search s1 s2 s3` and `options ndots:5` resolves
//! `example.com` (fewer than 5 dots) by trying `example.com.s1`, `example.com.s2`,
//! `example.com.s3` and finally `example.com`, moving on after NXDOMAIN, an empty answer
//! (NOERROR with no records) or SERVFAIL, and stopping at the first real answer. After
//! SERVFAIL, NOTIMP or REFUSED it first asks the same question again (glibc: once more
//! per `attempts`, the next server first). A name
//! with at least `ndots` dots is tried as is first, then under the suffixes. Each query
//! type is searched on its own (glibc sends A and AAAA side by side).
//!
//! **What counts.** Per owner and query type, a query *continues* an open lookup when
//! - the lookup's last try failed (NXDOMAIN, empty NOERROR, SERVFAIL, REFUSED, NOTIMP)
//!   or is still unanswered, and the query comes within the expansion window of it; and
//! - the new name follows from the last one: it is the last name with one run of labels
//!   removed, never the first label (`I.ns1.svc.cluster.local` → `I.svc.cluster.local`
//!   → `I.cluster.local` → `I`: nested suffixes, which is how Kubernetes search lists
//!   look), or, when the owner's search list is known, the next entry of that list
//!   (which also covers unrelated suffixes and the as-is-first order).
//!
//! Such a query is an **expansion**: one more query caused by the search list. Any other
//! query starts a **lookup**. So a lookup of N queries has N − 1 expansions:
//! `example.com` found after three NXDOMAIN tries is 1 lookup and 3 expansions per
//! query type; a name found at the first try is 1 lookup and 0 expansions. The same
//! question asked again while the previous one is unanswered (a retransmission after a
//! timeout), after a truncated response (the retry over TCP) or after a server error is
//! a **retry** of the lookup, neither a new lookup nor an expansion.
//!
//! **Limits.** Without a search list, two independent lookups from one process whose
//! names happen to nest (`a.b.c` failing, then `a.c` within the window) are merged; with
//! a known list they still merge when they match it. A lookup whose responses the
//! collector never saw is judged on timing alone. Lookups in flight at once are tracked
//! up to a fixed number per owner; beyond it the oldest is forgotten, and its next try
//! counts as a new lookup.

use super::{code::QType, name::Name};

/// How the last try of a lookup ended, as far as the resolver's search is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryOutcome {
    /// No response seen yet.
    Pending,
    /// NXDOMAIN or NOERROR without answers: the resolver moves on to the next try.
    Failed,
    /// SERVFAIL, NOTIMP or REFUSED: the resolver asks again (the next server, or the
    /// same one on its next attempt), and after SERVFAIL also moves on.
    ServerError,
    /// The response was truncated (TC): the resolver asks again, usually over TCP.
    Truncated,
    /// An answer, or an error that ends the search (FORMERR, ...).
    Answered,
}

/// What a query is to the lookups of its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryRole {
    /// The first query of a lookup.
    Lookup,
    /// The name of an ongoing lookup, tried under another search suffix (or as is).
    Expansion,
    /// The same question again (retransmission, TCP after truncation).
    Retry,
}

/// Time limits for [`OpenLookups`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// Gap allowed between a try (or its failure) and the next try.
    pub expansion_ns: u64,
    /// Gap allowed between an unanswered try and its retransmission.
    pub retry_ns: u64,
}

#[derive(Clone, Debug)]
struct OpenLookup {
    qtype: QType,
    last_name: Name,
    outcome: TryOutcome,
    /// When the last try was sent, or when its response arrived.
    last_ns: u64,
}

/// The lookups of one owner that may still continue, at most `capacity`.
#[derive(Clone, Debug)]
pub struct OpenLookups {
    open: Vec<OpenLookup>,
    capacity: usize,
}

impl OpenLookups {
    pub fn new(capacity: usize) -> Self {
        Self {
            open: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Classifies a query sent at `now_ns` and remembers it as the last try of its lookup.
    pub fn on_query(
        &mut self,
        qtype: QType,
        name: &Name,
        now_ns: u64,
        search: &[Name],
        windows: Windows,
    ) -> QueryRole {
        let longest = windows.expansion_ns.max(windows.retry_ns);
        self.open
            .retain(|open| now_ns.saturating_sub(open.last_ns) <= longest);

        // Most recent first: a try continues the lookup it most plausibly belongs to.
        let mut found = None;
        for (index, open) in self.open.iter().enumerate().rev() {
            if open.qtype != qtype {
                continue;
            }
            let gap = now_ns.saturating_sub(open.last_ns);
            let role = if open.last_name == *name {
                let retried = match open.outcome {
                    TryOutcome::Pending => gap <= windows.retry_ns,
                    TryOutcome::Truncated | TryOutcome::ServerError => gap <= windows.expansion_ns,
                    TryOutcome::Failed | TryOutcome::Answered => false,
                };
                retried.then_some(QueryRole::Retry)
            } else {
                let searching = matches!(
                    open.outcome,
                    TryOutcome::Pending | TryOutcome::Failed | TryOutcome::ServerError
                );
                (searching
                    && gap <= windows.expansion_ns
                    && is_next_try(&open.last_name, name, search))
                .then_some(QueryRole::Expansion)
            };
            if let Some(role) = role {
                found = Some((index, role));
                break;
            }
        }

        match found {
            Some((index, role)) => {
                let open = &mut self.open[index];
                open.last_name.clone_from(name);
                open.outcome = TryOutcome::Pending;
                open.last_ns = now_ns;
                role
            }
            None => {
                // When full, the oldest lookup makes room (its name's buffer is reused).
                let evicted = if self.open.len() >= self.capacity
                    && let Some(oldest) = (0..self.open.len()).min_by_key(|&i| self.open[i].last_ns)
                {
                    Some(self.open.swap_remove(oldest))
                } else {
                    None
                };
                let last_name = match evicted {
                    Some(mut evicted) => {
                        evicted.last_name.clone_from(name);
                        evicted.last_name
                    }
                    None => name.clone(),
                };
                self.open.push(OpenLookup {
                    qtype,
                    last_name,
                    outcome: TryOutcome::Pending,
                    last_ns: now_ns,
                });
                QueryRole::Lookup
            }
        }
    }

    /// Records how the try for `name` ended (a response matched to its query).
    ///
    /// An answered lookup is over: no later query can retry or continue it (see
    /// [`Self::on_query`]), so it leaves the table at once rather than at the end of its
    /// windows. Every query then compares its name with lookups that are still searching
    /// only, and the table's room goes to them.
    pub fn on_response(&mut self, qtype: QType, name: &Name, now_ns: u64, outcome: TryOutcome) {
        let Some(index) = self.open.iter().rposition(|open| {
            open.qtype == qtype && open.outcome == TryOutcome::Pending && open.last_name == *name
        }) else {
            return;
        };
        if outcome == TryOutcome::Answered {
            // `remove`, not `swap_remove`: the order is the order of the last tries.
            self.open.remove(index);
            return;
        }
        let open = &mut self.open[index];
        open.outcome = outcome;
        open.last_ns = now_ns;
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Heap bytes held (for the memory bound).
    pub fn heap_bytes(&self) -> usize {
        self.open.capacity() * size_of::<OpenLookup>()
            + self
                .open
                .iter()
                .map(|o| o.last_name.heap_bytes())
                .sum::<usize>()
    }
}

/// Whether a resolver searching for one intended name could try `next` right after
/// `previous` (see the module docs).
pub fn is_next_try(previous: &Name, next: &Name, search: &[Name]) -> bool {
    removes_one_run_of_labels(previous, next) || follows_search_list(previous, next, search)
}

/// `next` is `previous` with one run of ≥ 1 labels removed after its first label:
/// `previous` = I.x, `next` = I.y, I not empty, y a proper suffix of x (maybe empty).
fn removes_one_run_of_labels(previous: &Name, next: &Name) -> bool {
    // This runs for every open lookup on every query: first the cheap test (removing
    // labels shortens the text), then counts over the label iterators, nothing collected.
    if next.as_str().len() >= previous.as_str().len() {
        return false;
    }
    let n = next.label_count();
    if n == 0 || n >= previous.label_count() {
        return false;
    }
    let same_start = previous
        .labels()
        .zip(next.labels())
        .take_while(|(a, b)| a == b)
        .count();
    let same_end = previous
        .labels_rev()
        .zip(next.labels_rev())
        .take_while(|(a, b)| a == b)
        .count();
    let lowest_cut = 1.max(n.saturating_sub(same_end));
    lowest_cut <= same_start.min(n)
}

fn follows_search_list(previous: &Name, next: &Name, search: &[Name]) -> bool {
    let under = |intended: &str, suffix: &Name| next.strip_suffix(suffix) == Some(intended);
    for (k, suffix) in search.iter().enumerate() {
        if let Some(intended) = previous.strip_suffix(suffix)
            && (next.as_str() == intended
                || search[k + 1..].iter().any(|later| under(intended, later)))
        {
            return true;
        }
    }
    // As-is first (the name had at least ndots dots), then the first suffix.
    search
        .first()
        .is_some_and(|first| under(previous.as_str(), first))
}

#[cfg(test)]
mod tests;
