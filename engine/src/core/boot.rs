//! A node's start, before its core runs: this life's identity from the store, and what
//! the core starts from once the node has joined (or restarted from memory). The
//! runtime and the simulator start nodes through these alike.

use std::net::SocketAddr;

use super::Boot;
use crate::membership::{MemberId, MemberState, SeedMember};
use crate::placement::PartitionSet;
use crate::storage::{ClusterSettings, Store, StoreError};

/// What joining produced.
#[derive(Debug, Default)]
pub struct Joined {
    /// Identities to announce this node to.
    pub seeds: Vec<MemberId>,
    /// What the seed knows of the cluster, to install before serving.
    pub members: Vec<SeedMember>,
    /// The placement token this node took over (`--replace`).
    pub token: Option<String>,
    /// Whether this node created the cluster just now (or forms it with the others, at
    /// once: there is no data yet).
    pub created: bool,
    /// The seed that answered, for messages.
    pub through: Option<String>,
}

impl Joined {
    /// Whether the seed knows this node's name as departed (it left or was removed in
    /// an earlier life): whatever data it kept missed the writes since.
    pub fn departed(&self, me: &str) -> bool {
        self.members
            .iter()
            .any(|m| m.id.name == me && m.state == MemberState::Left)
    }
}

/// This life's identity, from the store: a durable start epoch above every earlier one
/// (a count, not the wall clock alone: a start after the clock stepped back must still
/// present an identity above every earlier one), the next incarnation, the placement
/// token it holds, and the epoch of its data.
pub fn identity(
    store: &Store,
    name: &str,
    addr: SocketAddr,
    wall_ms: u64,
) -> Result<MemberId, StoreError> {
    let epoch_ms = store.next_start_epoch(wall_ms)?;
    Ok(MemberId {
        name: name.to_string(),
        addr,
        incarnation: store.next_incarnation()?,
        epoch_ms,
        token: store.placement_token()?,
        data_epoch: store.data_epoch_or(epoch_ms)?,
    })
}

/// What the start decided, for the log.
#[derive(Debug, Default)]
pub struct BootNotes {
    /// An earlier life of this name the cluster knows started later by its clock: this
    /// one took this start epoch instead.
    pub epoch_raised: Option<u64>,
    /// The name departed the cluster in an earlier life: it refills every partition.
    pub departed: bool,
}

/// What the core starts from, once the node has joined: its identity raised above an
/// earlier life the cluster knows (a wiped disk lost the count, and that life's clock
/// may have been ahead), the placement token it took over, the partitions whose data
/// it holds (recorded), the members it remembers and those its seed told it of.
/// `had_cluster`: its store belonged to the cluster before this start.
pub fn prepare(
    store: &Store,
    me: &mut MemberId,
    joined: Joined,
    had_cluster: bool,
    settings: ClusterSettings,
) -> Result<(Boot, BootNotes), StoreError> {
    let mut notes = BootNotes::default();
    if let Some(old) = joined
        .members
        .iter()
        .find(|m| m.id.name == me.name && !me.supersedes(&m.id))
    {
        me.epoch_ms = old.id.epoch_ms.saturating_add(1);
        store.raise_start_epoch(me.epoch_ms)?;
        notes.epoch_raised = Some(me.epoch_ms);
    }
    if let Some(token) = &joined.token {
        store.save_placement_token(token)?;
        me.token = Some(token.clone());
    }
    let filled = if joined.created {
        // There is no data yet: it holds every partition.
        PartitionSet::all(settings.partitions)
    } else if joined.departed(&me.name) {
        notes.departed = true;
        PartitionSet::empty()
    } else {
        match store.filled()? {
            Some(set) => set,
            // A directory from before the books were kept served as a full replica.
            None if had_cluster => PartitionSet::all(settings.partitions),
            None => PartitionSet::empty(),
        }
    };
    store.save_filled(&filled)?;
    let boot = Boot {
        me: me.clone(),
        settings,
        node_id: store.node_id(),
        clock_floor: store.hlc_high_water()?,
        filled,
        remembered: store.members()?,
        installed: joined.members,
        seeds: joined.seeds,
        seal: None,
        seed: 0,
        catalog: store.catalog()?,
    };
    Ok((boot, notes))
}
