//! The object model end to end: copies and renames share data, writes
//! into objects upload only new bytes, and data no name uses leaves the
//! nodes — against real `cairn-node` processes.

use std::collections::BTreeMap;

use cairn_client::bucket::{get_bytes, put_bytes};
use cairn_client::{BucketSettings, Client, MetadataDirective};
use cairn_crypto::RootSecret;
use cairn_tests::TestCluster;
use rand::{Rng, RngCore, SeedableRng};

fn data(len: usize, rng: &mut impl RngCore) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

async fn used(client: &Client) -> u64 {
    client.status().await.into_iter().map(|s| s.stats.map(|s| s.used).unwrap_or(0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_survives_random_copies_renames_writes_and_deletes() {
    let cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    // Small segments, so objects of a few hundred KiB have several.
    let settings = BucketSettings { segment_size: 128 * 1024, ..BucketSettings::default() };
    client.create_bucket("shared", Some(settings)).await.expect("mb");
    let b = client.bucket("shared").await.expect("bucket");
    let baseline = used(&client).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let names = ["a", "b", "c", "d/e"];
    for step in 0..40 {
        let name = names[rng.gen_range(0..names.len())].to_string();
        let other = names[rng.gen_range(0..names.len())].to_string();
        match rng.gen_range(0..7) {
            0 | 1 => {
                let len = rng.gen_range(33_000..400_000);
                let bytes = data(len, &mut rng);
                put_bytes(&b, &name, bytes.clone()).await.expect("put");
                model.insert(name, bytes);
            }
            // A copy onto itself included: rclone does that.
            2 if model.contains_key(&name) => {
                b.copy(&name, &other, MetadataDirective::Copy).await.expect("copy");
                model.insert(other, model[&name].clone());
            }
            3 if model.contains_key(&name) => {
                b.rename(&name, &other).await.expect("rename");
                let v = model.remove(&name).expect("in model");
                model.insert(other, v);
            }
            4 if model.contains_key(&name) => {
                let at = rng.gen_range(0..model[&name].len() as u64 + 1000);
                let patch = data(rng.gen_range(1..200_000), &mut rng);
                b.write_at(&name, at, std::io::Cursor::new(patch.clone())).await.expect("write_at");
                let v = model.get_mut(&name).expect("in model");
                let end = at as usize + patch.len();
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[at as usize..end].copy_from_slice(&patch);
            }
            5 if model.contains_key(&name) => {
                let len = rng.gen_range(0..model[&name].len() as u64 + 50_000);
                b.truncate(&name, len).await.expect("truncate");
                model.get_mut(&name).expect("in model").resize(len as usize, 0);
            }
            6 if model.contains_key(&name) => {
                b.delete(&name).await.expect("delete");
                model.remove(&name);
            }
            _ => continue,
        }
        // Every live name reads back right after every step, sweeps included.
        client.settle().await;
        for (k, v) in &model {
            let got = get_bytes(&b, k).await.unwrap_or_else(|e| panic!("step {step}: {k}: {e}"));
            assert!(got == *v, "step {step}: {k} differs ({} vs {} bytes)", got.len(), v.len());
            // A range across extent boundaries reads right too.
            if v.len() > 10 {
                let (lo, hi) = (v.len() as u64 / 3, v.len() as u64 - 5);
                let mut part = Vec::new();
                b.get(k, Some(lo..hi), &mut part).await.expect("range");
                assert!(part == v[lo as usize..hi as usize], "step {step}: range of {k}");
            }
        }
        let listed: Vec<String> =
            b.list("", None, "", 100).await.expect("list").objects.into_iter().map(|o| o.key).collect();
        assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>(), "step {step}: listing");
    }
    // Removing every name frees every shard of every version.
    for k in model.keys() {
        b.delete(k).await.expect("delete");
    }
    b.collect_garbage(true).await.expect("sweep");
    client.settle().await;
    let left = used(&client).await;
    assert!(left < baseline + 2 * 1024 * 1024, "{left} bytes stored after removing everything (index: {baseline})");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_etags_and_composition_are_kept() {
    let cluster = TestCluster::start(6);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    let settings = BucketSettings { k: 2, n: 3, extra: 1, segment_size: 64 * 1024 };
    client.create_bucket("meta", Some(settings)).await.expect("mb");
    let b = client.bucket("meta").await.expect("bucket");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let big = data(200_000, &mut rng);
    let opts = cairn_client::PutOptions {
        content_type: Some("application/x-test".into()),
        meta: vec![("colour".into(), "blue".into())],
        ..Default::default()
    };
    let info = b.put("big", std::io::Cursor::new(big.clone()), opts).await.expect("put");
    // The ETag is the MD5 of the bytes, for stored and inline objects alike.
    assert_eq!(info.etag.as_deref(), Some(md5_hex(&big).as_str()));
    let head = b.head("big").await.expect("head");
    assert_eq!(head.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(head.meta, vec![("colour".to_string(), "blue".to_string())]);
    let small = put_bytes(&b, "small", b"hello".to_vec()).await.expect("put");
    assert_eq!(small.etag.as_deref(), Some("5d41402abc4b2a76b9719d911017c592"));
    // Conditional create.
    let again = b
        .put(
            "small",
            std::io::Cursor::new(b"x".to_vec()),
            cairn_client::PutOptions { if_absent: true, ..Default::default() },
        )
        .await;
    assert!(matches!(again.as_ref().map_err(cairn_client::Error::root), Err(cairn_client::Error::Conflict { .. })));
    // Compose: the parts' bytes in order, no upload, S3's multipart ETag.
    let parts = ["big".to_string(), "small".to_string()];
    let whole = b.compose("whole", &parts, Default::default(), false).await.expect("compose");
    let mut want = big.clone();
    want.extend_from_slice(b"hello");
    assert!(get_bytes(&b, "whole").await.expect("get") == want);
    let mut md5s = Vec::new();
    md5s.extend(unhex(&md5_hex(&big)));
    md5s.extend(unhex("5d41402abc4b2a76b9719d911017c592"));
    assert_eq!(whole.etag, Some(format!("{}-2", md5_hex(&md5s))));
    // Directories and symlinks are entries of their own kind.
    b.mkdir("dir/").await.expect("mkdir");
    b.symlink("link", "big").await.expect("symlink");
    assert!(matches!(b.head("link").await.expect("head").kind, cairn_client::Kind::Symlink(ref t) if t == "big"));
    assert!(matches!(b.head("dir/").await.expect("head").kind, cairn_client::Kind::Directory));
    // A copy may replace the metadata.
    let replace =
        MetadataDirective::Replace { content_type: None, headers: Vec::new(), meta: vec![("k".into(), "v".into())] };
    let c = b.copy("big", "big2", replace).await.expect("copy");
    assert_eq!(c.meta, vec![("k".to_string(), "v".to_string())]);
    assert_eq!(c.etag, info.etag);
    client.shutdown().await;
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Copies a directory tree (node data) with `cp -a`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_a_head_older_than_one_it_has_seen() {
    let mut cluster = TestCluster::start(5);
    let root = RootSecret::generate();
    let cache = cluster.dir().join("cache");
    let settings = BucketSettings { k: 2, n: 3, extra: 0, segment_size: 64 * 1024 };
    let client = Client::connect(&root, cluster.client_config(Some(cache.clone()))).await.expect("connect");
    client.create_bucket("roll", Some(settings)).await.expect("mb");
    let b = client.bucket("roll").await.expect("bucket");
    put_bytes(&b, "first", b"one".to_vec()).await.expect("put");
    // Every handle goes, so the next client can open the same cache.
    drop(b);
    client.shutdown().await;
    // Snapshot every node, write more, then roll every node back: the
    // network now serves an older head than the client has seen.
    let backup = cluster.dir().join("backup");
    std::fs::create_dir_all(&backup).expect("backup dir");
    for i in 0..cluster.len() {
        cluster.stop(i);
        copy_dir(&cluster.node_dir(i), &backup.join(i.to_string()));
    }
    for i in 0..cluster.len() {
        cluster.restart(i);
    }
    let client = Client::connect(&root, cluster.client_config(Some(cache.clone()))).await.expect("connect");
    let b = client.bucket("roll").await.expect("bucket");
    put_bytes(&b, "second", b"two".to_vec()).await.expect("put");
    drop(b);
    client.shutdown().await;
    for i in 0..cluster.len() {
        cluster.stop(i);
        std::fs::remove_dir_all(cluster.node_dir(i)).expect("remove node dir");
        copy_dir(&backup.join(i.to_string()), &cluster.node_dir(i));
    }
    for i in 0..cluster.len() {
        cluster.restart(i);
    }
    // The client remembers (in its cache) the newer head: it refuses to
    // read or to build on the old one, instead of losing "second".
    let client = Client::connect(&root, cluster.client_config(Some(cache))).await.expect("connect");
    let b = client.bucket("roll").await.expect("bucket");
    let listed = b.list("", None, "", 10).await;
    assert!(
        matches!(listed.as_ref().map_err(cairn_client::Error::root), Err(cairn_client::Error::HeadBehind { .. })),
        "{listed:?}"
    );
    let put = put_bytes(&b, "third", b"three".to_vec()).await;
    assert!(
        matches!(put.as_ref().map_err(cairn_client::Error::root), Err(cairn_client::Error::HeadBehind { .. })),
        "{put:?}"
    );
    client.shutdown().await;
    // A client without that memory sees the rolled-back bucket as it was.
    let fresh = Client::connect(&root, cluster.client_config(None)).await.expect("connect");
    let keys: Vec<String> = fresh
        .bucket("roll")
        .await
        .expect("bucket")
        .list("", None, "", 10)
        .await
        .expect("list")
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["first"]);
    fresh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire_and_their_data_leaves_the_nodes() {
    let cluster = TestCluster::start(8);
    let client = cluster.client(&RootSecret::generate()).await;
    client.create_bucket("uploads", None).await.expect("mb");
    let b = client.bucket("uploads").await.expect("bucket");
    let baseline = used(&client).await;
    let id = b.create_upload("big", cairn_client::PutOptions::default()).await.expect("create");
    b.upload_part("big", &id, 1, std::io::Cursor::new(vec![7u8; 3 << 20])).await.expect("part 1");
    b.upload_part("big", &id, 2, std::io::Cursor::new(vec![8u8; 100])).await.expect("part 2");
    let other = b.create_upload("other", cairn_client::PutOptions::default()).await.expect("create");
    assert!(used(&client).await > baseline + (3 << 20), "parts are stored");
    // Young uploads stay; a limit of zero takes them all.
    assert_eq!(b.expire_uploads(3_600_000).await.expect("expire"), 0);
    assert_eq!(b.list_uploads("", "", "", 10).await.expect("list").0.len(), 2);
    assert_eq!(b.expire_uploads(0).await.expect("expire"), 2);
    assert!(b.list_uploads("", "", "", 10).await.expect("list").0.is_empty());
    assert!(matches!(b.list_parts("big", &id, 0, 10).await, Err(cairn_client::Error::NoSuchUpload { .. })));
    assert!(matches!(b.abort_upload("other", &other).await, Err(cairn_client::Error::NoSuchUpload { .. })));
    // Nothing is listed, and the parts' data leaves the nodes.
    assert!(b.list("", None, "", 10).await.expect("ls").objects.is_empty());
    while b.collect_garbage(true).await.expect("sweep") > 0 {}
    client.settle().await;
    let left = used(&client).await;
    assert!(left < baseline + 2 * 1024 * 1024, "{left} bytes stored after expiry (before: {baseline})");
    client.shutdown().await;
}

/// A commit adds to the journal in the head record; a journal that
/// outgrows the head is stored as a run page the head names, and past
/// `FOLD_AT` the journal and its runs are folded into leaves in the
/// background. A client that shuts down right after (a CLI call) still
/// names its fold in a head record before it stops, so the fold's pages
/// are not left unnamed, and a fresh client reads every object from
/// leaves, runs and journal alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_client_names_its_journal_fold_before_it_stops() {
    let cluster = TestCluster::start(6);
    let root = RootSecret::generate();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Objects of 30,000 bytes live inside their entries, and a head
    // record's journal holds one of them: the second outgrows it.
    let size = 30_000;
    let first = cairn_client::tree::FOLD_AT / size + 2;
    let past_head = cairn_proto::head::MAX_HEAD_PAYLOAD / size + 1;
    let objects: Vec<(String, Vec<u8>)> =
        (0..first + 1 + past_head).map(|i| (format!("small-{i:02}"), data(size, &mut rng))).collect();
    {
        let client = cluster.client(&root).await;
        client.create_bucket("journal", None).await.expect("mb");
        let b = client.bucket("journal").await.expect("bucket");
        for (key, bytes) in &objects[..first] {
            put_bytes(&b, key, bytes.clone()).await.expect("put");
        }
        client.shutdown().await;
    }
    let client = cluster.client(&root).await;
    let b = client.bucket("journal").await.expect("bucket");
    let snap = b.tree().snapshot(std::time::Duration::ZERO).await.expect("snapshot");
    let (leaves, journal) = (snap.root.leaves.len(), snap.journal.len());
    assert!(leaves > 0 && journal < first, "the fold was named: {leaves} leaves, {journal} journal entries");
    put_bytes(&b, &objects[first].0, objects[first].1.clone()).await.expect("put");
    let snap = b.tree().snapshot(std::time::Duration::ZERO).await.expect("snapshot");
    assert_eq!(snap.journal.len(), journal + 1, "a new write goes into the journal");
    assert_eq!(snap.count, first as u64 + 1);
    // A one-shot client (a CLI command) folds only when it must: its
    // puts go into the journal and a run, not into the leaves.
    let once = cairn_client::ClientConfig { one_shot: true, ..cluster.client_config(None) };
    let once = Client::connect(&root, once).await.expect("connect");
    let ob = once.bucket("journal").await.expect("bucket");
    for (key, bytes) in &objects[first + 1..] {
        put_bytes(&ob, key, bytes.clone()).await.expect("put");
    }
    once.shutdown().await;
    let snap = b.tree().snapshot(std::time::Duration::ZERO).await.expect("snapshot");
    let total = (first + 1 + past_head) as u64;
    assert_eq!((snap.journal.len(), snap.root.leaves.len(), snap.count), (journal + 1 + past_head, leaves, total));
    assert!(!snap.runs().is_empty(), "a journal that outgrew the head went into a run");
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("journal").await.expect("bucket");
    for (key, bytes) in &objects {
        assert!(get_bytes(&rb, key).await.expect("get") == *bytes, "{key}");
    }
    let listed = rb.list("", None, "", 1000).await.expect("list");
    let keys: Vec<&str> = listed.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, objects.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>());
    reader.shutdown().await;
    client.shutdown().await;
}

/// Writes scattered over a filled bucket (one small object per leaf,
/// overwritten again and again) do not make the background folds rewrite
/// the leaves: each would rewrite a 64 KiB leaf (three copies) for 2 KiB.
/// The folds leave such entries in the journal and store them again as
/// one run instead of many; every object still reads and lists right
/// from a fresh client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_folds_leave_scattered_writes_in_the_journal_and_rewrite_no_leaf() {
    use futures::StreamExt;
    let cluster = TestCluster::start(6);
    let root = RootSecret::generate();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let size = 2_000;
    let mut model: BTreeMap<String, Vec<u8>> =
        (0..2_000).map(|i| (format!("k-{i:05}"), data(size, &mut rng))).collect();
    let client = cluster.client(&root).await;
    client.create_bucket("scatter", None).await.expect("mb");
    let b = client.bucket("scatter").await.expect("bucket");
    futures::stream::iter(model.iter())
        .map(|(k, v)| put_bytes(&b, k, v.clone()))
        .buffer_unordered(64)
        .for_each(|r| async move {
            r.expect("put");
        })
        .await;
    // Everything into the leaves, so that what follows starts from an
    // empty journal.
    b.tree().commit_folded(Vec::new()).await.expect("fold");
    let before = b.tree().snapshot(std::time::Duration::ZERO).await.expect("snapshot");
    let leaves: Vec<_> = before.root.leaves.iter().map(|l| l.page.id).collect();
    assert!(
        leaves.len() >= 20 && before.journal.is_empty(),
        "{} leaves, {} journal",
        leaves.len(),
        before.journal.len()
    );
    // One key in every 40th, written 8 times over: enough runs for
    // several background folds (a head holds ~16 of these entries).
    let scattered: Vec<String> = (0..2_000).step_by(40).map(|i| format!("k-{i:05}")).collect();
    for _ in 0..8 {
        for k in &scattered {
            let v = data(size, &mut rng);
            put_bytes(&b, k, v.clone()).await.expect("put");
            model.insert(k.clone(), v);
        }
    }
    client.shutdown().await;
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("scatter").await.expect("bucket");
    let after = rb.tree().snapshot(std::time::Duration::ZERO).await.expect("snapshot");
    let now: Vec<_> = after.root.leaves.iter().map(|l| l.page.id).collect();
    let rewritten = now.iter().filter(|id| !leaves.contains(id)).count();
    assert_eq!((now.len(), rewritten), (leaves.len(), 0), "leaves, and leaves rewritten");
    assert!(after.runs().len() < cairn_client::tree::FOLD_RUNS, "{} runs: the folds merged them", after.runs().len());
    for k in &scattered {
        assert!(after.journal.iter().any(|(j, _)| j == k), "{k} is in the journal");
    }
    for (k, v) in &model {
        assert!(get_bytes(&rb, k).await.expect("get") == *v, "{k}");
    }
    let listed = rb.list("", None, "", 5000).await.expect("list");
    let keys: Vec<&str> = listed.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, model.keys().map(String::as_str).collect::<Vec<_>>());
    reader.shutdown().await;
}

/// A commit whose record reached only a minority of the record's nodes
/// (half of them died under it) retries, and a reader merges what that
/// minority holds: the retry must find its own ops there and not apply
/// them twice. Before, the delete answered "no such object" for the
/// object it had just deleted, and a create-only put conflicted with
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_first_reached_a_minority_applies_once() {
    let mut cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    let settings = BucketSettings { k: 2, n: 3, extra: 0, segment_size: 64 * 1024 };
    client.create_bucket("once", Some(settings)).await.expect("mb");
    let b = client.bucket("once").await.expect("bucket");
    put_bytes(&b, "gone", b"x".to_vec()).await.expect("put");
    for i in 4..8 {
        cluster.kill(i);
    }
    b.delete("gone").await.expect("a delete whose first attempt reached a minority");
    let got = get_bytes(&b, "gone").await;
    assert!(
        matches!(got.as_ref().map_err(cairn_client::Error::root), Err(cairn_client::Error::NoSuchKey { .. })),
        "{got:?}"
    );
    // Half the nodes missed that commit: a new client (whose record nodes
    // are all eight again) brings every node up to date, then the other
    // half dies under a create-only put.
    client.shutdown().await;
    for i in 4..8 {
        cluster.restart(i);
    }
    let client = cluster.client(&root).await;
    let b = client.bucket("once").await.expect("bucket");
    put_bytes(&b, "again", b"y".to_vec()).await.expect("put with every node up");
    for i in 0..4 {
        cluster.kill(i);
    }
    let opts = cairn_client::PutOptions { if_absent: true, ..Default::default() };
    b.put("made", std::io::Cursor::new(b"new".to_vec()), opts)
        .await
        .expect("a create-only put whose first attempt reached a minority");
    assert_eq!(get_bytes(&b, "made").await.expect("get"), b"new");
    client.shutdown().await;
}
