//! Durability over time on real nodes: leases that are renewed keep data
//! past their first end, what nothing references is collected, and the
//! tokens a node receives are good at that node only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::bucket::{get_bytes, put_bytes};
use cairn_client::transfer::delete_token;
use cairn_client::{Client, ClientConfig};
use cairn_crypto::RootSecret;
use cairn_net::{Network, PeerId, ShardClient, Timeouts};
use cairn_proto::ShardId;
use cairn_proto::shard::{ShardError, owner_of, renew_token_of};
use cairn_tests::TestCluster;

/// Lease the nodes grant (and the client asks for) in these tests.
const LEASE: u64 = 8;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn short_leases(config: String) -> String {
    config
        .replace("max_lease_secs = 34560000", &format!("max_lease_secs = {LEASE}"))
        .replace("collect_interval_secs = 60", "collect_interval_secs = 1")
}

fn raw_network(cluster: &TestCluster) -> Network {
    let boot = cluster.bootstrap().iter().map(|a| a.parse().expect("address")).collect();
    Network::start(cairn_net::NetConfig::client(boot), Arc::new(cairn_net::store::MemoryBackend::new(64)))
        .expect("network")
}

fn shard_client(net: &Network, peer: PeerId) -> ShardClient {
    ShardClient::new(
        net.handle.clone(),
        peer,
        Timeouts { open: Duration::from_secs(10), request: Duration::from_secs(30) },
    )
}

fn refusal<T: std::fmt::Debug>(r: Result<T, cairn_net::Error>) -> ShardError {
    match r {
        Err(cairn_net::Error::Refused { error, .. }) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A new bucket `name` holding one object of each length; its objects.
async fn filled(client: &Client, name: &str, lens: &[usize]) -> (cairn_client::Bucket, Vec<(String, Vec<u8>)>) {
    client.create_bucket(name, None).await.expect("mb");
    let b = client.bucket(name).await.expect("bucket");
    let mut objects = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let key = format!("object-{i}");
        let bytes = data(len, i as u8);
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        objects.push((key, bytes));
    }
    (b, objects)
}

/// The node that holds the most shards of `objects`, and how many.
async fn busiest_holder(b: &cairn_client::Bucket, objects: &[(String, Vec<u8>)]) -> (PeerId, usize) {
    let mut count = std::collections::HashMap::<PeerId, usize>::new();
    for (key, _) in objects {
        for p in b.holders(key).await.expect("holders").into_iter().flatten().flatten() {
            *count.entry(p).or_default() += 1;
        }
    }
    count.into_iter().max_by_key(|(_, n)| *n).expect("holders")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_objects_outlive_their_lease_and_unreferenced_shards_are_collected() {
    let cluster = TestCluster::start_with(6, short_leases);
    let root = RootSecret::generate();
    let cache = cluster.dir().join("renewing-client");
    let cfg = ClientConfig { lease_secs: LEASE, ..cluster.client_config(Some(cache)) };
    let client = Client::connect(&root, cfg).await.expect("connect");
    client.create_bucket("kept", None).await.expect("mb");
    let b = client.bucket("kept").await.expect("bucket");
    let (big, small, late) = (data(700 * 1024, 1), data(3000, 2), data(600 * 1024, 5));
    put_bytes(&b, "big", big.clone()).await.expect("put");
    put_bytes(&b, "small", small.clone()).await.expect("put");
    // Those two go into leaf pages; the next one stays in the journal of
    // the head record, whose references the walk renews too.
    b.tree().commit_folded(Vec::new()).await.expect("fold");
    put_bytes(&b, "late", late.clone()).await.expect("put");
    let snap = b.tree().snapshot(Duration::ZERO).await.expect("snapshot");
    let journal: Vec<&str> = snap.journal.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        journal.contains(&"late") && !snap.root.leaves.is_empty(),
        "journal {journal:?}, {} leaves",
        snap.root.leaves.len()
    );

    // A shard nothing references: what a client that died mid-upload leaves.
    let net = raw_network(&cluster);
    net.handle.wait_connected().await.expect("connected");
    let orphan = data(5000, 3);
    let orphan_id = ShardId::of(&orphan);
    let holder: PeerId = cluster.peer_id(0).parse().expect("peer id");
    let raw = shard_client(&net, holder);
    raw.put(orphan_id, &orphan, owner_of(&renew_token_of(&[9; 32])), 3600).await.expect("orphan put");

    // Renew well past two leases; a walk right after a renewal skips.
    let first = client.renew(None).await.expect("renew");
    assert!(first.complete(), "{first:?}");
    assert!(first.renewed > 0 && first.leaves > 0 && first.heads == 2, "{first:?}");
    let again = client.renew(None).await.expect("renew");
    assert!(again.skipped >= 1 && again.leaves == 0, "a fresh renewal is not repeated: {again:?}");
    let until = Instant::now() + Duration::from_secs(3 * LEASE);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = client.renew(None).await.expect("renew");
        assert!(r.complete(), "{r:?}");
    }
    // A fresh client (no cache) reads everything back.
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("kept").await.expect("bucket");
    assert!(get_bytes(&rb, "big").await.expect("big survives") == big);
    assert!(get_bytes(&rb, "small").await.expect("small survives") == small);
    assert!(get_bytes(&rb, "late").await.expect("late survives") == late);
    assert!(matches!(refusal(raw.get(orphan_id, 1 << 20).await), ShardError::NotFound(_)));
    reader.shutdown().await;
    net.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_token_is_good_only_at_the_node_it_was_made_for() {
    let cluster = TestCluster::start(5);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("tokens", None).await.expect("mb");
    let b = client.bucket("tokens").await.expect("bucket");
    put_bytes(&b, "k", data(100, 4)).await.expect("put");
    // A small bucket lives in its head record's journal until folded.
    b.tree().commit_folded(Vec::new()).await.expect("fold");
    // The root page is stored on three nodes under one id: hedged page
    // uploads once sent one token to all of them.
    let snap = b.tree().snapshot(Duration::ZERO).await.expect("snapshot");
    let page = snap.root_ptr().expect("a root page").clone();
    assert!(page.holders.len() >= 2, "{page:?}");
    let key = *b.tree().pages().token_key();
    let (a, other) = (&page.holders[0], &page.holders[1]);
    let token_a = delete_token(&key, &page.id, a);
    let net = raw_network(&cluster);
    net.handle.wait_connected().await.expect("connected");
    let peer = |n: &cairn_proto::NodeId| PeerId::from_bytes(n.as_bytes()).expect("peer id");
    // Holder A replays the token it was given to holder B: refused.
    let at_other = shard_client(&net, peer(other));
    assert!(matches!(refusal(at_other.delete(page.id, token_a).await), ShardError::BadToken(_)));
    // Nor does the renew token of A's copy renew B's.
    let renewed = at_other.renew(LEASE, vec![(page.id, renew_token_of(&token_a))]).await.expect("renew");
    assert_eq!(renewed, vec![cairn_proto::shard::Renewal::BadToken]);
    // B's own token works at B.
    at_other.delete(page.id, delete_token(&key, &page.id, other)).await.expect("B's token at B");
    // The page is still readable from its other copies.
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("tokens").await.expect("bucket");
    assert_eq!(get_bytes(&rb, "k").await.expect("read"), data(100, 4));
    reader.shutdown().await;
    net.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_fails_leaves_no_shards_behind() {
    // Four nodes cannot hold the six shards of the 4-of-6 code test
    // clusters use.
    let cluster = TestCluster::start(4);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("small-net", None).await.expect("mb");
    let b = client.bucket("small-net").await.expect("bucket");
    let err = put_bytes(&b, "big", data(30 << 20, 5)).await.expect_err("too few nodes for the code");
    assert!(err.to_string().contains("stored"), "the error says how far it got: {err}");
    // Deletes run in the background; shutting down waits for them.
    client.shutdown().await;
    let shards: Vec<_> = cluster
        .node_files()
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "shards"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.len(), p)))
        .collect();
    // Index pages (a few KiB) stay; no object shard (7.5 MiB each) does.
    let big: Vec<_> = shards.iter().filter(|(len, _)| *len > 256 * 1024).collect();
    assert!(big.is_empty(), "shards of the failed put were left behind: {big:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turnover_every_original_node_replaced_with_repair_loses_nothing() {
    // Scaled for CI: 8 nodes, 14 objects of mixed sizes (inline, one
    // segment, several segments, a multipart-sized one), every original
    // node killed in turn and a fresh empty one started.
    const NODES: usize = 8;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cluster = TestCluster::start(NODES);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("turnover", None).await.expect("mb");
    let b = client.bucket("turnover").await.expect("bucket");
    let sizes = [0, 100, 5000, 40_000, 300_000, 1 << 20, 3 << 20, 17 << 20];
    let mut objects = Vec::new();
    for (i, &len) in sizes.iter().chain(&[7, 64 << 10, 2 << 20, 33, 900_000, 123_457]).enumerate() {
        let key = format!("dir{}/object-{i}", i % 3);
        let bytes = data(len, i as u8);
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        objects.push((key, bytes));
    }
    // The index lives in pages too, all of which the turnover must carry
    // over: leaves and a root (a fold), and a run (entries of 30,000
    // bytes outgrow the head record's journal).
    b.tree().commit_folded(Vec::new()).await.expect("fold");
    for i in 0..cairn_proto::head::MAX_HEAD_PAYLOAD / 30_000 + 1 {
        let (key, bytes) = (format!("dir{i}/inline-{i}"), data(30_000, 40 + i as u8));
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        objects.push((key, bytes));
    }
    let snap = b.tree().snapshot(Duration::ZERO).await.expect("snapshot");
    assert!(!snap.root.leaves.is_empty() && !snap.runs().is_empty(), "leaves and a run");
    let mut total = cairn_client::RepairReport::default();
    for round in 0..NODES {
        cluster.kill(round);
        cluster.add_node();
        // A repair that could not place a shard (a node that stalled) is
        // retried by the next walk, as `cairn repair --watch` does.
        let mut r = client.repair(None, cairn_client::RepairOptions::default()).await.expect("repair");
        assert!(r.down >= 1, "round {round}: the killed node is seen as down: {r:?}");
        for _ in 0..2 {
            if r.failed == 0 {
                break;
            }
            total.add(&r);
            r = client.repair(None, cairn_client::RepairOptions::default()).await.expect("repair");
        }
        assert_eq!(r.failed, 0, "round {round}: {r:?}");
        total.add(&r);
    }
    eprintln!("repair over a full turnover: {total:?}");
    assert!(total.repaired > 0 && total.shards > 0 && total.pages > 0, "{total:?}");
    // A fresh client, joining through the nodes that are left, reads
    // everything back byte-exact.
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("turnover").await.expect("bucket");
    for (key, bytes) in &objects {
        assert!(get_bytes(&rb, key).await.unwrap_or_else(|e| panic!("{key}: {e}")) == *bytes, "{key} differs");
    }
    // Nothing is left below the threshold.
    let again = reader.repair(None, cairn_client::RepairOptions::default()).await.expect("repair");
    assert_eq!((again.damaged, again.pages), (0, 0), "{again:?}");
    reader.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_bytes_are_wrong_fails_its_audits_and_its_shards_are_rebuilt_elsewhere() {
    // In files, so that the test can alter every one.
    let cluster = TestCluster::start_with(8, TestCluster::shards_in_files);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    let (b, objects) = filled(&client, "audited", &[300_000, 1 << 20, 3 << 20, 5 << 20]).await;
    // The node holding the most object shards turns bad: every byte of
    // every shard file it has is altered (bit rot, or an operator who
    // dropped the data and fills in garbage).
    let (bad, held) = busiest_holder(&b, &objects).await;
    let i = cluster.index_of(&bad.to_string()).expect("a cluster node");
    let mut altered = 0;
    for f in cluster.node_files().into_iter().filter(|f| f.starts_with(cluster.node_dir(i).join("shards"))) {
        // Old index pages are deleted as commits replace them.
        let Ok(mut bytes) = std::fs::read(&f) else { continue };
        bytes.iter_mut().for_each(|b| *b ^= 0x5a);
        std::fs::write(&f, bytes).expect("alter");
        altered += 1;
    }
    assert!(altered >= held, "{altered} files altered, {held} object shards recorded there");
    // `stat` counts only shards whose holder proves it has them.
    let mut unproved = 0;
    for (key, _) in &objects {
        let (_, health) = b.stat(key).await.expect("stat");
        unproved += health.iter().map(|h| h.stored - h.healthy).sum::<usize>();
    }
    assert_eq!(unproved, held, "every shard on the bad node fails its audit, and only those");
    // Repair audits every holder, fails the bad one, and rebuilds its
    // shards on others.
    let r = client.repair(None, cairn_client::RepairOptions::default()).await.expect("repair");
    eprintln!("repair after a holder turned bad: {r:?}");
    assert_eq!((r.audit_failures, r.down, r.failed), (1, 1, 0), "{r:?}");
    assert!(r.audits >= 8 && r.shards as usize >= held, "{r:?}");
    for (key, bytes) in &objects {
        assert!(
            b.holders(key).await.expect("holders").iter().flatten().all(|p| *p != Some(bad)),
            "{key} still names the bad holder"
        );
        let (_, health) = b.stat(key).await.expect("stat");
        assert!(health.iter().all(|h| h.healthy == h.stored), "{key}: {health:?}");
        assert!(get_bytes(&b, key).await.expect("get") == *bytes, "{key} differs");
    }
    // A fresh client reads everything too (index pages on the bad node
    // were stored again elsewhere).
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("audited").await.expect("bucket");
    for (key, bytes) in &objects {
        assert!(get_bytes(&rb, key).await.expect("get") == *bytes, "{key} differs");
    }
    reader.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_exits_gracefully_is_drained_by_repair_and_stops() {
    let mut cluster = TestCluster::start(8);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    let (b, objects) = filled(&client, "leaving", &[50_000, 1 << 20, 3 << 20, 6 << 20]).await;
    let (peer, held) = busiest_holder(&b, &objects).await;
    let i = cluster.index_of(&peer.to_string()).expect("a cluster node");
    cluster.exit(i, "1h");
    let t = Instant::now();
    while !client.status().await.iter().any(|s| s.node.peer == peer && s.leaving_until.is_some()) {
        assert!(t.elapsed() < Duration::from_secs(20), "the node never said it is leaving");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Repair moves its shards (reading them from it) and deletes its copies.
    let r = client.repair(None, cairn_client::RepairOptions::default()).await.expect("repair");
    eprintln!("repair of a leaving node: {r:?}");
    assert_eq!((r.leaving, r.down, r.failed, r.audit_failures), (1, 0, 0, 0), "{r:?}");
    assert!(r.shards as usize >= held, "{r:?}: {held} shards were on the leaving node");
    for (key, _) in &objects {
        let names = b.holders(key).await.expect("holders");
        assert!(names.iter().flatten().all(|p| *p != Some(peer)), "{key} still names the leaving node");
    }
    // With nothing left to hold, it stops by itself.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = cluster.exited(i) {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the drained node did not stop");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(status.success(), "{status}");
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("leaving").await.expect("bucket");
    for (key, bytes) in &objects {
        assert!(get_bytes(&rb, key).await.expect("get") == *bytes, "{key} differs");
    }
    reader.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_leaf_whose_entries_the_journal_shadows_is_stored_again() {
    let mut cluster = TestCluster::start(6);
    let root = RootSecret::generate();
    let client = cluster.client(&root).await;
    client.create_bucket("shadowed", None).await.expect("mb");
    let b = client.bucket("shadowed").await.expect("bucket");
    for i in 0..4u8 {
        put_bytes(&b, &format!("k{i}"), data(100, i)).await.expect("put");
    }
    b.tree().commit_folded(Vec::new()).await.expect("fold");
    // Every entry of the leaf is newer in the journal (three written
    // again, one deleted): repair can put none of them back unchanged.
    let mut objects = Vec::new();
    for i in 0..3u8 {
        let (key, bytes) = (format!("k{i}"), data(200, 10 + i));
        put_bytes(&b, &key, bytes.clone()).await.expect("put");
        objects.push((key, bytes));
    }
    b.delete("k3").await.expect("delete");
    let snap = b.tree().snapshot(Duration::ZERO).await.expect("snapshot");
    assert_eq!(snap.root.leaves.len(), 1, "one leaf");
    let leaf = snap.root.leaves[0].page.clone();
    let dead = leaf.holders[0].clone();
    let peer = cairn_client::transfer::peer_of(&dead).expect("a peer id");
    cluster.kill(cluster.index_of(&peer.to_string()).expect("a cluster node"));
    let r = client.repair(None, cairn_client::RepairOptions::default()).await.expect("repair");
    assert!(r.pages >= 1, "the leaf was stored again: {r:?}");
    let snap = b.tree().snapshot(Duration::ZERO).await.expect("snapshot");
    for page in snap.pages() {
        assert!(!page.holders.contains(&dead), "a page still names the dead node: {page:?}");
        assert!(page.holders.len() >= 3, "{page:?}");
    }
    let reader = cluster.client(&root).await;
    let rb = reader.bucket("shadowed").await.expect("bucket");
    for (key, bytes) in &objects {
        assert!(get_bytes(&rb, key).await.expect("get") == *bytes, "{key}");
    }
    reader.shutdown().await;
    client.shutdown().await;
}
