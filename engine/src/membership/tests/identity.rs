//! A member speaks only for itself: datagrams naming another sender than their
//! connection's certificate, and statuses passed on without their author's seal, are
//! refused, counted and reported without a flood.

use foca::{Header, Member, Message, State};

use super::*;
use crate::membership::seal::{Seal, SealCheck, StatusSeal};
use crate::membership::wire;

/// A stand-in for certificate signatures: a member's seal is its name.
struct NameSeal(String);

impl StatusSeal for NameSeal {
    fn seal(&self, _message: &[u8]) -> Option<Seal> {
        Some(Seal {
            scheme: 0,
            signature: self.0.clone().into_bytes(),
        })
    }

    fn check(&self, member: &str, _message: &[u8], seal: Option<&Seal>) -> SealCheck {
        match seal {
            Some(seal) if seal.signature == member.as_bytes() => SealCheck::Valid,
            _ => SealCheck::Invalid,
        }
    }

    fn seal_bytes_max(&self) -> usize {
        16
    }
}

fn settled() -> Net {
    let mut net = Net::new();
    net.start_all(&["n1", "n2", "n3"]);
    for (name, m) in net.nodes.iter_mut() {
        m.set_seal(std::sync::Arc::new(NameSeal(name.clone())));
    }
    net.assert_all_alive(&["n1", "n2", "n3"]);
    net
}

fn current(net: &Net, name: &str) -> MemberId {
    net.nodes[name].me().clone()
}

/// What n3 makes of `datagram` arriving on the connection of `from`.
fn deliver(net: &mut Net, from: &str, datagram: &[u8]) -> Result<(), MembershipError> {
    let now = Millis(net.now);
    let result = net
        .nodes
        .get_mut("n3")
        .unwrap()
        .handle_data(from, datagram, now);
    net.drain("n3");
    result
}

#[test]
fn a_datagram_naming_another_sender_is_refused_whole() {
    let mut net = settled();
    let (n1, n3) = (current(&net, "n1"), current(&net, "n3"));
    // n1 "suspects" n3: taken from n1 itself, n3 refutes (a higher SWIM incarnation).
    let suspicion = wire::encode(
        &Header {
            src: n1.clone(),
            src_incarnation: 0,
            dst: n3.clone(),
            message: Message::Ping(7),
        },
        &[Member::new(n3.clone(), 0, State::Suspect)],
        &[],
    )
    .unwrap();
    let before = net.nodes["n3"].member("n3").unwrap().swim_incarnation;
    let suspected_before = net.events.len();
    let err = deliver(&mut net, "n2", &suspicion).unwrap_err();
    assert!(
        err.to_string().contains("claims to be sent by \"n1\""),
        "{err}"
    );
    assert_eq!(net.nodes["n3"].refusals()["not_the_sender"], 1);
    assert_eq!(
        net.nodes["n3"].member("n3").unwrap().swim_incarnation,
        before
    );
    let changes = |net: &Net| {
        net.events[suspected_before..]
            .iter()
            .filter(|(_, e)| !matches!(e, MembershipEvent::Refused(_)))
            .count()
    };
    assert_eq!(changes(&net), 0, "{:?}", &net.events[suspected_before..]);
    // n1's leave, from n2's connection: n1 stays alive.
    let leave = wire::encode(
        &Header {
            src: n1.clone(),
            src_incarnation: 0,
            dst: n3.clone(),
            message: Message::Ping(8),
        },
        &[Member::new(n1.clone(), 0, State::Down)],
        &[],
    )
    .unwrap();
    assert!(deliver(&mut net, "n2", &leave).is_err());
    assert_eq!(net.state("n3", "n1"), Some(MemberState::Alive));
    assert_eq!(net.nodes["n3"].refusals()["not_the_sender"], 2);

    // The same leave on n1's own connection is taken: the datagram was well formed.
    deliver(&mut net, "n1", &leave).unwrap();
    assert_ne!(net.state("n3", "n1"), Some(MemberState::Alive));
    let reports: Vec<&RefusalReport> = net
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            MembershipEvent::Refused(report) => Some(report),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "one report for the two: {reports:?}");
    assert_eq!(reports[0].from, "n2");
    assert_eq!(reports[0].count, 1);
}

#[test]
fn a_status_passed_on_without_its_authors_seal_is_not_taken() {
    let mut net = settled();
    let (n1, n2, n3) = (
        current(&net, "n1"),
        current(&net, "n2"),
        current(&net, "n3"),
    );
    let status_of_n1 = |hints: u64, leaving: bool, sealed_by: &str| {
        let status = GossipStatus {
            name: "n1".into(),
            incarnation: n1.incarnation,
            epoch_ms: n1.epoch_ms,
            data_epoch: n1.data_epoch,
            seq: 1_000_000 + hints,
            hints,
            leaving,
            ..GossipStatus::default()
        };
        let bytes = wire::status_bytes(&status).unwrap();
        wire::encode_status(&bytes, NameSeal(sealed_by.into()).seal(&bytes)).unwrap()
    };
    let broadcast = |statuses: Vec<Vec<u8>>| {
        wire::encode(
            &Header {
                src: n2.clone(),
                src_incarnation: 0,
                dst: n3.clone(),
                message: Message::Broadcast,
            },
            &[],
            &statuses,
        )
        .unwrap()
    };
    // n2 publishes, in n1's name, that n1 is leaving: refused.
    deliver(
        &mut net,
        "n2",
        &broadcast(vec![status_of_n1(99, true, "n2")]),
    )
    .unwrap();
    let n3_view = &net.nodes["n3"];
    assert_eq!(n3_view.refusals()["forged_status"], 1);
    let seen = n3_view.member("n1").unwrap();
    assert_ne!(seen.status.as_ref().map(|s| s.hints), Some(99));
    assert_eq!(seen.state, MemberState::Alive);

    // n1's own sealed status, passed on by n2, is taken.
    deliver(
        &mut net,
        "n2",
        &broadcast(vec![status_of_n1(42, false, "n1")]),
    )
    .unwrap();
    let seen = net.nodes["n3"].member("n1").unwrap();
    assert_eq!(seen.status.as_ref().map(|s| s.hints), Some(42));
    assert_eq!(net.nodes["n3"].refusals()["forged_status"], 1);
}

#[test]
fn no_bytes_from_a_peer_make_membership_panic() {
    let mut net = settled();
    let (n2, n3) = (current(&net, "n2"), current(&net, "n3"));
    let valid = wire::encode(
        &Header {
            src: n2,
            src_incarnation: 0,
            dst: n3,
            message: Message::Gossip,
        },
        &[],
        &[],
    )
    .unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    use rand::RngExt;
    for round in 0..5_000u32 {
        let mut data = valid.clone();
        data.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>()));
        for _ in 0..rng.random_range(0..4) {
            let at = rng.random_range(0..data.len());
            data[at] = rng.random();
        }
        if round % 7 == 0 {
            data.truncate(rng.random_range(0..data.len()));
        }
        let _ = deliver(&mut net, "n2", &data);
    }
}
