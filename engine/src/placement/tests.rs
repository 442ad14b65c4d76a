use super::*;
use std::collections::HashMap;

#[test]
fn partition_is_stable_across_builds() {
    // Pinned values: changing the function would move every stored key.
    let p = partition_of(b"greeting", 256);
    assert_eq!(p, u16::from(blake3::hash(b"greeting").as_bytes()[0]));
    assert_eq!(partition_of(b"greeting", 1), 0);
}

#[test]
fn partitions_are_used_evenly() {
    let mut counts = vec![0u32; 256];
    for i in 0..256_000u32 {
        counts[usize::from(partition_of(&i.to_be_bytes(), 256))] += 1;
    }
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(*min > 800 && *max < 1200, "min {min} max {max}");
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

fn load(placement: &Placement) -> Vec<usize> {
    placement
        .members()
        .iter()
        .map(|m| placement.partitions_of(m).count())
        .collect()
}

#[test]
fn placement_is_deterministic_whatever_the_member_order() {
    let a = Placement::compute(["n1", "n2", "n3", "n4"], 256, 3);
    let b = Placement::compute(["n4", "n2", "n1", "n3", "n2"], 256, 3);
    assert_eq!(a, b);
    assert_eq!(a.digest(), b.digest());
    for p in 0..256 {
        let replicas: Vec<&str> = a.replicas(p).collect();
        assert_eq!(replicas.len(), 3);
        let mut unique = replicas.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 3, "distinct replicas for {p}");
    }
}

#[test]
fn a_cluster_smaller_than_the_replication_factor_holds_everything_everywhere() {
    let placement = Placement::compute(["n1", "n2"], 64, 3);
    assert_eq!(placement.copies(), 2);
    for p in 0..64 {
        assert!(placement.holds("n1", p) && placement.holds("n2", p));
    }
}

#[test]
fn five_nodes_with_three_copies_are_balanced_within_a_quarter() {
    let placement = Placement::compute(names(5), 256, 3);
    let load = load(&placement);
    let (min, max) = (*load.iter().min().unwrap(), *load.iter().max().unwrap());
    assert_eq!(load.iter().sum::<usize>(), 256 * 3);
    assert!(max as f64 <= 1.25 * min as f64, "load {load:?}");
}

#[test]
fn any_five_names_are_balanced_within_a_quarter() {
    for set in 0..200 {
        let names: Vec<String> = (0..5).map(|i| format!("node-{set}-{i}")).collect();
        let placement = Placement::compute(names, 256, 3);
        let load = load(&placement);
        let (min, max) = (*load.iter().min().unwrap(), *load.iter().max().unwrap());
        assert!(max * 4 <= min * 5, "set {set}: load {load:?}");
    }
}

#[test]
fn joins_of_any_names_move_about_rf_over_n_of_the_slots() {
    for set in 0..50 {
        let names: Vec<String> = (0..6).map(|i| format!("node-{set}-{i}")).collect();
        let before = Placement::compute(names[..5].to_vec(), 256, 3);
        let after = Placement::compute(names.clone(), 256, 3);
        let moved: usize = (0..256)
            .map(|p| after.replicas(p).filter(|r| !before.holds(r, p)).count())
            .sum();
        let expected = 256.0 * 3.0 / 6.0;
        assert!(
            (moved as f64) < expected * 1.3,
            "set {set}: moved {moved}, expected about {expected}"
        );
    }
}

#[test]
fn a_join_moves_about_rf_over_n_of_the_slots_almost_all_to_the_new_node() {
    let before = Placement::compute(names(5), 256, 3);
    let after = Placement::compute(names(6), 256, 3);
    let (mut to_new, mut between_old) = (0, 0);
    for p in 0..256 {
        for replica in after.replicas(p).filter(|r| !before.holds(r, p)) {
            if replica == "n6" {
                to_new += 1;
            } else {
                between_old += 1;
            }
        }
    }
    // About RF/N of the 768 slots move, to the new node; rebalancing may add a
    // handful of moves between old nodes, never many.
    let expected = 256.0 * 3.0 / 6.0;
    let moved = (to_new + between_old) as f64;
    assert!(
        (moved - expected).abs() < expected * 0.25,
        "moved {moved}, expected about {expected}"
    );
    assert!(
        between_old * 20 <= to_new,
        "{between_old} moves between old nodes, {to_new} to the new one"
    );
}

#[test]
fn a_replacement_holds_exactly_the_partitions_of_the_member_it_replaced() {
    let before = Placement::compute(names(5), 256, 3);
    let after = Placement::compute_with_tokens(
        ["n1", "n2", "n3", "n5"]
            .into_iter()
            .map(|n| (n.to_string(), n.to_string()))
            .chain([("n6".to_string(), "n4".to_string())]),
        256,
        3,
    );
    for p in 0..256 {
        let old: Vec<&str> = before
            .replicas(p)
            .map(|r| if r == "n4" { "n6" } else { r })
            .collect();
        let new: Vec<&str> = after.replicas(p).collect();
        assert_eq!(old, new, "partition {p}");
    }
    assert_ne!(before.digest(), after.digest());
}

#[test]
fn when_every_owner_holds_the_data_the_owners_are_the_whole_set() {
    let placement = Placement::compute(names(5), 64, 3);
    for p in 0..64 {
        let set = placement.replica_set(p, |_| true);
        let owners: Vec<String> = placement.replicas(p).map(str::to_string).collect();
        assert_eq!(set.targets, owners);
        assert_eq!(set.counted, owners);
        assert_eq!(set.copies, 3);
        assert_eq!(set.filling().count(), 0);
    }
}

#[test]
fn a_wiped_owner_with_no_stand_in_leaves_fewer_counted_replicas_than_copies() {
    let placement = Placement::compute(names(3), 16, 3);
    for p in 0..16 {
        let set = placement.replica_set(p, |n| n != "n3");
        assert_eq!(set.targets.len(), 3);
        assert_eq!(set.counted, {
            let mut c: Vec<String> = placement
                .replicas(p)
                .filter(|r| *r != "n3")
                .map(str::to_string)
                .collect();
            c.truncate(3);
            c
        });
        assert_eq!(set.copies, 3);
        assert_eq!(set.filling().collect::<Vec<_>>(), ["n3"]);
    }
}

proptest::proptest! {
    /// Any number of members joining at once: while they fill, every partition's
    /// counted replicas are exactly its previous owners, and writes reach both the new
    /// owners and the previous ones. As each new owner fills, it replaces one previous
    /// owner and no counted replica is ever one that does not hold the data.
    #[test]
    fn joins_never_count_a_replica_that_holds_nothing(
        existing in 1usize..7,
        joining in 1usize..5,
        filled_mask in proptest::collection::vec(proptest::bool::ANY, 64 * 4),
    ) {
        let old_names: Vec<String> = (0..existing).map(|i| format!("old{i}")).collect();
        let new_names: Vec<String> = (0..joining).map(|i| format!("new{i}")).collect();
        let before = Placement::compute(old_names.clone(), 64, 3);
        let after = Placement::compute(old_names.iter().chain(&new_names).cloned(), 64, 3);
        for p in 0..64u16 {
            let held_before = |n: &str| before.holds(n, p);
            let set = after.replica_set(p, held_before);
            let mut old_owners: Vec<String> = before.replicas(p).map(str::to_string).collect();
            old_owners.sort();
            let mut counted = set.counted.clone();
            counted.sort();
            // Copies can grow with the cluster; the previous owners are all counted, and
            // nothing else is.
            proptest::prop_assert_eq!(&counted, &old_owners);
            for owner in after.replicas(p) {
                proptest::prop_assert!(set.targets.iter().any(|t| t == owner));
            }
            for c in &set.counted {
                proptest::prop_assert!(set.targets.contains(c));
            }
            // Some new owners have filled.
            let filled = |n: &str| {
                held_before(n)
                    || new_names.iter().position(|x| x == n).is_some_and(|i| {
                        after.holds(n, p) && filled_mask[usize::from(p) * 4 + i]
                    })
            };
            let set = after.replica_set(p, filled);
            proptest::prop_assert!(set.counted.len() <= set.copies);
            proptest::prop_assert!(set.counted.len() >= old_owners.len().min(set.copies));
            for c in &set.counted {
                proptest::prop_assert!(filled(c), "{} counted for {} without the data", c, p);
            }
        }
    }
}

#[test]
fn partition_sets_hold_what_was_put_in_and_check_their_size() {
    let mut set = PartitionSet::empty();
    assert!(set.is_empty());
    assert!(set.insert(3) && set.insert(200) && !set.insert(3));
    assert_eq!(set.iter().collect::<Vec<_>>(), [3, 200]);
    assert_eq!(set.len(), 2);
    assert!(set.fits(256) && !set.fits(200));
    assert!(set.remove(200) && !set.remove(200));
    assert!(set.fits(4));
    assert_eq!(PartitionSet::all(10).len(), 10);
    let bytes = postcard::to_allocvec(&PartitionSet::all(4096)).unwrap();
    assert!(bytes.len() <= 514, "{} bytes", bytes.len());
}

/// Every way a write can be acknowledged under the coordinator's rule for `set`
/// (`required + (targets − copies)` acknowledgements from the targets, `required` of
/// them from the counted replicas), as sets of the replicas that acknowledged.
fn acknowledging(set: &ReplicaSet, required: usize) -> Vec<Vec<&str>> {
    let needed = required + set.targets.len().saturating_sub(set.copies);
    (0u32..1 << set.targets.len())
        .map(|mask| {
            (0..set.targets.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| set.targets[i].as_str())
                .collect::<Vec<_>>()
        })
        .filter(|acks| {
            acks.len() >= needed
                && acks
                    .iter()
                    .filter(|a| set.counted.iter().any(|c| c == *a))
                    .count()
                    >= required
        })
        .collect()
}

/// A new owner has just filled a partition. Members that heard count it, members that
/// have not still count the stand-in; while the news settles, a quorum write in either
/// view and a quorum read in the other share a replica.
#[test]
fn while_a_fill_settles_quorums_in_the_old_and_new_views_meet() {
    let before = Placement::compute(["n1", "n2", "n3"], 16, 3);
    let after = Placement::compute(["n1", "n2", "n3", "n4"], 16, 3);
    let moved: Vec<PartitionId> = (0..16).filter(|&p| after.holds("n4", p)).collect();
    assert!(!moved.is_empty());
    for p in moved {
        let unheard = after.replica_set(p, |n| before.holds(n, p));
        let heard =
            after.replica_set_settling(p, |n| n == "n4" || before.holds(n, p), |n| n == "n4");
        let settled = after.replica_set(p, |n| n == "n4" || before.holds(n, p));
        let stand_in = unheard.counted.iter().find(|c| !after.holds(c, p)).unwrap();
        assert!(heard.counted.iter().any(|c| c == "n4"));
        assert!(!heard.counted.contains(stand_in));
        assert!(
            heard.targets.contains(stand_in),
            "the stand-in stays a target"
        );
        assert!(
            !settled.targets.contains(stand_in),
            "and not once the news settled"
        );
        for (writer, reader) in [(&unheard, &heard), (&heard, &unheard), (&heard, &heard)] {
            for acks in acknowledging(writer, 2) {
                for read in acknowledging(&ReplicaSet::settled(reader.counted.clone()), 2) {
                    assert!(
                        read.iter().any(|r| acks.contains(r)),
                        "partition {p}: write acknowledged by {acks:?}, read from {read:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn fill_news_settles_after_its_time_and_old_fills_are_no_news() {
    let mut news = FillNews::default();
    let mut filled = HashMap::from([("n1".to_string(), PartitionSet::all(4))]);
    news.observe(&filled, 0);
    // First heard: news, as a node just started cannot tell.
    assert!(news.settling("n1", 2, 0));
    news.observe(&filled, FILL_SETTLE_MS);
    assert!(!news.settling("n1", 2, FILL_SETTLE_MS));
    assert!(news.settling_sets(FILL_SETTLE_MS).is_empty());
    // A partition filled later is news; the ones held before are not.
    let mut more = PartitionSet::all(4);
    more.insert(7);
    filled.insert("n1".to_string(), more);
    filled.insert("n2".to_string(), PartitionSet::empty());
    news.observe(&filled, FILL_SETTLE_MS + 5);
    assert!(news.settling("n1", 7, FILL_SETTLE_MS + 5));
    assert!(!news.settling("n1", 2, FILL_SETTLE_MS + 5));
    let sets = news.settling_sets(FILL_SETTLE_MS + 5);
    assert_eq!(sets.len(), 1);
    assert_eq!(sets["n1"].iter().collect::<Vec<_>>(), [7]);
    // A member that lost its data and fills again is news again.
    filled.insert("n1".to_string(), PartitionSet::empty());
    news.observe(&filled, 2 * FILL_SETTLE_MS);
    assert!(!news.settling("n1", 7, 2 * FILL_SETTLE_MS));
    filled.insert("n1".to_string(), PartitionSet::all(1));
    news.observe(&filled, 2 * FILL_SETTLE_MS + 1);
    assert!(news.settling("n1", 0, 2 * FILL_SETTLE_MS + 1));
}
