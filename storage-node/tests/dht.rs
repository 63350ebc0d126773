//! Eight `cairn-node` processes form one DHT; signed head records put
//! through one are found through another; stale and forged ones are refused.

mod common;

use std::time::{Duration, Instant};

use cairn_net::{Multiaddr, Network};
use cairn_proto::head::HeadRecord;
use common::{DEADLINE, NodeProc, client};
use ed25519_dalek::{Signer, SigningKey};

fn signed(key: &SigningKey, seq: u64, payload: &[u8]) -> HeadRecord {
    let pk = key.verifying_key().to_bytes();
    let signature = key.sign(&HeadRecord::signing_bytes(&pk, seq, payload)).to_bytes();
    HeadRecord { public_key: pk, sequence: seq, payload: payload.to_vec(), signature }
}

/// Retries `put_record` until the network has formed (bounded by DEADLINE).
async fn put_eventually(net: &Network, r: &HeadRecord) {
    let start = Instant::now();
    loop {
        match net.handle.put_record(r.clone()).await {
            Ok(_) => return,
            Err(e) if start.elapsed() < DEADLINE => {
                eprintln!("put not yet stored: {e}");
                let _ = net.handle.bootstrap().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("put_record failed: {e}"),
        }
    }
}

/// The highest sequence found under the record's id, waiting for `want`.
async fn highest_eventually(net: &Network, r: &HeadRecord, want: u64) -> u64 {
    let start = Instant::now();
    loop {
        let got = net.handle.get_record(r.record_id()).await.map(|v| v.iter().map(|h| h.sequence).max().unwrap_or(0));
        match got {
            Ok(s) if s >= want => return s,
            _ if start.elapsed() < DEADLINE => tokio::time::sleep(Duration::from_millis(300)).await,
            other => panic!("record with sequence {want} not found: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_share_head_records_and_refuse_bad_ones() {
    let first = NodeProc::start(&[]);
    let boot: Vec<String> = vec![first.quic().to_string()];
    let mut nodes = vec![first];
    for _ in 1..8 {
        let args: Vec<&str> = boot.iter().flat_map(|b| ["--bootstrap", b.as_str()]).collect();
        nodes.push(NodeProc::start(&args));
    }
    let via = |i: usize| -> Vec<Multiaddr> { vec![nodes[i].quic()] };
    let t0 = Instant::now();
    let stage = |what: &str| eprintln!("[{:>6.2}s] {what}", t0.elapsed().as_secs_f64());
    stage("8 nodes up");
    let writer = client(via(3));
    let reader = client(via(6));
    let key = SigningKey::from_bytes(&[42; 32]);

    let r1 = signed(&key, 1, b"root v1");
    put_eventually(&writer, &r1).await;
    stage("v1 put");
    assert_eq!(highest_eventually(&reader, &r1, 1).await, 1);
    stage("v1 found");

    let r2 = signed(&key, 2, b"root v2");
    put_eventually(&writer, &r2).await;
    assert_eq!(highest_eventually(&reader, &r2, 2).await, 2);
    stage("v2 put and found");

    // A hostile writer talks to each node directly, so only that node's own
    // checks stand between it and the record. First every node is given
    // version 2 (a node that has it accepts the same record again)...
    let hostile = client(via(1));
    let _ = hostile.handle.bootstrap().await;
    let mut forged = signed(&key, 3, b"forged");
    forged.payload = b"evil".to_vec();
    let peers: Vec<_> = nodes.iter().map(|n| vec![n.peer_id()]).collect();
    let put_each = |r: HeadRecord| {
        let h = hostile.handle.clone();
        futures::future::join_all(peers.iter().map(move |p| {
            let (h, r, p) = (h.clone(), r.clone(), p.clone());
            async move { h.put_record_to(r, p, 1).await }
        }))
    };
    for (i, ok) in put_each(r2.clone()).await.into_iter().enumerate() {
        assert!(ok.is_ok(), "node {i} refused the current record: {ok:?}");
    }
    // ...then each is offered the older version and a record whose
    // signature does not verify, then version 3. Kademlia acknowledges
    // before a node checks, so what each node then holds tells: version 3,
    // which neither a forgery of sequence 3 nor the stale one could block.
    let _ = tokio::join!(put_each(r1.clone()), put_each(forged.clone()));
    let r3 = signed(&key, 3, b"root v3");
    for (i, ok) in put_each(r3.clone()).await.into_iter().enumerate() {
        assert!(ok.is_ok(), "node {i} refused the newest record: {ok:?}");
    }
    for (i, n) in nodes.iter().enumerate() {
        let c = common::shard_client(&hostile, n);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let held = c.get_head(r3.record_id()).await.expect("get head");
            if held.as_ref() == Some(&r3) {
                break;
            }
            assert!(held.as_ref() != Some(&forged), "node {i} took the forgery");
            assert!(Instant::now() < deadline, "node {i} holds {held:?}, not version 3");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stage("hostile puts refused");
    // A fresh reader sees version 3, never the forgery.
    let fresh = client(via(7));
    let _ = fresh.handle.bootstrap().await;
    let found = highest_eventually(&fresh, &r3, 3).await;
    assert_eq!(found, 3);
    for n in [writer, reader, fresh, hostile] {
        n.shutdown().await;
    }
}

/// The head requests of the shard protocol: a node stores only a newer
/// valid record, answers a stale or racing one with the record it holds,
/// refuses forgeries with a typed error, and shares one compare-and-swap
/// with Kademlia's `PUT_VALUE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_are_a_compare_and_swap_that_names_the_winner() {
    use cairn_net::Error;
    use cairn_net::shard_client::HeadPut;
    use cairn_proto::head::RecordRefused;
    use cairn_proto::shard::ShardError;

    let node = NodeProc::start(&[]);
    let net = client(vec![node.quic()]);
    let shard = common::shard_client(&net, &node);
    let key = SigningKey::from_bytes(&[7; 32]);
    let id = signed(&key, 1, b"").record_id();
    assert_eq!(shard.get_head(id).await.expect("get"), None, "nothing held yet");

    let v1 = signed(&key, 1, b"root v1");
    assert_eq!(shard.put_head(v1.clone()).await.expect("put"), HeadPut::Stored);
    assert_eq!(shard.put_head(v1.clone()).await.expect("same again"), HeadPut::Stored);
    assert_eq!(shard.get_head(id).await.expect("get"), Some(v1.clone()));

    // Two writers race on sequence 2: the first wins, the second learns
    // which record beat it in the same answer.
    let (a, b) = (signed(&key, 2, b"writer a"), signed(&key, 2, b"writer b"));
    assert_eq!(shard.put_head(a.clone()).await.expect("a"), HeadPut::Stored);
    assert_eq!(shard.put_head(b).await.expect("b"), HeadPut::Held(a.clone()));
    assert_eq!(shard.put_head(v1).await.expect("stale"), HeadPut::Held(a.clone()));

    // A forged record is refused for what it is.
    let mut forged = signed(&key, 3, b"root v3");
    forged.payload = b"evil".to_vec();
    match shard.put_head(forged).await {
        Err(Error::Refused { error: ShardError::HeadRefused(RecordRefused::BadSignature), .. }) => {}
        other => panic!("forged record: {other:?}"),
    }
    assert_eq!(shard.get_head(id).await.expect("get"), Some(a.clone()));

    // Kademlia's path checks against the same record (off the event loop,
    // after Kademlia acknowledged it): sequence 2 again is not stored, and
    // sequence 3 stored there is what the stream path holds.
    let racer = signed(&key, 2, b"via kademlia");
    net.handle.put_record_to(racer, vec![node.peer_id()], 1).await.expect("kademlia acknowledges");
    let v3 = signed(&key, 3, b"root v3");
    net.handle.put_record_to(v3.clone(), vec![node.peer_id()], 1).await.expect("kademlia put");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match shard.get_head(id).await.expect("get") {
            Some(h) if h == v3 => break,
            Some(h) if h == a && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("the node holds {other:?}, not sequence 3"),
        }
    }
    assert_eq!(shard.put_head(a).await.expect("older"), HeadPut::Held(v3));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_floods_are_capped_per_peer_and_in_total() {
    use cairn_net::Error;
    use cairn_net::shard_client::HeadPut;
    use cairn_proto::shard::ShardError;

    let node = NodeProc::start_with(&[], |c| {
        c.replace("new_records_per_peer_per_hour = 1000", "new_records_per_peer_per_hour = 5")
            .replace("max_records = 200000", "max_records = 8")
    });
    let (flooder, other) = (client(vec![node.quic()]), client(vec![node.quic()]));
    let (a, b) = (common::shard_client(&flooder, &node), common::shard_client(&other, &node));
    let fresh = |i: u8| signed(&SigningKey::from_bytes(&[i; 32]), 1, b"root");
    for i in 0..5 {
        assert_eq!(a.put_head(fresh(i)).await.expect("within the quota"), HeadPut::Stored);
    }
    // The sixth new record from one peer in an hour is refused, typed.
    match a.put_head(fresh(5)).await {
        Err(Error::Refused { error: ShardError::RateLimited { retry_after_ms }, .. }) => {
            assert!(retry_after_ms > 0 && retry_after_ms <= 3_600_000, "{retry_after_ms}");
        }
        other => panic!("a flood past the quota: {other:?}"),
    }
    // Updating a record held is not a new one.
    let next = signed(&SigningKey::from_bytes(&[0; 32]), 2, b"root v2");
    assert_eq!(a.put_head(next.clone()).await.expect("an update"), HeadPut::Stored);
    // Other peers are unaffected, up to the node's total.
    for i in 10..13 {
        assert_eq!(b.put_head(fresh(i)).await.expect("another peer"), HeadPut::Stored);
    }
    match b.put_head(fresh(13)).await {
        Err(Error::Refused { error: ShardError::RecordsFull { max: 8 }, .. }) => {}
        other => panic!("past the node's total: {other:?}"),
    }
    // The node keeps serving what it holds.
    assert_eq!(b.get_head(next.record_id()).await.expect("get"), Some(next));
    flooder.shutdown().await;
    other.shutdown().await;
}
