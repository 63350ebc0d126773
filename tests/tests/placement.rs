//! Placement on real nodes: buckets kept inside a region, segments spread
//! over regions that survive the loss of one, and a network that grows
//! while clients run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn_client::bucket::{get_bytes, put_bytes};
use cairn_client::policy::Placement;
use cairn_client::{Bucket, BucketSettings, Error};
use cairn_crypto::RootSecret;
use cairn_net::PeerId;
use cairn_tests::regions::{REGIONS, regions_of, shard_regions};
use cairn_tests::{DEADLINE, TestCluster};

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_pinned_to_a_region_never_has_a_shard_outside_it() {
    let cluster = TestCluster::start_each(6, |i, c| TestCluster::in_region(&REGIONS, i, c));
    let client = cluster.client(&RootSecret::generate()).await;
    let regions = regions_of(&client).await;
    assert_eq!(regions.values().filter(|r| *r == "eu").count(), 2, "{regions:?}");

    let code = BucketSettings { k: 1, n: 2, extra: 0, segment_size: 64 * 1024 };
    let pinned = Placement { regions: vec!["eu".into()], ..Placement::default() };
    client.create_bucket_placed("eu-only", Some(code), pinned.clone()).await.expect("mb");
    let b = client.bucket("eu-only").await.expect("bucket");
    assert_eq!(b.placement(), &pinned);
    for i in 0..4u8 {
        let bytes = data(100_000 + usize::from(i) * 30_000, i);
        put_bytes(&b, &format!("o{i}"), bytes.clone()).await.expect("put");
        for seg in shard_regions(&b, &format!("o{i}"), &regions).await {
            assert_eq!(seg, vec!["eu", "eu"], "object {i}");
        }
        assert_eq!(get_bytes(&b, &format!("o{i}")).await.expect("get"), bytes);
    }
    let (_, health) = b.stat("o0").await.expect("stat");
    assert!(health.iter().all(|h| h.regions.iter().all(|r| r.as_deref() == Some("eu"))), "{health:?}");

    // Three shards cannot stay in a region of two nodes: refused, saying why.
    let wide = BucketSettings { k: 1, n: 3, ..code };
    client.create_bucket_placed("eu-wide", Some(wide), pinned).await.expect("mb");
    let b = client.bucket("eu-wide").await.expect("bucket");
    let e = put_bytes(&b, "x", data(50_000, 9)).await.expect_err("too few nodes in eu");
    assert!(matches!(e.root(), Error::PolicyUnmet { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("3 nodes in eu") && text.contains("eu: 2") && text.contains("us: 2"), "{text}");
    client.shutdown().await;
}

/// Checks that every segment of `key` keeps at most `cap` shards in a
/// region and spans at least `regions` of them.
async fn check_spread(b: &Bucket, key: &str, all: &HashMap<PeerId, String>, cap: usize, regions: usize) {
    for seg in shard_regions(b, key, all).await {
        let mut per: HashMap<&str, usize> = HashMap::new();
        for r in &seg {
            *per.entry(r.as_str()).or_default() += 1;
        }
        assert!(per.len() >= regions, "{key}: a segment over fewer than {regions} regions: {seg:?}");
        assert!(per.values().all(|&c| c <= cap), "{key}: more than n-k = {cap} shards in a region: {seg:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_spread_over_three_regions_survives_losing_any_one() {
    let mut cluster = TestCluster::start_each(6, |i, c| TestCluster::in_region(&REGIONS, i, c));
    let client = cluster.client(&RootSecret::generate()).await;
    let regions = regions_of(&client).await;
    let code = BucketSettings { k: 2, n: 4, extra: 0, segment_size: 64 * 1024 };
    let spread = Placement { spread: 3, ..Placement::default() };
    client.create_bucket_placed("spread", Some(code), spread).await.expect("mb");
    let b = client.bucket("spread").await.expect("bucket");
    let mut objects = Vec::new();
    for i in 0..3u8 {
        let (key, bytes) = (format!("o{i}"), data(150_000, i));
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        check_spread(&b, &key, &regions, 2, 3).await;
        objects.push((key, bytes));
    }
    // Cut each region off in turn (its nodes killed): everything reads,
    // and new objects are written over the two regions left, at most
    // n-k = 2 shards in each.
    for (r, region) in REGIONS.iter().enumerate() {
        let down: Vec<usize> = (0..cluster.len()).filter(|i| i % 3 == r).collect();
        for &i in &down {
            cluster.kill(i);
        }
        for (key, bytes) in &objects {
            assert_eq!(&get_bytes(&b, key).await.expect("get with a region down"), bytes, "{key}, {region} down");
        }
        let (key, bytes) = (format!("without-{region}"), data(100_000, r as u8 + 50));
        put_bytes(&b, &key, bytes.clone()).await.expect("put with a region down");
        check_spread(&b, &key, &regions, 2, 2).await;
        for seg in shard_regions(&b, &key, &regions).await {
            assert!(!seg.iter().any(|x| x == region), "{key} has a shard in {region}, which is down");
        }
        assert_eq!(&get_bytes(&b, &key).await.expect("get"), &bytes);
        objects.push((key, bytes));
        for &i in &down {
            cluster.restart(i);
        }
        // One region at a time: the next goes down once this one answers
        // again (the client's connections to the old processes are dead).
        let back = Instant::now();
        while client.status().await.iter().filter(|n| n.stats.is_ok()).count() < cluster.len() {
            assert!(back.elapsed() < DEADLINE, "{region} does not answer after its restart");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    client.shutdown().await;
}

/// A network that grows: nodes that join are found by running clients
/// within seconds and take new shards, and old data still reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_join_get_new_shards_from_a_running_client() {
    let mut cluster = TestCluster::start(8);
    let client = cluster.client(&RootSecret::generate()).await;
    client
        .create_bucket("grow", Some(BucketSettings { k: 4, n: 8, extra: 0, segment_size: 64 * 1024 }))
        .await
        .expect("mb");
    let b = client.bucket("grow").await.expect("bucket");
    let mut objects = Vec::new();
    for i in 0..3u8 {
        let (key, bytes) = (format!("old-{i}"), data(120_000, i));
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        objects.push((key, bytes));
    }
    let new: Vec<PeerId> = (0..4)
        .map(|_| {
            let i = cluster.add_node();
            cluster.peer_id(i).parse().expect("peer id")
        })
        .collect();
    // Puts go on; within the deadline, new nodes hold shards of new objects.
    let start = Instant::now();
    let mut on_new = std::collections::HashSet::new();
    let mut n = 0;
    while on_new.len() < 2 {
        assert!(start.elapsed() < DEADLINE, "no new shards on the 4 new nodes after {n} puts");
        let (key, bytes) = (format!("new-{n}"), data(120_000, n as u8));
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        for p in b.holders(&key).await.expect("holders").into_iter().flatten().flatten() {
            if new.contains(&p) {
                on_new.insert(p);
            }
        }
        objects.push((key, bytes));
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("new nodes took shards {:.1} s after joining ({n} puts)", start.elapsed().as_secs_f64());
    for (key, bytes) in &objects {
        assert_eq!(&get_bytes(&b, key).await.expect("get"), bytes, "{key}");
    }
    client.shutdown().await;
}

/// Pinning a bucket that has data to regions: repair moves the shards
/// stored elsewhere and deletes their old copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_moves_shards_out_of_regions_a_bucket_leaves() {
    let cluster = TestCluster::start_each(6, |i, c| TestCluster::in_region(&REGIONS, i, c));
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    let regions = regions_of(&client).await;
    let code = BucketSettings { k: 2, n: 4, extra: 0, segment_size: 64 * 1024 };
    client.create_bucket("moving", Some(code)).await.expect("mb");
    let b = client.bucket("moving").await.expect("bucket");
    let mut objects = Vec::new();
    for i in 0..4u8 {
        let (key, bytes) = (format!("o{i}"), data(140_000, i));
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        objects.push((key, bytes));
    }
    let mut in_ap = 0;
    for (key, _) in &objects {
        in_ap += shard_regions(&b, key, &regions).await.iter().flatten().filter(|r| *r == "ap").count();
    }
    assert!(in_ap > 0, "the 2 ap nodes of 6 hold none of 12 segments' 48 shards");
    let pinned = Placement { regions: vec!["eu".into(), "us".into()], ..Placement::default() };
    client.set_placement("moving", pinned.clone()).await.expect("set placement");
    let b = client.bucket("moving").await.expect("bucket");
    assert_eq!(b.placement(), &pinned);
    let report = b.repair(cairn_client::RepairOptions::default()).await.expect("repair");
    assert_eq!(report.misplaced, 2, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    for (key, bytes) in &objects {
        for seg in shard_regions(&b, key, &regions).await {
            assert!(seg.iter().all(|r| r == "eu" || r == "us"), "{key}: {seg:?}");
        }
        assert_eq!(&get_bytes(&b, key).await.expect("get"), bytes);
    }
    // The copies left on the ap nodes were deleted: a second walk finds nothing to move.
    let again = b.repair(cairn_client::RepairOptions::default()).await.expect("repair");
    assert_eq!((again.damaged, again.shards), (0, 0), "{again:?}");
    // A fresh client reads everything.
    client.shutdown().await;
    let fresh = cluster.client(&root).await;
    let b = fresh.bucket("moving").await.expect("bucket");
    for (key, bytes) in &objects {
        assert_eq!(&get_bytes(&b, key).await.expect("get"), bytes);
    }
    fresh.shutdown().await;
}
