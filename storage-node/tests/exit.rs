//! Graceful exit of a real `cairn-node` process: `cairn-node exit` makes
//! it refuse new shards and say it is leaving while it keeps serving; it
//! stops by itself once it holds nothing, or when the drain period ends.

mod common;

use std::time::{Duration, Instant};

use cairn_net::Error;
use cairn_proto::ShardId;
use cairn_proto::shard::ShardError;
use common::{NodeProc, admin_page, bytes, client, metrics, shard_client, token};

/// Polls `f` until it is true (the node reads the request every 2 s).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < Duration::from_secs(20), "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_refuses_new_shards_serves_the_rest_and_stops_when_empty() {
    let mut node = NodeProc::start(&["--capacity", "64MiB"]);
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (tok, th) = token(1);
    let s = bytes(300_000, 1);
    let id = ShardId::of(&s);
    c.put(id, &s, th, 3600).await.expect("put");
    assert_eq!(c.status().await.expect("status").leaving_until, None);

    let (ok, out) = node.command(&["exit", "--drain", "1h"]);
    assert!(ok && out.contains("leaving"), "{out}");
    eventually("the node says it is leaving", async || c.status().await.expect("status").leaving_until.is_some()).await;
    let until = c.status().await.expect("status").leaving_until.expect("leaving");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!((now + 3500..=now + 3600).contains(&until), "drain ends at {until}, now {now}");
    let other = bytes(1000, 2);
    match c.put(ShardId::of(&other), &other, th, 3600).await {
        Err(Error::Refused { error: ShardError::Leaving, .. }) => {}
        r => panic!("a leaving node took a new shard: {r:?}"),
    }
    assert!(c.get(id, 1 << 20).await.expect("still served") == s);
    let m = metrics(&node.admin()).await;
    assert!(m.contains("cairn_node_leaving 1") && m.contains("kind=\"leaving\"} 1"), "{m}");
    let page = admin_page(&node.admin(), "/").await;
    assert!(page.contains("Leaving the network") && page.contains("1 of 1 shards still held"), "{page}");

    // Taken back, then asked again: the node follows the file.
    assert!(node.command(&["exit", "--cancel"]).0);
    eventually("the exit is taken back", async || c.status().await.expect("status").leaving_until.is_none()).await;
    c.put(ShardId::of(&other), &other, th, 3600).await.expect("accepting again");
    assert!(node.command(&["exit"]).0);
    eventually("leaving again", async || c.status().await.expect("status").leaving_until.is_some()).await;

    // Its holders move the shards and delete its copies: once empty, the
    // node stops by itself, cleanly.
    c.delete(id, tok).await.expect("delete");
    assert!(node.wait_exit(Duration::from_secs(2)).is_none(), "one shard is still held");
    c.delete(ShardId::of(&other), tok).await.expect("delete");
    let status = node.wait_exit(Duration::from_secs(20)).expect("the drained node stops");
    assert!(status.success(), "{status}; log:\n{}", node.log());
    assert!(node.log().contains("drained"), "{}", node.log());
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_period_that_ends_stops_the_node_even_with_shards_left() {
    let mut node = NodeProc::start(&["--capacity", "64MiB"]);
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (_, th) = token(3);
    let s = bytes(5000, 3);
    c.put(ShardId::of(&s), &s, th, 3600).await.expect("put");
    assert!(node.command(&["exit", "--drain", "3s"]).0);
    let status = node.wait_exit(Duration::from_secs(20)).expect("stops at the end of its drain");
    assert!(status.success(), "{status}");
    // The exit survives a restart: the node comes back leaving (and, its
    // drain over, stops again at once).
    node.run_detached();
    assert!(node.wait_exit(Duration::from_secs(20)).expect("stops again").success());
    assert!(!node.command(&["exit", "--drain", "a week"]).0, "a bad period is refused");
    net.shutdown().await;
}
