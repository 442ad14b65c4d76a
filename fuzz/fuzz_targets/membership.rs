//! Membership datagrams as a peer sends them: any bytes, from a peer whose certificate
//! names the sender the header claims and from one whose certificate names another.
//! Nothing may panic, and a datagram naming another sender than its connection's
//! certificate must be refused whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vergent::base::Millis;
use vergent::membership::{
    MemberId, MemberState, Membership, MembershipConfig, MembershipError, SeedMember, wire,
};

fn id(name: &str, port: u16) -> MemberId {
    MemberId {
        name: name.into(),
        addr: ([127, 0, 0, 1], port).into(),
        incarnation: 1,
        epoch_ms: 100,
        token: None,
        data_epoch: 100,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut m = Membership::new(id("n3", 7003), &MembershipConfig::default(), 7, Millis(0));
    let members = ["n1", "n2"]
        .iter()
        .zip([7001, 7002])
        .map(|(name, port)| SeedMember {
            id: id(name, port),
            state: MemberState::Alive,
            status: None,
        })
        .collect();
    m.install(members, Millis(0));
    let claimed = wire::header(data).map(|h| h.src.name);
    if let Some(claimed) = &claimed {
        let _ = m.handle_data(claimed, data, Millis(10));
    }
    let result = m.handle_data("n2", data, Millis(20));
    if claimed.as_deref().is_some_and(|c| c != "n2") {
        assert!(matches!(result, Err(MembershipError::Refused { .. })));
    }
    while m.poll_send().is_some() {}
    while m.poll_timer().is_some() {}
    while m.poll_event().is_some() {}
});
