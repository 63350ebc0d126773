//! End to end: real `cairn-node` processes on loopback and real clients.

use std::time::Duration;

use cairn_client::bucket::{get_bytes, put_bytes};
use cairn_client::{Client, Error};
use cairn_crypto::RootSecret;
use cairn_tests::TestCluster;
use futures::StreamExt;
use rand::{RngCore, SeedableRng};

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

async fn keys(client: &Client, bucket: &str) -> Vec<String> {
    let b = client.bucket(bucket).await.expect("bucket");
    b.list("", None, "", usize::MAX).await.expect("list").objects.into_iter().map(|o| o.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_at_every_edge_size() {
    let cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    // The default code (4-of-8), which needs all 8 nodes.
    client.create_bucket("sizes", Some(cairn_client::BucketSettings::default())).await.expect("mb");
    let b = client.bucket("sizes").await.expect("bucket");
    assert_eq!((b.settings().k, b.settings().n), (4, 8));
    const MIB: usize = 1 << 20;
    let sizes = [0, 1, 32 * 1024 - 1, 32 * 1024, 16 * MIB - 1, 16 * MIB + 1, 100 * MIB];
    for (i, &size) in sizes.iter().enumerate() {
        let bytes = data(size, i as u64);
        let key = format!("obj/{size}");
        let info = put_bytes(&b, &key, bytes.clone()).await.expect("put");
        assert_eq!(info.size, size as u64);
        assert_eq!(info.segments == 0, size < 32 * 1024, "inlined exactly below 32 KiB ({size})");
        assert!(get_bytes(&b, &key).await.expect("get") == bytes, "bytes differ at size {size}");
        let (_, health) = b.stat(&key).await.expect("stat");
        assert!(health.iter().all(|h| (h.stored, h.healthy, h.k) == (8, 8, 4)), "{size}: {health:?}");
    }
    // A range inside the last segment of the largest object.
    let big = data(100 * MIB, 6);
    let mut part = Vec::new();
    b.get("obj/104857600", Some(40 * MIB as u64 + 5..90 * MIB as u64), &mut part).await.expect("range");
    assert!(part == big[40 * MIB + 5..90 * MIB], "range differs");
    let listing = b.list("obj/", None, "", 100).await.expect("ls");
    let mut listed: Vec<u64> = listing.objects.iter().map(|o| o.size).collect();
    listed.sort_unstable();
    assert_eq!(listed, sizes.iter().map(|&s| s as u64).collect::<Vec<_>>());
    // One level with a delimiter.
    let top = b.list("", Some('/'), "", 100).await.expect("ls /");
    assert_eq!(top.prefixes, vec!["obj/".to_string()]);
    assert!(top.objects.is_empty());
    // Overwrite, then remove everything.
    put_bytes(&b, "obj/1", b"new".to_vec()).await.expect("overwrite");
    assert_eq!(get_bytes(&b, "obj/1").await.expect("get"), b"new");
    for &size in &sizes {
        b.delete(&format!("obj/{size}")).await.expect("rm");
    }
    assert!(keys(&client, "sizes").await.is_empty());
    assert!(matches!(get_bytes(&b, "obj/1").await, Err(Error::NoSuchKey { .. })));
    assert!(matches!(b.delete("obj/1").await, Err(Error::NoSuchKey { .. })));
    // Shards of removed objects are deleted from the nodes, and so are the
    // extra shards of every put (once the slow tail has finished).
    client.settle().await;
    let mut used = 0;
    for s in client.status().await {
        used += s.stats.expect("stats").used;
    }
    assert!(used < 4 * MIB as u64, "{used} bytes still stored after every object was removed");
    client.delete_bucket("sizes").await.expect("rb");
    assert!(client.buckets().await.expect("buckets").is_empty());
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_two_dead_holders_and_name_the_segment_when_three_die() {
    let mut cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("durable", None).await.expect("mb");
    let b = client.bucket("durable").await.expect("bucket");
    let objects: Vec<(String, Vec<u8>)> =
        (0..3).map(|i| (format!("o{i}"), data(20 << 20, 100 + i))).chain([("tiny".into(), b"tiny".to_vec())]).collect();
    for (k, v) in &objects {
        put_bytes(&b, k, v.clone()).await.expect("put");
    }
    let holders = b.holders("o0").await.expect("holders");
    let seg0: Vec<usize> =
        holders[0].iter().flatten().filter_map(|p| cluster.index_of(&p.to_string())).collect::<Vec<_>>();
    assert_eq!(seg0.len(), 6, "6 shards stored");
    let snap = b.tree().snapshot(Duration::ZERO).await.expect("snapshot");
    let pages: Vec<Vec<usize>> = b
        .tree()
        .page_holders(&snap)
        .into_iter()
        .map(|h| h.iter().filter_map(|p| cluster.index_of(&p.to_string())).collect())
        .collect();
    // Three holders of segment 0 such that every index page keeps a copy.
    let mut victims = Vec::new();
    'outer: for a in 0..6 {
        for c in a + 1..6 {
            for d in c + 1..6 {
                let v = [seg0[a], seg0[c], seg0[d]];
                if pages.iter().all(|p| p.iter().any(|h| !v.contains(h))) {
                    victims = v.to_vec();
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(victims.len(), 3, "no three holders leave every page readable: {pages:?}");
    cluster.kill(victims[0]);
    cluster.kill(victims[1]);
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("durable").await.expect("bucket");
    for (k, v) in &objects {
        let got = tokio::time::timeout(Duration::from_secs(120), get_bytes(&rb, k)).await.expect("no hang");
        assert!(got.expect("read with two holders dead") == *v, "{k} differs");
    }
    cluster.kill(victims[2]);
    let err = tokio::time::timeout(Duration::from_secs(120), get_bytes(&rb, "o0"))
        .await
        .expect("no hang")
        .expect_err("three of six shards gone");
    assert!(matches!(err, Error::SegmentUnavailable { segment: 0, needed: 4, .. }), "{err}");
    assert!(err.to_string().contains("segment 0"), "{err}");
    reader.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_go_around_hung_nodes() {
    let cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("hung", None).await.expect("mb");
    let b = client.bucket("hung").await.expect("bucket");
    // Two nodes stop answering without closing anything: uploads to them
    // stall rather than fail, so only the spare uploads can finish the put.
    let frozen = [3, 6];
    for i in frozen {
        cluster.freeze(i);
    }
    let v = data(20 << 20, 7);
    let put = tokio::time::timeout(Duration::from_secs(120), put_bytes(&b, "big", v.clone())).await;
    let holders = b.holders("big").await;
    let got = tokio::time::timeout(Duration::from_secs(120), get_bytes(&b, "big")).await;
    // Let the stalled uploads finish before judging, so that the client's
    // shutdown (which deletes them) does not wait on frozen nodes.
    for i in frozen {
        cluster.thaw(i);
    }
    put.expect("put does not hang").expect("put around two hung nodes");
    for (s, seg) in holders.expect("holders").iter().enumerate() {
        let on: Vec<usize> = seg.iter().flatten().filter_map(|p| cluster.index_of(&p.to_string())).collect();
        assert_eq!(on.len(), 6, "segment {s}: 6 shards recorded");
        assert!(on.iter().all(|i| !frozen.contains(i)), "segment {s} recorded on a hung node: {on:?}");
    }
    assert!(got.expect("get does not hang").expect("get") == v, "bytes differ");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_keeps_everything_for_a_fresh_client() {
    let mut cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    for bucket in ["alpha", "beta"] {
        client.create_bucket(bucket, None).await.expect("mb");
        let b = client.bucket(bucket).await.expect("bucket");
        put_bytes(&b, "small", format!("hello {bucket}").into_bytes()).await.expect("put");
        put_bytes(&b, "dir/large", data(3 << 20, 7)).await.expect("put");
    }
    client.shutdown().await;
    for i in 0..cluster.len() {
        cluster.stop(i);
    }
    for i in 0..cluster.len() {
        cluster.restart(i);
    }
    // Only the key and a bootstrap address: no cache.
    let fresh = Client::connect(&root, cluster.client_config(None)).await.expect("connect");
    let names: Vec<String> = fresh.buckets().await.expect("buckets").into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["alpha", "beta"]);
    for bucket in ["alpha", "beta"] {
        assert_eq!(keys(&fresh, bucket).await, ["dir/large", "small"]);
        let b = fresh.bucket(bucket).await.expect("bucket");
        assert_eq!(get_bytes(&b, "small").await.expect("get"), format!("hello {bucket}").into_bytes());
        assert!(get_bytes(&b, "dir/large").await.expect("get") == data(3 << 20, 7));
    }
    // Another account sees none of it.
    let stranger = cluster.client(&RootSecret::generate()).await;
    assert!(stranger.buckets().await.expect("buckets").is_empty());
    assert!(matches!(stranger.bucket("alpha").await, Err(Error::NoSuchBucket(_))));
    fresh.shutdown().await;
    stranger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_bucket_lose_nothing() {
    let cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let a = cluster.client(&root).await;
    a.create_bucket("shared", None).await.expect("mb");
    let b = cluster.client(&root).await;
    tokio::join!(write_many(&a, "a"), write_many(&b, "b"));
    // A fresh client sees every acknowledged write; so do both writers once
    // their cached views are older than the documented 0.5 s.
    let c = cluster.client(&root).await;
    let listed = keys(&c, "shared").await;
    assert_eq!(listed.len(), 400, "a fresh client misses: {:?}", missing(&listed));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    for client in [&a, &b] {
        let listed = keys(client, "shared").await;
        assert_eq!(listed.len(), 400, "missing: {:?}", missing(&listed));
    }
    for client in [a, b, c] {
        client.shutdown().await;
    }
}

/// A writer whose every commit meets another writer's steady stream of
/// commits on the same bucket (one every few milliseconds, as a busy
/// gateway's) still gets each of its own through: it
/// builds its next attempt on the head that the refusals showed, as fast
/// as the busy writer does. Before, it read the head again after each
/// lost race and backed off, and a commit could lose ten races in a row
/// and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_gets_through_while_another_commits_without_pause() {
    let cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let a = cluster.client(&root).await;
    a.create_bucket("busy", None).await.expect("mb");
    let b = cluster.client(&root).await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let busy = async {
        let bucket = a.bucket("busy").await.expect("bucket");
        let mut n = 0u32;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            put_bytes(&bucket, &format!("busy/{n:05}"), vec![1; 100]).await.expect("busy put");
            n += 1;
            // What a gateway or a mount spends on a request between commits.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        n
    };
    let quiet = async {
        let bucket = b.bucket("busy").await.expect("bucket");
        for i in 0..40 {
            let key = format!("quiet/{i:02}");
            put_bytes(&bucket, &key, vec![2; 100]).await.expect("a put beside a busy writer");
            if i % 2 == 0 {
                bucket.delete(&key).await.expect("a delete beside a busy writer");
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (n, ()) = tokio::join!(busy, quiet);
    let c = cluster.client(&root).await;
    let listed = keys(&c, "busy").await;
    let quiet: Vec<&String> = listed.iter().filter(|k| k.starts_with("quiet/")).collect();
    assert_eq!(quiet.len(), 20, "{quiet:?}");
    assert_eq!(listed.len() - quiet.len(), n as usize, "the busy writer's puts");
    for client in [a, b, c] {
        client.shutdown().await;
    }
}

async fn write_many(client: &Client, who: &'static str) {
    let bucket = client.bucket("shared").await.expect("bucket");
    futures::stream::iter(0..200)
        .map(|i| {
            let bucket = bucket.clone();
            async move { put_bytes(&bucket, &format!("{who}/{i:03}"), vec![i as u8; 100]).await }
        })
        .buffer_unordered(32)
        .for_each(|r| async move {
            r.expect("put");
        })
        .await;
}

fn missing(listed: &[String]) -> Vec<String> {
    ["a", "b"]
        .iter()
        .flat_map(|w| (0..200).map(move |i| format!("{w}/{i:03}")))
        .filter(|k| !listed.contains(k))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serving_corrupt_bytes_is_caught_and_the_read_succeeds() {
    let cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("corrupt", None).await.expect("mb");
    let b = client.bucket("corrupt").await.expect("bucket");
    let bytes = data(1 << 20, 9);
    put_bytes(&b, "victim", bytes.clone()).await.expect("put");
    // Flip bytes in the shard files of the holder of a data shard (read first).
    // Which shards were kept depends on which uploads finished first.
    let holder = b.holders("victim").await.expect("holders")[0][..4]
        .iter()
        .flatten()
        .next()
        .copied()
        .expect("a data shard was stored");
    let node = cluster.index_of(&holder.to_string()).expect("node");
    // Background deletes (surplus shards, replaced index pages) end first.
    client.settle().await;
    let files: Vec<_> =
        cluster.node_files().into_iter().filter(|p| p.starts_with(cluster.node_dir(node).join("shards"))).collect();
    let mut corrupted = 0;
    for f in files {
        let mut v = match std::fs::read(&f) {
            Ok(v) => v,
            // Deleted since it was listed (a page replaced meanwhile).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read shard {}: {e}", f.display()),
        };
        if v.len() > 1000 {
            v[100] ^= 0xff;
            std::fs::write(&f, v).expect("write shard");
            corrupted += 1;
        }
    }
    assert!(corrupted > 0, "no shard files on the holder");
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("corrupt").await.expect("bucket");
    assert!(get_bytes(&rb, "victim").await.expect("read despite a corrupt shard") == bytes);
    reader.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_learn_no_plaintext_and_no_names() {
    let cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    let bucket_name = "zero-knowledge-bucket-name";
    let names = ["secret-object-name-one.txt", "another/secret/object-name-two.bin"];
    client.create_bucket(bucket_name, None).await.expect("mb");
    let b = client.bucket(bucket_name).await.expect("bucket");
    let plain_big = data(300 * 1024, 11);
    let plain_small = data(2000, 12);
    put_bytes(&b, names[0], plain_big.clone()).await.expect("put");
    put_bytes(&b, names[1], plain_small.clone()).await.expect("put");
    client.shutdown().await;
    // Every 32-byte window of the plaintext, keyed by its first 8 bytes.
    let mut windows = std::collections::HashMap::new();
    for p in [&plain_big, &plain_small] {
        for w in p.windows(32) {
            windows.insert(u64::from_le_bytes(w[..8].try_into().expect("8 bytes")), w.to_vec());
        }
    }
    let files = cluster.node_files();
    assert!(files.len() > 8, "node dirs hold files");
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for w in bytes.windows(32) {
            let head = u64::from_le_bytes(w[..8].try_into().expect("8 bytes"));
            if let Some(p) = windows.get(&head) {
                assert!(p.as_slice() != w, "{} holds plaintext", f.display());
            }
        }
        for name in names.iter().chain([&bucket_name]) {
            assert!(!bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{} holds the name {name}", f.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_cannot_be_reached_are_remembered_across_runs() {
    use cairn_client::cache::Cache;

    let mut cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let cache = cluster.dir().join("remembering-cache");
    let connect = |cluster: &TestCluster| Client::connect(&root, cluster.client_config(Some(cache.clone())));
    let client = connect(&cluster).await.expect("connect");
    client.create_bucket("remembering", None).await.expect("mb");
    let b = client.bucket("remembering").await.expect("bucket");
    put_bytes(&b, "before", b"kept".to_vec()).await.expect("put");
    // Handles hold the cache open (a second open of it is refused).
    drop(b);
    client.shutdown().await;

    // Three of eight die: five still make a majority of every head record.
    let dead = [1, 4, 6];
    let dead_peers: Vec<String> = dead.iter().map(|&i| cluster.peer_id(i)).collect();
    for i in dead {
        cluster.kill(i);
    }
    let client = connect(&cluster).await.expect("connect with nodes dead");
    let b = client.bucket("remembering").await.expect("bucket");
    for i in 0..4 {
        put_bytes(&b, &format!("during/{i}"), vec![i; 100]).await.expect("put with nodes dead");
    }
    assert_eq!(get_bytes(&b, "before").await.expect("get"), b"kept");
    // A run too short for a handshake is not evidence; this one is long enough.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(b);
    client.shutdown().await;

    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let remembered = Cache::open(&cache).expect("cache").nodes();
    let down: Vec<String> = remembered
        .iter()
        .filter(|(_, m)| m.down_until_ms.is_some_and(|t| t > now_ms))
        .filter_map(|(p, _)| {
            let node = cairn_proto::NodeId::from_bytes(p.clone()).ok()?;
            cairn_client::transfer::peer_of(&node).map(|p| p.to_string())
        })
        .collect();
    let mut down_sorted = down.clone();
    down_sorted.sort();
    let mut want = dead_peers.clone();
    want.sort();
    assert_eq!(down_sorted, want, "the cache remembers exactly the dead nodes as down");

    // The next run passes them over and still reads and writes everything.
    let client = connect(&cluster).await.expect("connect again");
    let b = client.bucket("remembering").await.expect("bucket");
    put_bytes(&b, "after", b"new".to_vec()).await.expect("put");
    for i in 0..4 {
        assert_eq!(get_bytes(&b, &format!("during/{i}")).await.expect("get"), vec![i; 100]);
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_with_a_data_holder_down_reads_verified_columns_not_whole_shards() {
    let mut cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("ranges", None).await.expect("mb");
    let b = client.bucket("ranges").await.expect("bucket");
    let bytes = data(16 << 20, 9);
    put_bytes(&b, "big", bytes.clone()).await.expect("put");
    // The holder of the data shard that holds the range dies.
    let holders = b.holders("big").await.expect("holders");
    let first = holders[0][0].expect("a holder");
    cluster.kill(cluster.index_of(&first.to_string()).expect("a cluster node"));
    let before = client.bytes_fetched();
    let mut out = Vec::new();
    b.get("big", Some(1000..101_000), &mut out).await.expect("range");
    assert!(out == bytes[1000..101_000], "range differs");
    // Verified slices of the same columns of the other shards, parity
    // included: about 100 KB each, not whole 4 MiB shards.
    let fetched = client.bytes_fetched() - before;
    assert!(fetched < 2 << 20, "{fetched} bytes fetched for a 100 KB range: whole shards were read");
    client.shutdown().await;
}
