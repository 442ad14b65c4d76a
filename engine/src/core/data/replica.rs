//! The replica's side of replication: a peer's requests (`Replicate`, `ReadLocal`,
//! the acceptor's and the actor's requests handed on), and the answers of the replicas
//! a coordinator asked; the landing marks every write to this node's store carries.

use super::*;

impl NodeCore {
    /// The replica's side: a peer's request.
    pub fn handle_request(
        &mut self,
        from: &str,
        reply: ReplyTo,
        request: Request,
        now: Now,
        store: &Store,
    ) {
        match request {
            Request::Replicate { entries } => self.replicate(reply, entries, now),
            Request::ReadLocal { key } => {
                let response = match check_stored_key(&key) {
                    Err(err) => Response::Error(limit_error(err)),
                    Ok(()) if !self.answers_for_key(&key) => Response::Error(self.let_go(&key)),
                    Ok(()) => match store.get(&key) {
                        Ok(record) => Response::Record { record },
                        Err(err) => Response::Error(super::io::storage_error(&err)),
                    },
                };
                self.respond(reply, response);
            }
            Request::Sync(request) => self.sync_request(from, reply, request, now, store),
            Request::Ping { .. } => self.respond(reply, pong(now.wall_us, now.wall_us)),
            Request::Members => {
                let members = self.membership.seed_members();
                self.respond(reply, Response::Members(members));
            }
            Request::UpdateLocal {
                key,
                change,
                ttl_ms,
                id,
            } => self.update_request(reply, id, key, Update { change, ttl_ms }, now),
            Request::Propose { key, op, id } => {
                self.propose_request(reply, id, key, op, now, store)
            }
            request @ (Request::Prepare { .. } | Request::Accept { .. }) => {
                self.acceptor_request(reply, request, now, store)
            }
            Request::Catalog(theirs) => {
                self.take_catalog(&theirs);
                self.respond(reply, Response::Catalog(self.catalog.clone()));
            }
            other => self.respond(
                reply,
                Response::Error(ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("{} is not a request between nodes", other.name()),
                )),
            ),
        }
        self.settle(now, store);
    }

    /// Whether this node answers reads of `key` as its replica ([`ClusterView::answers_for`]).
    pub(in crate::core) fn answers_for_key(&self, key: &[u8]) -> bool {
        self.view
            .answers_for(partition_of(key, self.view.settings.partitions))
    }

    /// The refusal of a read or prepare of a partition this node let go of.
    pub(in crate::core) fn let_go(&self, key: &[u8]) -> ErrorReply {
        let partition = partition_of(key, self.view.settings.partitions);
        ErrorReply::new(
            ErrorCode::Refused,
            format!(
                "{} does not hold partition {partition}: it is not an owner and let its data go, so its copy may lack writes made since",
                self.me.name
            ),
        )
    }

    /// A peer's `Replicate`: checked whole (limits, then each version against the
    /// cluster's time: one from too far ahead refuses the batch), then applied.
    fn replicate(&mut self, reply: ReplyTo, entries: Vec<Entry>, now: Now) {
        for entry in &entries {
            let checked = check_stored_key(&entry.key).and_then(|()| match &entry.record.payload {
                Payload::Value(value) => check_value(value, self.config.value_bytes_max),
                Payload::Tombstone => Ok(()),
                Payload::Typed(state) => check_value(&state.encode(), self.config.value_bytes_max),
            });
            if let Err(err) = checked {
                self.respond(reply, Response::Error(limit_error(err)));
                return;
            }
        }
        let cluster_ms = self.cluster_wall_ms(now);
        for entry in &entries {
            if let Err(err) =
                self.clock
                    .observe_against(entry.record.version.hlc, now.wall_ms(), cluster_ms)
            {
                self.clock_refused("replicated entry", err.to_string());
                self.respond(
                    reply,
                    Response::Error(ErrorReply::new(ErrorCode::ClockOffset, err.to_string())),
                );
                return;
            }
        }
        let entries = self.without_gone(entries);
        let landing = self.landing(&entries, now.wall_ms());
        let keys = entries.iter().map(|e| e.key.clone()).collect();
        self.store(
            StoreWork::Apply(entries),
            StorePurpose::Replica {
                reply,
                landing,
                keys,
            },
        );
    }

    /// A replica answered a write, a read or a read repair.
    pub(in crate::core) fn data_answered(&mut self, pending: Pending, response: Response) {
        let to = pending.to;
        match pending.purpose {
            Purpose::Write(ops) => {
                for op in ops {
                    match &response {
                        Response::Replicated { .. } => {
                            self.coordinator.handle_write_ack(op, &to, Ok(()))
                        }
                        Response::Error(reply) if reply.code == ErrorCode::ClockOffset => self
                            .coordinator
                            .handle_write_refused(op, &to, reply.message.clone()),
                        Response::Error(reply) => {
                            self.coordinator
                                .handle_write_ack(op, &to, Err(reply.message.clone()))
                        }
                        other => self.coordinator.handle_write_ack(
                            op,
                            &to,
                            Err(format!("unexpected answer {other:?}")),
                        ),
                    }
                }
            }
            Purpose::Read(op) => {
                let reply = match response {
                    Response::Record { record } => Some(record),
                    _ => None,
                };
                self.coordinator.handle_read_reply(op, &to, reply);
            }
            _ => {}
        }
    }

    /// A write, read or read repair got no answer.
    pub(in crate::core) fn data_failed(&mut self, pending: Pending, why: String) {
        let to = pending.to;
        match pending.purpose {
            Purpose::Write(ops) => {
                for op in ops {
                    self.coordinator.handle_write_ack(op, &to, Err(why.clone()));
                }
            }
            Purpose::Read(op) => self.coordinator.handle_read_reply(op, &to, None),
            _ => {}
        }
    }

    /// Notes that `entries` are about to be written: their partitions' write marks, and
    /// the guard that holds handoff and purges back until the write is done.
    pub(in crate::core) fn landing(&mut self, entries: &[Entry], wall_ms: u64) -> Landing {
        let partitions = self.settings.partitions;
        let mut written: Vec<PartitionId> = entries
            .iter()
            .map(|e| partition_of(&e.key, partitions))
            .collect();
        written.sort_unstable();
        written.dedup();
        for &p in &written {
            self.write_marks.note(p, wall_ms);
            if let Some(part) = self.arrivals.partition(p) {
                part.begin_write();
            }
        }
        // Whatever will be purged by the tombstones' rules: tombstones, and records that
        // expire (from their expiry on).
        let tombstones: Vec<(PartitionId, u64)> = entries
            .iter()
            .filter_map(|e| {
                let dead_from = e.record.dead_from_ms()?;
                Some((partition_of(&e.key, partitions), dead_from))
            })
            .collect();
        for &(p, hlc_ms) in &tombstones {
            if let Some(part) = self.arrivals.partition(p) {
                part.begin(hlc_ms);
            }
        }
        Landing {
            written,
            tombstones,
        }
    }

    /// As [`NodeCore::landing`], for a change to one key that is no tombstone.
    pub(in crate::core) fn landing_key(&mut self, key: &[u8], wall_ms: u64) -> Landing {
        let p = partition_of(key, self.settings.partitions);
        self.write_marks.note(p, wall_ms);
        if let Some(part) = self.arrivals.partition(p) {
            part.begin_write();
        }
        Landing {
            written: vec![p],
            tombstones: Vec::new(),
        }
    }

    /// A write noted by [`NodeCore::landing`] is done (or failed).
    pub(in crate::core) fn landed(&mut self, landing: Landing, now: Now) {
        let mono = now.mono().0;
        for p in landing.written {
            if let Some(part) = self.arrivals.partition(p) {
                part.end_write(mono);
            }
        }
        for (p, hlc_ms) in landing.tombstones {
            if let Some(part) = self.arrivals.partition(p) {
                part.end(hlc_ms, mono);
            }
        }
    }
}
