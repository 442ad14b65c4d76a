//! Members cut off, crashed, removed and returning: who is declared dead, who renews,
//! and which lives a departure covers.

use super::*;

/// Both sides of a partition declare each other dead; when it heals, each node learns
/// the cluster thought it down, renews its identity, and must go on probing: a renewal
/// that left SWIM without timers would leave every node silent for good.
#[test]
fn both_sides_of_a_healed_partition_find_each_other_again() {
    let mut net = Net::new();
    net.start(id("n1", 1, 100), None);
    net.start(id("n2", 1, 100), Some(id("n1", 1, 100)));
    net.start(id("n3", 1, 100), Some(id("n1", 1, 100)));
    net.run_until(5_000);
    // n1 alone, n2 and n3 together: each side declares the other dead.
    for other in ["n2", "n3"] {
        net.cut.insert(("n1".into(), other.into()));
        net.cut.insert((other.into(), "n1".into()));
    }
    net.run_announcing(40_000);
    assert_eq!(net.state("n1", "n2"), Some(MemberState::Dead));
    assert_eq!(net.state("n2", "n1"), Some(MemberState::Dead));
    assert_eq!(net.state("n3", "n1"), Some(MemberState::Dead));
    net.cut.clear();
    net.run_announcing(70_000);
    for observer in ["n1", "n2", "n3"] {
        for of in ["n1", "n2", "n3"] {
            assert_eq!(
                net.state(observer, of),
                Some(MemberState::Alive),
                "{observer} sees {of} after the partition healed"
            );
        }
    }
    // n2 and n3 learnt they were thought dead while they still knew each other.
    assert!(
        net.renewals_with_members > 0,
        "the scenario renews a connected node"
    );
    assert_eq!(
        net.renewals_without_probing, 0,
        "a renewed node that knows members must go on probing"
    );
    // And they stay in touch.
    net.run_announcing(100_000);
    net.assert_all_alive(&["n1", "n2", "n3"]);
}

/// The survivor of two crashes in a cluster of three declares them dead (however sure
/// it is that it is the one cut off), so it hints for them and an operator can replace
/// them.
#[test]
fn the_survivor_of_a_majority_crash_declares_the_crashed_dead() {
    let mut net = Net::new();
    net.start(id("n1", 1, 100), None);
    net.start(id("n2", 1, 100), Some(id("n1", 1, 100)));
    net.start(id("n3", 1, 100), Some(id("n1", 1, 100)));
    net.run_announcing(5_000);
    net.down.insert("n2".into());
    net.down.insert("n3".into());
    net.run_announcing(35_000);
    assert_eq!(net.state("n1", "n2"), Some(MemberState::Dead));
    assert_eq!(net.state("n1", "n3"), Some(MemberState::Dead));
}

/// A departure recorded against an earlier incarnation covers the node's later
/// incarnations of the same life (the recorder may have missed a renewal), never a later
/// life.
#[test]
fn a_departure_covers_every_incarnation_of_the_departed_life() {
    let departure = Departure {
        name: "n5".into(),
        epoch_ms: 100,
        incarnation: 1,
    };
    assert!(departure.covers(&id("n5", 1, 100)));
    assert!(
        departure.covers(&id("n5", 2, 100)),
        "a renewal the recorder missed"
    );
    assert!(departure.covers(&id("n5", 7, 90)), "an earlier life");
    assert!(
        !departure.covers(&id("n5", 1, 101)),
        "a later life is a new member"
    );
    assert!(!departure.covers(&id("n4", 1, 100)));
}

/// A removal covers the lives of the member that started before it, not only the one
/// the remover knew: n4 restarted and died again while n1 was cut off, n1 removes n4
/// (it only knows n4's first life), and every member drops n4 from placement (found in
/// the simulator: the later life stayed in the others' placement, dead, and held their
/// fills back for good).
#[test]
fn a_removal_covers_a_later_life_the_remover_never_saw() {
    let names = ["n1", "n2", "n3", "n4"];
    let mut net = Net::new();
    net.start(id("n1", 1, 100), None);
    for name in &names[1..] {
        net.start(id(name, 1, 100), Some(id("n1", 1, 100)));
    }
    net.run_announcing(6_000);
    net.isolate("n1", &names[1..]);
    net.down.insert("n4".into());
    net.run_announcing(9_000);
    net.start(id("n4", 1, 200), Some(id("n2", 1, 100)));
    net.run_announcing(14_000);
    assert_eq!(
        net.nodes["n2"].member("n4").map(|m| m.id.epoch_ms),
        Some(200)
    );
    net.down.insert("n4".into());
    net.run_announcing(40_000);
    assert_eq!(net.state("n1", "n4"), Some(MemberState::Dead));
    assert_eq!(
        net.nodes["n1"].member("n4").map(|m| m.id.epoch_ms),
        Some(100)
    );
    assert_eq!(net.state("n2", "n4"), Some(MemberState::Dead));
    let now = Millis(net.now);
    net.nodes
        .get_mut("n1")
        .unwrap()
        .depart("n4", now, 300)
        .unwrap();
    net.cut.clear();
    for _ in 0..10 {
        let now = Millis(net.now);
        for name in &names[..3] {
            net.nodes
                .get_mut(*name)
                .unwrap()
                .publish(GossipStatus::default(), now);
            net.drain(name);
        }
        net.run_announcing(net.now + 1_000);
    }
    for observer in &names[..3] {
        assert_eq!(
            net.nodes[*observer]
                .placement_members()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            vec!["n1", "n2", "n3"],
            "{observer}'s placement"
        );
    }
}

/// A node cut off alone for less than the suspicion timeout suspects everyone; the cut
/// heals before those suspicions would turn into deaths, and they are held open after
/// the silence ends, so it declares nobody dead and nobody renews.
#[test]
fn a_short_cut_of_one_node_leaves_every_other_member_alive_in_its_eyes() {
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let mut net = Net::new();
    net.start_all(&names);
    net.isolate("n5", &names[..4]);
    let cut_at = net.events.len();
    net.run_announcing(11_500);
    let suspected = names[..4]
        .iter()
        .filter(|o| net.state("n5", o) == Some(MemberState::Suspect))
        .count();
    assert!(
        suspected >= 2,
        "n5 suspects {suspected} members when the cut heals"
    );
    net.cut.clear();
    net.run_announcing(40_000);
    let died: Vec<String> = net.events[cut_at..]
        .iter()
        .filter_map(|(n, e)| match e {
            MembershipEvent::Died(id) if n == "n5" => Some(id.name.clone()),
            MembershipEvent::RejoinedAs(_) if n != "n5" => Some(format!("{n} renewed")),
            _ => None,
        })
        .collect();
    assert!(died.is_empty(), "after the short cut: {died:?}");
    net.assert_all_alive(&names);
}

/// A node cut off alone for longer than the suspicion timeout (but under the silent-hold
/// limit) holds its suspicions while it hears from nobody: the others declare it dead and
/// it renews, but it declares none of them dead, so nobody else renews.
#[test]
fn a_long_cut_of_one_node_costs_only_that_node_a_renewal() {
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let mut net = Net::new();
    net.start_all(&names);
    net.isolate("n5", &names[..4]);
    let cut_at = net.events.len();
    net.run_announcing(20_000);
    assert!(
        names[..4]
            .iter()
            .all(|o| net.state(o, "n5") == Some(MemberState::Dead)),
        "the others declare the cut node dead"
    );
    net.cut.clear();
    net.run_announcing(50_000);
    let collateral: Vec<String> = net.events[cut_at..]
        .iter()
        .filter_map(|(n, e)| match e {
            MembershipEvent::Died(id) if n == "n5" => Some(format!("n5 saw {} die", id.name)),
            MembershipEvent::RejoinedAs(_) if n != "n5" => Some(format!("{n} renewed")),
            _ => None,
        })
        .collect();
    assert!(collateral.is_empty(), "after the long cut: {collateral:?}");
    net.assert_all_alive(&names);
}

/// A suspicion whose prober renewed before it turned into a death, and whose gossip
/// never reached the suspect, reaches the others by gossip all the same: nobody holds
/// a timer to declare the suspect dead, and the suspect, answering every probe at the
/// suspected incarnation, never learns to refute it. The members that hold it tell the
/// suspect, and it refutes: everyone sees it alive again, and nobody declares it dead.
#[test]
fn a_suspicion_nobody_can_end_is_refuted_by_the_suspect_once_told() {
    let mut net = Net::new();
    let names = ["n1", "n2", "n3", "n4", "n5"];
    net.start_all(&names);
    net.assert_all_alive(&names);
    let n4 = net.nodes["n4"].me().clone();
    let incarnation = net.nodes["n1"].member("n4").unwrap().swim_incarnation;
    // n5's suspicion of n4, its own timer gone, reaches n1; for ten seconds no word of
    // it reaches n4 (the gossip of it runs out meanwhile), while n4 answers every probe.
    net.hide_suspicion = Some(("n4".into(), net.now + 10_000));
    let header = foca::Header {
        src: net.nodes["n5"].me().clone(),
        src_incarnation: 0,
        dst: net.nodes["n1"].me().clone(),
        message: foca::Message::Gossip,
    };
    let suspicion = foca::Member::new(n4.clone(), incarnation, foca::State::Suspect);
    let data = wire::encode(&header, &[suspicion], &[]).unwrap();
    let now = Millis(net.now);
    net.nodes
        .get_mut("n1")
        .unwrap()
        .handle_data("n5", &data, now)
        .unwrap();
    net.drain("n1");
    assert_eq!(net.state("n1", "n4"), Some(MemberState::Suspect));
    // The runtime ticks membership every second.
    let until = net.now + 40_000;
    while net.now < until {
        let next = net.now + 1_000;
        net.run_until(next);
        for name in names {
            let now = Millis(net.now);
            net.nodes.get_mut(name).unwrap().tick(now);
            net.drain(name);
        }
    }
    net.assert_all_alive(&names);
    let died: Vec<_> = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, MembershipEvent::Died(id) if id.name == "n4"))
        .collect();
    assert!(died.is_empty(), "n4 was alive all along: {died:?}");
}
