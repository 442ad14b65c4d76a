//! One exchange: a deterministic state machine that brings one partition of this node
//! and one co-replica into agreement (the responder's side is [`super::respond`]; what
//! it reads of this replica is [`LocalTree`], in [`super::local_tree`]).
//!
//! The requester descends only into differing children, a whole level per round trip.
//! Under a node where the co-replica has nothing, it pushes every entry; where it has
//! nothing itself, it pulls every entry; under a node holding few entries, and at the
//! leaves, it sends its `(position, version)` list and the responder answers with the
//! entries it holds newer and the positions it wants. Every entry that moves, moves
//! once, from the newer side to the older: over-streaming is 1.
//!
//! A tombstone older than the purge horizon is never sent to, nor wanted from, a side
//! that has nothing for its key: such differences are counted as pending purges, so
//! replicas that purge at slightly different moments never ping-pong a tombstone. A
//! tombstone is always sent to a side that holds an older value.

use std::collections::{BTreeMap, HashSet};

use super::error::SyncError;
use super::local_tree::summary;
use super::messages::{
    COMPARE_ENTRIES_READ_MAX, DifferingRoot, LIST_ITEMS_MAX, ListItem, NodeRef, NodeSummary,
    PAGE_BYTES_MAX, PAGE_ENTRIES_MAX, RangeList, SyncLimits, SyncRequest, SyncResponse,
};
use super::respond::{check, check_entries};
use super::tree::{self, FANOUT, LEAF_LEVEL};
use crate::limits::KEY_BYTES_MAX;
use crate::placement::PartitionId;
use crate::record::{Entry, Version};

pub use super::local_tree::{Listed, LocalTree, purgeable, root_fp, root_summary};

/// A node with at most this many entries is compared by list rather than descended.
pub const LIST_THRESHOLD: u64 = 16;

/// What one exchange found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Requests sent after the roots round (each one round trip).
    pub round_trips: u64,
    /// Keys that differed (each counted once).
    pub differing_keys: u64,
    /// Entries received and applied here.
    pub keys_received: u64,
    /// Entries sent to the co-replica.
    pub keys_sent: u64,
    /// Differences that are only tombstones past the purge horizon.
    pending_purge: u64,
}

impl ExchangeStats {
    /// Differences that are only tombstones past the purge horizon.
    pub fn pending_purge(&self) -> u64 {
        self.pending_purge
    }
}

enum Step {
    Descend(Vec<NodeRef>),
    /// The nodes compared (with the co-replica's counts) and the items listed.
    Compare(Vec<(NodeRef, u64)>, usize),
    Push,
    Pull(NodeRef, Option<Vec<u8>>),
    PushAll(NodeRef, Option<Vec<u8>>),
}

/// The requester's side of one exchange for one partition; see the module documentation.
pub struct Exchange {
    partition: PartitionId,
    salt: u64,
    dry_run: bool,
    horizon_ms: u64,
    limits: SyncLimits,
    /// The nodes to descend into at the next level.
    descend: Vec<NodeRef>,
    /// Nodes to compare by list, with the co-replica's entry count.
    lists: Vec<(NodeRef, u64)>,
    /// Nodes whose comparison answer was cut at the frame limit: compared again once
    /// what came and what was wanted have moved.
    relist: Vec<(NodeRef, u64)>,
    /// Entries received in cut answers: one seen again means the last round moved
    /// nothing here (the caller refused it), so the nodes are not compared again.
    received_in_cut: HashSet<(Vec<u8>, Version)>,
    /// Nodes where the co-replica has nothing: push everything.
    push_all: Vec<NodeRef>,
    /// Nodes where this replica has nothing (with the co-replica's count): pull everything.
    pull_all: Vec<(NodeRef, u64)>,
    /// Entries waiting to be pushed.
    to_push: Vec<Entry>,
    /// The request in flight.
    in_flight: Option<Step>,
    /// A follow-up request (the next page) prepared while handling an answer.
    queued: Option<SyncRequest>,
    /// Entries received, for the caller to apply.
    received: Vec<Vec<Entry>>,
    stats: ExchangeStats,
    failed: Option<SyncError>,
}

impl Exchange {
    /// Starts from the co-replica's answer to the roots round for this partition.
    /// Entries received are held to `limits`.
    pub fn new(
        local: &impl LocalTree,
        differing: &DifferingRoot,
        salt: u64,
        purge_horizon_ms: u64,
        dry_run: bool,
        limits: SyncLimits,
    ) -> Result<Exchange, SyncError> {
        check(differing.partition, local.partitions())
            .map_err(|e| SyncError::Protocol(format!("the roots answer names a partition: {e}")))?;
        let mut exchange = Exchange {
            partition: differing.partition,
            salt,
            dry_run,
            horizon_ms: purge_horizon_ms,
            limits,
            descend: Vec::new(),
            lists: Vec::new(),
            relist: Vec::new(),
            received_in_cut: HashSet::new(),
            push_all: Vec::new(),
            pull_all: Vec::new(),
            to_push: Vec::new(),
            in_flight: None,
            queued: None,
            received: Vec::new(),
            stats: ExchangeStats::default(),
            failed: None,
        };
        exchange.classify(local, NodeRef::ROOT, &differing.children)?;
        Ok(exchange)
    }

    /// The partition.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// What was found and moved so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    /// Why the exchange stopped early, if it did.
    pub fn failure(&self) -> Option<&SyncError> {
        self.failed.as_ref()
    }

    /// Compares this replica's children of `parent` with the co-replica's and files
    /// each differing child under the step that will resolve it.
    fn classify(
        &mut self,
        local: &impl LocalTree,
        parent: NodeRef,
        theirs: &[NodeSummary],
    ) -> Result<(), SyncError> {
        if theirs.len() != FANOUT {
            return Err(SyncError::Protocol(format!(
                "expected {FANOUT} children, got {}",
                theirs.len()
            )));
        }
        let mine = local.children(self.partition, parent)?;
        for (i, (mine, theirs)) in mine.iter().zip(theirs).enumerate() {
            if summary(*mine, self.salt) == *theirs {
                continue;
            }
            let Some(child) = parent.child(i) else {
                return Err(SyncError::BadRequest(format!(
                    "tree node (level {}, index {}) has no children",
                    parent.level(),
                    parent.index()
                )));
            };
            if theirs.count == 0 {
                self.push_all.push(child);
            } else if mine.count == 0 {
                self.pull_all.push((child, theirs.count));
            } else if child.is_leaf()
                || (mine.count <= LIST_THRESHOLD && theirs.count <= COMPARE_ENTRIES_READ_MAX as u64)
            {
                self.lists.push((child, theirs.count));
            } else {
                self.descend.push(child);
            }
        }
        Ok(())
    }

    /// The next request to send, once the previous one has been answered. `None` when
    /// the exchange is finished (or failed).
    pub fn poll_request(&mut self, local: &impl LocalTree) -> Option<SyncRequest> {
        if let Some(request) = self.queued.take() {
            return Some(request);
        }
        if self.in_flight.is_some() || self.failed.is_some() {
            return None;
        }
        match self.next_request(local) {
            Ok(request) => request,
            Err(err) => {
                self.failed = Some(err);
                None
            }
        }
    }

    fn next_request(&mut self, local: &impl LocalTree) -> Result<Option<SyncRequest>, SyncError> {
        let partition = self.partition;
        if !self.descend.is_empty() {
            let nodes = std::mem::take(&mut self.descend);
            self.in_flight = Some(Step::Descend(nodes.clone()));
            return Ok(Some(SyncRequest::Children {
                partition,
                salt: self.salt,
                nodes,
            }));
        }
        if !self.lists.is_empty() {
            return self.compare_request(local).map(Some);
        }
        if !self.to_push.is_empty() {
            let batch = take_page(&mut self.to_push);
            self.stats.keys_sent += batch.len() as u64;
            self.in_flight = Some(Step::Push);
            return Ok(Some(SyncRequest::Push {
                partition,
                entries: batch,
            }));
        }
        if !self.relist.is_empty() {
            // What a cut answer left out, now that what it carried has been applied.
            self.lists = std::mem::take(&mut self.relist);
            return self.compare_request(local).map(Some);
        }
        if let Some((node, their_count)) = self.pull_all.pop() {
            if self.dry_run {
                // Everything the co-replica holds under this node would move.
                self.stats.differing_keys += their_count;
                return self.next_request(local);
            }
            self.in_flight = Some(Step::Pull(node, None));
            return Ok(Some(SyncRequest::Pull {
                partition,
                node,
                after: None,
                purge_horizon_ms: self.horizon_ms,
            }));
        }
        if let Some(node) = self.push_all.pop() {
            return self.push_page(local, node, None);
        }
        Ok(None)
    }

    /// A comparison of as many listed nodes as the request bounds allow (at least one):
    /// at most [`LIST_ITEMS_MAX`] items and ranges, and at most
    /// [`COMPARE_ENTRIES_READ_MAX`] entries for the co-replica to read, by its counts.
    fn compare_request(&mut self, local: &impl LocalTree) -> Result<SyncRequest, SyncError> {
        let partitions = local.partitions();
        let mut ranges = Vec::new();
        let mut compared = Vec::new();
        let mut items = 0;
        let mut theirs = 0u64;
        while let Some((node, their_count)) = self.lists.pop() {
            let (listed, _) = local.versions(self.partition, node, LIST_ITEMS_MAX + 1)?;
            let full = !ranges.is_empty()
                && (items + listed.len() > LIST_ITEMS_MAX
                    || ranges.len() >= LIST_ITEMS_MAX
                    || theirs + their_count > COMPARE_ENTRIES_READ_MAX as u64);
            if full {
                self.lists.push((node, their_count));
                break;
            }
            let entries: Vec<ListItem> = listed
                .iter()
                .map(|e| ListItem {
                    position: tree::locate(&e.key, partitions).position,
                    version: e.version,
                    dead_from_ms: e.dead_from_ms,
                    typed: e.typed,
                })
                .collect();
            items += entries.len();
            theirs += their_count;
            ranges.push(RangeList { node, entries });
            compared.push((node, their_count));
        }
        self.in_flight = Some(Step::Compare(compared, items));
        Ok(SyncRequest::Compare {
            partition: self.partition,
            purge_horizon_ms: self.horizon_ms,
            dry_run: self.dry_run,
            ranges,
        })
    }

    fn push_page(
        &mut self,
        local: &impl LocalTree,
        node: NodeRef,
        after: Option<Vec<u8>>,
    ) -> Result<Option<SyncRequest>, SyncError> {
        let (page, next) = local.entries(
            self.partition,
            node,
            after.as_deref(),
            PAGE_ENTRIES_MAX,
            PAGE_BYTES_MAX,
        )?;
        let before = page.len();
        let page: Vec<Entry> = page
            .into_iter()
            .filter(|e| !purgeable(e, self.horizon_ms))
            .collect();
        self.stats.pending_purge += (before - page.len()) as u64;
        self.stats.differing_keys += page.len() as u64;
        if self.dry_run {
            return match next {
                Some(next) => self.push_page(local, node, Some(next)),
                None => self.next_request(local),
            };
        }
        self.stats.keys_sent += page.len() as u64;
        self.in_flight = Some(Step::PushAll(node, next));
        Ok(Some(SyncRequest::Push {
            partition: self.partition,
            entries: page,
        }))
    }

    /// The co-replica's answer to the request in flight.
    pub fn handle_response(&mut self, local: &impl LocalTree, response: SyncResponse) {
        self.stats.round_trips += 1;
        if let Err(err) = self.handle(local, response) {
            self.failed = Some(err);
        }
    }

    /// Checks entries in an answer: the limits every write obeys, and that each lies in
    /// the partition, under one of `nodes`.
    fn check_received(
        &self,
        local: &impl LocalTree,
        entries: &[Entry],
        nodes: &[NodeRef],
    ) -> Result<(), SyncError> {
        check_entries(entries, &self.limits)
            .map_err(|e| SyncError::Protocol(format!("an entry sent: {e}")))?;
        let partitions = local.partitions();
        for entry in entries {
            let at = tree::locate(&entry.key, partitions);
            let under = nodes
                .iter()
                .any(|n| tree::leaf_range(n.level(), usize::from(n.index())).contains(&at.leaf));
            if at.partition != self.partition || !under {
                return Err(SyncError::Protocol(format!(
                    "an entry sent lies in partition {} leaf {}, outside what was asked of partition {}",
                    at.partition, at.leaf, self.partition
                )));
            }
        }
        Ok(())
    }

    fn handle(&mut self, local: &impl LocalTree, response: SyncResponse) -> Result<(), SyncError> {
        let step = self
            .in_flight
            .take()
            .ok_or_else(|| SyncError::Protocol("an answer nobody asked for".into()))?;
        match (step, response) {
            (Step::Descend(nodes), SyncResponse::Children { nodes: children }) => {
                if children.len() != nodes.len() {
                    return Err(SyncError::Protocol(format!(
                        "asked for {} nodes, got {}",
                        nodes.len(),
                        children.len()
                    )));
                }
                for (node, theirs) in nodes.iter().zip(&children) {
                    self.classify(local, *node, theirs)?;
                }
            }
            (
                Step::Compare(compared, items),
                SyncResponse::Compared {
                    send,
                    send_count,
                    want,
                    pending_purge,
                },
            ) => {
                if want.len() > items || (send.len() as u64) > send_count {
                    return Err(SyncError::Protocol(format!(
                        "a comparison of {items} items answered with {} wanted and {} of {send_count} sent",
                        want.len(),
                        send.len()
                    )));
                }
                self.stats.pending_purge += pending_purge;
                if self.dry_run {
                    self.stats.differing_keys += send_count + want.len() as u64;
                    return Ok(());
                }
                let nodes: Vec<NodeRef> = compared.iter().map(|(n, _)| *n).collect();
                self.check_received(local, &send, &nodes)?;
                let cut = send_count > send.len() as u64;
                // A cut answer's remainder is counted when it comes.
                let moved = if cut { send.len() as u64 } else { send_count };
                self.stats.differing_keys += moved + want.len() as u64;
                if cut {
                    if send.is_empty() {
                        return Err(SyncError::Protocol(format!(
                            "a comparison answer promised {send_count} entries and carried none"
                        )));
                    }
                    let mut progress = false;
                    for e in &send {
                        progress |= self
                            .received_in_cut
                            .insert((e.key.clone(), e.record.version));
                    }
                    if progress {
                        self.relist.extend(compared);
                    }
                }
                self.stats.keys_received += send.len() as u64;
                if !send.is_empty() {
                    self.received.push(send);
                }
                self.to_push
                    .extend(entries_at(local, self.partition, &want)?);
            }
            (Step::Push, SyncResponse::Pushed { .. }) => {}
            (Step::PushAll(node, next), SyncResponse::Pushed { .. }) => {
                if let Some(next) = next {
                    self.queued = self.push_page(local, node, Some(next))?;
                }
            }
            (
                Step::Pull(node, after),
                SyncResponse::Entries {
                    entries,
                    pending_purge,
                    next,
                },
            ) => {
                self.check_received(local, &entries, &[node])?;
                if let Some(next) = &next
                    && (next.len() > KEY_BYTES_MAX + 4
                        || after.as_ref().is_some_and(|after| next <= after))
                {
                    return Err(SyncError::Protocol(
                        "a page's resume point does not move forward".into(),
                    ));
                }
                self.stats.pending_purge += pending_purge;
                self.stats.differing_keys += entries.len() as u64;
                self.stats.keys_received += entries.len() as u64;
                if !entries.is_empty() {
                    self.received.push(entries);
                }
                if let Some(next) = next {
                    self.in_flight = Some(Step::Pull(node, Some(next.clone())));
                    self.queued = Some(SyncRequest::Pull {
                        partition: self.partition,
                        node,
                        after: Some(next),
                        purge_horizon_ms: self.horizon_ms,
                    });
                }
            }
            (_, other) => {
                return Err(SyncError::Protocol(format!(
                    "unexpected answer {}",
                    answer_name(&other)
                )));
            }
        }
        Ok(())
    }

    /// Entries received, to apply to the local replica.
    pub fn poll_apply(&mut self) -> Option<Vec<Entry>> {
        self.received.pop()
    }
}

fn answer_name(response: &SyncResponse) -> &'static str {
    match response {
        SyncResponse::Roots { .. } => "roots",
        SyncResponse::Children { .. } => "children",
        SyncResponse::Compared { .. } => "compared",
        SyncResponse::Entries { .. } => "entries",
        SyncResponse::Pushed { .. } => "pushed",
    }
}

/// A page of entries to push: at most [`PAGE_ENTRIES_MAX`] and about
/// [`PAGE_BYTES_MAX`] of keys and values (at least one entry).
fn take_page(entries: &mut Vec<Entry>) -> Vec<Entry> {
    let mut bytes = 0;
    let mut split = 0;
    for (i, entry) in entries.iter().enumerate() {
        bytes += entry.record.payload.len() + entry.key.len();
        if i > 0 && (bytes > PAGE_BYTES_MAX || i >= PAGE_ENTRIES_MAX) {
            break;
        }
        split = i + 1;
    }
    let rest = entries.split_off(split);
    std::mem::replace(entries, rest)
}

fn entries_at(
    local: &impl LocalTree,
    partition: PartitionId,
    positions: &[u64],
) -> Result<Vec<Entry>, SyncError> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let partitions = local.partitions();
    let mut by_leaf: BTreeMap<u16, HashSet<u64>> = BTreeMap::new();
    for &position in positions {
        let leaf = (position >> (64 - tree::FANOUT_BITS * u32::from(LEAF_LEVEL))) as u16;
        by_leaf.entry(leaf).or_default().insert(position);
    }
    let mut out = Vec::with_capacity(positions.len());
    for (leaf, wanted) in by_leaf {
        let node = NodeRef::new(LEAF_LEVEL, leaf)?;
        let (listed, _) = local.versions(partition, node, usize::MAX)?;
        for e in listed {
            if wanted.contains(&tree::locate(&e.key, partitions).position)
                && let Some(entry) = local.entry(&e.key)?
            {
                out.push(entry);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
