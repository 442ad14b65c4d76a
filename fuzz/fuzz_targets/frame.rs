//! Every message a peer can send goes through this decoder: whatever the bytes, it must
//! return a message, ask for more, or fail cleanly, and never allocate past the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vergent::antientropy::messages::{SyncRequest, SyncResponse};
use vergent::protocol::frame;
use vergent::protocol::{Request, Response};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode_frame::<Request>(data, LIMIT);
    let _ = frame::decode_frame::<Response>(data, LIMIT);
    let _ = frame::decode::<Request>(data);
    let _ = frame::decode::<SyncRequest>(data);
    let _ = frame::decode::<SyncResponse>(data);
});
