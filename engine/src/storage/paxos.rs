//! The acceptor's state of a key of a linearizable bucket, kept with its data: the
//! accepted value is the key's record (its version is the ballot), the promise is in a
//! table of its own, and each partition has a floor, the highest tombstone purged from
//! it (see [`crate::paxos`]). A prepare or an accept is decided inside the write
//! transaction that stores its outcome, so what an acceptor answers is on disk before
//! the answer leaves.

use super::commit::Batch;
use super::*;
use crate::paxos::{AcceptReply, Acceptor, Ballot, PrepareReply};

fn encode_ballot(ballot: Ballot) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&ballot.hlc.as_u64().to_be_bytes());
    out[8..].copy_from_slice(&ballot.node.0.to_be_bytes());
    out
}

fn decode_ballot(bytes: &[u8]) -> Option<Ballot> {
    let hlc = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let node = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some(Version {
        hlc: Timestamp::from_u64(hlc),
        node: NodeId(node),
    })
}

fn floor_key(partition: PartitionId) -> String {
    format!("paxos-floor/{partition}")
}

/// The meta key of the sweep floor: every ballot at or below it is refused, because
/// promises of ballots below it may have been dropped.
const SWEPT_KEY: &str = "paxos-swept";

impl Tables {
    /// The acceptor's state of `key` as this transaction sees it.
    fn acceptor(&self, txn: &RoTxn<'_, WithoutTls>, key: &[u8]) -> Result<Acceptor, StoreError> {
        let accepted = self.get(txn, key)?;
        let promised = self
            .promises
            .get(txn, key)
            .map_err(StoreError::lmdb("reading a promise"))?
            .and_then(decode_ballot);
        let partition = self.locate(key)?.partition;
        let floor = self
            .paxos_floor(txn, partition)?
            .max(self.swept_floor(txn)?);
        Ok(Acceptor {
            promised,
            accepted,
            floor,
        })
    }

    /// Whether `key`'s acceptor promised a ballot above `version`.
    pub(super) fn promised_above(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        key: &[u8],
        version: Version,
    ) -> Result<bool, StoreError> {
        Ok(self
            .promises
            .get(txn, key)
            .map_err(StoreError::lmdb("reading a promise"))?
            .and_then(decode_ballot)
            .is_some_and(|promised| promised > version))
    }

    fn paxos_floor(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        partition: PartitionId,
    ) -> Result<Option<Ballot>, StoreError> {
        Ok(self
            .meta
            .get(txn, &floor_key(partition))
            .map_err(StoreError::lmdb("reading a partition's purge floor"))?
            .and_then(decode_ballot))
    }

    fn swept_floor(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<Option<Ballot>, StoreError> {
        Ok(self
            .meta
            .get(txn, SWEPT_KEY)
            .map_err(StoreError::lmdb("reading the promise sweep's floor"))?
            .and_then(decode_ballot))
    }

    /// Raises `partition`'s floor to `version`, a tombstone purged from it.
    pub(super) fn raise_paxos_floor(
        &self,
        wtxn: &mut RwTxn<'_>,
        partition: PartitionId,
        version: Version,
    ) -> Result<(), StoreError> {
        if self.paxos_floor(wtxn, partition)? >= Some(version) {
            return Ok(());
        }
        self.meta
            .put(wtxn, &floor_key(partition), &encode_ballot(version))
            .map_err(|e| self.write_error("raising a partition's purge floor", e))
    }
}

impl Batch<'_> {
    /// An acceptor's prepare of `key` at `ballot`: the promise stored if made.
    pub(super) fn prepare(
        &mut self,
        key: &[u8],
        ballot: Ballot,
    ) -> Result<PrepareReply, StoreError> {
        let state = self.tables.acceptor(&self.wtxn, key)?;
        let decision = state.prepare(ballot);
        if let Some(promise) = decision.promise {
            self.tables
                .promises
                .put(&mut self.wtxn, key, &encode_ballot(promise))
                .map_err(|e| self.tables.write_error("storing a promise", e))?;
        }
        Ok(decision.reply)
    }

    /// An acceptor's accept of `record` for `key`: the record stored (and the promise
    /// it fulfils dropped) if accepted.
    pub(super) fn accept(
        &mut self,
        key: &[u8],
        record: Record,
        next: Option<Ballot>,
    ) -> Result<AcceptReply, StoreError> {
        let state = self.tables.acceptor(&self.wtxn, key)?;
        let decision = state.accept(record, next);
        if let Some(record) = decision.accept {
            let entry = Entry {
                key: key.to_vec(),
                record,
            };
            self.apply(std::slice::from_ref(&entry))?;
            match decision.promise {
                Some(next) => self
                    .tables
                    .promises
                    .put(&mut self.wtxn, key, &encode_ballot(next))
                    .map_err(|e| self.tables.write_error("storing a promise", e))?,
                None => {
                    self.tables
                        .promises
                        .delete(&mut self.wtxn, key)
                        .map_err(|e| self.tables.write_error("dropping a promise", e))?;
                }
            }
        }
        Ok(decision.reply)
    }
}

impl Batch<'_> {
    /// Drops the promises of ballots before `before`; how many. Every ballot before
    /// `before` is refused from then on, in the same transaction: a promise dropped is
    /// one no proposal can get around, whatever this node's clock does later (a wall
    /// clock set back by a restart, say).
    pub(super) fn drop_promises(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        let floor = Version {
            hlc: Timestamp::from_u64(before.as_u64().saturating_sub(1)),
            node: NodeId(u64::MAX),
        };
        if self.tables.swept_floor(&self.wtxn)? < Some(floor) {
            self.tables
                .meta
                .put(&mut self.wtxn, SWEPT_KEY, &encode_ballot(floor))
                .map_err(|e| {
                    self.tables
                        .write_error("raising the promise sweep's floor", e)
                })?;
        }
        let stale: Vec<Vec<u8>> = self
            .tables
            .promises
            .iter(&self.wtxn)
            .map_err(StoreError::lmdb("reading promises"))?
            .filter_map(|item| {
                let (key, value) = item.ok()?;
                let ballot = decode_ballot(value)?;
                (ballot.hlc < before).then(|| key.to_vec())
            })
            .collect();
        for key in &stale {
            self.tables
                .promises
                .delete(&mut self.wtxn, key)
                .map_err(|e| self.tables.write_error("dropping a promise", e))?;
        }
        Ok(stale.len() as u64)
    }
}

impl Store {
    /// Drops the promises of ballots before `before`, through the group-commit writer.
    pub fn drop_promises(
        &self,
        before: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.writer.submit(move |batch| batch.drop_promises(before))
    }

    /// As [`Store::drop_promises`], in a transaction of its own on the calling thread.
    pub fn drop_promises_now(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.require_cluster()?;
        self.tables.transaction(|batch| batch.drop_promises(before))
    }

    /// A prepare, through the group-commit writer (queued at the call).
    pub fn prepare(
        &self,
        key: Vec<u8>,
        ballot: Ballot,
    ) -> impl Future<Output = Result<PrepareReply, StoreError>> + Send + 'static {
        self.writer.submit(move |batch| batch.prepare(&key, ballot))
    }

    /// An accept, through the group-commit writer (queued at the call).
    pub fn accept(
        &self,
        key: Vec<u8>,
        record: Record,
        next: Option<Ballot>,
    ) -> impl Future<Output = Result<AcceptReply, StoreError>> + Send + 'static {
        self.writer
            .submit(move |batch| batch.accept(&key, record.clone(), next))
    }

    /// As [`Store::prepare`], in a transaction of its own on the calling thread.
    pub fn prepare_now(&self, key: &[u8], ballot: Ballot) -> Result<PrepareReply, StoreError> {
        self.require_cluster()?;
        self.tables.transaction(|batch| batch.prepare(key, ballot))
    }

    /// As [`Store::accept`], in a transaction of its own on the calling thread.
    pub fn accept_now(
        &self,
        key: &[u8],
        record: Record,
        next: Option<Ballot>,
    ) -> Result<AcceptReply, StoreError> {
        self.require_cluster()?;
        self.tables
            .transaction(|batch| batch.accept(key, record, next))
    }

    /// Whether any key's acceptor holds a promise.
    pub fn holds_promises(&self) -> Result<bool, StoreError> {
        let rtxn = self.tables.read_txn()?;
        Ok(self
            .tables
            .promises
            .first(&rtxn)
            .map_err(StoreError::lmdb("reading promises"))?
            .is_some())
    }

    /// The promise `key`'s acceptor holds, if any (for tests and status).
    pub fn promise(&self, key: &[u8]) -> Result<Option<Ballot>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        Ok(self
            .tables
            .promises
            .get(&rtxn, key)
            .map_err(StoreError::lmdb("reading a promise"))?
            .and_then(decode_ballot))
    }
}
