//! A node's response frame must never panic the client.
#![no_main]
use cairn_proto::shard::Response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Response::from_body(data);
});
