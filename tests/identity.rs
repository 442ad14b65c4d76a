//! A peer is who its certificate says: the holder of one node's certificate cannot speak
//! for another member in membership, cannot join under another name, and a node
//! certificate must name a valid member.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use foca::{Header, Member, Message, State};
use support::{ServeProcess, TestCerts, eventually_async, settled, start_node, wait_settled};
use vergent::client::{Client, ClientError};
use vergent::membership::seal::StatusSeal;
use vergent::membership::{GossipStatus, MemberId, wire};
use vergent::net::TlsMaterial;
use vergent::net::seal::CertSeal;
use vergent::protocol::{ErrorCode, Request, Response};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `series{labels}` in the Prometheus text at `listen`, if it is there yet.
fn metric(listen: &str, series: &str) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-s", "-f", &format!("http://{listen}/metrics")])
        .output()
        .expect("curl is required for this test (.ci/run installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A datagram from `src` to `dst` with `updates`.
fn datagram(
    src: &MemberId,
    dst: &MemberId,
    message: Message<MemberId>,
    updates: &[Member<MemberId>],
) -> Vec<u8> {
    let header = Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: dst.clone(),
        message,
    };
    wire::encode(&header, updates, &[]).unwrap()
}

/// What the forged statuses say of their member's hints: seen anywhere, one was taken.
const FORGED_HINTS: u64 = 777_777;

/// `n1`'s status saying it is leaving, sealed by `seal` (or by nobody).
fn leaving_status_of(n1: &MemberId, seal: Option<&CertSeal>) -> Vec<u8> {
    let status = GossipStatus {
        name: n1.name.clone(),
        incarnation: n1.incarnation,
        epoch_ms: n1.epoch_ms,
        data_epoch: n1.data_epoch,
        seq: u64::MAX / 2,
        hints: FORGED_HINTS,
        leaving: true,
        ..GossipStatus::default()
    };
    let bytes = wire::status_bytes(&status).unwrap();
    let sealed = seal.and_then(|s| s.seal(&vergent::membership::seal::sealed_message(&bytes)));
    wire::encode_status(&bytes, sealed).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_of_one_nodes_certificate_cannot_speak_for_another() {
    let certs = TestCerts::new(&["n1", "n2", "n3"]);
    let data = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let n1 = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &[]);
    let seed = n1.addr.to_string();
    let n2 = ServeProcess::start(
        "n2",
        certs.path(),
        &data.path().join("n2"),
        &["--join", &seed],
    );
    let n3 = ServeProcess::start(
        "n3",
        certs.path(),
        &data.path().join("n3"),
        &["--join", &seed, "--metrics-listen", &listen],
    );
    let nodes = [&n1, &n2, &n3];
    wait_settled(&certs, &nodes, &["n1", "n2", "n3"]).await;

    // A connection to n3 with n2's certificate, and the members' identities as a node
    // asks for them.
    let forger = Client::connect(&n3.addr.to_string(), &certs.material("n2"))
        .await
        .unwrap();
    let Response::Members(members) = forger.request(&Request::Members).await.unwrap() else {
        panic!("no members");
    };
    let id = |name: &str| {
        members
            .iter()
            .find(|m| m.id.name == name)
            .unwrap()
            .id
            .clone()
    };
    let (id1, id2, id3) = (id("n1"), id("n2"), id("n3"));
    let n2_seal = CertSeal::new(&certs.material("n2")).unwrap();

    // Each one claims to come from n1, on n2's connection.
    let status_from_n1 = {
        let header = Header {
            src: id1.clone(),
            src_incarnation: 0,
            dst: id3.clone(),
            message: Message::Broadcast,
        };
        wire::encode(&header, &[], &[leaving_status_of(&id1, None)]).unwrap()
    };
    let as_n1 = [
        // n1 suspects n3.
        datagram(
            &id1,
            &id3,
            Message::Ping(1),
            &[Member::new(id3.clone(), 0, State::Suspect)],
        ),
        // n1 leaves SWIM.
        datagram(
            &id1,
            &id3,
            Message::Ping(2),
            &[Member::new(id1.clone(), 0, State::Down)],
        ),
        // n1 "refutes" at a higher incarnation.
        datagram(
            &id1,
            &id3,
            Message::Ping(3),
            &[Member::new(id1.clone(), 9, State::Alive)],
        ),
        // n1's status: leaving.
        status_from_n1,
    ];
    for forged in &as_n1 {
        forger
            .connection()
            .send_datagram(forged.clone().into())
            .unwrap();
    }
    // n2 passes on a status in n1's name that n2 sealed: n1 leaving.
    let passed_on = {
        let header = Header {
            src: id2.clone(),
            src_incarnation: 0,
            dst: id3.clone(),
            message: Message::Broadcast,
        };
        wire::encode(&header, &[], &[leaving_status_of(&id1, Some(&n2_seal))]).unwrap()
    };
    forger.connection().send_datagram(passed_on.into()).unwrap();

    let counted = |reason: &str, want: u64| {
        let series = format!("vergent_membership_refused_total{{reason=\"{reason}\"}}");
        let listen = listen.clone();
        async move { metric(&listen, &series) == Some(want) }
    };
    assert!(
        eventually_async(Duration::from_secs(15), || counted("not_the_sender", 4)).await,
        "n3 did not count the four messages sent as n1: {:?}",
        metric(
            &listen,
            "vergent_membership_refused_total{reason=\"not_the_sender\"}"
        )
    );
    assert!(
        eventually_async(Duration::from_secs(15), || counted("forged_status", 1)).await,
        "n3 did not count the status n2 sealed in n1's name"
    );
    // n1 stays alive, in the life it had, with its own status, everywhere, for several
    // probe periods (a forged leave taken anywhere would have it declared dead and
    // renew its identity).
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            settled(&certs, &nodes, &["n1", "n2", "n3"]),
            "a forged message took effect"
        );
        for node in nodes {
            let status = support::status(&certs, node.addr).unwrap();
            let seen = support::member(&status, "n1");
            assert_eq!(seen["state"], "alive", "{} sees n1: {seen}", node.name);
            assert_eq!(
                seen["incarnation"], id1.incarnation,
                "{} sees n1: {seen}",
                node.name
            );
            assert_ne!(
                seen["hints"], FORGED_HINTS,
                "{} took a forged status",
                node.name
            );
        }
    }
    let log = n3.log_text();
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("membership messages from n2 refused"))
        .collect();
    assert_eq!(reports.len(), 1, "one report a minute per peer:\n{log}");
    assert!(
        reports[0].contains("claims to be sent by \"n1\""),
        "{}",
        reports[0]
    );
    forger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_under_another_name_than_the_certificates_is_refused() {
    let certs = TestCerts::new(&["n1", "n2"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;
    let peer = Client::connect(&node.local_addr().to_string(), &certs.material("n2"))
        .await
        .unwrap();
    let join = Request::Join {
        id: MemberId::remembered("n7", "127.0.0.1:7007".parse().unwrap(), None),
        cluster: None,
        replace: None,
    };
    match peer.request(&join).await {
        Err(ClientError::Server(reply)) => {
            assert_eq!(reply.code, ErrorCode::Forbidden, "{}", reply.message);
            assert!(
                reply
                    .message
                    .contains("a join request for \"n7\" came with the certificate of \"n2\""),
                "{}",
                reply.message
            );
        }
        other => panic!("a join under another name was not refused: {other:?}"),
    }
    peer.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_must_name_a_valid_member() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;
    // The CA signs what it is given: a node certificate whose name no member can have.
    let ca_pem = std::fs::read_to_string(certs.path().join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.path().join("ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "n 1/../x");
    dn.push(rcgen::DnType::OrganizationalUnitName, "node");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let material = TlsMaterial::from_pem(&ca_pem, &cert.pem(), &key.serialize_pem()).unwrap();
    let err = match Client::connect(&node.local_addr().to_string(), &material).await {
        Ok(client) => match client.status().await {
            Ok(_) => panic!("a node certificate with an invalid name was served"),
            Err(err) => err.to_string(),
        },
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("a node certificate must name a valid member"),
        "{err}"
    );
    // The node goes on serving the others.
    let client = certs.client(node.local_addr()).await;
    client.put(b"k", b"v", None).await.unwrap();
    client.close().await;
    node.shutdown().await;
}
