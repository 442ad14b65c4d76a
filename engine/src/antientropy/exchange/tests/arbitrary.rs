//! Whatever a peer sends (any request, any answer) is answered, taken or refused
//! within the limits, never a panic.

use proptest::prelude::*;

use super::*;

/// A request as a peer may send it: any partition, node, count and resume point.
fn any_request() -> impl Strategy<Value = SyncRequest> {
    let node = (0u8..6, any::<u16>()).prop_map(|(level, index)| {
        raw_node(level, if index % 3 == 0 { index } else { index % 300 })
    });
    let item =
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(position, hlc, tombstone)| {
            ListItem {
                position,
                version: Version {
                    hlc: Timestamp::from_u64(hlc),
                    node: NodeId(1),
                },
                dead_from_ms: tombstone.then(|| Timestamp::from_u64(hlc).wall_ms()),
                typed: false,
            }
        });
    let range = (node.clone(), proptest::collection::vec(item, 0..40))
        .prop_map(|(node, entries)| RangeList { node, entries });
    let root = (0u16..12, any::<u64>(), 0u64..100).prop_map(|(partition, fp, count)| RootSummary {
        partition,
        fp,
        count,
    });
    prop_oneof![
        (any::<u64>(), proptest::collection::vec(root, 0..12))
            .prop_map(|(salt, roots)| SyncRequest::Roots { salt, roots }),
        (
            0u16..10,
            any::<u64>(),
            proptest::collection::vec(node.clone(), 0..300)
        )
            .prop_map(|(partition, salt, nodes)| SyncRequest::Children {
                partition,
                salt,
                nodes
            }),
        (
            0u16..10,
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(range, 0..6)
        )
            .prop_map(|(partition, purge_horizon_ms, dry_run, ranges)| {
                SyncRequest::Compare {
                    partition,
                    purge_horizon_ms,
                    dry_run,
                    ranges,
                }
            }),
        (
            0u16..10,
            node,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..600)),
            any::<u64>()
        )
            .prop_map(
                |(partition, node, after, purge_horizon_ms)| SyncRequest::Pull {
                    partition,
                    node,
                    after,
                    purge_horizon_ms,
                }
            ),
    ]
}

/// A store with small and value-limit-sized entries in every partition, some of them
/// tombstones, and a few keys piled into one leaf.
fn populated(dir: &std::path::Path, value_bytes_max: usize) -> Store {
    let b = store(dir, 8);
    let mut entries: Vec<Entry> = (0..600)
        .map(|i| entry(&format!("k{i}"), 10 + i, i % 7 == 0))
        .collect();
    entries.extend((0..40).map(|i| Entry {
        key: vec![b'v'; 1 + (i * 11) % crate::limits::KEY_BYTES_MAX],
        record: Record {
            version: Version {
                hlc: Timestamp::from_u64(99),
                node: NodeId(2),
            },
            payload: Payload::Value(vec![7; value_bytes_max]),
            expires_ms: None,
        },
    }));
    b.apply_now(&entries).unwrap();
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a peer asks, the responder answers or refuses, never panics, and every
    /// answer fits in the node's frame limit.
    #[test]
    fn any_request_is_answered_within_the_frame_limit_or_refused(
        requests in proptest::collection::vec(any_request(), 1..8),
        value_bytes_max in prop_oneof![Just(1usize << 10), Just(20 << 10), Just(1 << 20)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let b = populated(dir.path(), value_bytes_max);
        let limits = SyncLimits { value_bytes_max };
        for request in &requests {
            if let Ok(response) = respond(&b, request, &limits) {
                let frame = crate::protocol::frame::encode(
                    &crate::protocol::Response::Sync(response),
                    usize::MAX,
                )
                .unwrap();
                prop_assert!(
                    frame.len() <= crate::limits::frame_bytes_max(value_bytes_max),
                    "{} bytes for {:?}", frame.len(), request
                );
            }
        }
    }

    /// Whatever a co-replica answers, the requester never panics, and what it hands
    /// over to be applied obeys the limits and lies in the partition.
    #[test]
    fn any_answer_is_taken_or_refused_and_only_checked_entries_are_applied(
        answers in proptest::collection::vec(any_answer(), 1..6),
        salt: u64,
    ) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = store(da.path(), 8);
        a.apply_now(&(0..50).map(|i| entry(&format!("k{i}"), 5, false)).collect::<Vec<_>>()).unwrap();
        let b = populated(db.path(), 1 << 10);
        let limits = SyncLimits { value_bytes_max: 1 << 10 };
        let roots = (0..8).map(|p| root_summary(&a, p, salt).unwrap()).collect();
        let Ok(SyncResponse::Roots { differing }) = respond(&b, &SyncRequest::Roots { salt, roots }, &limits) else {
            panic!("roots");
        };
        for root in &differing {
            let mut exchange = Exchange::new(&a, root, salt, 0, false, limits).unwrap();
            for answer in &answers {
                if exchange.poll_request(&a).is_none() {
                    break;
                }
                exchange.handle_response(&a, answer.clone());
                while let Some(entries) = exchange.poll_apply() {
                    prop_assert!(check_entries(&entries, &limits).is_ok());
                    for e in &entries {
                        prop_assert_eq!(tree::locate(&e.key, 8).partition, root.partition);
                    }
                }
            }
        }
    }
}

/// An answer as a co-replica may send it.
fn any_answer() -> impl Strategy<Value = SyncResponse> {
    let key = prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 1..8),
        Just(vec![b'k'; 481]),
    ];
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..8),
        Just(vec![0u8; 1025]),
    ];
    let entry = (key, any::<u64>(), value).prop_map(|(key, hlc, value)| Entry {
        key,
        record: Record {
            version: Version {
                hlc: Timestamp::from_u64(hlc),
                node: NodeId(3),
            },
            payload: Payload::Value(value),
            expires_ms: None,
        },
    });
    let summary = (any::<u32>(), any::<u64>()).prop_map(|(fp, count)| NodeSummary { fp, count });
    let entries = proptest::collection::vec(entry, 0..6);
    prop_oneof![
        proptest::collection::vec(proptest::collection::vec(summary, 0..20), 0..20)
            .prop_map(|nodes| SyncResponse::Children { nodes }),
        (
            entries.clone(),
            any::<u64>(),
            proptest::collection::vec(any::<u64>(), 0..20),
            any::<u64>()
        )
            .prop_map(
                |(send, send_count, want, pending_purge)| SyncResponse::Compared {
                    send,
                    send_count,
                    want,
                    pending_purge,
                }
            ),
        (
            entries,
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..600))
        )
            .prop_map(|(entries, pending_purge, next)| SyncResponse::Entries {
                entries,
                pending_purge,
                next,
            }),
        any::<u32>().prop_map(|applied| SyncResponse::Pushed { applied }),
        Just(SyncResponse::Roots {
            differing: Vec::new()
        }),
    ]
}

#[test]
fn an_entry_takes_at_most_32_bytes_beside_its_key_and_value_on_the_wire() {
    // The bound the answer budgets in `messages` are built on.
    for value in [0usize, 1, 127, 128, 1 << 20] {
        let entry = Entry {
            key: vec![b'k'; crate::limits::KEY_BYTES_MAX],
            record: Record {
                version: Version {
                    hlc: Timestamp::from_u64(u64::MAX),
                    node: NodeId(u64::MAX),
                },
                payload: Payload::Value(vec![0; value]),
                expires_ms: None,
            },
        };
        let size = postcard::experimental::serialized_size(&entry).unwrap();
        assert!(size <= crate::limits::KEY_BYTES_MAX + value + 32, "{size}");
    }
}
