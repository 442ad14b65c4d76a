//! Mutual TLS, certificate roles and hostile input against an in-process node over
//! real QUIC on loopback. After every refusal the node must go on serving.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use support::{TestCerts, start_node};
use vergent::certs::{self, Authority, LeafSpec};
use vergent::client::{Client, ClientError};
use vergent::hlc::Timestamp;
use vergent::net::TlsMaterial;
use vergent::node::Node;
use vergent::protocol::frame;
use vergent::protocol::{ALPN, ErrorCode, PROTOCOL_VERSION, Request, Response, Role};
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent::wallclock::system_wall_ms;

async fn still_serving(certs: &TestCerts, node: &Node) {
    let client = certs.client(node.local_addr()).await;
    let version = client
        .put(b"alive", b"yes", None)
        .await
        .expect("node keeps serving");
    assert_eq!(version.origin.as_deref(), Some("n1"));
    let (value, _) = client.get(b"alive", None).await.unwrap().unwrap();
    assert_eq!(value, b"yes");
    client.close().await;
}

fn connect_error(result: Result<Client, ClientError>) -> String {
    match result {
        Ok(_) => panic!("the connection must be refused"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;

    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(certs.path().join("ca.crt")).unwrap()
    {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = vergent::net::provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    // TLS 1.3 lets the client finish its side first, so the refusal shows up on the
    // first stream rather than in connect.
    let connection = endpoint
        .connect(node.local_addr(), "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        let hello = frame::encode(
            &Request::Hello {
                protocol_version: PROTOCOL_VERSION,
            },
            1024,
        )
        .unwrap();
        send.write_all(&hello).await?;
        send.finish()?;
        frame::read_message::<Response, _>(&mut recv, 1 << 20).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap();
    assert!(
        outcome.is_err(),
        "a connection without a client certificate must fail"
    );
    let reason = vergent::client::describe_connection_error(&connection.closed().await);
    assert!(reason.contains("certificate required"), "{reason}");

    still_serving(&certs, &node).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;

    let stranger = Authority::create(30).unwrap();
    let foreign = stranger
        .issue(&LeafSpec::new("admin", Role::Admin, 30))
        .unwrap();
    let ca = std::fs::read_to_string(certs.path().join("ca.crt")).unwrap();
    let material = TlsMaterial::from_pem(&ca, &foreign.cert_pem, &foreign.key_pem).unwrap();
    let err = connect_error(Client::connect(&node.local_addr().to_string(), &material).await);
    assert!(err.contains("refused the TLS handshake"), "{err}");

    // A foreign node certificate is no better than a foreign client one.
    let mut spec = LeafSpec::new("n9", Role::Node, 30);
    spec.ips.push([127, 0, 0, 1].into());
    let foreign_node = stranger.issue(&spec).unwrap();
    let material =
        TlsMaterial::from_pem(&ca, &foreign_node.cert_pem, &foreign_node.key_pem).unwrap();
    let err = connect_error(Client::connect(&node.local_addr().to_string(), &material).await);
    assert!(err.contains("refused the TLS handshake"), "{err}");

    still_serving(&certs, &node).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;

    let mut spec = LeafSpec::new("old", Role::Admin, 30);
    let now = time::OffsetDateTime::now_utc();
    spec.not_before = now - time::Duration::days(30);
    spec.not_after = now - time::Duration::days(1);
    certs.issue(&spec);
    let err = connect_error(
        Client::connect(&node.local_addr().to_string(), &certs.material("old")).await,
    );
    assert!(
        err.contains("certificate expired") || err.contains("refused the TLS handshake"),
        "{err}"
    );

    still_serving(&certs, &node).await;
    node.shutdown().await;
}

fn entry(key: &[u8], value: &[u8]) -> Entry {
    Entry {
        key: key.to_vec(),
        record: Record {
            version: Version {
                hlc: Timestamp::new(system_wall_ms(), 0),
                node: NodeId::from_name("n2"),
            },
            payload: Payload::Value(value.to_vec()),
            expires_ms: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_node_certificate_may_send_internode_messages() {
    let certs = TestCerts::new(&["n1", "n2"]);
    certs.issue(&LeafSpec::new("app", Role::Client, 30));
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;
    let addr = node.local_addr().to_string();
    let replicate = Request::Replicate {
        entries: vec![entry(b"k", b"from-a-client")],
    };

    for user in ["app", certs::ADMIN_NAME] {
        let client = Client::connect(&addr, &certs.material(user)).await.unwrap();
        let err = client.request(&replicate).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
        assert!(
            err.to_string()
                .contains("replicate requires a node certificate"),
            "{err}"
        );
        // The same connection goes on working for what the role allows.
        client.put(b"k2", b"v", None).await.unwrap();
        client.close().await;
    }
    let admin = certs.client(node.local_addr()).await;
    assert_eq!(
        admin.get(b"k", None).await.unwrap(),
        None,
        "nothing was applied"
    );

    let peer = Client::connect(&addr, &certs.material("n2")).await.unwrap();
    let applied = peer.request(&replicate).await.unwrap();
    assert_eq!(applied, Response::Replicated { applied: 1 });
    let (value, version) = admin.get(b"k", None).await.unwrap().unwrap();
    assert_eq!(value, b"from-a-client");
    assert_eq!(version.version.node, NodeId::from_name("n2"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_too_far_ahead_is_refused() {
    let certs = TestCerts::new(&["n1", "n2"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;
    let peer = Client::connect(&node.local_addr().to_string(), &certs.material("n2"))
        .await
        .unwrap();
    let mut future = entry(b"k", b"from-the-future");
    future.record.version.hlc = Timestamp::new(system_wall_ms() + 60_000, 0);
    let err = peer
        .request(&Request::Replicate {
            entries: vec![future],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ClockOffset), "{err}");
    assert!(err.to_string().contains("the limit is 500 ms"), "{err}");
    still_serving(&certs, &node).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_node_keeps_serving() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |config| {
        config.value_bytes_max = 1024
    })
    .await;
    let client = certs.client(node.local_addr()).await;

    let err = client.put(&[b'k'; 600], b"v", None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "key too long: 600 bytes, the limit is 480 bytes"
    );
    let err = client.put(b"k", &[0; 1025], None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "value too large: 1025 bytes, the limit is 1024 bytes"
    );
    let err = client.put(b"", b"v", None).await.unwrap_err();
    assert_eq!(err.to_string(), "empty key: a key must be 1 to 480 bytes");
    let err = client.get(b"", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LimitExceeded));

    // Garbage bytes on a stream.
    let raw = client.connection();
    let (mut send, mut recv) = raw.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0xff])
        .await
        .unwrap();
    send.finish().unwrap();
    match frame::read_message::<Response, _>(&mut recv, 1 << 20)
        .await
        .unwrap()
    {
        Response::Error(reply) => {
            assert_eq!(reply.code, ErrorCode::BadRequest);
            assert!(reply.message.contains("malformed"), "{}", reply.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // A frame that announces 4 GiB: refused from the prefix alone.
    let (mut send, mut recv) = raw.open_bi().await.unwrap();
    send.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    match frame::read_message::<Response, _>(&mut recv, 1 << 20)
        .await
        .unwrap()
    {
        Response::Error(reply) => {
            assert_eq!(reply.code, ErrorCode::LimitExceeded);
            assert!(
                reply
                    .message
                    .contains("frame of 4294967295 bytes exceeds the limit of"),
                "{}",
                reply.message
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // A stream that ends in the middle of a frame.
    let (mut send, mut recv) = raw.open_bi().await.unwrap();
    send.write_all(&[0, 0, 1, 0, 1, 2]).await.unwrap();
    send.finish().unwrap();
    let reply = frame::read_message::<Response, _>(&mut recv, 1 << 20)
        .await
        .unwrap();
    assert!(
        matches!(reply, Response::Error(ref r) if r.code == ErrorCode::BadRequest),
        "{reply:?}"
    );

    // Garbage instead of hello closes that connection, and only that one.
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .set_default_client_config(vergent::net::client_config(&certs.material("admin")).unwrap());
    let rude = endpoint
        .connect(node.local_addr(), "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = rude.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    send.finish().unwrap();
    let reply = frame::read_message::<Response, _>(&mut recv, 1 << 20).await;
    assert!(matches!(reply, Ok(Response::Error(_))), "{reply:?}");
    let closed = tokio::time::timeout(Duration::from_secs(5), rude.closed())
        .await
        .unwrap();
    assert!(closed.to_string().contains("bad hello"), "{closed}");

    // A hello from another protocol version.
    let other = endpoint
        .connect(node.local_addr(), "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = other.open_bi().await.unwrap();
    let hello = frame::encode(
        &Request::Hello {
            protocol_version: 99,
        },
        1024,
    )
    .unwrap();
    send.write_all(&hello).await.unwrap();
    send.finish().unwrap();
    match frame::read_message::<Response, _>(&mut recv, 1 << 20)
        .await
        .unwrap()
    {
        Response::Error(reply) => {
            assert_eq!(reply.code, ErrorCode::VersionMismatch);
            assert!(
                reply
                    .message
                    .contains("protocol version 99 is not supported"),
                "{}",
                reply.message
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }

    client.put(b"k", b"still fine", None).await.unwrap();
    still_serving(&certs, &node).await;
    node.shutdown().await;
}
