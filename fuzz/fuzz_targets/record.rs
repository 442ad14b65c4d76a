//! What storage reads back from disk: records and hints. A damaged file must give an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vergent::record::Record;
use vergent::storage::hints;

fuzz_target!(|data: &[u8]| {
    let _ = Record::decode(data);
    let _ = Record::decode_version(data);
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (key, value) = data.split_at(split);
    let _ = hints::decode(key, value);
});
