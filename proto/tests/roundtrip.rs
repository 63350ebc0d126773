//! Property tests: every codec round-trips, and arbitrary bytes never panic
//! a decoder (they may only return an error).

use cairn_proto::codec;
use cairn_proto::head::{self, HeadRecord};
use cairn_proto::profile::{NodeProfile, SignedProfile};
use cairn_proto::shard::{
    ByteRange, MAX_MESSAGE_SIZE, MAX_RENEW_BATCH, NodeState, NodeStats, PeerUse, Renewal, Request, Response, ShardError,
};
use cairn_proto::{
    Layout, NodeId, ObjectManifest, ObjectVersionId, RecordId, SegmentId, SegmentManifest, ShardId, ShardPlacement,
};
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;

fn shard_id() -> impl Strategy<Value = ShardId> {
    any::<[u8; 32]>().prop_map(ShardId)
}

fn range() -> impl Strategy<Value = ByteRange> {
    (any::<u64>(), any::<u64>()).prop_map(|(offset, len)| ByteRange { offset, len })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (shard_id(), any::<u64>(), any::<[u8; 32]>(), any::<u64>())
            .prop_map(|(shard, len, owner, lease_secs)| Request::Put { shard, len, owner, lease_secs }),
        (shard_id(), proptest::option::of(range())).prop_map(|(shard, range)| Request::Get { shard, range }),
        (shard_id(), any::<[u8; 32]>()).prop_map(|(shard, token)| Request::Delete { shard, token }),
        (shard_id(), any::<[u8; 32]>(), range()).prop_map(|(shard, nonce, range)| Request::Audit {
            shard,
            nonce,
            range
        }),
        Just(Request::Stats),
        any::<[u8; 32]>().prop_map(|id| Request::GetHead { record: RecordId(id) }),
        head_record().prop_map(|record| Request::PutHead { record }),
        (any::<u64>(), proptest::collection::vec((shard_id(), any::<[u8; 32]>()), 0..=MAX_RENEW_BATCH))
            .prop_map(|(lease_secs, shards)| Request::Renew { lease_secs, shards }),
        (shard_id(), range()).prop_map(|(shard, range)| Request::Prove { shard, range }),
        Just(Request::Status),
        Just(Request::Profile),
        Just(Request::Usage),
    ]
}

/// Any record shape (signatures are not checked by the codec).
fn head_record() -> impl Strategy<Value = HeadRecord> {
    (any::<[u8; 32]>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..1024), any::<[u8; 32]>()).prop_map(
        |(public_key, sequence, payload, sig)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&sig);
            HeadRecord { public_key, sequence, payload, signature }
        },
    )
}

fn refusal() -> impl Strategy<Value = head::RecordRefused> {
    prop_oneof![
        Just(head::RecordRefused::WrongId),
        Just(head::RecordRefused::BadSignature),
        (any::<u64>(), any::<u64>()).prop_map(|(offered, stored)| head::RecordRefused::Stale { offered, stored }),
        any::<usize>().prop_map(head::RecordRefused::TooLarge),
    ]
}

fn shard_error() -> impl Strategy<Value = ShardError> {
    prop_oneof![
        shard_id().prop_map(ShardError::NotFound),
        shard_id().prop_map(ShardError::HashMismatch),
        (any::<u64>(), any::<u64>()).prop_map(|(needed, available)| ShardError::NoSpace { needed, available }),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| ShardError::TooLarge { len, max }),
        shard_id().prop_map(ShardError::BadToken),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(offset, len, total)| ShardError::BadRange {
            offset,
            len,
            total
        }),
        any::<u64>().prop_map(|retry_after_ms| ShardError::RateLimited { retry_after_ms }),
        Just(ShardError::Malformed),
        Just(ShardError::Internal),
        refusal().prop_map(ShardError::HeadRefused),
        any::<u64>().prop_map(|max| ShardError::RecordsFull { max }),
        shard_id().prop_map(ShardError::Damaged),
        Just(ShardError::Leaving),
        (any::<u64>(), any::<u64>()).prop_map(|(used, quota)| ShardError::PeerQuota { used, quota }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Stored),
        any::<u64>().prop_map(|len| Response::Data { len }),
        Just(Response::Deleted),
        any::<[u8; 32]>().prop_map(|hash| Response::AuditProof { hash }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(capacity, used, shards)| Response::Stats(NodeStats {
            capacity,
            used,
            shards
        })),
        shard_error().prop_map(Response::Error),
        proptest::option::of(head_record()).prop_map(Response::Head),
        Just(Response::HeadStored),
        head_record().prop_map(Response::HeadHeld),
        proptest::collection::vec(
            prop_oneof![any::<u64>().prop_map(Renewal::Until), Just(Renewal::NotFound), Just(Renewal::BadToken)],
            0..=MAX_RENEW_BATCH
        )
        .prop_map(Response::Renewed),
        any::<u64>().prop_map(|len| Response::Proof { len }),
        (any::<u64>(), any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
            |(capacity, used, shards, leaving_until)| Response::Status(NodeState {
                stats: NodeStats { capacity, used, shards },
                leaving_until
            })
        ),
        ("[a-z]{0,8}", any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(region, capacity, used, key)| Response::Profile(SignedProfile {
                profile: NodeProfile { region, capacity, used, ..Default::default() },
                public_key: key.clone(),
                signature: key,
            })
        ),
        any::<[u64; 5]>().prop_map(|[requests, received, sent, stored, byte_seconds]| Response::Usage(PeerUse {
            requests,
            received,
            sent,
            stored,
            byte_seconds
        })),
    ]
}

fn manifest() -> impl Strategy<Value = ObjectManifest> {
    (1u16..8, 1u16..4, 0u64..200_000, any::<[u8; 16]>(), any::<[u8; 32]>()).prop_flat_map(
        |(k, extra, size, version, key)| {
            let layout = Layout { segment_size: 32 * 1024, block_size: 4 * 1024, k, n: k + extra };
            let count = layout.segment_count(size);
            proptest::collection::vec(
                (any::<[u8; 32]>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64))),
                usize::from(k + extra),
            )
            .prop_map(move |shards| ObjectManifest {
                version: ObjectVersionId(version),
                size,
                layout,
                data_key: key,
                segments: (0..count)
                    .map(|i| {
                        let plain_len = layout.segment_len(size, i);
                        SegmentManifest {
                            id: SegmentId([i as u8; 32]),
                            plain_len,
                            shard_len: layout.segment(plain_len).shard_len(),
                            shards: shards
                                .iter()
                                .map(|(id, holder)| ShardPlacement {
                                    id: ShardId(*id),
                                    holder: holder.clone().map(|h| NodeId::from_bytes(h).expect("1..64")),
                                })
                                .collect(),
                        }
                    })
                    .collect(),
            })
        },
    )
}

proptest! {
    #[test]
    fn requests_round_trip(r in request()) {
        let frame = r.to_frame();
        prop_assert!(frame.len() <= MAX_MESSAGE_SIZE);
        prop_assert_eq!(codec::from_frame::<Request>("req", &frame, MAX_MESSAGE_SIZE).expect("decode"), r);
    }

    #[test]
    fn responses_round_trip(r in response()) {
        let frame = r.to_frame();
        prop_assert_eq!(Response::from_body(&frame[4..]).expect("decode"), r);
    }

    #[test]
    fn manifests_round_trip(m in manifest()) {
        prop_assert_eq!(ObjectManifest::from_bytes(&m.to_bytes()).expect("decode"), m);
    }

    #[test]
    fn signed_head_records_round_trip_and_verify(seed: [u8; 32], seq: u64, payload in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let key = SigningKey::from_bytes(&seed);
        let pk = key.verifying_key().to_bytes();
        let sig = key.sign(&HeadRecord::signing_bytes(&pk, seq, &payload)).to_bytes();
        let r = HeadRecord { public_key: pk, sequence: seq, payload, signature: sig };
        let back = HeadRecord::from_bytes(&r.to_bytes()).expect("decode");
        prop_assert!(back.verify().is_ok());
        prop_assert_eq!(back, r);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Request::from_body(&bytes);
        let _ = Response::from_body(&bytes);
        let _ = codec::from_frame::<Request>("req", &bytes, MAX_MESSAGE_SIZE);
        let _ = ObjectManifest::from_bytes(&bytes);
        if let Ok(r) = HeadRecord::from_bytes(&bytes) {
            let _ = r.verify();
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(r in request(), m in manifest(), at: usize, val: u8) {
        let mut f = r.to_frame();
        let i = at % f.len();
        f[i] = val;
        let _ = codec::from_frame::<Request>("req", &f, MAX_MESSAGE_SIZE);
        let mut b = m.to_bytes();
        let i = at % b.len();
        b[i] = val;
        let _ = ObjectManifest::from_bytes(&b);
    }
}

fn signed(key: &SigningKey, seq: u64, payload: &[u8]) -> HeadRecord {
    let pk = key.verifying_key().to_bytes();
    HeadRecord {
        public_key: pk,
        sequence: seq,
        payload: payload.to_vec(),
        signature: key.sign(&HeadRecord::signing_bytes(&pk, seq, payload)).to_bytes(),
    }
}

#[test]
fn nodes_keep_only_newer_validly_signed_records() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let r1 = signed(&key, 1, b"root one");
    let r2 = signed(&key, 2, b"root two");
    let id = r1.record_id();
    assert_eq!(head::accept(&id, None, &r1), Ok(()));
    assert_eq!(head::accept(&id, Some(&r1), &r2), Ok(()));
    assert_eq!(head::accept(&id, Some(&r2), &r2), Ok(()), "republishing the same record is fine");
    assert_eq!(head::accept(&id, Some(&r2), &r1), Err(head::RecordRefused::Stale { offered: 1, stored: 2 }));
    let same_seq = signed(&key, 2, b"fork");
    assert!(matches!(head::accept(&id, Some(&r2), &same_seq), Err(head::RecordRefused::Stale { .. })));

    let mut forged = r2.clone();
    forged.sequence = 3;
    assert_eq!(head::accept(&id, Some(&r2), &forged), Err(head::RecordRefused::BadSignature));
    let mut forged = r2.clone();
    forged.payload[0] ^= 1;
    assert_eq!(head::accept(&id, None, &forged), Err(head::RecordRefused::BadSignature));

    let other = signed(&SigningKey::from_bytes(&[2; 32]), 9, b"x");
    assert_eq!(head::accept(&id, Some(&r1), &other), Err(head::RecordRefused::WrongId));

    let big = signed(&key, 5, &vec![0; head::MAX_HEAD_PAYLOAD + 1]);
    assert_eq!(head::accept(&id, None, &big), Err(head::RecordRefused::TooLarge(head::MAX_HEAD_PAYLOAD + 1)));
}

#[test]
fn inconsistent_manifests_are_refused() {
    let layout = Layout::default();
    let m = ObjectManifest { version: ObjectVersionId([0; 16]), size: 10, layout, data_key: [0; 32], segments: vec![] };
    assert!(matches!(ObjectManifest::from_bytes(&m.to_bytes()), Err(cairn_proto::Error::Inconsistent { .. })));
}

proptest! {
    /// A node's proof bytes never panic the verifier, whatever the range
    /// and length asked.
    #[test]
    fn arbitrary_proof_slices_never_panic_the_verifier(
        slice in proptest::collection::vec(any::<u8>(), 0..20_000),
        len in 0u64..=cairn_proto::shard::MAX_SHARD_SIZE,
        r in range(),
    ) {
        let _ = cairn_proto::proof::verify(&ShardId([3; 32]), len, r, &slice);
    }
}
