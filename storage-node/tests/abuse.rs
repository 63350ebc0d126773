//! Limits a real `cairn-node` process puts on what one peer, or one
//! machine, may take: a slow request is cut at its deadline, bytes are
//! rate-limited per peer, and connections per IP address are capped. Every
//! refusal is typed, and the node keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use cairn_net::Error;
use cairn_proto::ShardId;
use cairn_proto::shard::{Request, ShardError};
use common::{DEADLINE, NodeProc, bytes, client, metrics, shard_client, token};
use futures::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_at_the_request_deadline() {
    let node = NodeProc::start_with(&["--capacity", "64MiB"], |c| {
        c.replace("request_deadline_secs = 60", "request_deadline_secs = 2")
            .replace("min_kib_per_second = 256", "min_kib_per_second = 1048576")
    });
    let net = client(vec![node.quic()]);
    let (_, th) = token(1);
    let body = bytes(64 * 1024, 1);
    let mut s = net.handle.open_shard_stream(node.peer_id(), Duration::from_secs(10)).await.expect("stream");
    let put = Request::Put { shard: ShardId::of(&body), len: body.len() as u64, owner: th, lease_secs: 60 };
    s.write_all(&put.to_frame()).await.expect("write");
    // One small chunk every 500 ms: each well inside the idle timeout
    // (20 s), the whole far beyond the deadline.
    let start = Instant::now();
    let mut cut = false;
    for chunk in body.chunks(1024) {
        if s.write_all(chunk).await.is_err() || s.flush().await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if start.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    if !cut {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(15), "the stream was not cut ({took:?})");
    let m = metrics(&node.admin()).await;
    assert!(m.contains("cairn_node_deadlines_total 1"), "{m}");
    // Nothing of it was kept, and the node serves the next request.
    let c = shard_client(&net, &node);
    let stats = c.stats().await.expect("stats");
    assert_eq!((stats.shards, stats.used), (0, 0));
    c.put(ShardId::of(&body), &body, th, 60).await.expect("a normal put");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_are_rate_limited_per_peer_with_a_typed_refusal() {
    // 1 MiB/s; a burst of one largest shard (256 MiB + 64 KiB).
    let node = NodeProc::start_with(&["--capacity", "1GiB", "--max-shard-size", "256MiB"], |c| {
        c.replace("mib_per_second_per_peer = 256", "mib_per_second_per_peer = 1")
    });
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (_, th) = token(2);
    // Gets of one 8 MiB shard: the burst goes, then the peer is in debt.
    let s = bytes(8 << 20, 2);
    let id = ShardId::of(&s);
    c.put(id, &s, th, 60).await.expect("put");
    let mut refused = None;
    for _ in 0..40 {
        match c.get(id, 8 << 20).await {
            Ok(got) => assert!(got == s),
            Err(Error::Refused { error: ShardError::RateLimited { retry_after_ms }, .. }) => {
                refused = Some(retry_after_ms);
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let retry = refused.expect("refused once the burst is spent");
    assert!(retry > 0 && retry <= 9000, "retry after {retry} ms");
    // Another peer is not affected.
    let other = client(vec![node.quic()]);
    assert!(shard_client(&other, &node).get(id, 8 << 20).await.expect("other peer") == s);
    let m = metrics(&node.admin()).await;
    assert!(m.contains("cairn_node_errors_total{kind=\"rate_limited\"} 1"), "{m}");
    other.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_capped() {
    let node = NodeProc::start_with(&["--capacity", "64MiB"], |c| {
        c.replace("max_connections_per_ip = 64", "max_connections_per_ip = 2")
            .replace("limit_loopback = false", "limit_loopback = true")
    });
    // Two peers (two fresh identities) from 127.0.0.1 get in.
    let a = client(vec![node.quic()]);
    let b = client(vec![node.quic()]);
    // (On a loaded machine a client's bootstrap dial and its first request
    // can race for the two slots; a second try is its own connection.)
    for (peer, what) in [(&a, "first"), (&b, "second")] {
        let mut tries = 0;
        while let Err(e) = shard_client(peer, &node).stats().await {
            tries += 1;
            assert!(tries < 3, "{what}: {e:?}");
        }
    }
    // A third identity from the same address does not.
    let c = client(vec![node.quic()]);
    let third = tokio::time::timeout(Duration::from_secs(30), shard_client(&c, &node).stats()).await;
    assert!(!matches!(third, Ok(Ok(_))), "a third connection from one address was admitted");
    // When one leaves, another may come.
    a.shutdown().await;
    let d = client(vec![node.quic()]);
    let start = Instant::now();
    loop {
        match shard_client(&d, &node).stats().await {
            Ok(_) => break,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("no slot was freed: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // The admitted peers were served throughout.
    shard_client(&b, &node).stats().await.expect("still served");
    for n in [b, c, d] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_held_to_its_storage_quota_across_restarts() {
    let mut node =
        NodeProc::start_with(&["--capacity", "64MiB"], |c| c.replace("max_mib_per_peer = 0", "max_mib_per_peer = 1"));
    let (tok, th) = token(4);
    let a = client(vec![node.quic()]);
    let ca = shard_client(&a, &node);
    let first = bytes(600 * 1024, 1);
    let second = bytes(600 * 1024, 2);
    ca.put(ShardId::of(&first), &first, th, 3600).await.expect("within the quota");
    match ca.put(ShardId::of(&second), &second, th, 3600).await {
        Err(Error::Refused { error: ShardError::PeerQuota { used, quota }, .. }) => {
            assert_eq!((used, quota), (600 * 1024, 1 << 20));
        }
        r => panic!("expected PeerQuota, got {r:?}"),
    }
    // Another peer has a quota of its own.
    let b = client(vec![node.quic()]);
    shard_client(&b, &node).put(ShardId::of(&second), &second, th, 3600).await.expect("another peer");
    // Deleting frees the quota.
    ca.delete(ShardId::of(&first), tok).await.expect("delete");
    let third = bytes(600 * 1024, 3);
    ca.put(ShardId::of(&third), &third, th, 3600).await.expect("freed");
    // The count survives a restart (rebuilt from who uploaded what).
    node.stop();
    node.run();
    a.handle.dial(node.quic()).await.expect("dial");
    let ca = shard_client(&a, &node);
    let fourth = bytes(600 * 1024, 4);
    // A stream to the restarted node may still fail while the connection
    // settles (seen once under a loaded CI run): only the node's answer
    // counts.
    let start = Instant::now();
    let answer = loop {
        match ca.put(ShardId::of(&fourth), &fourth, th, 3600).await {
            Err(Error::OpenStream { .. } | Error::Stream { .. }) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => break r,
        }
    };
    assert!(
        matches!(answer, Err(Error::Refused { error: ShardError::PeerQuota { .. }, .. })),
        "expected PeerQuota, got {answer:?}"
    );
    let m = metrics(&node.admin()).await;
    let refusals: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("cairn_node_errors_total{kind=\"peer_quota\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(refusals >= 1, "{m}");
    a.shutdown().await;
    b.shutdown().await;
}
