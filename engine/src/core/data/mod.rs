//! Data operations: a client's reads and writes (the checks before a version is issued,
//! then the coordinator), the coordinator's actions carried out, and the replica's side
//! of replication (`Replicate`, `ReadLocal`).

use std::sync::Arc;

use super::io::{Landing, Pending, Purpose, StorePurpose};
use super::typed::Update;
use super::*;
use crate::buckets::check_stored_key;
use crate::buckets::{Bucket, BucketType};
use crate::coordinator::{Action, OpError, Outcome};
use crate::limits::{LimitError, check_key, check_value};
use crate::membership::MemberState;
use crate::paxos::LinOp;
use crate::placement::partition_of;
use crate::policy::unheard_refusal;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::record::{Entry, Payload, Record, Version};
use crate::storage::Hint;
use crate::types::{Change, Kind};

mod replica;

/// The answer to a probe: when it arrived and when it was answered, by this clock.
pub fn pong(received_us: u64, replied_us: u64) -> Response {
    Response::Pong {
        received_us,
        replied_us,
    }
}

fn limit_error(err: LimitError) -> ErrorReply {
    ErrorReply::new(ErrorCode::LimitExceeded, err.to_string())
}

fn wrong_type(bucket: &str, kind: &str, op: &str) -> ErrorReply {
    let hint = match kind {
        "counter" => "incr",
        "set" => "sadd and srem",
        "siblings" => "put with --context",
        "linearizable" => "put, get, delete and cas",
        _ => "put and delete",
    };
    ErrorReply::new(
        ErrorCode::WrongType,
        format!("{op} does not apply to bucket {bucket}, a {kind} bucket: use {hint}"),
    )
}

/// What a write to a linearizable bucket may not ask for: an expiry, a siblings
/// context, or a consistency (its writes are always linearizable).
fn linearizable_write_checks(
    bucket: &Bucket,
    ttl_ms: Option<u64>,
    context: &Option<crate::types::Context>,
    consistency: Option<Consistency>,
) -> Result<(), ErrorReply> {
    let refused = |what: &str| {
        Err(ErrorReply::new(
            ErrorCode::WrongType,
            format!(
                "{what} does not apply to bucket {}, a linearizable bucket",
                bucket.name
            ),
        ))
    };
    if ttl_ms.is_some() {
        return refused("a TTL (its keys do not expire)");
    }
    if context.is_some() {
        return refused("a context (it keeps no siblings)");
    }
    if let Some(level) = consistency {
        return refused(&format!(
            "consistency {} on a write (its writes are always linearizable; a consistency applies to its reads, where one is a possibly stale local read)",
            level.as_str()
        ));
    }
    Ok(())
}

fn op_error(err: OpError) -> ErrorReply {
    let code = match err {
        OpError::Overloaded { .. } => ErrorCode::Overloaded,
        OpError::ShuttingDown => ErrorCode::ShuttingDown,
        _ => ErrorCode::Unavailable,
    };
    ErrorReply::new(code, err.to_string())
}

impl NodeCore {
    /// An ask of the driver's: a client's operation, an admin's, or the node's own.
    pub fn handle_ask(&mut self, ask_id: AskId, ask: Ask, now: Now, store: &Store) {
        match ask {
            Ask::Get { .. } | Ask::Put { .. } | Ask::Update { .. } | Ask::Cas { .. } => {
                self.data_ask(ask_id, ask, false, now, store);
                self.settle(now, store);
                return;
            }
            Ask::Status => {
                let status = self.status(now, store);
                self.answer(ask_id, Answer::Status(Box::new(status)));
            }
            Ask::Members => {
                let members = self.membership.seed_members();
                self.answer(ask_id, Answer::Members(members));
            }
            Ask::Join { id, replace } => {
                let answer = self.admit(id, replace, now);
                self.answer(ask_id, answer);
            }
            Ask::Remove { name } => self.remove(ask_id, name, now),
            Ask::Leave => self.leave(ask_id, now, store),
            Ask::GoDown => {
                if !self.membership.is_leaving() {
                    self.membership.go_down(now.mono());
                }
                self.flush_membership(now, store);
                self.answer(ask_id, Answer::Down);
            }
            Ask::Repair {
                partition,
                peer,
                dry_run,
            } => self.ask_repair(ask_id, partition, peer, dry_run, now, store),
            what @ (Ask::CreateBucket { .. } | Ask::DeleteBucket { .. } | Ask::Buckets(_)) => {
                self.bucket_ask(ask_id, what, now)
            }
        }
        self.flush_membership(now, store);
        self.settle(now, store);
    }

    /// Refuses data operations while another process holds this node's name.
    pub(super) fn serving(&self) -> Result<(), ErrorReply> {
        match &self.stepped_aside {
            None => Ok(()),
            Some(other) => Err(ErrorReply::new(
                ErrorCode::NotReady,
                format!(
                    "not ready: another process under the name {} is in the cluster (at {other}); this one stepped aside and serves no data until it takes the name back",
                    self.me.name
                ),
            )),
        }
    }

    /// Advances this node's clock past the session's last version, so whatever the
    /// session does next here is ordered after what it saw elsewhere.
    pub(super) fn observe_session(
        &mut self,
        after: Option<Timestamp>,
        now: Now,
    ) -> Result<(), ErrorReply> {
        let Some(after) = after else {
            return Ok(());
        };
        let cluster_ms = self.cluster_wall_ms(now);
        self.clock
            .observe_against(after, now.wall_ms(), cluster_ms)
            .map(|_| ())
            .map_err(|err| {
                ErrorReply::new(
                    ErrorCode::ClockOffset,
                    format!("the session's last version is refused: {err}"),
                )
            })
    }

    /// A client's read or write. `waited`: the ask already waited for this node's
    /// first clock measurement.
    pub(super) fn data_ask(
        &mut self,
        ask_id: AskId,
        ask: Ask,
        waited: bool,
        now: Now,
        store: &Store,
    ) {
        let writes = matches!(ask, Ask::Put { .. } | Ask::Update { .. } | Ask::Cas { .. });
        if writes && !waited && self.clock_unmeasured(now) {
            // Not compared with the cluster yet (just started): probe first.
            self.probe_all(now);
            let until = Millis(now.mono().0 + PROBE_TIMEOUT_MS);
            self.awaiting_clock.push((ask_id, ask, until));
            return;
        }
        let result = match ask {
            Ask::Get {
                bucket,
                key,
                consistency,
                after,
            } => self
                .resolve(bucket.as_deref(), &key)
                .and_then(|(bucket, key)| {
                    let level = consistency.or(bucket.consistency);
                    if bucket.kind == BucketType::Linearizable && level != Some(Consistency::One) {
                        return self
                            .begin_linearizable(ask_id, key, LinOp::Get, after, now, store)
                            .map(|()| None);
                    }
                    let siblings = (bucket.kind == BucketType::Siblings).then(|| key.clone());
                    let op = self.begin_get(key, level, after, now)?;
                    if let Some(key) = siblings {
                        self.sibling_reads.insert(op, key);
                    }
                    Ok(Some((op, bucket.kind)))
                }),
            Ask::Put {
                bucket,
                key,
                payload,
                context,
                ttl_ms,
                consistency,
                after,
            } => self
                .resolve(bucket.as_deref(), &key)
                .and_then(|(bucket, internal)| {
                    if bucket.kind == BucketType::Linearizable {
                        linearizable_write_checks(&bucket, ttl_ms, &context, consistency)?;
                        let op = LinOp::Put(payload.value().map(<[u8]>::to_vec));
                        return self
                            .begin_linearizable(ask_id, internal, op, after, now, store)
                            .map(|()| None);
                    }
                    let level = consistency.or(bucket.consistency);
                    if let Some(ttl) = ttl_ms {
                        crate::buckets::check_ttl(ttl)
                            .map_err(|why| ErrorReply::new(ErrorCode::BadRequest, why))?;
                        if bucket.kind != BucketType::Lww {
                            return Err(ErrorReply::new(
                                ErrorCode::WrongType,
                                format!(
                                    "a write's TTL applies to lww buckets; {} is a {} bucket, whose keys live its TTL ({})",
                                    bucket.name,
                                    bucket.kind.as_str(),
                                    bucket.ttl_ms.map_or("none".to_string(), |t| format!("{t}ms"))
                                ),
                            ));
                        }
                    }
                    let ttl = ttl_ms.or(bucket.ttl_ms);
                    let bucket_ttl = bucket.ttl_ms;
                    match (bucket.kind, context) {
                        (BucketType::Lww, None) => self
                            .begin_put(ask_id, internal, payload, ttl, level, after, now)
                            .map(|op| Some((op, BucketType::Lww))),
                        (BucketType::Lww, Some(_)) => Err(ErrorReply::new(
                            ErrorCode::WrongType,
                            format!(
                                "a context applies to siblings buckets; {} is a lww bucket",
                                bucket.name
                            ),
                        )),
                        (BucketType::Siblings, context) => {
                            let change = match (payload.value(), context) {
                                // A delete without a context removes what the actor holds.
                                (None, None) => Change::Clear(Kind::Siblings),
                                (value, context) => Change::Put {
                                    value: value.map(<[u8]>::to_vec),
                                    context: context.unwrap_or_default(),
                                },
                            };
                            let update = Update {
                                change,
                                ttl_ms: bucket_ttl,
                            };
                            self.begin_update(ask_id, internal, update, level, after, now, store)
                                .map(|()| None)
                        }
                        (kind, None) if payload.is_tombstone() => {
                            let kind = if kind == BucketType::Set {
                                Kind::Set
                            } else {
                                Kind::Counter
                            };
                            let update = Update {
                                change: Change::Clear(kind),
                                ttl_ms: bucket_ttl,
                            };
                            self.begin_update(
                                ask_id,
                                internal,
                                update,
                                level,
                                after,
                                now,
                                store,
                            )
                            .map(|()| None)
                        }
                        (kind, _) => Err(wrong_type(&bucket.name, kind.as_str(), "put")),
                    }
                }),
            Ask::Update {
                bucket,
                key,
                change,
                consistency,
                after,
            } => self
                .resolve(Some(&bucket), &key)
                .and_then(|(bucket, internal)| {
                    let fits = matches!(
                        (bucket.kind, change.kind()),
                        (BucketType::Counter, Kind::Counter)
                            | (BucketType::Set, Kind::Set)
                            | (BucketType::Siblings, Kind::Siblings)
                    );
                    if !fits {
                        return Err(wrong_type(
                            &bucket.name,
                            bucket.kind.as_str(),
                            change.name(),
                        ));
                    }
                    let level = consistency.or(bucket.consistency);
                    let update = Update {
                        change,
                        ttl_ms: bucket.ttl_ms,
                    };
                    self.begin_update(ask_id, internal, update, level, after, now, store)
                        .map(|()| None)
                }),
            Ask::Cas {
                bucket,
                key,
                expect,
                value,
                after,
            } => self
                .resolve(Some(&bucket), &key)
                .and_then(|(bucket, internal)| {
                    if bucket.kind != BucketType::Linearizable {
                        return Err(ErrorReply::new(
                            ErrorCode::WrongType,
                            format!(
                                "cas applies to linearizable buckets; {} is a {} bucket (make one with: vergent bucket create NAME --type linearizable)",
                                bucket.name,
                                bucket.kind.as_str()
                            ),
                        ));
                    }
                    let op = LinOp::Cas { expect, value };
                    self.begin_linearizable(ask_id, internal, op, after, now, store)
                        .map(|()| None)
                }),
            _ => return,
        };
        match result {
            Ok(Some((op, kind))) => {
                self.ops.insert(op, (ask_id, kind));
            }
            Ok(None) => {}
            Err(reply) => self.answer(ask_id, Answer::Failed(reply)),
        }
    }

    /// The bucket a client names (`default` when none), and the key as stored in it;
    /// the key checked against its limits.
    fn resolve(&self, bucket: Option<&str>, key: &[u8]) -> Result<(Bucket, Vec<u8>), ErrorReply> {
        self.serving()?;
        check_key(key).map_err(limit_error)?;
        let bucket = self.bucket(bucket.unwrap_or(crate::buckets::DEFAULT_BUCKET))?;
        if bucket.id == crate::buckets::DEFAULT_BUCKET_ID
            && key.starts_with(&crate::buckets::BUCKET_KEY_PREFIX)
        {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "a key of the default bucket may not start with the bytes 00 76 62 75 63 6b 65 74 (\\0vbucket): buckets use them",
            ));
        }
        let internal = bucket.internal_key(key);
        Ok((bucket, internal))
    }

    /// Whether this node may issue a version now (its clock, the cluster's word on it,
    /// a rewrite of versions from the future); why not.
    pub(super) fn may_issue(&self, now: Now) -> Result<(), ErrorReply> {
        // A version from a clock the cluster would refuse must never be issued: it
        // would be stored here and win later over writes acknowledged meanwhile.
        if let Some(refusal) = self.clock_refusal(now) {
            return Err(refusal);
        }
        if let Some(why) = self.future_refusal(now) {
            return Err(ErrorReply::new(ErrorCode::ClockOffset, why));
        }
        let others_known = self
            .view
            .members
            .iter()
            .any(|m| m.id.name != self.me.name && m.state != MemberState::Left);
        if let Some(why) = unheard_refusal(others_known, self.view.heard) {
            return Err(ErrorReply::new(ErrorCode::Unavailable, why));
        }
        if self.rewriting {
            // A write acknowledged now could lose to the rewritten versions.
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                "unavailable: versions from the future are being rewritten on this node; it coordinates no writes until that ends",
            ));
        }
        Ok(())
    }

    fn begin_get(
        &mut self,
        key: Vec<u8>,
        consistency: Option<Consistency>,
        after: Option<Timestamp>,
        now: Now,
    ) -> Result<OpId, ErrorReply> {
        self.observe_session(after, now)?;
        self.counters.reads += 1;
        let level = consistency.unwrap_or(self.config.default_consistency);
        let replicas = self.view.replica_set(&key);
        Ok(self
            .coordinator
            .begin_read(key, replicas, level, now.mono()))
    }

    #[allow(clippy::too_many_arguments)]
    fn begin_put(
        &mut self,
        ask: AskId,
        key: Vec<u8>,
        payload: Payload,
        ttl_ms: Option<u64>,
        consistency: Option<Consistency>,
        after: Option<Timestamp>,
        now: Now,
    ) -> Result<OpId, ErrorReply> {
        if let Payload::Value(value) = &payload {
            check_value(value, self.config.value_bytes_max).map_err(limit_error)?;
        }
        self.may_issue(now)?;
        self.observe_session(after, now)?;
        self.counters.writes += 1;
        let level = consistency.unwrap_or(self.config.default_consistency);
        let version = Version {
            hlc: self.clock.tick(now.wall_ms()),
            node: self.node_id,
        };
        self.event(CoreEvent::Issued { ask, version });
        let replicas = self.view.replica_set(&key);
        // A tombstone never expires: it is what expiry leads to.
        let expires_ms = ttl_ms
            .filter(|_| !payload.is_tombstone())
            .map(|ttl| version.hlc.wall_ms().saturating_add(ttl));
        let entry = Entry {
            key,
            record: Record {
                version,
                payload,
                expires_ms,
            },
        };
        Ok(self
            .coordinator
            .begin_write(entry, replicas, level, now.mono()))
    }

    /// Writes waiting for this node's first clock measurement, decided once it has one
    /// (or its probes ended without).
    pub(super) fn recheck_awaiting_clock(&mut self, now: Now, store: &Store) {
        if self.awaiting_clock.is_empty() {
            return;
        }
        let probing = self
            .pending
            .values()
            .any(|p| matches!(p.purpose, Purpose::Probe { .. }));
        let mono = now.mono();
        let ready = !self.clock_unmeasured(now) || !probing;
        let waiting = std::mem::take(&mut self.awaiting_clock);
        for (ask_id, ask, until) in waiting {
            if ready || until <= mono {
                self.data_ask(ask_id, ask, true, now, store);
            } else {
                self.awaiting_clock.push((ask_id, ask, until));
            }
        }
    }

    /// Carries out what the coordinator asks, and what that leads to.
    pub(super) fn settle(&mut self, now: Now, store: &Store) {
        while let Some(action) = self.coordinator.poll_action() {
            self.dispatch(action, now, store);
        }
    }

    /// Why `to` cannot be sent a replica request now, if it cannot.
    fn unreachable_reason(&self, to: &str) -> Option<String> {
        if let Some(why) = self.unreachable.get(to) {
            return Some(format!("unreachable from {} ({why})", self.me.name));
        }
        match self.view.member(to) {
            Some(member) if member.state.is_live() => None,
            // Said of `to`, whose name goes before it where it is shown.
            Some(member) => Some(member.state.as_str().to_string()),
            None => Some("not a known member".into()),
        }
    }

    fn dispatch(&mut self, action: Action, now: Now, store: &Store) {
        let me = self.me.name.clone();
        let timeout = self.config.replica_timeout_ms;
        match action {
            Action::Write { op, to, entry } if to == me => {
                self.local
                    .push((Some(op), Arc::unwrap_or_clone(entry), now.wall_ms()))
            }
            Action::Write { op, to, entry } => match self.unreachable_reason(&to) {
                Some(why) => self.coordinator.handle_write_ack(op, &to, Err(why)),
                None => {
                    let id = self.live_id(&to).expect("reachable means live");
                    let request = Request::Replicate {
                        entries: vec![Arc::unwrap_or_clone(entry)],
                    };
                    self.send(&id, request, Purpose::Write(vec![op]), timeout, now);
                }
            },
            Action::Repair { entry, .. } if self.is_from_the_future(&entry, now) => {}
            Action::Repair { to, entry } if to == me => {
                self.local
                    .push((None, Arc::unwrap_or_clone(entry), now.wall_ms()))
            }
            Action::Repair { to, entry } => {
                // A repair nobody waits for: one that cannot be sent is simply not made.
                if self.unreachable_reason(&to).is_none()
                    && let Some(id) = self.live_id(&to)
                {
                    let request = Request::Replicate {
                        entries: vec![Arc::unwrap_or_clone(entry)],
                    };
                    self.send(&id, request, Purpose::ReadRepair, timeout, now);
                }
            }
            Action::Read { op, to, key } if to == me => {
                let reply = match store.get(&key) {
                    Ok(record) => Some(record),
                    Err(err) => {
                        self.event(CoreEvent::StoreFailed {
                            what: "local read",
                            why: err.to_string(),
                        });
                        None
                    }
                };
                self.coordinator.handle_read_reply(op, &me, reply);
            }
            Action::Read { op, to, key } => match self.unreachable_reason(&to) {
                // As a member dead in this node's view, it is not asked.
                Some(_) => self.coordinator.handle_read_reply(op, &to, None),
                None => {
                    let id = self.live_id(&to).expect("reachable means live");
                    let request = Request::ReadLocal { key: key.to_vec() };
                    self.send(&id, request, Purpose::Read(op), timeout, now);
                }
            },
            Action::Hint { to, entry } => {
                let hint = Hint {
                    target: to,
                    entry: Arc::unwrap_or_clone(entry),
                    created_ms: now.wall_ms(),
                };
                self.store(StoreWork::PutHints(vec![hint]), StorePurpose::PutHints);
            }
            Action::Reply { op, outcome } => {
                let read_key = self.sibling_reads.remove(&op);
                if let Some((ask, kind)) = self.ops.remove(&op) {
                    let answer = match outcome {
                        // A typed value's version names its state; the write was this
                        // node's.
                        Outcome::Written { version } if kind != BucketType::Lww => {
                            Answer::Written(Version {
                                hlc: version.hlc,
                                node: self.node_id,
                            })
                        }
                        Outcome::Written { version } => Answer::Written(version),
                        Outcome::Read { record } => {
                            // Expired: absent, by this node's clock (the HLC, so never
                            // earlier than a version it has seen).
                            let at = self.clock.read(now.wall_ms()).wall_ms();
                            let record = record.filter(|r| r.expires_ms.is_none_or(|e| e > at));
                            if let (Some(key), Some(crate::types::State::Siblings(s))) =
                                (read_key, record.as_ref().and_then(|r| r.payload.typed()))
                            {
                                self.conflicts.siblings(&key, s.len());
                            }
                            Answer::Read { record, kind }
                        }
                        Outcome::Failed(err) => Answer::Failed(op_error(err)),
                    };
                    self.answer(ask, answer);
                }
            }
        }
    }

    /// Whether `entry`'s version is further ahead of the cluster's time than the
    /// bound: a version some clock issued while it was wrong. Read repair does not
    /// spread it.
    fn is_from_the_future(&mut self, entry: &Entry, now: Now) -> bool {
        let cluster_ms = self.cluster_wall_ms(now);
        match self.clock.check(entry.record.version.hlc, cluster_ms) {
            Ok(()) => false,
            Err(err) => {
                self.clock_refused("read repair", err.to_string());
                true
            }
        }
    }

    /// Counts and reports a version refused for coming from too far ahead.
    pub(super) fn clock_refused(&mut self, what: &'static str, why: String) {
        self.counters.clock_refusals += 1;
        self.event(CoreEvent::ClockRefused { what, why });
    }

    /// This node's own writes of the turn, to the store as one request.
    pub(super) fn flush_local(&mut self) {
        let writes = std::mem::take(&mut self.local);
        if writes.is_empty() {
            return;
        }
        let wall_ms = writes.iter().map(|w| w.2).max().unwrap_or(0);
        let (ops, entries): (Vec<Option<OpId>>, Vec<Entry>) =
            writes.into_iter().map(|(op, entry, _)| (op, entry)).unzip();
        let ops = ops.into_iter().flatten().collect();
        let landing = self.landing(&entries, wall_ms);
        let keys = entries.iter().map(|e| e.key.clone()).collect();
        self.store(
            StoreWork::Apply(entries),
            StorePurpose::Local { ops, landing, keys },
        );
    }
}
