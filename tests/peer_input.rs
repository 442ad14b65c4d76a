//! What another node sends in anti-entropy is checked where it arrives: malformed steps
//! over the wire, with a node certificate, are refused with an error that names the
//! problem and the limit, nothing of them is applied, and the node keeps serving.

mod support;

use support::{TestCerts, entries, load, start_node};
use vergent::antientropy::messages::{
    ListItem, NodeRef, RangeList, RootSummary, SyncRequest, SyncResponse,
};
use vergent::client::{Client, ClientError};
use vergent::protocol::{ErrorCode, Request, Response};
use vergent::record::{Entry, NodeId, Payload, Record, Version};

/// A tree node as a peer may put it on the wire: any level and index.
fn raw_node(level: u8, index: u16) -> NodeRef {
    postcard::from_bytes(&postcard::to_allocvec(&(level, index)).unwrap()).unwrap()
}

fn entry(key: &[u8], value: Vec<u8>) -> Entry {
    Entry {
        key: key.to_vec(),
        record: Record {
            version: Version {
                hlc: vergent::hlc::Timestamp::new(vergent::wallclock::system_wall_ms(), 0),
                node: NodeId::from_name("n-probe"),
            },
            payload: Payload::Value(value),
            expires_ms: None,
        },
    }
}

/// Sends `request` and expects it refused with `code` and a message containing `says`.
async fn refused(peer: &Client, request: SyncRequest, code: ErrorCode, says: &str) {
    match peer.request(&Request::Sync(request.clone())).await {
        Err(ClientError::Server(reply)) => {
            assert_eq!(reply.code, code, "{request:?}: {}", reply.message);
            assert!(
                reply.message.contains(says),
                "{request:?}: {:?} does not say {says:?}",
                reply.message
            );
        }
        other => panic!("{request:?} was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sync_steps_from_a_node_are_refused_by_name_and_the_node_keeps_serving() {
    let certs = TestCerts::new(&["n1"]).with_probe();
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |config| {
        // One partition, so one compare range can cover every entry the node holds.
        config.partitions = Some(1);
        config.value_bytes_max = 1024;
        config.anti_entropy_interval = None;
    })
    .await;
    let addr = node.local_addr();
    // More entries than one compare may read.
    load(&certs, addr, &entries("bulk", 0..16_500, 1_000_000, "v")).await;
    let peer = Client::connect(&addr.to_string(), &certs.material("n-probe"))
        .await
        .unwrap();
    let children = |nodes: Vec<NodeRef>| SyncRequest::Children {
        partition: 0,
        salt: 1,
        nodes,
    };
    let bad = ErrorCode::BadRequest;
    let limit = ErrorCode::LimitExceeded;

    // Tree nodes the tree does not have: past a level's width, past the leaves.
    for (level, index) in [(1, 16), (2, 256), (2, 300), (4, 0), (200, 1)] {
        let says = format!("tree node (level {level}, index {index}) does not exist");
        refused(&peer, children(vec![raw_node(level, index)]), bad, &says).await;
        let pull = SyncRequest::Pull {
            partition: 0,
            node: raw_node(level, index),
            after: None,
            purge_horizon_ms: 0,
        };
        refused(&peer, pull, bad, &says).await;
        let compare = SyncRequest::Compare {
            partition: 0,
            purge_horizon_ms: 0,
            dry_run: true,
            ranges: vec![RangeList {
                node: raw_node(level, index),
                entries: Vec::new(),
            }],
        };
        refused(&peer, compare, bad, &says).await;
    }
    refused(
        &peer,
        children(vec![raw_node(3, 1)]),
        bad,
        "is a leaf: it has no children",
    )
    .await;
    refused(
        &peer,
        SyncRequest::Children {
            partition: 7,
            salt: 1,
            nodes: vec![NodeRef::ROOT],
        },
        bad,
        "partition 7 does not exist (the cluster has 1 partitions)",
    )
    .await;

    // Requests past their bounds, each naming its limit.
    refused(
        &peer,
        children(vec![NodeRef::ROOT; 300]),
        limit,
        "nodes in one children request is 300, the limit is 256",
    )
    .await;
    let roots = (0..300)
        .map(|partition| RootSummary {
            partition,
            fp: 0,
            count: 0,
        })
        .collect();
    refused(
        &peer,
        SyncRequest::Roots { salt: 1, roots },
        limit,
        "partitions in one roots request is 300, the limit is 256",
    )
    .await;
    let item = ListItem {
        position: 1,
        version: Version::default(),
        dead_from_ms: None,
        typed: false,
    };
    let compare = |entries: Vec<ListItem>, dry_run| SyncRequest::Compare {
        partition: 0,
        purge_horizon_ms: 0,
        dry_run,
        ranges: vec![RangeList {
            node: NodeRef::ROOT,
            entries,
        }],
    };
    refused(
        &peer,
        compare(vec![item; 5000], true),
        limit,
        "list items in one compare request is 5000, the limit is 4096",
    )
    .await;
    // A range over the whole partition: the node reads no more than its limit.
    refused(
        &peer,
        compare(Vec::new(), false),
        limit,
        "the limit is 16384",
    )
    .await;

    // Entries pushed must obey the limits of every write.
    let push = |entries| SyncRequest::Push {
        partition: 0,
        entries,
    };
    refused(
        &peer,
        push(vec![entry(b"", b"v".to_vec())]),
        limit,
        "empty key",
    )
    .await;
    refused(
        &peer,
        push(vec![entry(&[b'k'; 481], b"v".to_vec())]),
        limit,
        "key too long: 481 bytes, the limit is 480 bytes",
    )
    .await;
    refused(
        &peer,
        push(vec![
            entry(b"fine", b"v".to_vec()),
            entry(b"big", vec![0; 1025]),
        ]),
        limit,
        "value too large: 1025 bytes, the limit is 1024 bytes",
    )
    .await;
    refused(
        &peer,
        SyncRequest::Push {
            partition: 3,
            entries: vec![entry(b"fine", b"v".to_vec())],
        },
        bad,
        "partition 3 does not exist",
    )
    .await;

    // Nothing of the refused pushes was applied, and the tree still matches the data.
    assert!(node.store().get(b"fine").unwrap().is_none());
    let (held, _) = node
        .store()
        .entries_in(0, 0..4096, None, usize::MAX)
        .unwrap();
    assert!(held.iter().all(|e| !e.key.is_empty() && e.key.len() <= 480));
    assert!(node.store().verify_tree(0).unwrap());

    // The same peer's well-formed steps are still answered.
    match peer
        .request(&Request::Sync(SyncRequest::Children {
            partition: 0,
            salt: 1,
            nodes: vec![NodeRef::ROOT],
        }))
        .await
        .unwrap()
    {
        Response::Sync(SyncResponse::Children { nodes }) => assert_eq!(nodes[0].len(), 16),
        other => panic!("{other:?}"),
    }
    match peer
        .request(&Request::Sync(push(vec![entry(b"pushed", b"v".to_vec())])))
        .await
        .unwrap()
    {
        Response::Sync(SyncResponse::Pushed { applied }) => assert_eq!(applied, 1),
        other => panic!("{other:?}"),
    }
    peer.close().await;

    // And the node keeps serving its clients.
    let client = certs.client(addr).await;
    client.put(b"after", b"yes", None).await.unwrap();
    assert_eq!(client.get(b"after", None).await.unwrap().unwrap().0, b"yes");
    assert_eq!(client.get(b"pushed", None).await.unwrap().unwrap().0, b"v");
    client.close().await;
    node.shutdown().await;
}
