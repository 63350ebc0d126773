//! Golden bytes: the encoding of each message is pinned. If one of these
//! changes, the wire or disk format changed: bump the protocol or format
//! version instead of editing the expected bytes.

use cairn_proto::head::{HeadRecord, RecordRefused};
use cairn_proto::profile::{NodeProfile, SignedProfile};
use cairn_proto::shard::{
    ByteRange, MAX_MESSAGE_SIZE, MAX_RENEW_BATCH, NodeState, NodeStats, PeerUse, Renewal, Request, Response,
    ShardError, owner_of, renew_token_of,
};
use cairn_proto::{
    Layout, NodeId, ObjectManifest, ObjectVersionId, RecordId, SegmentId, SegmentManifest, ShardId, ShardPlacement,
};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn shard_requests() {
    let id = ShardId([0xaa; 32]);
    let put = Request::Put { shard: id, len: 300, owner: [0x11; 32], lease_secs: 86_400 };
    assert_eq!(
        hex(&put.to_frame()),
        format!("46000000{}{}{}{}{}", "00", "aa".repeat(32), "ac02", "11".repeat(32), "80a305")
    );
    let get = Request::Get { shard: id, range: Some(ByteRange { offset: 1, len: 2 }) };
    assert_eq!(hex(&get.to_frame()), format!("24000000{}{}{}", "01", "aa".repeat(32), "010102"));
    let whole = Request::Get { shard: id, range: None };
    assert_eq!(hex(&whole.to_frame()), format!("22000000{}{}{}", "01", "aa".repeat(32), "00"));
    let del = Request::Delete { shard: id, token: [0x22; 32] };
    assert_eq!(hex(&del.to_frame()), format!("41000000{}{}{}", "02", "aa".repeat(32), "22".repeat(32)));
    let audit = Request::Audit { shard: id, nonce: [0x33; 32], range: ByteRange { offset: 0, len: 128 } };
    assert_eq!(hex(&audit.to_frame()), format!("44000000{}{}{}{}", "03", "aa".repeat(32), "33".repeat(32), "008001"));
    assert_eq!(hex(&Request::Stats.to_frame()), "0100000004");
    let get_head = Request::GetHead { record: RecordId([0xbb; 32]) };
    assert_eq!(hex(&get_head.to_frame()), format!("21000000{}{}", "05", "bb".repeat(32)));
    let put_head = Request::PutHead { record: record() };
    assert_eq!(hex(&put_head.to_frame()), format!("66000000{}{}", "06", RECORD));
    let renew = Request::Renew { lease_secs: 86_400, shards: vec![(id, [0x44; 32])] };
    assert_eq!(
        hex(&renew.to_frame()),
        format!("45000000{}{}{}{}{}", "07", "80a305", "01", "aa".repeat(32), "44".repeat(32))
    );
    // The largest batch fits in a frame, and decodes.
    let full = Request::Renew { lease_secs: u64::MAX, shards: vec![(id, [0xff; 32]); MAX_RENEW_BATCH] };
    let frame = full.to_frame();
    assert!(frame.len() - 4 <= MAX_MESSAGE_SIZE, "{} bytes", frame.len());
    assert_eq!(Request::from_body(&frame[4..]).expect("decode"), full);
    let prove = Request::Prove { shard: id, range: ByteRange { offset: 300, len: 1 } };
    assert_eq!(hex(&prove.to_frame()), format!("24000000{}{}{}", "08", "aa".repeat(32), "ac0201"));
    assert_eq!(hex(&Request::Status.to_frame()), "0100000009");
    assert_eq!(hex(&Request::Profile.to_frame()), "010000000a");
    assert_eq!(hex(&Request::Usage.to_frame()), "010000000b");
}

#[test]
fn tokens() {
    // A delete token's renew token and owner hash are pinned: nodes keep
    // the owner hash of every shard stored.
    let renew = renew_token_of(&[0x55; 32]);
    assert_eq!(hex(&renew[..8]), GOLDEN_RENEW);
    assert_eq!(hex(&owner_of(&renew)[..8]), GOLDEN_OWNER);
}
const GOLDEN_RENEW: &str = "ee61894bcf16ea63";
const GOLDEN_OWNER: &str = "71fedf457a0fa8a9";

/// The record of [`head_record`] and its encoding (without the version byte).
fn record() -> HeadRecord {
    HeadRecord { public_key: [2; 32], sequence: 7, payload: vec![9, 8], signature: [3; 64] }
}
const RECORD: &str = "02020202020202020202020202020202020202020202020202020202020202020702090840\
    03030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303";

#[test]
fn shard_responses() {
    assert_eq!(hex(&Response::Stored.to_frame()), "0100000000");
    assert_eq!(hex(&Response::Data { len: 5 }.to_frame()), "020000000105");
    assert_eq!(hex(&Response::Deleted.to_frame()), "0100000002");
    assert_eq!(hex(&Response::AuditProof { hash: [1; 32] }.to_frame()), format!("21000000{}{}", "03", "01".repeat(32)));
    let stats = Response::Stats(NodeStats { capacity: 1000, used: 10, shards: 1 });
    assert_eq!(hex(&stats.to_frame()), "0500000004e8070a01");
    let err = Response::Error(ShardError::NoSpace { needed: 2, available: 1 });
    assert_eq!(hex(&err.to_frame()), "0400000005020201");
    let nf = Response::Error(ShardError::NotFound(ShardId([0; 32])));
    assert_eq!(hex(&nf.to_frame()), format!("22000000{}{}", "0500", "00".repeat(32)));
    assert_eq!(hex(&Response::Error(ShardError::Internal).to_frame()), "020000000508");
    assert_eq!(hex(&Response::Head(None).to_frame()), "020000000600");
    assert_eq!(hex(&Response::Head(Some(record())).to_frame()), format!("67000000{}{}", "0601", RECORD));
    assert_eq!(hex(&Response::HeadStored.to_frame()), "0100000007");
    assert_eq!(hex(&Response::HeadHeld(record()).to_frame()), format!("66000000{}{}", "08", RECORD));
    let stale = Response::Error(ShardError::HeadRefused(RecordRefused::Stale { offered: 1, stored: 2 }));
    assert_eq!(hex(&stale.to_frame()), "050000000509020102");
    let full = Response::Error(ShardError::RecordsFull { max: 300 });
    assert_eq!(hex(&full.to_frame()), "04000000050aac02");
    let renewed = Response::Renewed(vec![Renewal::Until(300), Renewal::NotFound, Renewal::BadToken]);
    assert_eq!(hex(&renewed.to_frame()), "07000000090300ac020102");
    assert_eq!(hex(&Response::Proof { len: 300 }.to_frame()), "030000000aac02");
    let damaged = Response::Error(ShardError::Damaged(ShardId([0; 32])));
    assert_eq!(hex(&damaged.to_frame()), format!("22000000{}{}", "050b", "00".repeat(32)));
    assert_eq!(hex(&Response::Error(ShardError::Leaving).to_frame()), "02000000050c");
    let quota = Response::Error(ShardError::PeerQuota { used: 300, quota: 1 });
    assert_eq!(hex(&quota.to_frame()), "05000000050dac0201");
    let stats = NodeStats { capacity: 1000, used: 10, shards: 1 };
    let staying = Response::Status(NodeState { stats, leaving_until: None });
    assert_eq!(hex(&staying.to_frame()), "060000000be8070a0100");
    let leaving = Response::Status(NodeState { stats, leaving_until: Some(300) });
    assert_eq!(hex(&leaving.to_frame()), "080000000be8070a0101ac02");
    let profile = NodeProfile {
        region: "eu".into(),
        zone: String::new(),
        capacity: 1000,
        used: 10,
        leaving_until: None,
        issued: 7,
    };
    let signed = Response::Profile(SignedProfile { profile, public_key: vec![1, 2], signature: vec![3] });
    assert_eq!(hex(&signed.to_frame()), "0f0000000c02657500e8070a00070201020103");
    let usage = Response::Usage(PeerUse { requests: 2, received: 300, sent: 1, stored: 300, byte_seconds: 1000 });
    assert_eq!(hex(&usage.to_frame()), "090000000d02ac0201ac02e807");
}

#[test]
fn head_record() {
    let r = record();
    assert_eq!(hex(&r.to_bytes()), format!("01{}07020908{}{}", "02".repeat(32), "40", "03".repeat(64)));
    assert_eq!(hex(&r.to_bytes()), format!("01{RECORD}"));
    assert_eq!(HeadRecord::from_bytes(&r.to_bytes()).expect("decode"), r);
}

#[test]
fn manifest() {
    let m = ObjectManifest {
        version: ObjectVersionId([1; 16]),
        size: 5,
        layout: Layout::default(),
        data_key: [4; 32],
        segments: vec![SegmentManifest {
            id: SegmentId([5; 32]),
            plain_len: 5,
            shard_len: 64,
            shards: (0..6)
                .map(|i| ShardPlacement {
                    id: ShardId([i; 32]),
                    holder: (i == 0).then(|| NodeId::from_bytes(vec![0xee; 2]).expect("id")),
                })
                .collect(),
        }],
    };
    let bytes = m.to_bytes();
    let mut expect =
        format!("01{}05{}{}{}", "01".repeat(16), "8080800880800404 06".replace(' ', ""), "04".repeat(32), "01");
    expect.push_str(&format!("{}0540 06", "05".repeat(32)).replace(' ', ""));
    for i in 0..6u8 {
        expect.push_str(&format!("{:02x}", i).repeat(32));
        expect.push_str(if i == 0 { "0102eeee" } else { "00" });
    }
    assert_eq!(hex(&bytes), expect);
    assert_eq!(ObjectManifest::from_bytes(&bytes).expect("decode"), m);
}
