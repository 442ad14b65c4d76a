//! The acceptor's state in storage: promises and accepts decided in their write
//! transaction, copies below a promise refused, the purge floor, old promises dropped.

use super::*;
use crate::paxos::{AcceptReply, PrepareReply};
use crate::record::{Payload, Record};

const CLUSTER: ClusterSettings = ClusterSettings {
    cluster_id: [7; 16],
    partitions: 16,
    replication_factor: 3,
    tree_key: [9; 32],
};

fn open(dir: &Path) -> Store {
    let store = Store::open(dir, StoreOptions::new("n1")).unwrap();
    store.set_cluster(CLUSTER).unwrap();
    store
}

fn ballot(wall_ms: u64, node: u64) -> Version {
    Version {
        hlc: Timestamp::new(wall_ms, 0),
        node: NodeId(node),
    }
}

fn record(at: Version, payload: Payload) -> Record {
    Record {
        version: at,
        payload,
        expires_ms: None,
    }
}

#[test]
fn a_promise_survives_a_restart_and_refuses_copies_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = b"lock";
    assert!(matches!(
        store.prepare_now(key, ballot(100, 1)).unwrap(),
        PrepareReply::Promised { accepted: None, .. }
    ));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.promise(key).unwrap(), Some(ballot(100, 1)));
    // A lower prepare is refused with the promise; so is a copy of a record below it
    // (a late accept, or anti-entropy), which leaves the key untouched.
    assert_eq!(
        store.prepare_now(key, ballot(90, 2)).unwrap(),
        PrepareReply::Rejected {
            seen: ballot(100, 1)
        }
    );
    let copy = Entry {
        key: key.to_vec(),
        record: record(ballot(95, 2), Payload::Value(b"old".to_vec())),
    };
    let outcomes = store.apply_now(&[copy]).unwrap();
    assert!(!outcomes[0].applied());
    assert_eq!(store.get(key).unwrap(), None);
    // The promised ballot's accept is taken, with its next ballot promised.
    let accepted = record(ballot(100, 1), Payload::Value(b"v".to_vec()));
    assert_eq!(
        store
            .accept_now(key, accepted.clone(), Some(ballot(101, 1)))
            .unwrap(),
        AcceptReply::Accepted
    );
    assert_eq!(store.get(key).unwrap(), Some(accepted));
    assert_eq!(store.promise(key).unwrap(), Some(ballot(101, 1)));
    // Old promises are dropped; the accepted value stays.
    assert_eq!(store.drop_promises_now(Timestamp::new(200, 0)).unwrap(), 1);
    assert_eq!(store.promise(key).unwrap(), None);
    assert!(store.get(key).unwrap().is_some());
}

#[test]
fn a_purged_tombstone_leaves_a_floor_no_ballot_below_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = b"gone";
    let tombstone = record(ballot(500, 1), Payload::Tombstone);
    assert!(matches!(
        store.prepare_now(key, ballot(500, 1)).unwrap(),
        PrepareReply::Promised { .. }
    ));
    assert_eq!(
        store.accept_now(key, tombstone, None).unwrap(),
        AcceptReply::Accepted
    );
    assert_eq!(
        store
            .purge_now(vec![(key.to_vec(), ballot(500, 1))])
            .unwrap(),
        1
    );
    assert_eq!(store.get(key).unwrap(), None);
    // Nothing is held for the key, yet a proposal below the delete is refused, so a
    // replica that still holds the tombstone can never overwrite a write it took.
    assert_eq!(
        store.prepare_now(key, ballot(400, 2)).unwrap(),
        PrepareReply::Rejected {
            seen: ballot(500, 1)
        }
    );
    assert!(matches!(
        store
            .accept_now(
                key,
                record(ballot(450, 2), Payload::Value(b"x".to_vec())),
                None
            )
            .unwrap(),
        AcceptReply::Rejected { .. }
    ));
    assert!(matches!(
        store.prepare_now(key, ballot(600, 2)).unwrap(),
        PrepareReply::Promised { accepted: None, .. }
    ));
}

#[test]
fn a_sweep_refuses_every_ballot_below_it_from_then_on_and_lets_copies_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = b"lock";
    store.prepare_now(key, ballot(100, 1)).unwrap();
    assert!(store.holds_promises().unwrap());
    assert_eq!(store.drop_promises_now(Timestamp::new(150, 0)).unwrap(), 1);
    assert!(!store.holds_promises().unwrap());
    // The promise is gone, and nothing below the sweep can get around it: not after
    // a restart either (a clock set back would judge ages wrongly).
    drop(store);
    let store = open(dir.path());
    let below = ballot(149, 9);
    assert!(matches!(
        store.prepare_now(key, below).unwrap(),
        PrepareReply::Rejected { .. }
    ));
    assert!(matches!(
        store
            .accept_now(
                key,
                record(ballot(120, 2), Payload::Value(b"late".to_vec())),
                None
            )
            .unwrap(),
        AcceptReply::Rejected { .. }
    ));
    // A sweep at an earlier time (a clock set back) lowers nothing.
    store.drop_promises_now(Timestamp::new(10, 0)).unwrap();
    assert!(matches!(
        store.prepare_now(key, ballot(140, 3)).unwrap(),
        PrepareReply::Rejected { .. }
    ));
    // Repair still converges: a copy below the sweep, with no promise standing, lands.
    let copy = Entry {
        key: key.to_vec(),
        record: record(ballot(120, 2), Payload::Value(b"copied".to_vec())),
    };
    assert!(store.apply_now(&[copy]).unwrap()[0].applied());
    assert!(matches!(
        store.prepare_now(key, ballot(150, 1)).unwrap(),
        PrepareReply::Promised { .. }
    ));
}
