//! Tamper tests for object data encryption: every listed corruption fails.

use cairn_crypto::{BlockPosition, DataKey, DecryptError, ObjectCipher, TAG_LEN};
use proptest::prelude::*;

const BS: usize = 1024;

fn cipher() -> (DataKey, ObjectCipher) {
    let key = DataKey::from_bytes([9; 32]);
    let c = ObjectCipher::new(&key, [1; 16]);
    (key, c)
}

fn plain(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn round_trip_and_block_level_access() {
    let (_, c) = cipher();
    let p = plain(3 * BS + 10);
    let ct = c.seal_segment(4, true, BS, &p);
    assert_eq!(ct.len(), p.len() + 4 * TAG_LEN);
    assert_eq!(c.open_segment(4, true, BS, &ct).as_deref(), Ok(&p[..]));
    // Any single block decrypts on its own.
    let stride = BS + TAG_LEN;
    let mut block = ct[stride..2 * stride - TAG_LEN].to_vec();
    let tag: [u8; 16] = ct[2 * stride - TAG_LEN..2 * stride].try_into().expect("16");
    let pos = BlockPosition { segment: 4, block: 1, last_in_segment: false, last_segment: true };
    c.open_block(pos, &mut block, &tag).expect("opens alone");
    assert_eq!(block, &p[BS..2 * BS]);
}

#[test]
fn reordered_blocks_fail() {
    let (_, c) = cipher();
    let p = plain(3 * BS);
    let mut ct = c.seal_segment(0, true, BS, &p);
    let stride = BS + TAG_LEN;
    let (a, b) = ct.split_at_mut(stride);
    a.swap_with_slice(&mut b[..stride]);
    assert_eq!(c.open_segment(0, true, BS, &ct), Err(DecryptError));
}

#[test]
fn block_from_another_segment_fails() {
    let (_, c) = cipher();
    let p = plain(2 * BS);
    let mut s0 = c.seal_segment(0, false, BS, &p);
    let s1 = c.seal_segment(1, true, BS, &p);
    // Same plaintext, same block index, other segment.
    s0[..BS + TAG_LEN].copy_from_slice(&s1[..BS + TAG_LEN]);
    assert_eq!(c.open_segment(0, false, BS, &s0), Err(DecryptError));
}

#[test]
fn block_from_another_object_fails() {
    let (key, c) = cipher();
    let other_version = ObjectCipher::new(&key, [2; 16]);
    let other_key = ObjectCipher::new(&DataKey::from_bytes([8; 32]), [1; 16]);
    let p = plain(2 * BS);
    for other in [other_version, other_key] {
        let mut mine = c.seal_segment(0, true, BS, &p);
        let theirs = other.seal_segment(0, true, BS, &p);
        mine[..BS + TAG_LEN].copy_from_slice(&theirs[..BS + TAG_LEN]);
        assert_eq!(c.open_segment(0, true, BS, &mine), Err(DecryptError));
    }
}

#[test]
fn truncation_and_extension_fail() {
    let (_, c) = cipher();
    let p = plain(3 * BS);
    let ct = c.seal_segment(0, true, BS, &p);
    let stride = BS + TAG_LEN;
    // Drop the last whole block: the new last block is not marked last.
    assert_eq!(c.open_segment(0, true, BS, &ct[..2 * stride]), Err(DecryptError));
    // Drop bytes inside the last block.
    assert_eq!(c.open_segment(0, true, BS, &ct[..ct.len() - 1]), Err(DecryptError));
    // Append a block sealed as a non-last block 3 in another segment.
    let mut longer = ct.clone();
    longer.extend_from_slice(&c.seal_segment(0, true, BS, &plain(4 * BS))[3 * stride..]);
    assert_eq!(c.open_segment(0, true, BS, &longer), Err(DecryptError));
    // A segment that claims not to be the last of the object.
    assert_eq!(c.open_segment(0, false, BS, &ct), Err(DecryptError));
}

#[test]
fn wrong_key_fails() {
    let (_, c) = cipher();
    let ct = c.seal_segment(0, true, BS, &plain(100));
    let wrong = ObjectCipher::new(&DataKey::generate(), [1; 16]);
    assert_eq!(wrong.open_segment(0, true, BS, &ct), Err(DecryptError));
}

proptest! {
    #[test]
    fn round_trips(len in 0usize..5000, seg: u64, last: bool) {
        let (_, c) = cipher();
        let p = plain(len);
        let ct = c.seal_segment(seg, last, BS, &p);
        prop_assert_eq!(c.open_segment(seg, last, BS, &ct).expect("open"), p);
    }

    #[test]
    fn every_flipped_bit_is_detected(len in 1usize..3000, bit in 0usize..usize::MAX) {
        let (_, c) = cipher();
        let mut ct = c.seal_segment(0, true, BS, &plain(len));
        let bit = bit % (ct.len() * 8);
        ct[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(c.open_segment(0, true, BS, &ct), Err(DecryptError));
    }
}

#[test]
fn the_fill_stream_is_keyed_per_version_and_segment_and_pinned() {
    let key = DataKey::from_bytes([7; 32]);
    let a = ObjectCipher::new(&key, [1; 16]);
    let mut out = [0u8; 48];
    a.fill(3, &mut out);
    assert_eq!(hex(&out[..8]), GOLDEN_FILL);
    assert_ne!(out, [0u8; 48]);
    let mut other = [0u8; 48];
    a.fill(4, &mut other);
    assert_ne!(out, other, "another segment");
    ObjectCipher::new(&key, [2; 16]).fill(3, &mut other);
    assert_ne!(out, other, "another version");
    ObjectCipher::new(&DataKey::from_bytes([8; 32]), [1; 16]).fill(3, &mut other);
    assert_ne!(out, other, "another key");
}
const GOLDEN_FILL: &str = "4eed5baf09a9c9dc";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
