//! The responder's side of each exchange step, and the checks of everything a peer
//! sends: requests where they arrive here, entries wherever they arrive, answers to
//! the roots round. Every answer fits in the frame limit of the node's [`SyncLimits`].

use std::collections::{BTreeMap, HashSet};

use super::error::SyncError;
use super::local_tree::{Listed, LocalTree, purgeable, root_summary, summary};
use super::messages::{
    CHILDREN_NODES_MAX, COMPARE_ENTRIES_READ_MAX, DifferingRoot, LIST_ITEMS_MAX, NodeRef,
    PAGE_BYTES_MAX, PAGE_ENTRIES_MAX, ROOTS_PER_REQUEST_MAX, RangeList, SyncLimits, SyncRequest,
    SyncResponse,
};
use super::tree::{self, FANOUT};
use crate::buckets::check_stored_key;
use crate::limits::{STORED_KEY_BYTES_MAX, check_value};
use crate::placement::PartitionId;
use crate::record::{Entry, Payload};
use crate::storage::Store;

/// What of a `Push` to apply: every entry, except that a tombstone past the purge
/// horizon is taken only where it deletes something (where nothing is, it was purged
/// here already, or never needed). The caller checks the entries first.
pub fn pushed_to_apply(
    store: &Store,
    entries: Vec<Entry>,
    horizon_ms: u64,
) -> Result<Vec<Entry>, SyncError> {
    let mut keep = Vec::with_capacity(entries.len());
    for entry in entries {
        if purgeable(&entry, horizon_ms) && store.get(&entry.key)?.is_none() {
            continue;
        }
        keep.push(entry);
    }
    Ok(keep)
}

/// Checks entries received from a peer against the limits every write obeys: the key
/// limits and the node's value limit.
pub fn check_entries(entries: &[Entry], limits: &SyncLimits) -> Result<(), SyncError> {
    for entry in entries {
        check_stored_key(&entry.key)?;
        if let Payload::Value(value) = &entry.record.payload {
            check_value(value, limits.value_bytes_max)?;
        }
    }
    Ok(())
}

/// Checks a push where it arrives: the partition exists, and every entry obeys the
/// limits and lies in it.
pub fn check_push(
    partition: PartitionId,
    entries: &[Entry],
    partitions: u16,
    limits: &SyncLimits,
) -> Result<(), SyncError> {
    check(partition, partitions)?;
    check_entries(entries, limits)?;
    for entry in entries {
        let at = tree::locate(&entry.key, partitions).partition;
        if at != partition {
            return Err(SyncError::BadRequest(format!(
                "an entry pushed for partition {partition} lies in partition {at}"
            )));
        }
    }
    Ok(())
}

/// Checks a roots answer against the question: only partitions that were asked, each
/// at most once, each with a full set of children.
pub fn check_roots_answer(
    asked: &[PartitionId],
    differing: &[DifferingRoot],
) -> Result<(), SyncError> {
    if differing.len() > asked.len() {
        return Err(SyncError::Protocol(format!(
            "{} partitions named as differing, but only {} were compared",
            differing.len(),
            asked.len()
        )));
    }
    let asked: HashSet<PartitionId> = asked.iter().copied().collect();
    let mut seen = HashSet::with_capacity(differing.len());
    for root in differing {
        if !asked.contains(&root.partition) {
            return Err(SyncError::Protocol(format!(
                "partition {} named as differing was not compared",
                root.partition
            )));
        }
        if !seen.insert(root.partition) {
            return Err(SyncError::Protocol(format!(
                "partition {} named as differing twice",
                root.partition
            )));
        }
        if root.children.len() != FANOUT {
            return Err(SyncError::Protocol(format!(
                "partition {}: {} root children, expected {FANOUT}",
                root.partition,
                root.children.len()
            )));
        }
    }
    Ok(())
}

/// An entry's bytes in an encoded message.
pub(super) fn encoded_bytes(entry: &Entry) -> usize {
    postcard::experimental::serialized_size(entry).unwrap_or(usize::MAX)
}

/// An upper bound of the bytes a list of positions takes in an encoded message.
fn positions_bytes(count: usize) -> usize {
    count * 10 + 5
}

fn over(what: &'static str, count: usize, limit: usize) -> Result<(), SyncError> {
    if count > limit {
        Err(SyncError::LimitExceeded { what, count, limit })
    } else {
        Ok(())
    }
}

/// The responder's side of every request but `Push` (which the caller applies, after
/// [`check_entries`]). This is where a peer's request is checked: every partition,
/// node and count in it, before anything is read. Each answer fits in the frame limit
/// of `limits`.
pub fn respond(
    local: &impl LocalTree,
    request: &SyncRequest,
    limits: &SyncLimits,
) -> Result<SyncResponse, SyncError> {
    let partitions = local.partitions();
    match request {
        SyncRequest::Roots { salt, roots } => {
            over(
                "partitions in one roots request",
                roots.len(),
                ROOTS_PER_REQUEST_MAX,
            )?;
            let mut seen = HashSet::with_capacity(roots.len());
            let mut differing = Vec::new();
            for theirs in roots {
                check(theirs.partition, partitions)?;
                if !seen.insert(theirs.partition) {
                    return Err(SyncError::BadRequest(format!(
                        "partition {} named twice in one roots request",
                        theirs.partition
                    )));
                }
                let mine = root_summary(local, theirs.partition, *salt)?;
                if mine != *theirs {
                    let children = local
                        .children(theirs.partition, NodeRef::ROOT)?
                        .into_iter()
                        .map(|n| summary(n, *salt))
                        .collect();
                    differing.push(DifferingRoot {
                        partition: theirs.partition,
                        children,
                    });
                }
            }
            Ok(SyncResponse::Roots { differing })
        }
        SyncRequest::Children {
            partition,
            salt,
            nodes,
        } => {
            check(*partition, partitions)?;
            over(
                "nodes in one children request",
                nodes.len(),
                CHILDREN_NODES_MAX,
            )?;
            let mut out = Vec::with_capacity(nodes.len());
            for node in nodes {
                let node = node.check()?;
                if node.is_leaf() {
                    return Err(SyncError::BadRequest(format!(
                        "tree node (level {}, index {}) is a leaf: it has no children",
                        node.level(),
                        node.index()
                    )));
                }
                out.push(
                    local
                        .children(*partition, node)?
                        .into_iter()
                        .map(|n| summary(n, *salt))
                        .collect(),
                );
            }
            Ok(SyncResponse::Children { nodes: out })
        }
        SyncRequest::Compare {
            partition,
            purge_horizon_ms,
            dry_run,
            ranges,
        } => {
            check(*partition, partitions)?;
            compare(
                local,
                *partition,
                *purge_horizon_ms,
                *dry_run,
                ranges,
                limits,
            )
        }
        SyncRequest::Pull {
            partition,
            node,
            after,
            purge_horizon_ms,
        } => {
            check(*partition, partitions)?;
            let node = node.check()?;
            if let Some(after) = after {
                over(
                    "bytes of the resume point",
                    after.len(),
                    STORED_KEY_BYTES_MAX + 4,
                )?;
            }
            let budget = limits.entry_bytes_max(0);
            let (mut entries, mut next) = local.entries(
                *partition,
                node,
                after.as_deref(),
                PAGE_ENTRIES_MAX,
                PAGE_BYTES_MAX.min(budget),
            )?;
            let fit = fitting(&entries, budget);
            if fit < entries.len() {
                entries.truncate(fit);
                next = match entries.last() {
                    Some(last) => Some(local.resume_point(&last.key)?),
                    None => None,
                };
            }
            let before = entries.len();
            let entries: Vec<Entry> = entries
                .into_iter()
                .filter(|e| !purgeable(e, *purge_horizon_ms))
                .collect();
            Ok(SyncResponse::Entries {
                pending_purge: (before - entries.len()) as u64,
                entries,
                next,
            })
        }
        SyncRequest::Push { .. } => Err(SyncError::BadRequest(
            "a push is applied by the caller".into(),
        )),
    }
}

/// How many of `entries`, from the first, fit in `budget` encoded bytes.
fn fitting(entries: &[Entry], budget: usize) -> usize {
    let mut bytes = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        bytes = bytes.saturating_add(encoded_bytes(entry));
        if bytes > budget {
            return i;
        }
    }
    entries.len()
}

/// The responder's side of a key-by-key comparison.
fn compare(
    local: &impl LocalTree,
    partition: PartitionId,
    purge_horizon_ms: u64,
    dry_run: bool,
    ranges: &[RangeList],
    limits: &SyncLimits,
) -> Result<SyncResponse, SyncError> {
    let partitions = local.partitions();
    over(
        "ranges in one compare request",
        ranges.len(),
        LIST_ITEMS_MAX,
    )?;
    let items: usize = ranges.iter().map(|r| r.entries.len()).sum();
    over("list items in one compare request", items, LIST_ITEMS_MAX)?;
    let mut spans = Vec::with_capacity(ranges.len());
    for range in ranges {
        let node = range.node.check()?;
        spans.push(tree::leaf_range(node.level(), usize::from(node.index())));
    }
    spans.sort_by_key(|r| r.start);
    if spans.windows(2).any(|w| w[0].end > w[1].start) {
        return Err(SyncError::BadRequest(
            "the ranges of a compare request overlap".into(),
        ));
    }
    let mut to_send: Vec<Vec<u8>> = Vec::new();
    let mut want = Vec::new();
    let mut pending_purge = 0;
    let mut read = 0;
    for range in ranges {
        let left = COMPARE_ENTRIES_READ_MAX - read;
        let (listed, complete) = local.versions(partition, range.node, left)?;
        if !complete {
            return Err(SyncError::LimitExceeded {
                what: "entries the responder holds under one compare request's ranges",
                count: read + listed.len() + 1,
                limit: COMPARE_ENTRIES_READ_MAX,
            });
        }
        read += listed.len();
        // Ordered, so the answer is the same bytes every time (the simulator replays it).
        let mut mine: BTreeMap<u64, Listed> = listed
            .into_iter()
            .map(|e| (tree::locate(&e.key, partitions).position, e))
            .collect();
        for theirs in &range.entries {
            match mine.remove(&theirs.position) {
                None if theirs.dead_from_ms.is_some_and(|d| d < purge_horizon_ms) => {
                    pending_purge += 1;
                }
                None => want.push(theirs.position),
                // A typed entry merges: where the versions (the states) differ, each
                // side needs the other's.
                Some(entry) if (entry.typed || theirs.typed) && entry.version != theirs.version => {
                    want.push(theirs.position);
                    to_send.push(entry.key);
                }
                Some(entry) if entry.version > theirs.version => to_send.push(entry.key),
                Some(entry) if entry.version < theirs.version => want.push(theirs.position),
                Some(_) => {}
            }
        }
        for entry in mine.into_values() {
            if entry.dead_from_ms.is_some_and(|d| d < purge_horizon_ms) {
                pending_purge += 1;
            } else {
                to_send.push(entry.key);
            }
        }
    }
    let send_count = to_send.len() as u64;
    let mut send = Vec::new();
    if !dry_run {
        // What does not fit in this answer is counted in `send_count` and sent when
        // the requester asks again.
        let budget = limits.entry_bytes_max(positions_bytes(want.len()));
        let mut bytes = 0usize;
        for key in to_send {
            let Some(entry) = local.entry(&key)? else {
                continue;
            };
            bytes = bytes.saturating_add(encoded_bytes(&entry));
            if bytes > budget {
                break;
            }
            send.push(entry);
        }
    }
    Ok(SyncResponse::Compared {
        send,
        send_count,
        want,
        pending_purge,
    })
}

pub(super) fn check(partition: PartitionId, partitions: u16) -> Result<(), SyncError> {
    if partition < partitions {
        Ok(())
    } else {
        Err(SyncError::NoSuchPartition {
            partition,
            partitions,
        })
    }
}
