//! A real `cairn-node` process, driven by a client built on `cairn-net`.

mod common;

use std::time::Duration;

use cairn_net::Error;
use cairn_proto::ShardId;
use cairn_proto::proof;
use cairn_proto::shard::{ByteRange, MAX_MESSAGE_SIZE, ShardError};
use common::{NodeProc, bytes, client, metrics, shard_client, token};
use futures::{AsyncReadExt, AsyncWriteExt};

fn refused(r: Result<impl std::fmt::Debug, Error>) -> ShardError {
    match r {
        Err(Error::Refused { error, .. }) => error,
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_range_prove_delete_and_restart() {
    let mut node = NodeProc::start(&["--capacity", "64MiB"]);
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (tok, tok_hash) = token(1);
    let shards: Vec<Vec<u8>> =
        [1 << 20, 100, 4 * (1 << 20) + 7].iter().enumerate().map(|(i, &n)| bytes(n, i as u8)).collect();
    for s in &shards {
        c.put(ShardId::of(s), s, tok_hash, 3600).await.expect("put");
    }
    let big = &shards[2];
    let id = ShardId::of(big);
    assert_eq!(&c.get(id, big.len() as u64).await.expect("get"), big);
    assert_eq!(c.get_range(id, 1000, 70_000).await.expect("range"), &big[1000..71_000]);
    assert_eq!(c.get_range(id, big.len() as u64 - 1, 1).await.expect("last byte"), &big[big.len() - 1..]);
    // Proofs of possession verify against the id alone, whatever the range.
    for range in [ByteRange { offset: 5, len: 4096 }, ByteRange { offset: 3_000_000, len: 1 }] {
        let slice = c.prove(id, range).await.expect("prove");
        let (start, got) = proof::verify(&id, big.len() as u64, range, &slice).expect("verifies");
        assert_eq!(got, big[start as usize..start as usize + got.len()]);
    }
    let outside = ByteRange { offset: big.len() as u64, len: 1 };
    assert!(matches!(refused(c.prove(id, outside).await), ShardError::BadRange { .. }));
    let stats = c.stats().await.expect("stats");
    assert_eq!(stats.shards, 3);
    assert_eq!(stats.used, shards.iter().map(|s| s.len() as u64).sum::<u64>());
    assert!(matches!(refused(c.delete(id, [7; 32]).await), ShardError::BadToken(_)));

    let took = node.stop();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    node.run();
    // Ports are ephemeral in tests: tell the client where the node is now.
    net.handle.dial(node.quic()).await.expect("dial");
    let c = shard_client(&net, &node);
    for s in &shards {
        assert_eq!(&c.get(ShardId::of(s), s.len() as u64).await.expect("get after restart"), s);
    }
    c.delete(id, tok).await.expect("delete with the token");
    assert!(matches!(refused(c.get(id, 1 << 30).await), ShardError::NotFound(_)));
    assert!(matches!(refused(c.prove(id, ByteRange { offset: 0, len: 1 }).await), ShardError::NotFound(_)));
    assert_eq!(c.stats().await.expect("stats").shards, 2);
    // A shard whose file rots on disk is reported, never proved.
    let first = ShardId::of(&shards[0]);
    let hex = first.to_hex();
    let path = node.dir.join("shards").join(&hex[..2]).join(&hex);
    let mut rotten = std::fs::read(&path).expect("read the shard file");
    rotten[700_000] ^= 1;
    std::fs::write(&path, &rotten).expect("rot");
    let at = ByteRange { offset: 700_000, len: 1 };
    assert_eq!(refused(c.prove(first, at).await), ShardError::Damaged(first));
    let small = ShardId::of(&shards[1]);
    let slice = c.prove(small, ByteRange { offset: 0, len: 100 }).await.expect("prove after restart");
    proof::verify(&small, 100, ByteRange { offset: 0, len: 100 }, &slice).expect("verifies");
    let m = metrics(&node.admin()).await;
    assert!(m.contains("cairn_node_errors_total{kind=\"damaged\"} 1"), "{m}");
    assert!(m.contains("cairn_node_proofs_total 1"), "{m}");
    net.shutdown().await;
    node.stop();
    // `cairn-node check` finds the same shard.
    let (ok, out) = node.check();
    assert!(!ok && out.contains("1 good, 1 bad") && out.contains(&hex), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_and_the_node_keeps_serving() {
    let node = NodeProc::start(&["--capacity", "1MiB", "--max-shard-size", "700KiB"]);
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (_, th) = token(2);
    let a = bytes(600 * 1024, 1);
    c.put(ShardId::of(&a), &a, th, 3600).await.expect("first put fits");
    let b = bytes(600 * 1024, 2);
    assert!(matches!(refused(c.put(ShardId::of(&b), &b, th, 3600).await), ShardError::NoSpace { .. }));
    let huge = bytes(800 * 1024, 3);
    assert!(matches!(refused(c.put(ShardId::of(&huge), &huge, th, 3600).await), ShardError::TooLarge { .. }));
    let small = bytes(1000, 4);
    assert!(matches!(refused(c.put(ShardId::of(b"other"), &small, th, 3600).await), ShardError::HashMismatch(_)));
    let aid = ShardId::of(&a);
    assert!(matches!(refused(c.get_range(aid, 600 * 1024 - 10, 11).await), ShardError::BadRange { .. }));
    assert!(matches!(refused(c.get(ShardId([0; 32]), 10).await), ShardError::NotFound(_)));
    assert!(matches!(refused(c.delete(aid, [0; 32]).await), ShardError::BadToken(_)));

    // Malformed bytes and an oversized frame header on raw streams.
    for garbage in [vec![3u8, 0, 0, 0, 0xff, 0xff, 0xff], ((MAX_MESSAGE_SIZE as u32) + 1).to_le_bytes().to_vec()] {
        let mut s = net.handle.open_shard_stream(node.peer_id(), Duration::from_secs(10)).await.expect("stream");
        s.write_all(&garbage).await.expect("write");
        let _ = s.close().await;
        let resp = cairn_net::shard_client::read_response(&mut s, node.peer_id()).await.expect("an answer");
        assert_eq!(resp, cairn_proto::shard::Response::Error(ShardError::Malformed));
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    }
    // A peer that sends half a body and vanishes leaves nothing behind.
    {
        let mut s = net.handle.open_shard_stream(node.peer_id(), Duration::from_secs(10)).await.expect("stream");
        let half =
            cairn_proto::shard::Request::Put { shard: ShardId::of(&small), len: 1000, owner: th, lease_secs: 60 };
        s.write_all(&half.to_frame()).await.expect("write");
        s.write_all(&small[..500]).await.expect("write");
        let _ = s.close().await;
    }
    // Still serving, and nothing leaked into the accounting.
    assert_eq!(&c.get(aid, 1 << 20).await.expect("get"), &a);
    let stats = c.stats().await.expect("stats");
    assert_eq!((stats.shards, stats.used), (1, 600 * 1024));
    c.put(ShardId::of(&small), &small, th, 60).await.expect("a small put still fits");
    let metrics = metrics(&node.admin()).await;
    assert!(metrics.contains("cairn_node_errors_total{kind=\"no_space\"} 1"), "{metrics}");
    assert!(metrics.contains("cairn_node_errors_total{kind=\"malformed\"} 2"), "{metrics}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_50_uploads_leaves_a_consistent_store() {
    // Let all 50 uploads run at once.
    let mut node = NodeProc::start_with(&["--capacity", "1GiB"], |c| {
        c.replace("max_streams_per_peer = 64", "max_streams_per_peer = 128")
    });
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (_, th) = token(3);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let c = c.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let s = bytes((1 << 20) + usize::from(i) * 40_000, i);
            if c.put(ShardId::of(&s), &s, th, 3600).await.is_ok() {
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    let start = std::time::Instant::now();
    while done.load(std::sync::atomic::Ordering::SeqCst) < 5 && start.elapsed() < common::DEADLINE {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let stored = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!((5..50).contains(&stored), "kill landed mid-upload ({stored} of 50 done)");
    // Offline check: every listed shard hashes to its id; bytes == sum of sizes.
    let (ok, out) = node.check();
    assert!(ok, "{out}");
    node.run();
    net.handle.dial(node.quic()).await.expect("dial");
    let c = shard_client(&net, &node);
    let stats = c.stats().await.expect("stats");
    assert!(stats.shards as usize >= stored, "{stats:?} but {stored} puts were acknowledged");
    net.shutdown().await;
}
