//! One exchange: a deterministic state machine that brings one partition of this node
//! and one co-replica into agreement, and the responder's side of each step.
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

use std::collections::BTreeMap;

use super::messages::{
    DifferingRoot, ListItem, NodeRef, NodeSummary, RangeList, RootSummary, SyncRequest,
    SyncResponse,
};
use super::tree::{self, FANOUT, LEAF_LEVEL, Node};
use crate::placement::PartitionId;
use crate::record::{Entry, Payload};

/// A node with at most this many entries is compared by list rather than descended.
pub const LIST_THRESHOLD: u64 = 16;
/// Most value bytes in one page of entries.
pub const PAGE_BYTES_MAX: usize = 1 << 20;
/// Most list items in one `Compare` request.
pub const LIST_ITEMS_MAX: usize = 16_384;

/// What an exchange needs from the local replica. Reads only; received entries come
/// out of [`Exchange::poll_apply`] for the caller to apply.
pub trait LocalTree {
    /// Partitions in the cluster.
    fn partitions(&self) -> u16;
    /// A node of `partition`'s tree.
    fn node(&self, partition: PartitionId, node: NodeRef) -> Result<Node, String>;
    /// The `FANOUT` children of an inner node.
    fn children(&self, partition: PartitionId, node: NodeRef) -> Result<Vec<Node>, String>;
    /// A page of the entries under `node`, after the resume point `after`.
    fn entries(
        &self,
        partition: PartitionId,
        node: NodeRef,
        after: Option<&[u8]>,
        bytes_max: usize,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>), String>;
}

/// Whether `entry` is a tombstone older than the purge horizon.
pub fn purgeable(entry: &Entry, horizon_ms: u64) -> bool {
    entry.record.payload == Payload::Tombstone && entry.record.version.hlc.wall_ms() < horizon_ms
}

fn summary(node: Node, salt: u64) -> NodeSummary {
    NodeSummary {
        fp: node.digest.fingerprint(node.count, salt),
        count: node.count,
    }
}

/// The fingerprint of a root, as sent in the first round.
pub fn root_fp(node: Node, salt: u64) -> u64 {
    let low = u64::from(node.digest.fingerprint(node.count, salt));
    let high = u64::from(
        node.digest
            .fingerprint(node.count, salt ^ 0x9e37_79b9_7f4a_7c15),
    );
    (high << 32) | low
}

/// The root summary of `partition` for the first round.
pub fn root_summary(
    local: &impl LocalTree,
    partition: PartitionId,
    salt: u64,
) -> Result<RootSummary, String> {
    let root = local.node(partition, NodeRef { level: 0, index: 0 })?;
    Ok(RootSummary {
        partition,
        fp: root_fp(root, salt),
        count: root.count,
    })
}

fn all_entries(
    local: &impl LocalTree,
    partition: PartitionId,
    node: NodeRef,
) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = local.entries(partition, node, after.as_deref(), usize::MAX)?;
        out.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// The responder's side of every request but `Push` (which the caller applies).
pub fn respond(local: &impl LocalTree, request: &SyncRequest) -> Result<SyncResponse, String> {
    let partitions = local.partitions();
    match request {
        SyncRequest::Roots { salt, roots } => {
            let mut differing = Vec::new();
            for theirs in roots {
                if theirs.partition >= partitions {
                    return Err(format!("partition {} does not exist", theirs.partition));
                }
                let mine = root_summary(local, theirs.partition, *salt)?;
                if mine != *theirs {
                    let children = local
                        .children(theirs.partition, NodeRef { level: 0, index: 0 })?
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
            let mut out = Vec::with_capacity(nodes.len());
            for node in nodes {
                if node.level >= LEAF_LEVEL {
                    return Err(format!("level {} has no children", node.level));
                }
                out.push(
                    local
                        .children(*partition, *node)?
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
            let mut send = Vec::new();
            let mut send_count = 0;
            let mut want = Vec::new();
            let mut pending_purge = 0;
            for range in ranges {
                // Ordered, so the answer is the same bytes every time (the simulator replays it).
                let mut mine: BTreeMap<u64, Entry> = all_entries(local, *partition, range.node)?
                    .into_iter()
                    .map(|e| (tree::locate(&e.key, partitions).position, e))
                    .collect();
                for theirs in &range.entries {
                    match mine.remove(&theirs.position) {
                        None if theirs.tombstone
                            && theirs.version.hlc.wall_ms() < *purge_horizon_ms =>
                        {
                            pending_purge += 1;
                        }
                        None => want.push(theirs.position),
                        Some(entry) if entry.record.version > theirs.version => {
                            send_count += 1;
                            if !dry_run {
                                send.push(entry);
                            }
                        }
                        Some(entry) if entry.record.version < theirs.version => {
                            want.push(theirs.position)
                        }
                        Some(_) => {}
                    }
                }
                for entry in mine.into_values() {
                    if purgeable(&entry, *purge_horizon_ms) {
                        pending_purge += 1;
                    } else {
                        send_count += 1;
                        if !dry_run {
                            send.push(entry);
                        }
                    }
                }
            }
            Ok(SyncResponse::Compared {
                send,
                send_count,
                want,
                pending_purge,
            })
        }
        SyncRequest::Pull {
            partition,
            node,
            after,
            purge_horizon_ms,
        } => {
            check(*partition, partitions)?;
            let (entries, next) =
                local.entries(*partition, *node, after.as_deref(), PAGE_BYTES_MAX)?;
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
        SyncRequest::Push { .. } => Err("a push is applied by the caller".into()),
    }
}

fn check(partition: PartitionId, partitions: u16) -> Result<(), String> {
    if partition < partitions {
        Ok(())
    } else {
        Err(format!(
            "partition {partition} does not exist (the cluster has {partitions})"
        ))
    }
}

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
    Compare,
    Push,
    Pull(NodeRef),
    PushAll(NodeRef, Option<Vec<u8>>),
}

/// The requester's side of one exchange for one partition; see the module documentation.
pub struct Exchange {
    partition: PartitionId,
    salt: u64,
    dry_run: bool,
    horizon_ms: u64,
    /// The nodes to descend into at the next level.
    descend: Vec<NodeRef>,
    /// Nodes to compare by list.
    lists: Vec<NodeRef>,
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
    failed: Option<String>,
}

impl Exchange {
    /// Starts from the co-replica's answer to the roots round for this partition.
    pub fn new(
        local: &impl LocalTree,
        differing: &DifferingRoot,
        salt: u64,
        purge_horizon_ms: u64,
        dry_run: bool,
    ) -> Result<Exchange, String> {
        let mut exchange = Exchange {
            partition: differing.partition,
            salt,
            dry_run,
            horizon_ms: purge_horizon_ms,
            descend: Vec::new(),
            lists: Vec::new(),
            push_all: Vec::new(),
            pull_all: Vec::new(),
            to_push: Vec::new(),
            in_flight: None,
            queued: None,
            received: Vec::new(),
            stats: ExchangeStats::default(),
            failed: None,
        };
        let root = NodeRef { level: 0, index: 0 };
        exchange.classify(local, root, &differing.children)?;
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
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Compares this replica's children of `parent` with the co-replica's and files
    /// each differing child under the step that will resolve it.
    fn classify(
        &mut self,
        local: &impl LocalTree,
        parent: NodeRef,
        theirs: &[NodeSummary],
    ) -> Result<(), String> {
        let mine = local.children(self.partition, parent)?;
        if theirs.len() != FANOUT || mine.len() != FANOUT {
            return Err(format!("expected {FANOUT} children, got {}", theirs.len()));
        }
        for (i, (mine, theirs)) in mine.iter().zip(theirs).enumerate() {
            if summary(*mine, self.salt) == *theirs {
                continue;
            }
            let child = NodeRef {
                level: parent.level + 1,
                index: (usize::from(parent.index) * FANOUT + i) as u16,
            };
            if theirs.count == 0 {
                self.push_all.push(child);
            } else if mine.count == 0 {
                self.pull_all.push((child, theirs.count));
            } else if child.level == LEAF_LEVEL || mine.count <= LIST_THRESHOLD {
                self.lists.push(child);
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

    fn next_request(&mut self, local: &impl LocalTree) -> Result<Option<SyncRequest>, String> {
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
            let mut ranges = Vec::new();
            let mut items = 0;
            while let Some(node) = self.lists.pop() {
                let entries: Vec<ListItem> = all_entries(local, partition, node)?
                    .iter()
                    .map(|e| ListItem {
                        position: tree::locate(&e.key, local.partitions()).position,
                        version: e.record.version,
                        tombstone: e.record.payload == Payload::Tombstone,
                    })
                    .collect();
                items += entries.len();
                ranges.push(RangeList { node, entries });
                if items >= LIST_ITEMS_MAX {
                    break;
                }
            }
            self.in_flight = Some(Step::Compare);
            return Ok(Some(SyncRequest::Compare {
                partition,
                purge_horizon_ms: self.horizon_ms,
                dry_run: self.dry_run,
                ranges,
            }));
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
        if let Some((node, their_count)) = self.pull_all.pop() {
            if self.dry_run {
                // Everything the co-replica holds under this node would move.
                self.stats.differing_keys += their_count;
                return self.next_request(local);
            }
            self.in_flight = Some(Step::Pull(node));
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

    fn push_page(
        &mut self,
        local: &impl LocalTree,
        node: NodeRef,
        after: Option<Vec<u8>>,
    ) -> Result<Option<SyncRequest>, String> {
        let (page, next) = local.entries(self.partition, node, after.as_deref(), PAGE_BYTES_MAX)?;
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

    fn handle(&mut self, local: &impl LocalTree, response: SyncResponse) -> Result<(), String> {
        let step = self.in_flight.take().ok_or("an answer nobody asked for")?;
        match (step, response) {
            (Step::Descend(nodes), SyncResponse::Children { nodes: children }) => {
                if children.len() != nodes.len() {
                    return Err(format!(
                        "asked for {} nodes, got {}",
                        nodes.len(),
                        children.len()
                    ));
                }
                for (node, theirs) in nodes.iter().zip(&children) {
                    self.classify(local, *node, theirs)?;
                }
            }
            (
                Step::Compare,
                SyncResponse::Compared {
                    send,
                    send_count,
                    want,
                    pending_purge,
                },
            ) => {
                self.stats.differing_keys += send_count + want.len() as u64;
                self.stats.pending_purge += pending_purge;
                if !self.dry_run {
                    self.stats.keys_received += send.len() as u64;
                    if !send.is_empty() {
                        self.received.push(send);
                    }
                    self.to_push
                        .extend(entries_at(local, self.partition, &want)?);
                }
            }
            (Step::Push, SyncResponse::Pushed { .. }) => {}
            (Step::PushAll(node, next), SyncResponse::Pushed { .. }) => {
                if let Some(next) = next {
                    self.queued = self.push_page(local, node, Some(next))?;
                }
            }
            (
                Step::Pull(node),
                SyncResponse::Entries {
                    entries,
                    pending_purge,
                    next,
                },
            ) => {
                self.stats.pending_purge += pending_purge;
                self.stats.differing_keys += entries.len() as u64;
                self.stats.keys_received += entries.len() as u64;
                if !entries.is_empty() {
                    self.received.push(entries);
                }
                if let Some(next) = next {
                    self.in_flight = Some(Step::Pull(node));
                    self.queued = Some(SyncRequest::Pull {
                        partition: self.partition,
                        node,
                        after: Some(next),
                        purge_horizon_ms: self.horizon_ms,
                    });
                }
            }
            (_, other) => return Err(format!("unexpected answer {other:?}")),
        }
        Ok(())
    }

    /// Entries received, to apply to the local replica.
    pub fn poll_apply(&mut self) -> Option<Vec<Entry>> {
        self.received.pop()
    }
}

fn take_page(entries: &mut Vec<Entry>) -> Vec<Entry> {
    let mut bytes = 0;
    let mut split = 0;
    for (i, entry) in entries.iter().enumerate() {
        bytes += entry.record.payload.len() + entry.key.len();
        if i > 0 && bytes > PAGE_BYTES_MAX {
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
) -> Result<Vec<Entry>, String> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let partitions = local.partitions();
    let mut by_leaf: std::collections::BTreeMap<u16, Vec<u64>> = Default::default();
    for &position in positions {
        let leaf = (position >> (64 - tree::FANOUT_BITS * u32::from(LEAF_LEVEL))) as u16;
        by_leaf.entry(leaf).or_default().push(position);
    }
    let mut out = Vec::with_capacity(positions.len());
    for (leaf, wanted) in by_leaf {
        let node = NodeRef {
            level: LEAF_LEVEL,
            index: leaf,
        };
        for entry in all_entries(local, partition, node)? {
            if wanted.contains(&tree::locate(&entry.key, partitions).position) {
                out.push(entry);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

/// A replica's own store, read for an exchange.
impl LocalTree for crate::storage::Store {
    fn partitions(&self) -> u16 {
        self.cluster().map_or(0, |c| c.partitions)
    }

    fn node(&self, partition: PartitionId, node: NodeRef) -> Result<Node, String> {
        self.tree_node(partition, node.level, usize::from(node.index))
            .map_err(|e| e.to_string())
    }

    fn children(&self, partition: PartitionId, node: NodeRef) -> Result<Vec<Node>, String> {
        self.tree_children(partition, node.level, usize::from(node.index))
            .map_err(|e| e.to_string())
    }

    fn entries(
        &self,
        partition: PartitionId,
        node: NodeRef,
        after: Option<&[u8]>,
        bytes_max: usize,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>), String> {
        let leaves = tree::leaf_range(node.level, usize::from(node.index));
        self.entries_in(partition, leaves, after, bytes_max)
            .map_err(|e| e.to_string())
    }
}
