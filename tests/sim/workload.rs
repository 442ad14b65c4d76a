//! The client workload: each operation's record, and issuing it on a live coordinator.

use rand::RngExt;
use vergent::coordinator::Millis;
use vergent::hlc::Timestamp;
use vergent::placement::partition_of;
use vergent::policy::unheard_refusal;
use vergent::protocol::Consistency;
use vergent::record::{Entry, NodeId, Payload, Record, Version};

use super::Sim;
use super::config::MAX_OFFSET_MS;

/// The client's record of one operation.
#[derive(Debug, Clone)]
pub(super) struct ClientOp {
    pub(super) key: Vec<u8>,
    pub(super) kind: OpKind,
    pub(super) consistency: Consistency,
    pub(super) issued_ms: u64,
    pub(super) version: Option<Version>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) outcome: Option<Result<Option<Version>, String>>,
    pub(super) completed_ms: Option<u64>,
    /// The client session it belongs to, and the highest version that session had
    /// seen when the operation was issued (sent along, as the client library does).
    pub(super) session: usize,
    pub(super) after: Option<Timestamp>,
    /// The replicas its coordinator wrote to.
    pub(super) targets: Vec<String>,
    /// What a script fixed of it; the rest is drawn when it is issued.
    pub(super) fixed: Option<Fixed>,
}

/// An operation a script fixed: what, on which key, and through which coordinator.
#[derive(Debug, Clone)]
pub(super) struct Fixed {
    pub(super) kind: OpKind,
    pub(super) key: Vec<u8>,
    pub(super) consistency: Consistency,
    pub(super) via: Via,
}

/// Which live nodes may coordinate a fixed operation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Via {
    Any,
    /// This one only.
    Only(usize),
    /// Any but this one.
    Not(usize),
}

impl ClientOp {
    /// An operation not yet issued, of `session`.
    pub(super) fn new(session: usize, fixed: Option<Fixed>) -> ClientOp {
        ClientOp {
            key: Vec::new(),
            kind: OpKind::Get,
            consistency: Consistency::One,
            issued_ms: 0,
            version: None,
            value: None,
            outcome: None,
            completed_ms: None,
            session,
            after: None,
            targets: Vec::new(),
            fixed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Put,
    Delete,
    Get,
}

impl Sim {
    pub(super) fn client_op(&mut self, index: usize) {
        let fixed = self.client_ops[index].fixed.clone();
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .filter(|&i| match fixed.as_ref().map(|f| f.via) {
                None | Some(Via::Any) => true,
                Some(Via::Only(x)) => i == x,
                Some(Via::Not(x)) => i != x,
            })
            .collect();
        if live.is_empty() {
            self.client_ops[index].outcome = Some(Err("no live coordinator".into()));
            return;
        }
        let i = live[self.rng.random_range(0..live.len())];
        if self.nodes[i]
            .membership
            .as_ref()
            .is_some_and(|m| m.stepped_aside().is_some())
        {
            // As the node does: a node that stepped aside serves no data.
            self.client_ops[index].outcome = Some(Err("not ready: stepped aside".into()));
            return;
        }
        let (kind, consistency, key) = match fixed {
            Some(f) => (f.kind, f.consistency, f.key),
            None => {
                let kind = match self.rng.random_range(0..10) {
                    0..=4 => OpKind::Put,
                    5..=6 => OpKind::Delete,
                    _ => OpKind::Get,
                };
                let consistency = [Consistency::One, Consistency::Quorum, Consistency::All]
                    [self.rng.random_range(0..3)];
                let key = format!("k{}", self.rng.random_range(0..self.config.keys)).into_bytes();
                (kind, consistency, key)
            }
        };
        let placement = self.placement(i);
        let replicas =
            self.replica_set(i, &placement, partition_of(&key, self.settings.partitions));
        let replica_set_shown = (replicas.targets.clone(), replicas.counted.clone());
        let now = Millis(self.now);
        let op = match kind {
            OpKind::Get => {
                self.report.gets += 1;
                self.nodes[i]
                    .coordinator
                    .begin_read(key.clone(), replicas, consistency, now)
            }
            OpKind::Put | OpKind::Delete => {
                // As the node does: no version from a clock the cluster would refuse,
                // nor from one not yet compared with it.
                let unheard = self.nodes[i].membership.as_ref().and_then(|m| {
                    let others_known = m.roster().any(|v| {
                        v.id.name != self.names[i]
                            && v.state != vergent::membership::MemberState::Left
                    });
                    unheard_refusal(others_known, m.heard_from_others()).map(str::to_string)
                });
                if let Some(why) = self.verdict(i).refusal(MAX_OFFSET_MS).or(unheard) {
                    self.log(format!("op {index} refused on {}: {why}", self.names[i]));
                    let o = &mut self.client_ops[index];
                    o.outcome = Some(Err(why));
                    o.completed_ms = Some(self.now);
                    return;
                }
                let wall = self.wall(i);
                // Nor from a clock that already reads beyond the cluster's time (it
                // issued or stored versions from the future before).
                let limit = self.cluster_wall(i) + MAX_OFFSET_MS;
                if self.nodes[i].clock.read(wall).wall_ms() > limit {
                    let why = "this node's clock has issued or stored versions ahead of the cluster's time".to_string();
                    self.log(format!("op {index} refused on {}: {why}", self.names[i]));
                    let o = &mut self.client_ops[index];
                    o.outcome = Some(Err(why));
                    o.completed_ms = Some(self.now);
                    return;
                }
                let session = self.client_ops[index].session;
                if let Some(after) = self.sessions[session] {
                    let cluster = self.cluster_wall(i);
                    if let Err(err) = self.nodes[i].clock.observe_against(after, wall, cluster) {
                        let o = &mut self.client_ops[index];
                        o.outcome = Some(Err(err.to_string()));
                        o.completed_ms = Some(self.now);
                        return;
                    }
                }
                self.client_ops[index].after = self.sessions[session];
                self.check_issuing_clock(i);
                let hlc = self.nodes[i].clock.tick(wall);
                if self.nodes[i].last_issued.is_some_and(|last| hlc <= last) {
                    self.violations.push(format!(
                        "{} issued a version not above its last",
                        self.names[i]
                    ));
                }
                self.nodes[i].last_issued = Some(hlc);
                self.check_clock(i);
                let version = Version {
                    hlc,
                    node: NodeId::from_name(&self.names[i]),
                };
                let (payload, value) = if kind == OpKind::Put {
                    self.report.puts += 1;
                    let value = format!("op{index}").into_bytes();
                    (Payload::Value(value.clone()), Some(value))
                } else {
                    self.report.deletes += 1;
                    (Payload::Tombstone, None)
                };
                let o = &mut self.client_ops[index];
                o.version = Some(version);
                o.value = value;
                let entry = Entry {
                    key: key.clone(),
                    record: Record { version, payload },
                };
                self.nodes[i]
                    .coordinator
                    .begin_write(entry, replicas, consistency, now)
            }
        };
        let o = &mut self.client_ops[index];
        o.key = key;
        o.kind = kind;
        o.consistency = consistency;
        o.issued_ms = self.now;
        o.targets = replica_set_shown.0.clone();
        self.nodes[i].ops.insert(op, index);
        let key = String::from_utf8_lossy(&self.client_ops[index].key).into_owned();
        self.log(format!(
            "op {index} {kind:?} of {key} on {} at {consistency:?}: targets {:?}, counted {:?}",
            self.names[i], replica_set_shown.0, replica_set_shown.1
        ));
        self.drain_coordinator(i);
    }
}
