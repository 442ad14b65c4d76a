//! The bucket catalog in the core: buckets created and deleted by an admin's ask, the
//! catalog's digest in this node's status, and catalogs exchanged with every member
//! whose status shows another digest (each side merges what the other knows, see
//! [`crate::buckets`]), so a node that was away catches up from the first member it
//! hears. A create is pushed to every live member at once.

use super::io::{Pending, Purpose, StorePurpose};
use super::*;
use crate::buckets::{Bucket, BucketType, Catalog};
use crate::protocol::{ErrorCode, ErrorReply};
use crate::record::Version;

/// Least time between two catalog exchanges with one member.
const CATALOG_EXCHANGE_EVERY_MS: u64 = 2_000;
/// Time a catalog exchange may take.
const CATALOG_TIMEOUT_MS: u64 = 2_000;

impl NodeCore {
    /// The buckets this node knows.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// A bucket by name, or why there is none.
    pub(super) fn bucket(&self, name: &str) -> Result<Bucket, ErrorReply> {
        self.catalog.get(name).ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::NoSuchBucket,
                format!(
                    "unknown bucket {name}: create it with `vergent bucket create {name}` (the buckets are listed by `vergent bucket list`)"
                ),
            )
        })
    }

    /// An admin's ask about buckets.
    pub(super) fn bucket_ask(&mut self, ask: AskId, what: Ask, now: Now) {
        let changes = matches!(what, Ask::CreateBucket { .. } | Ask::DeleteBucket { .. });
        let answer = match what {
            Ask::CreateBucket {
                name,
                kind,
                ttl_ms,
                consistency,
            } => self.create_bucket(&name, kind, ttl_ms, consistency, now),
            Ask::DeleteBucket { name } => {
                let at = self.bucket_version(now);
                self.catalog
                    .delete(&name, at)
                    .map_err(|why| ErrorReply::new(ErrorCode::NoSuchBucket, why))
                    .map(|bucket| vec![bucket])
            }
            Ask::Buckets(None) => Ok(self.catalog.list()),
            Ask::Buckets(Some(name)) => self.bucket(&name).map(|b| vec![b]),
            _ => return,
        };
        match answer {
            Ok(buckets) => {
                if changes {
                    self.catalog_changed(now);
                }
                self.answer(ask, Answer::Buckets(buckets));
            }
            Err(reply) => self.answer(ask, Answer::Failed(reply)),
        }
    }

    fn create_bucket(
        &mut self,
        name: &str,
        kind: BucketType,
        ttl_ms: Option<u64>,
        consistency: Option<Consistency>,
        now: Now,
    ) -> Result<Vec<Bucket>, ErrorReply> {
        let created = self.bucket_version(now);
        // An id no bucket has had: drawn, and drawn again in the unlikely case.
        let mut last = String::new();
        for _ in 0..4 {
            let id = (self.random() as u32).max(1);
            match self
                .catalog
                .create(name, kind, ttl_ms, consistency, id, created)
            {
                Ok(bucket) => return Ok(vec![bucket]),
                Err(why) if why.contains("is taken") => last = why,
                Err(why) => return Err(ErrorReply::new(ErrorCode::BadRequest, why)),
            }
        }
        Err(ErrorReply::new(ErrorCode::BadRequest, last))
    }

    /// The version a change to the catalog is made at: this node's clock.
    fn bucket_version(&mut self, now: Now) -> Version {
        Version {
            hlc: self.clock.tick(now.wall_ms()),
            node: self.node_id,
        }
    }

    /// Drops the records of deleted buckets not dropped yet in this life (all of them
    /// at a start: a drop cut short by a crash is made again).
    pub(super) fn drop_gone_buckets(&mut self) {
        let ids: Vec<crate::buckets::BucketId> = self
            .catalog
            .deleted()
            .filter(|id| !self.buckets_dropped.contains(id))
            .collect();
        if ids.is_empty() {
            return;
        }
        self.buckets_dropped.extend(ids.iter().copied());
        self.store(
            StoreWork::DropBuckets(ids.clone()),
            StorePurpose::DroppedBuckets(ids),
        );
    }

    /// Leaves out entries of deleted buckets (hints, pushes and exchanges may still
    /// carry them): they are never stored again.
    pub(super) fn without_gone(
        &self,
        entries: Vec<crate::record::Entry>,
    ) -> Vec<crate::record::Entry> {
        entries
            .into_iter()
            .filter(|e| !self.catalog.is_gone(crate::buckets::split_key(&e.key).0))
            .collect()
    }

    /// The catalog changed here: remembered, told to every live member at once.
    fn catalog_changed(&mut self, now: Now) {
        self.store(
            StoreWork::SaveCatalog(self.catalog.clone()),
            StorePurpose::Meta("bucket catalog"),
        );
        self.event(CoreEvent::Buckets {
            live: self.catalog.list().len(),
            digest: self.catalog.digest(),
        });
        self.drop_gone_buckets();
        for name in self.live_peers() {
            self.exchange_catalog(&name, now);
        }
    }

    /// Sends this node's catalog to `peer`, which answers with its own merged.
    fn exchange_catalog(&mut self, peer: &str, now: Now) {
        let Some(id) = self.live_id(peer) else {
            return;
        };
        self.catalog_exchanged.insert(peer.to_string(), now.mono());
        let request = Request::Catalog(self.catalog.clone());
        self.send(&id, request, Purpose::Catalog, CATALOG_TIMEOUT_MS, now);
    }

    /// Exchanges catalogs with every live member whose status shows another digest
    /// (at most once per [`CATALOG_EXCHANGE_EVERY_MS`] each).
    pub(super) fn compare_catalogs(&mut self, now: Now) {
        let mine = self.catalog.digest();
        let differing: Vec<String> = self
            .view
            .members
            .iter()
            .filter(|m| m.id.name != self.me.name && m.state.is_live())
            .filter(|m| m.status.as_ref().is_some_and(|s| s.catalog != mine))
            .map(|m| m.id.name.clone())
            .collect();
        for peer in differing {
            let recent = self
                .catalog_exchanged
                .get(&peer)
                .is_some_and(|at| now.mono().0 < at.0 + CATALOG_EXCHANGE_EVERY_MS);
            let pending = self
                .pending
                .values()
                .any(|p| p.to == peer && matches!(p.purpose, Purpose::Catalog));
            if !recent && !pending {
                self.exchange_catalog(&peer, now);
            }
        }
    }

    /// A member's catalog, sent or answered: merged into this node's.
    pub(super) fn take_catalog(&mut self, theirs: &Catalog) {
        if self.catalog.merge(theirs) {
            self.store(
                StoreWork::SaveCatalog(self.catalog.clone()),
                StorePurpose::Meta("bucket catalog"),
            );
            self.event(CoreEvent::Buckets {
                live: self.catalog.list().len(),
                digest: self.catalog.digest(),
            });
            self.drop_gone_buckets();
        }
    }

    /// A member answered an exchange of catalogs.
    pub(super) fn catalog_answered(&mut self, pending: Pending, response: Response) {
        match response {
            Response::Catalog(theirs) => self.take_catalog(&theirs),
            other => self.event(CoreEvent::Debug(format!(
                "no catalog from {}: {other:?}",
                pending.to
            ))),
        }
    }
}
