//! Which partition a key belongs to, and (with membership) which nodes hold it.
//!
//! Placement is a pure function: the same key and the same cluster shape give the same
//! answer on every node, every build and every platform.

mod fill;

pub use self::fill::{FILL_SETTLE_MS, Fill, FillChange, FillNews};

/// A partition number, `0..partitions`.
pub type PartitionId = u16;

/// Default number of partitions in a new cluster.
pub const PARTITIONS_DEFAULT: u16 = 256;
/// Most partitions a cluster may have; each one carries a Merkle tree on every replica.
pub const PARTITIONS_MAX: u16 = 4096;

/// The partition of `key` among `partitions`: the top bits of `blake3(key)`, scaled to
/// the partition count so any count works and powers of two take the plain top bits.
pub fn partition_of(key: &[u8], partitions: u16) -> PartitionId {
    key_position(key, partitions).0
}

/// The partition of `key` and its position inside that partition's range: the top 64
/// bits of `blake3(key)` times the partition count, as a 128-bit product whose high
/// half is the partition and whose low half orders the key within it (the Merkle tree
/// takes its leaves from the position).
pub fn key_position(key: &[u8], partitions: u16) -> (PartitionId, u64) {
    debug_assert!(partitions > 0);
    let hash = blake3::hash(key);
    let mut top = [0u8; 8];
    top.copy_from_slice(&hash.as_bytes()[..8]);
    let scaled = u128::from(u64::from_be_bytes(top)) * u128::from(partitions.max(1));
    ((scaled >> 64) as PartitionId, scaled as u64)
}

/// Default copies of each partition.
pub const REPLICATION_FACTOR_DEFAULT: u8 = 3;
/// Most copies of a partition a cluster may ask for.
pub const REPLICATION_FACTOR_MAX: u8 = 7;

/// The rendezvous score of the placement token `token` for `partition`: every node
/// computes the same number from the same inputs, and adding or removing a member
/// changes no other member's score.
fn score(partition: PartitionId, token: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"vergent placement v1\0");
    hasher.update(&partition.to_be_bytes());
    hasher.update(token.as_bytes());
    let mut top = [0u8; 8];
    top.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_be_bytes(top)
}

/// Sorts member indexes by descending score for `partition`; the index (token order)
/// breaks the astronomically rare tie.
fn rank(indexes: &mut [u16], partition: PartitionId, tokens: &[String]) {
    indexes.sort_by_cached_key(|&i| {
        (
            std::cmp::Reverse(score(partition, &tokens[usize::from(i)])),
            i,
        )
    });
}

/// Most-loaded member's slots over least-loaded member's, as a fraction `NUM / DEN`,
/// that placement accepts (1.25).
const IMBALANCE_NUM: usize = 5;
const IMBALANCE_DEN: usize = 4;

/// Plain rendezvous hashing leaves some member sets unbalanced (at 256 partitions, about
/// one set of five names in twenty holds over 1.25× the slots on one node than another).
/// This moves single slots from the most- to the least-loaded member, choosing the
/// partition where the receiver scores highest, until the bound holds. It is
/// deterministic, does nothing for sets that are already balanced, and moves few slots
/// when it acts, so a join still moves about `RF/N` of the slots.
fn rebalance(table: &mut [Vec<u16>], tokens: &[String]) {
    if tokens.len() < 2 || table.is_empty() {
        return;
    }
    let mut load = vec![0usize; tokens.len()];
    for replicas in table.iter() {
        for &i in replicas {
            load[usize::from(i)] += 1;
        }
    }
    // Every step strictly reduces the sum of squared loads, so this ends; the bound is
    // a guard, not a tuning knob.
    for _ in 0..table.len() * tokens.len() {
        let Some((most, &max)) = load
            .iter()
            .enumerate()
            .max_by_key(|&(i, l)| (*l, std::cmp::Reverse(i)))
        else {
            return;
        };
        let Some((least, &min)) = load.iter().enumerate().min_by_key(|&(i, l)| (*l, i)) else {
            return;
        };
        if max * IMBALANCE_DEN <= min * IMBALANCE_NUM || max - min < 2 {
            return;
        }
        let (most, least) = (most as u16, least as u16);
        let candidate = (0..table.len())
            .filter(|&p| table[p].contains(&most) && !table[p].contains(&least))
            .max_by_key(|&p| {
                (
                    score(p as PartitionId, &tokens[usize::from(least)]),
                    std::cmp::Reverse(p),
                )
            });
        let Some(partition) = candidate else { return };
        let replicas = &mut table[partition];
        for slot in replicas.iter_mut() {
            if *slot == most {
                *slot = least;
            }
        }
        rank(replicas, partition as PartitionId, tokens);
        load[usize::from(most)] -= 1;
        load[usize::from(least)] += 1;
    }
}

/// Which nodes hold each partition: a pure function of the members (those that have
/// not left) with their placement tokens, the partition count and the replication
/// factor. Each partition goes to the `replication_factor` members whose tokens score
/// highest; a cluster smaller than that puts every partition on every member.
///
/// A member's token is its own name, unless it replaced a member (`--replace`): then it
/// is the replaced member's token, so the new member holds exactly the partitions the
/// old one held and nothing else moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Member names, index-aligned with `tokens`.
    names: Vec<String>,
    /// Placement tokens, sorted.
    tokens: Vec<String>,
    /// Member names, sorted.
    sorted_names: Vec<String>,
    replication_factor: usize,
    table: Vec<Vec<u16>>,
}

impl Placement {
    /// Computes the placement for `members`, each its own token (order and duplicates
    /// do not matter).
    pub fn compute<I, S>(members: I, partitions: u16, replication_factor: u8) -> Placement
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::compute_with_tokens(
            members.into_iter().map(|m| {
                let name: String = m.into();
                (name.clone(), name)
            }),
            partitions,
            replication_factor,
        )
    }

    /// Computes the placement for `(name, token)` pairs. Two members with one token
    /// (which membership never produces) keep the one whose name sorts first.
    pub fn compute_with_tokens<I>(members: I, partitions: u16, replication_factor: u8) -> Placement
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut pairs: Vec<(String, String)> = members
            .into_iter()
            .map(|(name, token)| (token, name))
            .collect();
        pairs.sort();
        pairs.dedup_by(|b, a| a.0 == b.0);
        let tokens: Vec<String> = pairs.iter().map(|(t, _)| t.clone()).collect();
        let names: Vec<String> = pairs.into_iter().map(|(_, n)| n).collect();
        let mut sorted_names = names.clone();
        sorted_names.sort();
        let copies = usize::from(replication_factor).min(tokens.len());
        let mut table: Vec<Vec<u16>> = (0..partitions)
            .map(|partition| {
                let mut ranked: Vec<u16> = (0..tokens.len() as u16).collect();
                rank(&mut ranked, partition, &tokens);
                ranked.truncate(copies);
                ranked
            })
            .collect();
        rebalance(&mut table, &tokens);
        Placement {
            names,
            tokens,
            sorted_names,
            replication_factor: copies,
            table,
        }
    }

    /// The members placement was computed over, sorted by name.
    pub fn members(&self) -> &[String] {
        &self.sorted_names
    }

    /// The `(name, token)` pairs placement was computed over, sorted by token.
    pub fn tokens(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names
            .iter()
            .zip(&self.tokens)
            .map(|(n, t)| (n.as_str(), t.as_str()))
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u16 {
        self.table.len() as u16
    }

    /// Copies of each partition actually placed: the replication factor, or fewer in a
    /// smaller cluster.
    pub fn copies(&self) -> usize {
        self.replication_factor
    }

    /// The replicas of `partition`, highest score first.
    pub fn replicas(&self, partition: PartitionId) -> impl Iterator<Item = &str> {
        self.table
            .get(usize::from(partition))
            .into_iter()
            .flatten()
            .map(|&i| self.names[usize::from(i)].as_str())
    }

    /// Whether `name` holds `partition`.
    pub fn holds(&self, name: &str, partition: PartitionId) -> bool {
        self.replicas(partition).any(|replica| replica == name)
    }

    /// The partitions `name` holds.
    pub fn partitions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = PartitionId> + 'a {
        (0..self.partitions()).filter(move |&p| self.holds(name, p))
    }

    /// Every member that does not hold `partition`, highest score first: the order in
    /// which members stand in for owners that do not hold its data yet.
    fn others_ranked(&self, partition: PartitionId) -> Vec<&str> {
        let Some(owners) = self.table.get(usize::from(partition)) else {
            return Vec::new();
        };
        let mut rest: Vec<u16> = (0..self.tokens.len() as u16)
            .filter(|i| !owners.contains(i))
            .collect();
        rank(&mut rest, partition, &self.tokens);
        rest.into_iter()
            .map(|i| self.names[usize::from(i)].as_str())
            .collect()
    }

    /// Who takes part in operations on `partition`, given which members hold its data
    /// (`filled(name)`); see [`ReplicaSet`].
    pub fn replica_set(&self, partition: PartitionId, filled: impl Fn(&str) -> bool) -> ReplicaSet {
        self.replica_set_settling(partition, filled, |_| false)
    }

    /// As [`Placement::replica_set`], where `settling(name)` says this node learned only
    /// lately that `name` filled the partition. Members that have not heard yet still
    /// count the stand-ins that fill ended, so those stay write targets until the news
    /// has settled: a write then reaches a quorum of the counted replicas in both views
    /// (the coordinator's rule for targets beyond the copies), and a read in either
    /// view meets it.
    pub fn replica_set_settling(
        &self,
        partition: PartitionId,
        filled: impl Fn(&str) -> bool,
        settling: impl Fn(&str) -> bool,
    ) -> ReplicaSet {
        let mut set = self.counting(partition, &filled);
        let unheard = self.counting(partition, |n| filled(n) && !settling(n));
        for target in unheard.targets {
            if !set.targets.contains(&target) {
                set.targets.push(target);
            }
        }
        set
    }

    fn counting(&self, partition: PartitionId, filled: impl Fn(&str) -> bool) -> ReplicaSet {
        let owners: Vec<String> = self.replicas(partition).map(str::to_string).collect();
        let mut counted: Vec<String> = owners.iter().filter(|o| filled(o)).cloned().collect();
        let mut targets = owners;
        if counted.len() < self.replication_factor {
            for other in self.others_ranked(partition) {
                if counted.len() >= self.replication_factor {
                    break;
                }
                if filled(other) {
                    counted.push(other.to_string());
                    targets.push(other.to_string());
                }
            }
        }
        ReplicaSet {
            targets,
            counted,
            copies: self.replication_factor,
        }
    }

    /// A short digest of the whole table: two nodes with equal digests agree on every
    /// partition's replicas.
    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for (partition, replicas) in self.table.iter().enumerate() {
            hasher.update(&(partition as u16).to_be_bytes());
            for &i in replicas {
                let name = self.names[usize::from(i)].as_bytes();
                hasher.update(&(name.len() as u16).to_be_bytes());
                hasher.update(name);
            }
        }
        hasher.finalize().to_hex()[..16].to_string()
    }
}

/// Who takes part in an operation on one partition.
///
/// An owner that does not hold the partition's data yet (a new node, a replaced disk, a
/// member that just gained the partition) takes writes but counts in no quorum until it
/// has filled the partition from the replicas that do. Until then the members that
/// score next and hold the data (the previous owners, as placement moves few slots)
/// stand in for it: they keep taking writes, and quorums are counted over them. So a
/// quorum never rests on a replica that holds nothing, however many members join at
/// once: every counted replica holds every write acknowledged before it was counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    /// Every replica a write goes to: the owners, then the stand-ins.
    pub targets: Vec<String>,
    /// The replicas whose answers count, at most `copies`: the owners that hold the
    /// data, then the stand-ins. Reads ask these.
    pub counted: Vec<String>,
    /// Copies of the partition: what `one`, `quorum` and `all` are computed over.
    pub copies: usize,
}

impl ReplicaSet {
    /// Every replica counts (the partition is settled on its owners).
    pub fn settled(replicas: Vec<String>) -> ReplicaSet {
        ReplicaSet {
            copies: replicas.len(),
            counted: replicas.clone(),
            targets: replicas,
        }
    }

    /// The targets that do not count, each with why.
    pub fn filling(&self) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(|t| !self.counted.contains(t))
            .map(String::as_str)
    }

    /// The replicas `me` fills this partition from: the ones that count, and every
    /// other member that may hold data of it without counting (`holders`, by their own
    /// word): an owner refilling on the disk it kept after another process used its
    /// name, or back after the grace; a former owner whose word was lost the same way.
    /// A write acknowledged by it and by a counted replica that has since lost its word
    /// (a second such fault) may be nowhere else, and a fill that skipped it would count
    /// `me` without that write: a quorum of `me` and a replica that never had it would
    /// read around it. A holder that is down holds the fill back until it returns or is
    /// removed, as a counted one does.
    ///
    /// When none counts (every owner lost track of the data: a wiped disk, a name
    /// another process used while its owner was away, and no member that held the
    /// partition before stands in), every other target as well: their union is all the
    /// cluster holds, and without this rule nobody could ever count for the partition
    /// again. Only once `me` knows every member's status (`statuses_known`): before,
    /// "none counts" may only mean that the members holding the data have not been
    /// heard from yet.
    pub fn fill_sources(&self, me: &str, statuses_known: bool, holders: &[String]) -> Vec<String> {
        let mut from: Vec<String> = if self.counted.is_empty() {
            if !statuses_known {
                return Vec::new();
            }
            self.targets.clone()
        } else {
            self.counted.clone()
        };
        for holder in holders {
            if !from.contains(holder) {
                from.push(holder.clone());
            }
        }
        from.retain(|s| s != me);
        from
    }
}

/// A set of partitions, as a bitmap: which partitions a member holds the data of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct PartitionSet {
    bits: Vec<u8>,
}

impl PartitionSet {
    /// No partition.
    pub fn empty() -> PartitionSet {
        PartitionSet::default()
    }

    /// Every partition of `partitions`.
    pub fn all(partitions: u16) -> PartitionSet {
        let mut set = PartitionSet::empty();
        for p in 0..partitions {
            set.insert(p);
        }
        set
    }

    /// Whether `partition` is in the set.
    pub fn contains(&self, partition: PartitionId) -> bool {
        let (byte, bit) = (usize::from(partition / 8), partition % 8);
        self.bits.get(byte).is_some_and(|b| b & (1 << bit) != 0)
    }

    /// Adds `partition`; whether it was new.
    pub fn insert(&mut self, partition: PartitionId) -> bool {
        let (byte, bit) = (usize::from(partition / 8), partition % 8);
        if self.bits.len() <= byte {
            self.bits.resize(byte + 1, 0);
        }
        let new = self.bits[byte] & (1 << bit) == 0;
        self.bits[byte] |= 1 << bit;
        new
    }

    /// Removes `partition`; whether it was there.
    pub fn remove(&mut self, partition: PartitionId) -> bool {
        let (byte, bit) = (usize::from(partition / 8), partition % 8);
        let Some(b) = self.bits.get_mut(byte) else {
            return false;
        };
        let was = *b & (1 << bit) != 0;
        *b &= !(1 << bit);
        while self.bits.last() == Some(&0) {
            self.bits.pop();
        }
        was
    }

    /// How many partitions are in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&b| b == 0)
    }

    /// The partitions in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.bits.iter().enumerate().flat_map(|(byte, &b)| {
            (0..8u16)
                .filter(move |bit| b & (1 << bit) != 0)
                .map(move |bit| byte as u16 * 8 + bit)
        })
    }

    /// Whether the bitmap is no longer than a set of `partitions` needs (a peer's set
    /// is checked against this before it is believed).
    pub fn fits(&self, partitions: u16) -> bool {
        self.bits.len() <= usize::from(partitions).div_ceil(8)
            && self.iter().all(|p| p < partitions)
    }
}

#[cfg(test)]
mod tests;
