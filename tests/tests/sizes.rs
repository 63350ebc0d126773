//! What a node can tell of an object's size: only the Padmé length of its
//! last segment, and no shard is all zeros or shared between objects.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use cairn_client::BucketSettings;
use cairn_client::bucket::{get_bytes, put_bytes};
use cairn_crypto::RootSecret;
use cairn_tests::TestCluster;

fn shard_files(cluster: &TestCluster) -> HashSet<PathBuf> {
    cluster.node_files().into_iter().filter(|p| p.components().any(|c| c.as_os_str() == "shards")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_padded_lengths_and_no_shard_is_all_zeros() {
    // Shard files show the lengths a node sees.
    let cluster = TestCluster::start_with(6, TestCluster::shards_in_files);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    // 64 KiB segments: objects of a few segments, a short last one.
    let settings = BucketSettings { k: 4, n: 6, extra: 2, segment_size: 64 * 1024 };
    client.create_bucket("sizes", Some(settings)).await.expect("mb");
    let b = client.bucket("sizes").await.expect("bucket");
    // Lengths whose last segments (1000–1020 bytes, then 1 byte) share a
    // Padmé length; objects made of full segments need no padding.
    let lengths = [(3 << 16) + 1000, (3 << 16) + 1013, (3 << 16) + 1020, (3 << 16) + 1, 3 << 16];
    let mut seen: Vec<BTreeMap<u64, usize>> = Vec::new();
    for (i, &len) in lengths.iter().enumerate() {
        let before = shard_files(&cluster);
        let bytes: Vec<u8> = (0..len).map(|j| (j % 7) as u8).collect();
        let key = format!("o{i}");
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        assert!(get_bytes(&b, &key).await.expect("get") == bytes, "{key} reads back exactly");
        assert_eq!(b.head(&key).await.expect("head").size, len as u64);
        // The object's shards: what the put added to the nodes (index
        // pages are small, and sealed whole).
        let mut sizes = BTreeMap::new();
        for f in shard_files(&cluster).difference(&before) {
            let Ok(data) = std::fs::read(f) else { continue };
            assert!(data.iter().any(|&x| x != 0), "an all-zero shard: {}", f.display());
            *sizes.entry(data.len() as u64).or_default() += 1;
        }
        seen.push(sizes);
    }
    // Index pages (3 copies, sealed lengths) vary with the index; segment
    // shards come 6 to a segment, in multiples of 64 bytes: compare those.
    let segment_shards = |m: &BTreeMap<u64, usize>| -> BTreeMap<u64, usize> {
        m.iter().filter(|(s, n)| **s % 64 == 0 && **n % 6 == 0).map(|(s, n)| (*s, *n)).collect()
    };
    // A 64 KiB segment's shard with k = 4: (65 536 + 16) / 4, 64-aligned.
    let full = 16 * 1024u64;
    let last_bucket = segment_shards(&seen[0]);
    for (i, m) in seen.iter().enumerate().take(3).skip(1) {
        assert_eq!(segment_shards(m), last_bucket, "object {i} looks different from object 0");
    }
    assert_eq!(last_bucket.len(), 2, "full shards and one short last shard: {last_bucket:?}");
    // One byte past three segments pads to a different, smaller bucket;
    // full segments only have full shards.
    assert_ne!(segment_shards(&seen[3]), last_bucket);
    assert_eq!(segment_shards(&seen[4]).into_keys().collect::<Vec<_>>(), [full + 64], "{:?}", seen[4]);
    client.shutdown().await;
}
