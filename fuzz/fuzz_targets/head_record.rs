//! Head records arrive from any DHT peer.
#![no_main]
use cairn_proto::head::{self, HeadRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = HeadRecord::from_bytes(data) {
        let _ = head::accept(&r.record_id(), None, &r);
    }
});
