//! The laws every type keeps, by property: merge is commutative, associative and
//! idempotent, and whatever order and duplication states are delivered in, replicas end
//! with the same state and the same bytes. And what each type means: a counter sums,
//! an add wins over a concurrent remove, concurrent writes stay as siblings until a
//! write with their context resolves them.

use proptest::prelude::*;

use super::*;

/// An update some replica makes to its own state.
#[derive(Debug, Clone)]
enum Op {
    Incr(i64),
    Add(u8),
    Remove(u8),
    Put(u8, bool),
    /// The replica merges another's state.
    Merge(usize),
}

fn op() -> impl Strategy<Value = (usize, Op)> {
    let op = prop_oneof![
        (-1000i64..1000).prop_map(Op::Incr),
        (0u8..6).prop_map(Op::Add),
        (0u8..6).prop_map(Op::Remove),
        (0u8..6, any::<bool>()).prop_map(|(v, ctx)| Op::Put(v, ctx)),
        (0usize..3).prop_map(Op::Merge),
    ];
    (0usize..3, op)
}

/// Three replicas of each type after `ops`, and every state they passed through.
fn histories(ops: &[(usize, Op)]) -> [Vec<State>; 3] {
    let mut counters = vec![Counter::default(); 3];
    let mut sets = vec![Set::default(); 3];
    let mut registers = vec![Siblings::default(); 3];
    let mut seen: [Vec<State>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (replica, op) in ops {
        let r = *replica;
        let actor = r as Actor + 1;
        match op {
            Op::Incr(n) => {
                let _ = counters[r].add(actor, *n);
            }
            Op::Add(m) => {
                let _ = sets[r].add(actor, &[*m], 0);
            }
            Op::Remove(m) => {
                sets[r].remove(&[*m]);
            }
            Op::Put(v, with_context) => {
                let context = if *with_context {
                    registers[r].context()
                } else {
                    Context::default()
                };
                let _ = registers[r].put(actor, Some(vec![*v]), &context, 0);
            }
            Op::Merge(from) => {
                let (c, s, g) = (
                    counters[*from].clone(),
                    sets[*from].clone(),
                    registers[*from].clone(),
                );
                counters[r].merge(&c);
                sets[r].merge(&s);
                registers[r].merge(&g);
            }
        }
        seen[0].push(State::Counter(counters[r].clone()));
        seen[1].push(State::Set(sets[r].clone()));
        seen[2].push(State::Siblings(registers[r].clone()));
    }
    seen
}

fn merged(a: &State, b: &State) -> State {
    let mut m = a.clone();
    m.merge(b);
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        ops in proptest::collection::vec(op(), 1..40),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 3),
    ) {
        for states in histories(&ops) {
            let a = &states[picks[0].index(states.len())];
            let b = &states[picks[1].index(states.len())];
            let c = &states[picks[2].index(states.len())];
            prop_assert_eq!(merged(a, b).encode(), merged(b, a).encode());
            prop_assert_eq!(
                merged(&merged(a, b), c).encode(),
                merged(a, &merged(b, c)).encode()
            );
            prop_assert_eq!(merged(a, a).encode(), a.encode());
        }
    }

    #[test]
    fn any_order_and_duplication_of_deliveries_gives_the_same_state(
        ops in proptest::collection::vec(op(), 1..40),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
    ) {
        for states in histories(&ops) {
            // Every state once, in order; and a shuffled, duplicated delivery of the
            // same states (each at least once).
            let mut once = states[0].clone();
            for s in &states[1..] {
                once.merge(s);
            }
            let mut delivered: Vec<&State> = order.iter().map(|i| &states[i.index(states.len())]).collect();
            delivered.extend(states.iter());
            let mut any = delivered[0].clone();
            for s in &delivered[1..] {
                any.merge(s);
            }
            prop_assert_eq!(once.encode(), any.encode());
            prop_assert_eq!(State::decode(&once.encode()).unwrap(), once);
        }
    }

    /// As records, with the times and expiries replicas stamp them with (equal states
    /// may come at different times, an update that changed nothing still stamps one):
    /// whatever the order and duplication, one record, one Merkle leaf digest.
    #[test]
    fn any_order_and_duplication_of_typed_records_gives_the_same_record_and_digest(
        ops in proptest::collection::vec(op(), 1..30),
        stamps in proptest::collection::vec((0u64..8, proptest::option::of(0u64..4)), 60),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
    ) {
        use crate::hlc::Timestamp;
        use crate::record::{Merged, Record};
        for states in histories(&ops) {
            let records: Vec<Record> = states
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let (hlc, expires) = stamps[i % stamps.len()];
                    Record::typed(s.clone(), Timestamp::from_u64(hlc), expires.map(|e| 1_000 + e))
                })
                .collect();
            let fold = |delivered: &[&Record]| {
                let mut held = delivered[0].clone();
                for r in &delivered[1..] {
                    if let Merged::Changed(next) = held.merge(r) {
                        held = next;
                    }
                }
                held
            };
            let in_order: Vec<&Record> = records.iter().collect();
            let mut shuffled: Vec<&Record> =
                order.iter().map(|i| &records[i.index(records.len())]).collect();
            shuffled.extend(records.iter().rev());
            let (a, b) = (fold(&in_order), fold(&shuffled));
            prop_assert_eq!(&a, &b);
            let key = [9u8; 32];
            prop_assert_eq!(
                crate::tree::entry_hash(&key, b"k", &a),
                crate::tree::entry_hash(&key, b"k", &b)
            );
        }
    }

    #[test]
    fn a_counter_sums_every_increment_of_every_replica(
        incs in proptest::collection::vec((0usize..3, -1000i64..1000), 0..50),
    ) {
        let mut replicas = vec![Counter::default(); 3];
        for (r, n) in &incs {
            replicas[*r].add(*r as Actor + 1, *n).unwrap();
        }
        let mut all = Counter::default();
        for r in &replicas {
            all.merge(r);
        }
        prop_assert_eq!(all.value(), incs.iter().map(|(_, n)| i128::from(*n)).sum::<i128>());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = State::decode(&bytes);
        let _ = Context::from_token(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn an_add_wins_over_a_concurrent_remove_and_a_remove_of_what_was_seen_holds() {
    let (mut a, mut b) = (Set::default(), Set::default());
    a.add(1, b"x", 0).unwrap();
    b.merge(&a);
    // Concurrently: b removes x, a adds it again.
    b.remove(b"x");
    a.add(1, b"x", 0).unwrap();
    let mut ab = a.clone();
    ab.merge(&b);
    assert_eq!(ab.members().collect::<Vec<_>>(), vec![b"x".as_slice()]);
    // A remove after seeing every add holds everywhere.
    let mut c = ab.clone();
    c.remove(b"x");
    let mut back = ab.clone();
    back.merge(&c);
    assert!(back.is_empty());
    assert!(back.members().next().is_none());
}

#[test]
fn concurrent_writes_stay_siblings_until_a_write_with_their_context() {
    let (mut a, mut b) = (Siblings::default(), Siblings::default());
    a.put(1, Some(b"left".to_vec()), &Context::default(), 0)
        .unwrap();
    b.put(2, Some(b"right".to_vec()), &Context::default(), 0)
        .unwrap();
    let mut both = a.clone();
    both.merge(&b);
    assert_eq!(both.len(), 2, "both concurrent writes are visible");
    // A write with what the read saw replaces both.
    let context = Context::from_token(&both.context().token()).unwrap();
    let mut resolved = both.clone();
    resolved
        .put(1, Some(b"merged".to_vec()), &context, 0)
        .unwrap();
    assert_eq!(
        resolved.values().collect::<Vec<_>>(),
        vec![b"merged".as_slice()]
    );
    // Everywhere: b learns of it and keeps only the resolution.
    b.merge(&resolved);
    assert_eq!(b.values().collect::<Vec<_>>(), vec![b"merged".as_slice()]);
    // A write that saw nothing joins as a sibling.
    let mut c = resolved.clone();
    c.put(3, Some(b"blind".to_vec()), &Context::default(), 0)
        .unwrap();
    assert_eq!(c.len(), 2);
}

#[test]
fn limits_say_what_and_how_much() {
    let mut counter = Counter::default();
    counter.add(1, i64::MAX).unwrap();
    let err = counter.add(2, 1).unwrap_err();
    assert!(err.to_string().contains("counter overflow"), "{err}");
    let mut set = Set::default();
    let err = set
        .add(1, &vec![0; SET_MEMBER_BYTES_MAX + 1], 0)
        .unwrap_err();
    assert!(err.to_string().contains("the limit is 1024"), "{err}");
    let mut register = Siblings::default();
    for i in 0..SIBLINGS_MAX {
        register
            .put(i as Actor, Some(vec![1]), &Context::default(), 0)
            .unwrap();
    }
    let err = register
        .put(99, Some(vec![1]), &Context::default(), 0)
        .unwrap_err();
    assert!(err.to_string().contains("the limit is 64"), "{err}");
    assert!(Context::from_token("nonsense").is_err());
}
