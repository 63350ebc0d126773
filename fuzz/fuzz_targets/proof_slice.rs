//! A node's proof of possession must never panic the auditor.
#![no_main]
use cairn_proto::ShardId;
use cairn_proto::proof::verify;
use cairn_proto::shard::ByteRange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 14 bytes choose the shard length and the range asked.
    let Some((head, slice)) = data.split_first_chunk::<14>() else { return };
    let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let offset = u64::from_le_bytes([head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11]]);
    let n = u64::from(u16::from_le_bytes([head[12], head[13]]));
    let _ = verify(&ShardId([7; 32]), len, ByteRange { offset, len: n }, slice);
});
