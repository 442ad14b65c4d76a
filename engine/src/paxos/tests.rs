use super::*;
use crate::hlc::Timestamp;
use crate::record::NodeId;

fn ballot(ms: u64, node: u64) -> Ballot {
    Version {
        hlc: Timestamp::new(ms, 0),
        node: NodeId(node),
    }
}

fn record(at: Ballot, value: &[u8]) -> Record {
    Record {
        version: at,
        payload: Payload::Value(value.to_vec()),
        expires_ms: None,
    }
}

#[test]
fn a_prepare_is_promised_only_above_every_ballot_known() {
    let mut acceptor = Acceptor::default();
    let first = acceptor.prepare(ballot(10, 1));
    assert_eq!(first.promise, Some(ballot(10, 1)));
    assert!(matches!(
        first.reply,
        PrepareReply::Promised {
            accepted: None,
            quiet: true
        }
    ));
    acceptor.promised = first.promise;
    // The same ballot again, or a lower one, is refused with the one promised.
    for b in [ballot(10, 1), ballot(9, 7), ballot(10, 0)] {
        assert_eq!(
            acceptor.prepare(b).reply,
            PrepareReply::Rejected {
                seen: ballot(10, 1)
            }
        );
    }
    // A higher one is promised, and told a proposal was in flight here.
    let second = acceptor.prepare(ballot(10, 2));
    assert_eq!(second.promise, Some(ballot(10, 2)));
    assert!(matches!(
        second.reply,
        PrepareReply::Promised { quiet: false, .. }
    ));
}

#[test]
fn an_accept_needs_the_promise_and_a_ballot_above_the_accepted_one() {
    let acceptor = Acceptor {
        promised: Some(ballot(20, 1)),
        accepted: Some(record(ballot(15, 3), b"old")),
        floor: None,
    };
    // Below the promise: refused.
    let low = acceptor.accept(record(ballot(19, 9), b"x"), None);
    assert_eq!(
        low.reply,
        AcceptReply::Rejected {
            seen: ballot(20, 1)
        }
    );
    assert_eq!(low.accept, None);
    // At the promise: accepted, and the record stored.
    let at = acceptor.accept(record(ballot(20, 1), b"new"), None);
    assert_eq!(at.reply, AcceptReply::Accepted);
    assert_eq!(at.accept, Some(record(ballot(20, 1), b"new")));
    // A duplicate of what was accepted changes nothing.
    let accepted = Acceptor {
        promised: None,
        accepted: Some(record(ballot(20, 1), b"new")),
        floor: None,
    };
    let again = accepted.accept(record(ballot(20, 1), b"new"), None);
    assert_eq!((again.reply, again.accept), (AcceptReply::Accepted, None));
    // Without a promise (a proposer that skipped prepare) the accepted ballot bounds it.
    let stale = accepted.accept(record(ballot(18, 4), b"stale"), None);
    assert!(matches!(stale.reply, AcceptReply::Rejected { .. }));
}

#[test]
fn an_accept_may_carry_the_promise_of_the_proposers_next_ballot() {
    let acceptor = Acceptor {
        promised: Some(ballot(20, 1)),
        accepted: None,
        floor: None,
    };
    let decision = acceptor.accept(record(ballot(20, 1), b"v"), Some(ballot(21, 1)));
    assert_eq!(decision.reply, AcceptReply::Accepted);
    assert_eq!(decision.promise, Some(ballot(21, 1)));
    // Held: a ballot between the two is refused a promise, the next one is accepted
    // without a prepare.
    let held = Acceptor {
        promised: decision.promise,
        accepted: decision.accept,
        floor: None,
    };
    assert!(matches!(
        held.prepare(ballot(20, 9)).reply,
        PrepareReply::Rejected { .. }
    ));
    assert_eq!(
        held.accept(record(ballot(21, 1), b"w"), None).reply,
        AcceptReply::Accepted
    );
    // A refused accept promises nothing.
    let refused = held.accept(record(ballot(19, 3), b"x"), Some(ballot(30, 3)));
    assert_eq!(refused.promise, None);
}

#[test]
fn a_purged_tombstone_floor_refuses_older_ballots_on_an_empty_key() {
    let acceptor = Acceptor {
        promised: None,
        accepted: None,
        floor: Some(ballot(50, 2)),
    };
    assert_eq!(
        acceptor.prepare(ballot(40, 1)).reply,
        PrepareReply::Rejected {
            seen: ballot(50, 2)
        }
    );
    assert!(matches!(
        acceptor.accept(record(ballot(40, 1), b"v"), None).reply,
        AcceptReply::Rejected { .. }
    ));
    assert!(acceptor.prepare(ballot(51, 1)).promise.is_some());
}

#[test]
fn the_current_value_is_the_highest_accepted_and_settled_only_when_all_agree() {
    let a = Some(record(ballot(5, 1), b"a"));
    let b = Some(record(ballot(7, 2), b"b"));
    let (value, settled) = current([(&a, true), (&b, true)]);
    assert_eq!(value.map(|r| r.version), Some(ballot(7, 2)));
    assert!(!settled, "two ballots: a write may be in flight");
    let (value, settled) = current([(&b, true), (&b, true)]);
    assert_eq!(value, b.as_ref());
    assert!(settled);
    let (_, settled) = current([(&b, true), (&b, false)]);
    assert!(!settled, "a promise stood above the accepted ballot");
    let none = None;
    let (value, settled) = current([(&none, true), (&none, true)]);
    assert_eq!((value, settled), (None, true));
}

#[test]
fn a_compare_and_set_swaps_only_on_a_match() {
    let held = record(ballot(1, 1), b"n1");
    let cas = |expect, value: &[u8]| LinOp::Cas {
        expect,
        value: Some(value.to_vec()),
    };
    assert_eq!(
        cas(Expect::Value(b"n1".to_vec()), b"n2").step(Some(&held)),
        Step::Write(Payload::Value(b"n2".to_vec()))
    );
    assert_eq!(
        cas(Expect::Value(b"n3".to_vec()), b"n2").step(Some(&held)),
        Step::Keep
    );
    assert_eq!(cas(Expect::Absent, b"n2").step(Some(&held)), Step::Keep);
    assert_eq!(
        cas(Expect::Absent, b"n2").step(None),
        Step::Write(Payload::Value(b"n2".to_vec()))
    );
    let tombstone = Record {
        version: ballot(2, 1),
        payload: Payload::Tombstone,
        expires_ms: None,
    };
    assert_eq!(
        cas(Expect::Absent, b"n2").step(Some(&tombstone)),
        Step::Write(Payload::Value(b"n2".to_vec()))
    );
}

#[test]
fn quorums_during_a_move_count_one_more_per_target_beyond_the_copies() {
    assert!(enough(2, 2, 3, 3));
    assert!(!enough(1, 1, 3, 3));
    // Four targets (a filling owner beside its stand-in): three answers, two counted.
    assert!(!enough(2, 2, 4, 3));
    assert!(enough(3, 2, 4, 3));
    assert!(!enough(3, 1, 4, 3));
}
