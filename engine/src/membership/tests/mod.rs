//! A few membership cores on a virtual clock and a perfect in-memory network.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::*;

struct Net {
    nodes: BTreeMap<String, Membership>,
    down: BTreeSet<String>,
    /// Pairs (from, to) whose datagrams are lost.
    cut: BTreeSet<(String, String)>,
    /// Until this time, datagrams telling this member it is suspected are lost.
    hide_suspicion: Option<(String, u64)>,
    now: u64,
    seq: u64,
    // (Reverse(at), seq, target, what)
    queue: BinaryHeap<std::cmp::Reverse<(u64, u64, String, Item)>>,
    events: Vec<(String, MembershipEvent)>,
    /// Renewals seen while the node knew active members, and how many of those left
    /// SWIM without a probe cycle.
    renewals_with_members: usize,
    renewals_without_probing: usize,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    /// A datagram, and the name of its sender (whose certificate it would come with).
    Data(String, Vec<u8>),
    Timer(TimerBox),
}

/// foca's timers order only by kind; wrap them so the queue orders by time first.
struct TimerBox(SwimTimer);

impl PartialEq for TimerBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerBox {}
impl PartialOrd for TimerBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Whether `data` carries a suspicion of `name`.
fn suspects(data: &[u8], name: &str) -> bool {
    use bytes::Buf;
    use foca::Codec;
    let mut buf = data;
    let mut codec = PostcardCodec;
    let Ok(header): Result<foca::Header<MemberId>, _> = codec.decode_header(&mut buf) else {
        return false;
    };
    if header.message == foca::Message::Broadcast || buf.remaining() < 2 {
        return false;
    }
    let count = buf.get_u16();
    (0..count).any(|_| {
        codec
            .decode_member(&mut buf)
            .is_ok_and(|m: foca::Member<MemberId>| {
                m.id().name == name && m.state() == foca::State::Suspect
            })
    })
}

fn id(name: &str, incarnation: u32, epoch_ms: u64) -> MemberId {
    MemberId {
        name: name.into(),
        addr: "127.0.0.1:1".parse().unwrap(),
        incarnation,
        epoch_ms,
        token: None,
        data_epoch: epoch_ms,
    }
}

impl Net {
    fn new() -> Net {
        Net {
            nodes: BTreeMap::new(),
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            hide_suspicion: None,
            renewals_with_members: 0,
            renewals_without_probing: 0,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
        }
    }

    fn start(&mut self, me: MemberId, seed: Option<MemberId>) {
        let name = me.name.clone();
        let mut m = Membership::new(
            me,
            &MembershipConfig::default(),
            self.nodes.len() as u64 + 7,
            Millis(self.now),
        );
        if let Some(seed) = seed {
            m.announce(seed, Millis(self.now));
        }
        self.down.remove(&name);
        self.nodes.insert(name.clone(), m);
        self.drain(&name);
    }

    fn push(&mut self, at: u64, to: &str, item: Item) {
        self.seq += 1;
        self.queue
            .push(std::cmp::Reverse((at, self.seq, to.to_string(), item)));
    }

    fn drain(&mut self, name: &str) {
        let now = self.now;
        let mut out = Vec::new();
        {
            let m = self.nodes.get_mut(name).unwrap();
            while let Some((to, data)) = m.poll_send() {
                let hidden = self.hide_suspicion.as_ref().is_some_and(|(of, until)| {
                    to.name == *of && now < *until && suspects(&data, of)
                });
                if !hidden && !self.cut.contains(&(name.to_string(), to.name.clone())) {
                    out.push((
                        now + 1,
                        to.name.clone(),
                        Item::Data(name.to_string(), data.to_vec()),
                    ));
                }
            }
            let mut probing = false;
            while let Some((after, timer)) = m.poll_timer() {
                probing |= timer.is_probe();
                out.push((
                    now + after.as_millis() as u64,
                    name.to_string(),
                    Item::Timer(TimerBox(timer)),
                ));
            }
            while let Some(event) = m.poll_event() {
                if matches!(event, MembershipEvent::RejoinedAs(_)) && m.swim.num_members() > 0 {
                    self.renewals_with_members += 1;
                    self.renewals_without_probing += usize::from(!probing);
                }
                self.events.push((name.to_string(), event));
            }
            let _ = m.take_roster_changed();
        }
        for (at, to, item) in out {
            self.push(at, &to, item);
        }
    }

    fn run_until(&mut self, until: u64) {
        while let Some(std::cmp::Reverse((at, _, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let std::cmp::Reverse((at, _, to, item)) = self.queue.pop().unwrap();
            self.now = at;
            if self.down.contains(&to) || !self.nodes.contains_key(&to) {
                continue;
            }
            let now = Millis(at);
            let m = self.nodes.get_mut(&to).unwrap();
            match item {
                Item::Data(from, data) => {
                    let _ = m.handle_data(&from, &data, now);
                }
                Item::Timer(TimerBox(timer)) => m.handle_timer(timer, now),
            }
            self.drain(&to);
        }
        self.now = until;
    }

    /// Runs in one-second steps, with every node announcing itself when isolated, as
    /// the node's runtime does.
    fn run_announcing(&mut self, until: u64) {
        while self.now < until {
            let next = (self.now + 1_000).min(until);
            self.run_until(next);
            let names: Vec<String> = self
                .nodes
                .keys()
                .filter(|n| !self.down.contains(*n))
                .cloned()
                .collect();
            for name in names {
                let now = Millis(self.now);
                self.nodes.get_mut(&name).unwrap().announce_if_isolated(now);
                self.drain(&name);
            }
        }
    }

    fn state(&self, observer: &str, of: &str) -> Option<MemberState> {
        self.nodes[observer].member(of).map(|m| m.state)
    }

    /// Starts `names`, each joining the first, and lets them settle.
    fn start_all(&mut self, names: &[&str]) {
        self.start(id(names[0], 1, 100), None);
        for name in &names[1..] {
            self.start(id(name, 1, 100), Some(id(names[0], 1, 100)));
        }
        self.run_announcing(8_000);
    }

    /// Cuts `name` off from `others`, both ways.
    fn isolate(&mut self, name: &str, others: &[&str]) {
        for other in others {
            self.cut.insert((name.to_string(), other.to_string()));
            self.cut.insert((other.to_string(), name.to_string()));
        }
    }

    /// Every one of `names` sees every one of them alive.
    fn assert_all_alive(&self, names: &[&str]) {
        for observer in names {
            for of in names {
                assert_eq!(
                    self.state(observer, of),
                    Some(MemberState::Alive),
                    "{observer} sees {of}"
                );
            }
        }
    }
}

#[test]
fn members_join_through_a_seed_and_agree() {
    let mut net = Net::new();
    net.start(id("n1", 1, 100), None);
    net.start(id("n2", 1, 100), Some(id("n1", 1, 100)));
    net.start(id("n3", 1, 100), Some(id("n1", 1, 100)));
    net.run_until(5_000);
    for observer in ["n1", "n2", "n3"] {
        for of in ["n1", "n2", "n3"] {
            assert_eq!(
                net.state(observer, of),
                Some(MemberState::Alive),
                "{observer} sees {of}"
            );
        }
        assert_eq!(
            net.nodes[observer]
                .placement_members()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            vec!["n1", "n2", "n3"]
        );
    }
}

#[test]
fn a_silent_member_is_suspected_then_declared_dead_then_recovers_on_restart() {
    let mut net = Net::new();
    net.start(id("n1", 1, 100), None);
    net.start(id("n2", 1, 100), Some(id("n1", 1, 100)));
    net.start(id("n3", 1, 100), Some(id("n1", 1, 100)));
    net.run_until(5_000);
    net.down.insert("n3".into());
    let killed_at = net.now;
    let mut dead_at = None;
    for step in 1..=200 {
        net.run_until(killed_at + step * 100);
        if net.state("n1", "n3") == Some(MemberState::Dead)
            && net.state("n2", "n3") == Some(MemberState::Dead)
        {
            dead_at = Some(net.now - killed_at);
            break;
        }
    }
    let dead_after = dead_at.expect("n3 declared dead by both survivors");
    assert!(dead_after <= 10_000, "declared dead after {dead_after} ms");
    assert!(
        net.events
            .iter()
            .any(|(_, e)| matches!(e, MembershipEvent::Died(m) if m.name == "n3"))
    );
    // A dead member keeps its partitions.
    assert_eq!(
        net.nodes["n1"]
            .placement_members()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        vec!["n1", "n2", "n3"]
    );

    // Restarted: a newer identity (one more start, a later epoch).
    net.nodes.remove("n3");
    net.start(id("n3", 2, 50_000), Some(id("n1", 1, 100)));
    net.run_until(net.now + 5_000);
    for observer in ["n1", "n2"] {
        assert_eq!(
            net.state(observer, "n3"),
            Some(MemberState::Alive),
            "{observer}"
        );
        assert_eq!(net.nodes[observer].member("n3").unwrap().id.incarnation, 2);
    }
    assert!(
        net.events
            .iter()
            .any(|(_, e)| matches!(e, MembershipEvent::Recovered(m) if m.name == "n3"))
    );
}

#[test]
fn statuses_reach_every_member_and_a_leaver_drops_out_of_placement() {
    let mut net = Net::new();
    net.start(id("n1", 1, 100), None);
    net.start(id("n2", 1, 100), Some(id("n1", 1, 100)));
    net.start(id("n3", 1, 100), Some(id("n1", 1, 100)));
    net.run_until(3_000);
    let now = Millis(net.now);
    net.nodes.get_mut("n2").unwrap().publish(
        GossipStatus {
            hints: 42,
            ..GossipStatus::default()
        },
        now,
    );
    net.drain("n2");
    net.run_until(net.now + 3_000);
    for observer in ["n1", "n3"] {
        let status = net.nodes[observer]
            .member("n2")
            .unwrap()
            .status
            .clone()
            .expect("status arrived");
        assert_eq!(status.hints, 42);
    }

    let now = Millis(net.now);
    net.nodes
        .get_mut("n2")
        .unwrap()
        .leave(GossipStatus::default(), now);
    net.drain("n2");
    net.run_until(net.now + 1_000);
    net.nodes
        .get_mut("n2")
        .unwrap()
        .finish_leaving(Millis(net.now));
    net.drain("n2");
    net.run_until(net.now + 5_000);
    for observer in ["n1", "n3"] {
        assert_eq!(
            net.state(observer, "n2"),
            Some(MemberState::Left),
            "{observer}"
        );
        assert_eq!(
            net.nodes[observer]
                .placement_members()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            vec!["n1", "n3"]
        );
    }
}

#[test]
fn remembered_members_count_as_dead_until_they_answer() {
    let mut net = Net::new();
    net.start(id("n2", 1, 100), None);
    net.run_until(1_000);
    let mut m = Membership::new(
        id("n1", 2, 5_000),
        &MembershipConfig::default(),
        1,
        Millis(net.now),
    );
    m.restore(
        &[MemberRecord {
            token: None,
            departed: None,
            name: "n2".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            left: false,
        }],
        Millis(net.now),
    );
    assert_eq!(m.member("n2").unwrap().state, MemberState::Dead);
    assert_eq!(
        m.placement_members()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        vec!["n1", "n2"]
    );
    net.nodes.insert("n1".into(), m);
    net.drain("n1");
    net.run_until(net.now + 3_000);
    assert!(
        net.nodes["n1"].is_isolated(),
        "SWIM does not announce on its own"
    );
    net.nodes
        .get_mut("n1")
        .unwrap()
        .announce_if_isolated(Millis(net.now));
    net.drain("n1");
    net.run_until(net.now + 3_000);
    assert_eq!(net.state("n1", "n2"), Some(MemberState::Alive));
    assert_eq!(net.state("n2", "n1"), Some(MemberState::Alive));
}

#[test]
fn a_status_with_the_largest_partition_bitmap_and_many_departures_still_fits_a_datagram() {
    let mut m = Membership::new(id("n1", 1, 100), &MembershipConfig::default(), 7, Millis(0));
    for i in 0..40 {
        m.learn_departure(Departure {
            name: format!("a-rather-long-member-name-{i}"),
            epoch_ms: 1_800_000_000_000 + i,
            incarnation: 7,
        });
    }
    let status = GossipStatus {
        filled: crate::placement::PartitionSet::all(crate::placement::PARTITIONS_MAX),
        also_holding: Some(
            (0..crate::policy::ALSO_HOLDING_LISTED_MAX as u16)
                .map(|p| crate::placement::PARTITIONS_MAX - 1 - p)
                .collect(),
        ),
        placement_digest: "0123456789abcdef".into(),
        ..GossipStatus::default()
    };
    m.publish(status, Millis(0));
    let book = m.book.lock().unwrap();
    let mine = book.latest().get("n1").expect("the status was published");
    assert!(!mine.departed.is_empty());
    assert!(postcard::to_allocvec(mine).unwrap().len() <= STATUS_BYTES_MAX);
}

mod failures;
mod identity;
