//! The store-independent half of an append: checking expected sequences and laying out the rows.
//!
//! Both SQL stores hold the right to write while they plan (SQLite: `BEGIN IMMEDIATE` on the one
//! writer connection; PostgreSQL: the append advisory lock), so the stream heads they read inside
//! the transaction are authoritative and a conflicting group can simply be left out of the insert:
//! no savepoints, no retry. The unique constraint stays as a backstop against foreign writers.

use std::collections::{HashMap, HashSet};

use super::{
    AppendRequest, Appended, EventLog, GroupOutcome, Lease, NewEvent, Result, RunSummary,
    StoreError,
};

/// A stream key: `(aggregate_type, stream)`.
pub(crate) type StreamKey<'a> = (&'a str, &'a str);

/// One event row to insert.
pub(crate) struct Row<'a> {
    pub aggregate_type: &'a str,
    pub stream: &'a str,
    pub sequence: u64,
    pub event: &'a NewEvent,
}

/// Per request of an accepted group: its new last sequence and the index of its last row.
type AcceptedRequest = (u64, Option<usize>);

/// The checked layout of an `append_groups` call.
pub(crate) struct Plan<'a> {
    outcomes: Vec<std::result::Result<Vec<AcceptedRequest>, StoreError>>,
    /// Rows to insert, in order (streams' sequences increase along it).
    pub rows: Vec<Row<'a>>,
    /// Run summaries to upsert with the lease of the request that carried them, one per run id
    /// (the last one given wins).
    pub summaries: Vec<(&'a RunSummary, &'a Lease)>,
}

/// The fenced requests of the groups: `(run id, lease id)` of every [`Lease::Held`] request, in
/// first-seen order, each pair once. The store reads those runs' owners under its write lock.
pub(crate) fn fences(groups: &[Vec<AppendRequest>]) -> Vec<(&str, &str)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for req in groups.iter().flatten() {
        if let Lease::Held(lease) = &req.lease {
            let pair = (req.stream.as_str(), lease.as_str());
            if seen.insert(pair) {
                out.push(pair);
            }
        }
    }
    out
}

/// Every distinct stream the groups touch, in first-seen order.
pub(crate) fn streams(groups: &[Vec<AppendRequest>]) -> Vec<StreamKey<'_>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for req in groups.iter().flatten() {
        let key = (req.aggregate_type.as_str(), req.stream.as_str());
        if seen.insert(key) {
            out.push(key);
        }
    }
    out
}

/// The owner a run's row gets when the upsert inserts it: the appender of a new run that needs a
/// worker now ([`Lease::New`], or [`Lease::Held`]), else nobody. (An existing row keeps its owner
/// while the run needs a worker and loses it otherwise; see [`Lease`].)
pub(crate) fn first_owner<'a>(summary: &RunSummary, lease: &'a Lease) -> Option<&'a str> {
    match lease {
        Lease::New(id) | Lease::Held(id) if summary.runnable() => Some(id.as_str()),
        _ => None,
    }
}

/// The run ids to announce to idle workers after these summaries commit (see
/// [`super::Leases::work_notices`]): a run made runnable by a non-holder, a run that now waits for
/// a timer, and the parent of a sub-workflow that ended.
pub(crate) fn notices<'a>(summaries: &[(&'a RunSummary, &'a Lease)]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for (s, lease) in summaries {
        let timer = s.wake_at.is_some_and(|w| w > s.updated_at);
        // A non-holder's append is announced whatever it did: it may have made the run
        // runnable (idle workers claim it), or stopped it (a cancel, a suspend: its holder, if
        // any, lets it go).
        if timer || matches!(lease, Lease::External) {
            out.push(s.run_id.as_str());
        }
        if let Some(parent) = &s.parent_run_id {
            let ended = cairn_core::names::StatusLabel::ENDED;
            if ended.iter().any(|l| l.as_str() == s.status) {
                out.push(parent.as_str());
            }
        }
    }
    out
}

/// Checks every group against the stream heads in `current` (missing = empty stream) and the
/// fences that failed (`lost`: runs whose [`Lease::Held`] appender no longer holds them),
/// applying accepted groups in order so later groups see earlier ones.
pub(crate) fn plan<'a>(
    groups: &'a [Vec<AppendRequest>],
    current: &HashMap<StreamKey<'a>, u64>,
    lost: &HashSet<String>,
) -> Plan<'a> {
    let mut heads: HashMap<StreamKey<'a>, u64> = current.clone();
    let mut rows = Vec::new();
    let mut summaries: Vec<(&'a RunSummary, &'a Lease)> = Vec::new();
    let mut summary_index: HashMap<&'a str, usize> = HashMap::new();
    let mut outcomes = Vec::with_capacity(groups.len());

    for group in groups {
        if let Some(req) = group
            .iter()
            .find(|r| matches!(r.lease, Lease::Held(_)) && lost.contains(&r.stream))
        {
            outcomes.push(Err(StoreError::LeaseLost {
                stream: req.stream.clone(),
            }));
            continue;
        }
        // Check the whole group against a private overlay first: a group is all-or-nothing.
        let mut overlay: HashMap<StreamKey<'a>, u64> = HashMap::new();
        let mut conflict = None;
        for req in group {
            let key = (req.aggregate_type.as_str(), req.stream.as_str());
            let head = overlay
                .get(&key)
                .or_else(|| heads.get(&key))
                .copied()
                .unwrap_or(0);
            if head != req.expected_sequence {
                conflict = Some(StoreError::Conflict {
                    stream: req.stream.clone(),
                    expected: req.expected_sequence,
                    actual: head,
                });
                break;
            }
            overlay.insert(key, head + req.events.len() as u64);
        }
        if let Some(err) = conflict {
            outcomes.push(Err(err));
            continue;
        }
        let mut accepted = Vec::with_capacity(group.len());
        for req in group {
            let mut last_row = None;
            for (i, event) in req.events.iter().enumerate() {
                rows.push(Row {
                    aggregate_type: &req.aggregate_type,
                    stream: &req.stream,
                    sequence: req.expected_sequence + 1 + i as u64,
                    event,
                });
                last_row = Some(rows.len() - 1);
            }
            accepted.push((req.expected_sequence + req.events.len() as u64, last_row));
            if let Some(summary) = &req.run_summary {
                match summary_index.get(summary.run_id.as_str()) {
                    Some(&i) => summaries[i] = (summary, &req.lease),
                    None => {
                        summary_index.insert(&summary.run_id, summaries.len());
                        summaries.push((summary, &req.lease));
                    }
                }
            }
        }
        heads.extend(overlay);
        outcomes.push(Ok(accepted));
    }
    Plan {
        outcomes,
        rows,
        summaries,
    }
}

impl Plan<'_> {
    /// True when nothing needs writing (every group conflicted, or all were empty).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.summaries.is_empty()
    }

    /// Turns the plan into per-group answers; `positions[i]` is the position of `rows[i]`.
    pub fn finish(self, positions: &[u64]) -> Vec<GroupOutcome> {
        self.outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map(|requests| {
                    requests
                        .into_iter()
                        .map(|(last_sequence, last_row)| Appended {
                            last_sequence,
                            last_position: last_row
                                .and_then(|i| positions.get(i).copied())
                                .unwrap_or(0),
                        })
                        .collect()
                })
            })
            .collect()
    }
}

/// The default [`super::EventLog::append_groups`]: one combined `append`; on a conflict, answer the
/// group that caused it and retry the others, so one stale writer never fails the rest.
pub(crate) async fn append_groups_by_retry<S: EventLog + ?Sized>(
    store: &S,
    groups: Vec<Vec<AppendRequest>>,
) -> Result<Vec<GroupOutcome>> {
    let mut answers: Vec<Option<GroupOutcome>> = vec![None; groups.len()];
    let mut pending: Vec<usize> = (0..groups.len()).collect();
    while !pending.is_empty() {
        let combined: Vec<AppendRequest> = pending
            .iter()
            .flat_map(|&g| groups[g].iter().cloned())
            .collect();
        match store.append(combined).await {
            Ok(appended) => {
                let mut it = appended.into_iter();
                for &g in &pending {
                    answers[g] = Some(Ok(it.by_ref().take(groups[g].len()).collect()));
                }
                pending.clear();
            }
            Err(StoreError::Conflict {
                stream,
                expected,
                actual,
            }) => {
                // Several groups may race on one stream with the same expectation; blaming the
                // last one is always sound: if the earlier one was the culprit it fails on retry.
                let culprit = pending.iter().rposition(|&g| {
                    groups[g]
                        .iter()
                        .any(|r| r.stream == stream && r.expected_sequence == expected)
                });
                match culprit {
                    Some(i) => {
                        let g = pending.remove(i);
                        answers[g] = Some(Err(StoreError::Conflict {
                            stream,
                            expected,
                            actual,
                        }));
                    }
                    None => {
                        // The store named a conflict we cannot attribute: answer one by one.
                        for &g in &pending {
                            answers[g] = Some(store.append(groups[g].clone()).await);
                        }
                        pending.clear();
                    }
                }
            }
            Err(other) => return Err(other),
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(StoreError::Unavailable("group left unanswered".into()))))
        .collect())
}
