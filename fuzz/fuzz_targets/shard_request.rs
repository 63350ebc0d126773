//! A peer's request frame must never panic the node.
#![no_main]
use cairn_proto::codec;
use cairn_proto::shard::{MAX_MESSAGE_SIZE, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::from_frame::<Request>("request", data, MAX_MESSAGE_SIZE);
    if let Ok(r) = Request::from_body(data) {
        // Whatever decodes must survive a round trip.
        assert_eq!(Request::from_body(&codec::to_bytes(&r)).ok(), Some(r));
    }
});
