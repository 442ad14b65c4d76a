//! The simulated network: the messages nodes exchange, their sending (loss, latency,
//! duplication, cuts) and delivery to the mechanisms, and the flushing of membership's
//! datagrams, timers and events.

use rand::RngExt;
use vergent::antientropy::messages::{SyncLimits, SyncRequest, SyncResponse};
use vergent::antientropy::respond::{pushed_to_apply, respond};
use vergent::coordinator::{Millis, OpId};
use vergent::hlc::skew::Probe;
use vergent::policy::HintWork;
use vergent::record::{Entry, Record};

use super::node::Applied;
use super::{Event, Sim};

#[derive(Debug, Clone)]
pub(super) enum Msg {
    Swim(Vec<u8>),
    Write {
        op: OpId,
        entry: Entry,
    },
    WriteAck {
        op: OpId,
        answer: Applied,
    },
    Ping {
        sent_us: u64,
    },
    Pong {
        sent_us: u64,
        received_us: u64,
        /// The answering clock's true skew (bookkeeping for the invariant, not read by
        /// the mechanism).
        truth_skew_ms: i64,
    },
    Read {
        op: OpId,
        key: Vec<u8>,
    },
    ReadReply {
        op: OpId,
        record: Option<Record>,
    },
    Repair {
        entry: Entry,
    },
    Hints {
        batch: u64,
        entries: Vec<Entry>,
    },
    HintsAck {
        batch: u64,
        ok: bool,
    },
    Sync {
        run: u64,
        tag: u64,
        request: SyncRequest,
    },
    SyncReply {
        run: u64,
        tag: u64,
        response: Result<SyncResponse, String>,
    },
}

impl Msg {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Msg::Swim(_) => "swim",
            Msg::Write { .. } => "write",
            Msg::WriteAck { .. } => "write-ack",
            Msg::Ping { .. } => "ping",
            Msg::Pong { .. } => "pong",
            Msg::Read { .. } => "read",
            Msg::ReadReply { .. } => "read-reply",
            Msg::Repair { .. } => "repair",
            Msg::Hints { .. } => "hints",
            Msg::HintsAck { .. } => "hints-ack",
            Msg::Sync { .. } => "sync",
            Msg::SyncReply { .. } => "sync-reply",
        }
    }
}

impl Sim {
    pub(super) fn set_jitter(&mut self, jitter_ms: u64) {
        self.jitter_recent = (self.jitter_ms.max(jitter_ms), self.now);
        self.jitter_ms = jitter_ms;
    }

    pub(super) fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to {
            self.schedule(self.now, Event::Deliver { from, to, msg });
            return;
        }
        if !self.healed && (self.cut.contains(&(from, to)) || self.rng.random_bool(self.loss)) {
            self.report.dropped += 1;
            return;
        }
        let latency = 1 + self.rng.random_range(0..=self.jitter_ms);
        if !self.healed && self.rng.random_bool(self.duplicate) {
            self.report.duplicated += 1;
            let again = 1 + self.rng.random_range(0..=self.jitter_ms * 4);
            self.schedule(
                self.now + again,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(self.now + latency, Event::Deliver { from, to, msg });
    }

    pub(super) fn flush_membership(&mut self, i: usize) {
        let mut removed_while_away = false;
        let mut renewed = 0;
        let mut events = Vec::new();
        let mut stepped_aside = false;
        let mut consult = false;
        let mut wake = false;
        let mut out = Vec::new();
        let mut timers = Vec::new();
        let mut records = None;
        if let Some(m) = self.nodes[i].membership.as_mut() {
            while let Some((to, data)) = m.poll_send() {
                out.push((to, data));
            }
            while let Some((after, timer)) = m.poll_timer() {
                timers.push((after, timer));
            }
            while let Some(event) = m.poll_event() {
                events.push(format!("{:?}", event));
                match event {
                    vergent::membership::MembershipEvent::RemovedWhileAway
                    | vergent::membership::MembershipEvent::NameTakenBack(_) => {
                        removed_while_away = true
                    }
                    vergent::membership::MembershipEvent::RejoinedAs(_) => renewed += 1,
                    vergent::membership::MembershipEvent::SteppedAside(_) => stepped_aside = true,
                    vergent::membership::MembershipEvent::ConsultSeed => consult = true,
                    // As the node: a member that joins or returns has to catch up.
                    vergent::membership::MembershipEvent::Joined(_)
                    | vergent::membership::MembershipEvent::Recovered(_) => wake = true,
                    _ => {}
                }
            }
            if m.take_roster_changed() {
                records = Some(m.records());
            }
        }
        if let (Some(records), Some(store)) = (records, &self.nodes[i].store) {
            let _ = store.save_members(&records);
        }
        if removed_while_away {
            self.nodes[i].fill.clear();
        }
        if wake {
            let now = self.now;
            self.nodes[i].schedule.wake(now);
        }
        self.observe_fills(i);
        self.renewals[i] += renewed;
        for event in events {
            let line = format!("{} {event}", self.names[i]);
            self.log(line);
        }
        if stepped_aside {
            self.nodes[i].stepped_aside = true;
        }
        if consult {
            // As the node does: ask a live member for its view of the cluster, the one
            // that said this node is down when there is one.
            let told = self.nodes[i]
                .membership
                .as_ref()
                .and_then(|m| m.consult_whom())
                .and_then(|name| self.index_of(name));
            let seed = told
                .filter(|&j| self.nodes[j].up && self.nodes[j].membership.is_some())
                .or_else(|| {
                    (0..self.nodes.len())
                        .find(|&j| j != i && self.nodes[j].up && self.nodes[j].membership.is_some())
                });
            if let Some(j) = seed {
                let members = self.nodes[j].membership.as_ref().unwrap().seed_members();
                let now = Millis(self.now);
                if let Some(m) = self.nodes[i].membership.as_mut() {
                    m.install(members, now);
                }
                self.flush_membership(i);
            }
        }
        for (to, data) in out {
            if let Some(g) = &self.ghost
                && to.addr == g.addr
            {
                let ghost = g.id;
                let at = self.now + 1 + self.rng.random_range(0..=self.jitter_ms);
                self.schedule(
                    at,
                    Event::ToGhost {
                        from: i,
                        data: data.to_vec(),
                        ghost,
                    },
                );
                continue;
            }
            if let Some(j) = self.index_of(&to.name) {
                self.send(i, j, Msg::Swim(data.to_vec()));
            }
        }
        let life = self.nodes[i].life;
        for (after, timer) in timers {
            self.schedule(
                self.now + after.as_millis() as u64,
                Event::SwimTimer {
                    node: i,
                    life,
                    timer,
                },
            );
        }
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if !self.nodes[to].up {
            self.report.dropped += 1;
            return;
        }
        self.report.delivered += 1;
        match msg {
            Msg::Swim(data) => {
                let sender = &self.names[from];
                if let Some(m) = self.nodes[to].membership.as_mut() {
                    let _ = m.handle_data(sender, &data, Millis(self.now));
                }
                self.flush_membership(to);
            }
            Msg::Write { op, entry } => {
                let answer = self.apply(to, std::slice::from_ref(&entry));
                self.send(to, from, Msg::WriteAck { op, answer });
            }
            Msg::WriteAck { op, answer } => {
                let name = self.names[from].clone();
                let coordinator = &mut self.nodes[to].coordinator;
                match answer {
                    Applied::Yes => coordinator.handle_write_ack(op, &name, Ok(())),
                    Applied::Refused => {
                        coordinator.handle_write_refused(op, &name, "clock offset refused".into())
                    }
                    Applied::No => {
                        coordinator.handle_write_ack(op, &name, Err("not applied".into()))
                    }
                }
                self.drain_coordinator(to);
            }
            Msg::Ping { sent_us } => {
                let received_us = self.wall(to) * 1000;
                let truth_skew_ms = self.nodes[to].skew_ms;
                self.send(
                    to,
                    from,
                    Msg::Pong {
                        sent_us,
                        received_us,
                        truth_skew_ms,
                    },
                );
            }
            Msg::Pong {
                sent_us,
                received_us,
                truth_skew_ms,
            } => {
                self.nodes[to].seen_skew.insert(from, truth_skew_ms);
                let probe = Probe {
                    sent_us,
                    received_us,
                    replied_us: received_us,
                    answered_us: self.wall(to) * 1000,
                };
                let name = self.names[from].clone();
                let mono_us = self.now * 1000;
                self.nodes[to].skew.record(&name, probe, mono_us);
            }
            Msg::Read { op, key } => {
                let record = self.nodes[to]
                    .store
                    .as_ref()
                    .and_then(|s| s.get(&key).ok().flatten());
                self.send(to, from, Msg::ReadReply { op, record });
            }
            Msg::ReadReply { op, record } => {
                let name = self.names[from].clone();
                self.nodes[to]
                    .coordinator
                    .handle_read_reply(op, &name, Some(record));
                self.drain_coordinator(to);
            }
            Msg::Repair { entry } => {
                self.apply(to, &[entry]);
            }
            Msg::Hints { batch, entries } => {
                let ok = self.apply(to, &entries) == Applied::Yes;
                self.send(to, from, Msg::HintsAck { batch, ok });
            }
            Msg::HintsAck { batch, ok } => {
                let node = &mut self.nodes[to];
                if !ok {
                    node.hints.failed(batch);
                } else if let Some(HintWork::Delete { keys, .. }) = node.hints.delivered(batch)
                    && let Some(store) = &node.store
                {
                    store.delete_hints_now(keys).expect("delete hints");
                }
            }
            Msg::Sync { run, tag, request } => {
                let response = match &request {
                    SyncRequest::Push { entries, .. } => {
                        let keep = pushed_to_apply(
                            self.nodes[to].store.as_ref().unwrap(),
                            entries.clone(),
                            self.grace_horizon(to),
                        )
                        .expect("read for a push");
                        if self.apply(to, &keep) == Applied::Yes {
                            Ok(SyncResponse::Pushed { applied: 0 })
                        } else {
                            Err("refused".into())
                        }
                    }
                    other => respond(
                        self.nodes[to].store.as_ref().unwrap(),
                        other,
                        &SyncLimits::default(),
                    )
                    .map_err(|e| e.to_string()),
                };
                // Roots that compared equal are an agreement on the responder's side too.
                if let (SyncRequest::Roots { roots, .. }, Ok(SyncResponse::Roots { differing })) =
                    (&request, &response)
                {
                    let agreed: Vec<u16> = roots
                        .iter()
                        .map(|r| r.partition)
                        .filter(|&p| !differing.iter().any(|d| d.partition == p))
                        .collect();
                    let (name, at) = (self.names[from].clone(), self.moment(to));
                    self.nodes[to].agreements.agreed(&name, &agreed, at);
                }
                self.send(to, from, Msg::SyncReply { run, tag, response });
            }
            Msg::SyncReply { run, tag, response } => self.sync_reply(to, run, tag, response),
        }
    }
}
