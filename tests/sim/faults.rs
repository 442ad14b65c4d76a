//! The faults injected during a run — crashes and restarts, partitions, loss,
//! latency, clock skew, a replica away past the grace, a second process under a
//! member's name, a wiped disk, joins, removals and replacements — and healing.

use rand::RngExt;
use vergent::base::Millis;
use vergent::core::{Answer, Ask, Joined};
use vergent::hlc::Timestamp;
use vergent::membership::{MemberId, Membership, MembershipConfig};

use super::config::{GHOST_TICK_MS, MAX_OFFSET_MS};
use super::network::Msg;
use super::{Event, Sim};

/// A second process under a live member's name that got into membership (one started
/// from a copy of the member's data directory while its seeds were out of reach, so no
/// join refused it): membership only, at an address of its own, for a while.
pub(super) struct Ghost {
    pub(super) id: u32,
    /// The member whose name it took.
    pub(super) of: usize,
    pub(super) addr: std::net::SocketAddr,
    pub(super) membership: Membership,
    pub(super) until: u64,
}

impl Sim {
    pub(super) fn fault(&mut self) {
        if let Some((d, replace)) = self.pending_departure {
            let done = if self.nodes[d].up {
                Some("none")
            } else if replace {
                Some(self.replace_dead()).filter(|f| *f != "none")
            } else {
                Some(self.remove_dead()).filter(|f| *f != "none")
            };
            if let Some(done) = done {
                self.pending_departure = None;
                if done != "none" {
                    *self.report.faults.entry(done).or_default() += 1;
                    self.log(format!("fault {done}"));
                }
            }
        }
        let n = self.nodes.len();
        let minority = (n - 1) / 2;
        let kind = self.rng.random_range(0..13);
        let name = match kind {
            0 => {
                let members: Vec<usize> = self.members().collect();
                let down = members.iter().filter(|&&x| !self.nodes[x].up).count();
                let i = members[self.rng.random_range(0..members.len())];
                if self.nodes[i].up && down < minority {
                    self.crash(i);
                    "crash"
                } else if !self.nodes[i].up && self.pending_departure.is_none_or(|(d, _)| d != i) {
                    // A clock that was far off is often fixed across the restart: it
                    // steps back, and the identity must still sort above the last one.
                    let stepped = self.nodes[i].skew_ms.unsigned_abs() > MAX_OFFSET_MS;
                    if stepped {
                        let skew = self.rng.random_range(-200i64..=200);
                        self.set_skew(i, skew);
                    }
                    self.start(i);
                    if stepped {
                        "restart with its clock set right"
                    } else {
                        "restart"
                    }
                } else {
                    "none"
                }
            }
            7 => self.wipe(),
            8 => self.join_spare(),
            11 => self.duplicate(),
            9 | 10 if self.pending_departure.is_none() && !self.destructive => {
                // Crash a member now; it is removed (or replaced) once seen dead.
                let members: Vec<usize> = self.members().collect();
                let down = members.iter().filter(|&&x| !self.nodes[x].up).count();
                let i = members[self.rng.random_range(0..members.len())];
                if down == 0 && self.nodes[i].up {
                    self.crash(i);
                    self.pending_departure = Some((i, kind == 10));
                    "crash to remove"
                } else {
                    "none"
                }
            }
            1 => {
                // A symmetric partition: a minority cut off from the rest.
                self.cut.clear();
                let size = self.rng.random_range(1..=minority.max(1));
                let mut side: Vec<usize> = (0..n).collect();
                for k in (1..n).rev() {
                    side.swap(k, self.rng.random_range(0..=k));
                }
                let (a, b) = side.split_at(size);
                for &x in a {
                    for &y in b {
                        self.cut.insert((x, y));
                        self.cut.insert((y, x));
                    }
                }
                "partition"
            }
            2 => {
                let (x, y) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
                if x != y {
                    self.cut.insert((x, y));
                }
                "one-way partition"
            }
            3 => {
                self.cut.clear();
                "partition healed"
            }
            4 => {
                self.loss = [0.0, 0.05, 0.2][self.rng.random_range(0..3)];
                self.duplicate = [0.0, 0.05][self.rng.random_range(0..2)];
                "loss and duplication"
            }
            5 => {
                let jitter = [5, 50, 400][self.rng.random_range(0..3)];
                self.set_jitter(jitter);
                "latency and reordering"
            }
            6 => {
                // Clock skew: usually within the bound, sometimes past it either way,
                // now and then a minute ahead (a clock set wrong by hand).
                let i = self.rng.random_range(0..n);
                let beyond = self.rng.random_bool(0.25);
                let skew = if !beyond {
                    self.rng.random_range(-400i64..=400)
                } else if self.rng.random_bool(0.2) {
                    60_000
                } else if self.rng.random_bool(0.5) {
                    self.rng.random_range(600i64..1_500)
                } else {
                    -self.rng.random_range(600i64..3_000)
                };
                self.set_skew(i, skew);
                if beyond {
                    "clock skew beyond the bound"
                } else {
                    "clock skew"
                }
            }
            _ => "none",
        };
        if name != "none" {
            *self.report.faults.entry(name).or_default() += 1;
            self.log(format!("fault {name}"));
        }
        if self.now + 1_000 < self.config.fault_ms {
            let next = self.now + self.rng.random_range(300..2_000);
            self.schedule(next, Event::Fault);
        }
    }

    /// A second process under a live member's name gets into membership.
    fn duplicate(&mut self) -> &'static str {
        if self.ghost.is_some() {
            return "none";
        }
        let live: Vec<usize> = self.members().filter(|&i| self.nodes[i].up).collect();
        if live.len() < 2 {
            return "none";
        }
        let of = live[self.rng.random_range(0..live.len())];
        let seed = *live.iter().find(|&&j| j != of).unwrap();
        self.ghosts += 1;
        let addr: std::net::SocketAddr = format!("10.0.1.{}:7000", self.ghosts % 250 + 1)
            .parse()
            .unwrap();
        let id = MemberId {
            name: self.names[of].clone(),
            addr,
            incarnation: 1,
            epoch_ms: self.wall(of) + 1,
            token: self.nodes[of].token.clone(),
            data_epoch: self.wall(of) + 1,
        };
        let mut membership = Membership::new(
            id,
            &MembershipConfig::default(),
            self.rng.random::<u64>(),
            Millis(self.now),
        );
        membership.announce(self.member_id(seed), Millis(self.now));
        let until = self.now + self.rng.random_range(3_000..8_000);
        self.ghost = Some(Ghost {
            id: self.ghosts,
            of,
            addr,
            membership,
            until,
        });
        self.log(format!("a second {} at {addr}", self.names[of]));
        self.flush_ghost();
        let ghost = self.ghosts;
        self.schedule(self.now + GHOST_TICK_MS, Event::GhostTick { ghost });
        "duplicate name"
    }

    pub(super) fn flush_ghost(&mut self) {
        let Some(g) = self.ghost.as_mut() else { return };
        let ghost = g.id;
        let from = g.of;
        let mut out = Vec::new();
        let mut timers = Vec::new();
        while let Some(x) = g.membership.poll_send() {
            out.push(x);
        }
        while let Some(t) = g.membership.poll_timer() {
            timers.push(t);
        }
        while g.membership.poll_event().is_some() {}
        for (to, data) in out {
            if let Some(j) = self.index_of(&to.name) {
                let at = self.now + 1 + self.rng.random_range(0..=self.jitter_ms);
                self.schedule(
                    at,
                    Event::Deliver {
                        from,
                        to: j,
                        msg: Box::new(Msg::Swim(data.to_vec())),
                    },
                );
            }
        }
        for (after, timer) in timers {
            self.schedule(
                self.now + after.as_millis() as u64,
                Event::GhostTimer { timer, ghost },
            );
        }
    }

    pub(super) fn ghost_tick(&mut self, ghost: u32) {
        let Some(g) = self.ghost.as_mut().filter(|g| g.id == ghost) else {
            return;
        };
        if self.now >= g.until {
            let name = self.names[g.of].clone();
            self.ghost = None;
            self.log(format!("the second {name} stops"));
            return;
        }
        let now = Millis(self.now);
        g.membership.tick(now);
        g.membership
            .publish(vergent::membership::GossipStatus::default(), now);
        g.membership.announce_if_isolated(now);
        self.flush_ghost();
        self.schedule(self.now + 1_000, Event::GhostTick { ghost });
    }

    /// A disk replaced: the node loses everything and comes back empty under its name.
    fn wipe(&mut self) -> &'static str {
        let members: Vec<usize> = self.members().collect();
        let i = members[self.rng.random_range(0..members.len())];
        if self.destructive {
            return "none";
        }
        self.destructive = true;
        if self.nodes[i].up {
            self.crash(i);
        }
        self.nodes[i].dir = tempfile::tempdir().expect("temp dir");
        self.nodes[i].last_clock = Timestamp::ZERO;
        self.nodes[i].last_issued = None;
        self.last_membership_change = self.now;
        self.start(i);
        "wipe"
    }

    /// Takes member `i` down for a while, or brings it back, when the other faults
    /// leave it so (a minority down at most; never a member being removed).
    pub(super) fn away(&mut self, i: usize, back: bool) {
        let members: Vec<usize> = self.members().collect();
        if !members.contains(&i) || self.pending_departure.is_some_and(|(d, _)| d == i) {
            return;
        }
        let down = members.iter().filter(|&&x| !self.nodes[x].up).count();
        if !back && self.nodes[i].up && down < (self.nodes.len() - 1) / 2 {
            self.crash(i);
            self.log(format!("fault away past the grace: {}", self.names[i]));
            *self.report.faults.entry("away past the grace").or_default() += 1;
        } else if back && !self.nodes[i].up {
            self.start(i);
        }
    }

    /// A new node joins mid-run.
    pub(super) fn join_spare(&mut self) -> &'static str {
        let Some(i) = (0..self.nodes.len()).find(|&i| !self.nodes[i].started_once) else {
            return "none";
        };
        if !self.nodes.iter().any(|n| n.up) {
            return "none";
        }
        self.last_membership_change = self.now;
        self.start(i);
        "join"
    }

    /// A dead member, seen dead by a live one, and the live one that sees it so.
    fn dead_member(&mut self) -> Option<(usize, usize)> {
        if self.destructive {
            return None;
        }
        let dead: Vec<usize> = self.members().filter(|&i| !self.nodes[i].up).collect();
        if dead.len() != 1 {
            return None;
        }
        let d = dead[0];
        let by = self
            .members()
            .find(|&i| self.nodes[i].up && self.sees_dead(i, &self.names[d]))?;
        Some((d, by))
    }

    /// `vergent remove` of a dead member, asked of a live one: it never comes back.
    fn remove_dead(&mut self) -> &'static str {
        let Some((d, by)) = self.dead_member() else {
            return "none";
        };
        let name = self.names[d].clone();
        match self.admin(by, Ask::Remove { name }) {
            Some(Answer::Removed(_)) => {}
            _ => return "none",
        }
        self.nodes[d].removed = true;
        self.destructive = true;
        self.last_membership_change = self.now;
        "remove"
    }

    /// `--replace`: a new node joins through a live member, asking to take a dead
    /// member's place; the seed admits it (the dead one departs) and it starts with the
    /// dead one's token.
    fn replace_dead(&mut self) -> &'static str {
        let Some(s) = (0..self.nodes.len()).find(|&i| !self.nodes[i].started_once) else {
            return "none";
        };
        let Some((d, by)) = self.dead_member() else {
            return "none";
        };
        let ask = Ask::Join {
            id: self.member_id(s),
            replace: Some(self.names[d].clone()),
        };
        let (members, token) = match self.admin(by, ask) {
            Some(Answer::Admitted { members, token }) => (members, token),
            _ => return "none",
        };
        self.nodes[d].removed = true;
        self.destructive = true;
        self.last_membership_change = self.now;
        let seeds = vec![self.member_id(by)];
        let joined = Joined {
            seeds,
            members,
            token,
            ..Joined::default()
        };
        self.start_with(s, Some(joined));
        "replace"
    }

    pub(super) fn heal(&mut self) {
        self.healed = true;
        self.ghost = None;
        self.cut.clear();
        self.loss = 0.0;
        self.duplicate = 0.0;
        self.set_jitter(5);
        self.set_ae_paused(true);
        for i in 0..self.nodes.len() {
            // Clocks come back within the bound (a wall clock stepping back is fine: the
            // HLC never does).
            let skew = self.rng.random_range(-200i64..=200);
            self.set_skew(i, skew);
            if !self.nodes[i].up && self.nodes[i].started_once && !self.nodes[i].removed {
                self.start(i);
            }
        }
        self.log("heal".to_string());
    }
}
