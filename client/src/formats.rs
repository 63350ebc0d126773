//! Every format the client stores, in one place: index pages, head
//! payloads, object entries, bucket-list entries, the garbage queue and the
//! local cache's values. Each begins with a version byte and is postcard
//! after it; each decoder checks the length before decoding and the
//! value's consistency after, and older versions stay readable.
//!
//! | value | version | where it lives |
//! |---|---|---|
//! | [`Page`] | 2 (1 read) | sealed, on nodes and in the cache |
//! | [`HeadPayload`] | 4 (1–3 read) | sealed, inside the signed head record |
//! | [`Entry`] | 2 (1 read) | inside a leaf page's value |
//! | [`BucketInfo`] | 2 (1 read) | inside a bucket-list leaf's value |
//! | [`Garbage`] | 1 | inside a leaf's value under `\0g/…` |
//! | [`Mark`], [`RecordPeers`], [`NodeMemo`] | 1 | the local cache |
//!
//! Golden-bytes tests pin every encoding; a property test feeds arbitrary
//! bytes to every decoder (the `fuzz/` project has targets for `proto`'s
//! and `crypto`'s decoders only: this crate links RocksDB).

use crate::policy::Placement;
use cairn_proto::codec;
use cairn_proto::manifest::ObjectManifest;
use cairn_proto::{Error as ProtoError, ShardId};
use serde::{Deserialize, Serialize};

use crate::client::BucketInfo;
use crate::entry::{Body, Entry, Kind, Stored};
use crate::error::Error;
use crate::index::{Leaf, Page, PagePtr, Root, Stamp, Value};

/// Largest page decoded.
pub const MAX_PAGE: usize = 16 * 1024 * 1024;
/// Largest head payload encoded or decoded: what a head record carries
/// ([`cairn_proto::head::MAX_HEAD_PAYLOAD`]) less the seal's nonce and tag.
pub const MAX_HEAD: usize = cairn_proto::head::MAX_HEAD_PAYLOAD - 64;
/// Largest entry decoded.
pub const MAX_ENTRY: usize = 64 * 1024 * 1024;
/// Largest bucket-list entry decoded.
pub const MAX_BUCKET: usize = 4096;

const PAGE_V1: u8 = 1;
const PAGE_V2: u8 = 2;
/// Version 2 padded with zeros to its Padmé length ([`crate::padding`]).
const PAGE_V3: u8 = 3;
const HEAD_V1: u8 = 1;
const HEAD_V2: u8 = 2;
/// Version 2 with the journal, padded to its Padmé length.
const HEAD_V3: u8 = 3;
/// Version 3 with the runs, padded to its Padmé length.
const HEAD_V4: u8 = 4;
/// Most runs a head payload names.
pub const MAX_RUNS: usize = 32;
const ENTRY_V1: u8 = 1;
const ENTRY_V2: u8 = 2;
const BUCKET_V1: u8 = 1;
const BUCKET_V2: u8 = 2;
const BUCKET_V3: u8 = 3;
const GARBAGE_V1: u8 = 1;
const MARK_V1: u8 = 1;
const PEERS_V1: u8 = 1;
const NODE_V1: u8 = 1;

fn version_of(what: &'static str, bytes: &[u8]) -> Result<u8, ProtoError> {
    bytes.first().copied().ok_or(ProtoError::Malformed { what, reason: "empty".into() })
}

/// What a head record points at (sealed inside it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadPayload {
    /// The root page (`None`: an empty tree).
    pub root: Option<PagePtr>,
    /// Live entries, the journal's included.
    pub count: u64,
    /// The largest stamp time in the tree (the writers' clocks start past it).
    pub clock: u64,
    /// Entries written since the pages were last rewritten, sorted by key,
    /// keys unique, tombstones included: they override the runs' values
    /// and the leaves'.
    pub journal: Vec<(String, Value)>,
    /// Journals that outgrew the head record, each stored as a leaf page
    /// (a run), newest first: a run's values override older runs' and the
    /// leaves' (see [`crate::journal`]). At most [`MAX_RUNS`].
    pub runs: Vec<PagePtr>,
}

#[derive(Deserialize)]
struct HeadPayloadV3 {
    root: Option<PagePtr>,
    count: u64,
    clock: u64,
    journal: Vec<(String, Value)>,
}

#[derive(Deserialize)]
struct HeadPayloadV1 {
    root: Option<PagePtr>,
    count: u64,
}

#[derive(Deserialize)]
struct HeadPayloadV2 {
    root: Option<PagePtr>,
    count: u64,
    clock: u64,
}

/// Encodes a head payload, padded with zeros to its Padmé length (a node
/// learns the journal's size only to within 12 %). The caller keeps it
/// within [`MAX_HEAD`] (see [`head_fits`]).
pub fn encode_head(h: &HeadPayload) -> Vec<u8> {
    let len = codec::to_bytes(h).len() as u64 + 1;
    codec::to_versioned_padded(HEAD_V4, h, (crate::padding::padme(len) as usize).min(MAX_HEAD))
}

/// Whether `h` encodes within [`MAX_HEAD`].
pub fn head_fits(h: &HeadPayload) -> bool {
    codec::to_bytes(h).len() < MAX_HEAD
}

/// Decodes a head payload of any known version.
pub fn decode_head(bytes: &[u8]) -> Result<HeadPayload, ProtoError> {
    const WHAT: &str = "head payload";
    let head = match version_of(WHAT, bytes)? {
        HEAD_V1 => {
            let v: HeadPayloadV1 = codec::from_versioned(WHAT, HEAD_V1, bytes, MAX_HEAD)?;
            HeadPayload { root: v.root, count: v.count, ..HeadPayload::default() }
        }
        HEAD_V2 => {
            let v: HeadPayloadV2 = codec::from_versioned(WHAT, HEAD_V2, bytes, MAX_HEAD)?;
            HeadPayload { root: v.root, count: v.count, clock: v.clock, ..HeadPayload::default() }
        }
        HEAD_V3 => {
            let v: HeadPayloadV3 = codec::from_versioned_padded(WHAT, HEAD_V3, bytes, MAX_HEAD)?;
            HeadPayload { root: v.root, count: v.count, clock: v.clock, journal: v.journal, runs: Vec::new() }
        }
        _ => codec::from_versioned_padded(WHAT, HEAD_V4, bytes, MAX_HEAD)?,
    };
    if !head.journal.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(ProtoError::Inconsistent { what: WHAT, reason: "journal keys are not sorted and unique".into() });
    }
    if head.runs.len() > MAX_RUNS {
        return Err(ProtoError::Inconsistent { what: WHAT, reason: "more runs than a head names".into() });
    }
    Ok(head)
}

#[derive(Deserialize)]
struct ValueV1 {
    stamp: (u64, u64),
    #[serde(with = "cairn_proto::codec::bytes")]
    data: Vec<u8>,
}

#[derive(Deserialize)]
enum PageV1 {
    Root(Root),
    Leaf(Vec<(String, ValueV1)>),
}

/// Encodes an index page.
/// It is padded with zeros to the Padmé length of its encoding, so a node
/// learns a page's size only to within 12 % (less for larger pages).
pub fn encode_page(p: &Page) -> Vec<u8> {
    let len = codec::to_bytes(p).len() as u64 + 1;
    codec::to_versioned_padded(PAGE_V3, p, (crate::padding::padme(len) as usize).min(MAX_PAGE))
}

/// Decodes an index page of any known version (version 1 stamps were wall
/// clock milliseconds and a random number; they become hybrid times).
pub fn decode_page(bytes: &[u8]) -> Result<Page, ProtoError> {
    const WHAT: &str = "index page";
    let page = match version_of(WHAT, bytes)? {
        PAGE_V1 => match codec::from_versioned(WHAT, PAGE_V1, bytes, MAX_PAGE)? {
            PageV1::Root(r) => Page::Root(r),
            PageV1::Leaf(entries) => Page::Leaf(Leaf {
                entries: entries
                    .into_iter()
                    .map(|(k, v)| {
                        let stamp = Stamp { time: v.stamp.0 << 16, writer: v.stamp.1 };
                        (k, Value { stamp, data: Some(v.data.into()) })
                    })
                    .collect(),
            }),
        },
        PAGE_V2 => codec::from_versioned(WHAT, PAGE_V2, bytes, MAX_PAGE)?,
        _ => codec::from_versioned_padded(WHAT, PAGE_V3, bytes, MAX_PAGE)?,
    };
    if let Page::Leaf(l) = &page
        && !l.entries.windows(2).all(|w| w[0].0 < w[1].0)
    {
        return Err(ProtoError::Inconsistent { what: WHAT, reason: "leaf keys are not sorted and unique".into() });
    }
    Ok(page)
}

#[derive(Deserialize)]
enum BodyV1 {
    Inline(Vec<u8>),
    Stored(ObjectManifest),
}

#[derive(Deserialize)]
struct EntryV1 {
    size: u64,
    modified_ms: u64,
    content_type: Option<String>,
    meta: Vec<(String, String)>,
    body: BodyV1,
}

/// Encodes an object entry.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    codec::to_versioned(ENTRY_V2, e)
}

/// Decodes and validates an object entry of any known version.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, Error> {
    const WHAT: &str = "object entry";
    let entry = match version_of(WHAT, bytes)? {
        ENTRY_V1 => {
            let v: EntryV1 = codec::from_versioned(WHAT, ENTRY_V1, bytes, MAX_ENTRY)?;
            let body = match v.body {
                BodyV1::Inline(b) => Body::Inline(b),
                BodyV1::Stored(m) => {
                    let len = m.size;
                    Body::Stored(Stored::whole(m, len))
                }
            };
            Entry { content_type: v.content_type, meta: v.meta, size: v.size, ..Entry::file(body, v.modified_ms) }
        }
        _ => codec::from_versioned(WHAT, ENTRY_V2, bytes, MAX_ENTRY)?,
    };
    entry.validate()?;
    if let Kind::Symlink(t) = &entry.kind
        && t.is_empty()
    {
        return Err(Error::BadEntry { reason: "a symlink with an empty target".into() });
    }
    Ok(entry)
}

#[derive(Serialize, Deserialize)]
struct BucketV3 {
    created_ms: u64,
    settings: crate::BucketSettings,
    head_published: bool,
    placement: Placement,
}

#[derive(Deserialize)]
struct BucketV2 {
    created_ms: u64,
    settings: crate::BucketSettings,
    head_published: bool,
}

#[derive(Deserialize)]
struct BucketV1 {
    created_ms: u64,
    settings: crate::BucketSettings,
}

/// Encodes a bucket-list entry (the name is the key, not stored here).
pub fn encode_bucket(b: &BucketInfo) -> Vec<u8> {
    codec::to_versioned(
        BUCKET_V3,
        &BucketV3 {
            created_ms: b.created_ms,
            settings: b.settings,
            head_published: b.head_published,
            placement: b.placement.clone(),
        },
    )
}

/// Decodes a bucket-list entry and checks its settings.
pub fn decode_bucket(name: String, bytes: &[u8]) -> Result<BucketInfo, Error> {
    const WHAT: &str = "bucket entry";
    let info = match version_of(WHAT, bytes)? {
        BUCKET_V1 => {
            let v: BucketV1 = codec::from_versioned(WHAT, BUCKET_V1, bytes, MAX_BUCKET)?;
            BucketInfo {
                name,
                created_ms: v.created_ms,
                settings: v.settings,
                head_published: false,
                placement: Placement::default(),
            }
        }
        BUCKET_V2 => {
            let v: BucketV2 = codec::from_versioned(WHAT, BUCKET_V2, bytes, MAX_BUCKET)?;
            BucketInfo {
                name,
                created_ms: v.created_ms,
                settings: v.settings,
                head_published: v.head_published,
                placement: Placement::default(),
            }
        }
        _ => {
            let v: BucketV3 = codec::from_versioned(WHAT, BUCKET_V3, bytes, MAX_BUCKET)?;
            BucketInfo {
                name,
                created_ms: v.created_ms,
                settings: v.settings,
                head_published: v.head_published,
                placement: v.placement,
            }
        }
    };
    info.settings.layout()?;
    info.placement.validate(info.settings.k, info.settings.n)?;
    Ok(info)
}

/// Data versions queued for collection when an entry was replaced or
/// removed: deleted from the nodes once no name uses them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Garbage {
    /// The manifests of the versions the old entry used.
    pub data: Vec<ObjectManifest>,
}

/// Encodes a garbage-queue value.
pub fn encode_garbage(g: &Garbage) -> Vec<u8> {
    codec::to_versioned(GARBAGE_V1, g)
}

/// Decodes a garbage-queue value.
pub fn decode_garbage(bytes: &[u8]) -> Result<Garbage, Error> {
    let g: Garbage = codec::from_versioned("garbage entry", GARBAGE_V1, bytes, MAX_ENTRY)?;
    for m in &g.data {
        m.validate()?;
    }
    Ok(g)
}

/// The newest head a client has seen of a tree (kept in the cache, so a
/// node serving an old record is caught across runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Sequence number.
    pub seq: u64,
    /// The root page it named.
    pub root: Option<ShardId>,
}

/// Encodes a high-water mark.
pub fn encode_mark(m: &Mark) -> Vec<u8> {
    codec::to_versioned(MARK_V1, m)
}

/// Decodes a high-water mark.
pub fn decode_mark(bytes: &[u8]) -> Result<Mark, ProtoError> {
    codec::from_versioned("head mark", MARK_V1, bytes, 128)
}

/// The nodes closest to a head record, as a lookup found them (kept in
/// the cache, so that a new process reads and publishes the head without
/// a DHT lookup first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPeers {
    /// When the lookup ran (ms since the Unix epoch).
    pub found_ms: u64,
    /// The peers' ids (libp2p `PeerId` bytes), closest first.
    pub peers: Vec<Vec<u8>>,
}

/// Encodes a record's closest nodes.
pub fn encode_record_peers(p: &RecordPeers) -> Vec<u8> {
    codec::to_versioned(PEERS_V1, p)
}

/// Decodes a record's closest nodes.
pub fn decode_record_peers(bytes: &[u8]) -> Result<RecordPeers, ProtoError> {
    codec::from_versioned("record peers", PEERS_V1, bytes, 8 * 1024)
}

/// What the cache remembers of a storage node across runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMemo {
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Until when it is passed over after failing (ms since the Unix
    /// epoch), so that the next run does not wait on it first.
    pub down_until_ms: Option<u64>,
}

/// Encodes what is remembered of a node.
pub fn encode_node(m: &NodeMemo) -> Vec<u8> {
    codec::to_versioned(NODE_V1, m)
}

/// Decodes what is remembered of a node.
pub fn decode_node(bytes: &[u8]) -> Result<NodeMemo, ProtoError> {
    codec::from_versioned("node memo", NODE_V1, bytes, 64 * 1024)
}

#[cfg(test)]
mod tests {
    use cairn_proto::layout::Layout;
    use cairn_proto::manifest::{SegmentManifest, ShardPlacement};
    use cairn_proto::{NodeId, ObjectVersionId, SegmentId};
    use proptest::prelude::*;

    use super::*;
    use crate::entry::{Checksum, ChecksumAlgorithm, Extent, Posix};
    use crate::index::LeafRef;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    fn manifest() -> ObjectManifest {
        let layout = Layout { segment_size: 1 << 20, block_size: 1 << 16, k: 1, n: 2 };
        let seg = layout.segment(5);
        ObjectManifest {
            version: ObjectVersionId([1; 16]),
            size: 5,
            layout,
            data_key: [2; 32],
            segments: vec![SegmentManifest {
                id: SegmentId([3; 32]),
                plain_len: 5,
                shard_len: seg.shard_len(),
                shards: vec![
                    ShardPlacement { id: ShardId([4; 32]), holder: Some(NodeId::from_bytes(vec![5, 6]).expect("id")) },
                    ShardPlacement { id: ShardId([7; 32]), holder: None },
                ],
            }],
        }
    }

    fn entry() -> Entry {
        let mut s = Stored::whole(manifest(), manifest().size);
        s.extents = vec![Extent { data: Some(0), skip: 1, len: 3 }, Extent { data: None, skip: 0, len: 2 }];
        Entry {
            kind: Kind::File,
            size: 5,
            modified_ms: 7,
            content_type: Some("text/plain".into()),
            headers: vec![("cache-control".into(), "no-cache".into())],
            meta: vec![("a".into(), "b".into())],
            etag: Some("00ff".into()),
            checksums: vec![Checksum { algorithm: ChecksumAlgorithm::Crc32c, value: vec![9, 9] }],
            posix: Some(Posix { mode: 0o100644, uid: 1, gid: 2 }),
            body: Body::Stored(s),
        }
    }

    #[test]
    fn golden_bytes_pin_every_format() {
        let ptr = PagePtr { id: ShardId([8; 32]), len: 9, holders: vec![NodeId::from_bytes(vec![1]).expect("id")] };
        let head = HeadPayload { root: Some(ptr.clone()), count: 3, clock: 0x1_0000, ..HeadPayload::default() };
        // 44 bytes (the v2 fields, then an empty journal and no runs), Padmé(44).
        assert_eq!(hex(&encode_head(&head)), format!("0401{}09010101038080040000", "08".repeat(32)));
        let journal = vec![
            ("a".into(), Value { stamp: Stamp { time: 1, writer: 2 }, data: Some(vec![3].into()) }),
            ("b".into(), Value { stamp: Stamp { time: 4, writer: 5 }, data: None }),
        ];
        let head = HeadPayload { root: None, count: 1, clock: 4, journal, runs: vec![ptr.clone()] };
        // Version, no root, count 1, clock 4, two entries ("a": stamp
        // (1, 2), Some([3]); "b": stamp (4, 5), None), one run (the page
        // pointer as above): 54 bytes with the version, padded to
        // Padmé(54) = 56.
        assert_eq!(
            hex(&encode_head(&head)),
            format!("0400010402016101020101030162040500 01{}09 01 01 01 0000", "08".repeat(32)).replace(' ', "")
        );
        assert_eq!(decode_head(&encode_head(&head)).expect("v4 head"), head);
        let unsorted = HeadPayload { journal: head.journal.iter().rev().cloned().collect(), ..head.clone() };
        assert!(decode_head(&codec::to_versioned(4, &unsorted)).is_err());
        let crowded = HeadPayload { runs: vec![ptr.clone(); MAX_RUNS + 1], ..head.clone() };
        assert!(decode_head(&codec::to_versioned(4, &crowded)).is_err());
        // Version 3 (a journal, no runs), as session 13 wrote it.
        let v3 = HeadPayload { runs: Vec::new(), ..head.clone() };
        assert_eq!(decode_head(&unhex("030001040201610102010103016204050000")).expect("v3 head"), v3);
        assert_eq!(
            decode_head(&unhex(&format!("0301{}09010101038080040000", "08".repeat(32)))).expect("v3 head"),
            HeadPayload { root: Some(ptr.clone()), count: 3, clock: 0x1_0000, ..HeadPayload::default() }
        );
        let h2 = codec::to_versioned(2, &(Some(ptr.clone()), 3u64, 0x1_0000u64));
        assert_eq!(
            decode_head(&h2).expect("v2 head"),
            HeadPayload { root: Some(ptr.clone()), count: 3, clock: 0x1_0000, ..HeadPayload::default() }
        );
        let leaf = Page::Leaf(Leaf {
            entries: vec![
                ("a".into(), Value { stamp: Stamp { time: 1, writer: 2 }, data: Some(vec![3].into()) }),
                ("b".into(), Value { stamp: Stamp { time: 4, writer: 5 }, data: None }),
            ],
        });
        assert_eq!(hex(&encode_page(&leaf)), "03010201610102010103016204050000");
        let root = Page::Root(Root { leaves: vec![LeafRef { first: "a".into(), page: ptr, count: 2 }] });
        assert_eq!(hex(&encode_page(&root)), format!("0300010161{}09010101020000", "08".repeat(32)));
        let info = BucketInfo {
            name: "x".into(),
            created_ms: 1,
            settings: crate::BucketSettings { k: 4, n: 6, extra: 2, segment_size: 1 << 24 },
            head_published: true,
            placement: Placement { regions: vec!["eu".into()], spread: 2, diversity: true },
        };
        assert_eq!(hex(&encode_bucket(&info)), "030104060280808008".to_string() + "01" + "0102657502" + "01");
        // A version 2 entry (before placement rules) reads with none.
        let v2 = decode_bucket("x".into(), &unhex(&("020104060280808008".to_string() + "01"))).expect("v2");
        assert_eq!(v2, BucketInfo { placement: Placement::default(), ..info.clone() });
        assert_eq!(hex(&encode_mark(&Mark { seq: 5, root: None })), "010500");
        let node = NodeMemo { addrs: vec!["a".into()], down_until_ms: Some(5) };
        assert_eq!(hex(&encode_node(&node)), "0101016101".to_string() + "05");
        let peers = RecordPeers { found_ms: 300, peers: vec![vec![7, 8], vec![]] };
        assert_eq!(hex(&encode_record_peers(&peers)), "01ac0202020708".to_string() + "00");
        let e = hex(&encode_entry(&entry()));
        let m = hex(&codec::to_bytes(&manifest()));
        assert_eq!(
            e,
            format!(
                "02000507010a746578742f706c61696e010d63616368652d636f6e74726f6c086e6f2d63616368650101610162\
                 010430306666010102090901a483020102\
                 0101{m}0201000103000002"
            )
        );
        let g = encode_garbage(&Garbage { data: vec![manifest()] });
        assert_eq!(hex(&g), format!("0101{m}"));
    }

    #[test]
    fn every_format_round_trips_and_old_versions_read() {
        assert_eq!(decode_entry(&encode_entry(&entry())).expect("entry"), entry());
        // A version-1 entry (before extents and metadata) reads as one extent.
        #[derive(Serialize)]
        enum B1 {
            #[allow(dead_code)]
            Inline(Vec<u8>),
            Stored(ObjectManifest),
        }
        #[derive(Serialize)]
        struct E1 {
            size: u64,
            modified_ms: u64,
            content_type: Option<String>,
            meta: Vec<(String, String)>,
            body: B1,
        }
        let old = E1 { size: 5, modified_ms: 1, content_type: None, meta: Vec::new(), body: B1::Stored(manifest()) };
        let e = decode_entry(&codec::to_versioned(1, &old)).expect("v1 entry");
        assert_eq!(e.body, Body::Stored(Stored::whole(manifest(), manifest().size)));
        // A version-1 leaf: stamps become hybrid times.
        let v1 = codec::to_versioned(1, &(1u32, vec![("k".to_string(), ((3u64, 4u64), vec![5u8]))]));
        let Page::Leaf(l) = decode_page(&v1).expect("v1 page") else { panic!("a leaf") };
        assert_eq!(l.entries[0].1, Value { stamp: Stamp { time: 3 << 16, writer: 4 }, data: Some(vec![5].into()) });
        // A version-2 page (before padding) reads; a version-3 page whose
        // padding is not zeros does not.
        let leaf = Page::Leaf(Leaf {
            entries: vec![(
                "k".into(),
                Value { stamp: Stamp { time: 1, writer: 2 }, data: Some(vec![7; 1000].into()) },
            )],
        });
        assert_eq!(decode_page(&codec::to_versioned(PAGE_V2, &leaf)).expect("v2 page"), leaf);
        let mut padded = encode_page(&leaf);
        assert_eq!(padded.len() as u64, crate::padding::padme(codec::to_bytes(&leaf).len() as u64 + 1));
        assert!(padded.len() > codec::to_bytes(&leaf).len() + 1, "this one is padded");
        assert_eq!(decode_page(&padded).expect("v3 page"), leaf);
        let last = padded.len() - 1;
        padded[last] = 1;
        assert!(decode_page(&padded).is_err());
        let h1 = codec::to_versioned(1, &(None::<PagePtr>, 7u64));
        assert_eq!(decode_head(&h1).expect("v1 head"), HeadPayload { root: None, count: 7, ..HeadPayload::default() });
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let mut e = entry();
        e.size = 6;
        assert!(matches!(decode_entry(&encode_entry(&e)), Err(Error::BadEntry { .. })));
        let unsorted = Page::Leaf(Leaf {
            entries: vec![
                ("b".into(), Value { stamp: Stamp::default(), data: None }),
                ("a".into(), Value { stamp: Stamp::default(), data: None }),
            ],
        });
        assert!(decode_page(&encode_page(&unsorted)).is_err());
        let mut bad = BucketInfo {
            name: "x".into(),
            created_ms: 1,
            settings: crate::BucketSettings::default(),
            head_published: false,
            placement: Placement::default(),
        };
        bad.settings.k = 0;
        assert!(decode_bucket("x".into(), &encode_bucket(&bad)).is_err());
        bad.settings.k = 4;
        bad.placement.regions = vec!["EU".into()];
        assert!(decode_bucket("x".into(), &encode_bucket(&bad)).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512), v in 0u8..5) {
            let mut b = bytes;
            if let Some(first) = b.first_mut() {
                *first = v;
            }
            let _ = decode_page(&b);
            let _ = decode_head(&b);
            let _ = decode_entry(&b);
            let _ = decode_bucket("x".into(), &b);
            let _ = decode_garbage(&b);
            let _ = decode_mark(&b);
            let _ = decode_record_peers(&b);
            let _ = decode_node(&b);
        }

        #[test]
        fn mutated_entries_never_panic(flip in 0usize..4096, to in any::<u8>()) {
            let mut b = encode_entry(&entry());
            let i = flip % b.len();
            b[i] = to;
            let _ = decode_entry(&b);
        }
    }
}
