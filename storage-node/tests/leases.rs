//! Leases on a real `cairn-node` process: a renewed shard outlives the
//! lease it was put with, an unrenewed one is collected, the node caps
//! every lease, and only the owner's renew token renews.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proto::ShardId;
use cairn_proto::shard::{Renewal, ShardError, renew_token_of};
use common::{NodeProc, bytes, client, metrics, shard_client, token};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_shards_outlive_their_first_lease_and_the_rest_is_collected() {
    const MAX_LEASE: u64 = 60;
    let mut node = NodeProc::start_with(&["--capacity", "64MiB"], |c| {
        c.replace("max_lease_secs = 34560000", &format!("max_lease_secs = {MAX_LEASE}"))
            .replace("collect_interval_secs = 60", "collect_interval_secs = 1")
    });
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (tok, owner) = token(1);
    let (kept, dropped, capped) = (bytes(5000, 1), bytes(6000, 2), bytes(7000, 3));
    let (kept_id, dropped_id, capped_id) = (ShardId::of(&kept), ShardId::of(&dropped), ShardId::of(&capped));
    c.put(kept_id, &kept, owner, 3).await.expect("put");
    c.put(dropped_id, &dropped, owner, 3).await.expect("put");
    // A put asking for a century gets the node's cap.
    let before = now();
    c.put(capped_id, &capped, owner, 100 * 365 * 86_400).await.expect("put");
    let renew = renew_token_of(&tok);
    let got = c.renew(100 * 365 * 86_400, vec![(capped_id, renew)]).await.expect("renew");
    let [Renewal::Until(until)] = got[..] else { panic!("{got:?}") };
    assert!(until >= before + MAX_LEASE && until <= now() + MAX_LEASE, "lease until {until}, now {}", now());

    // Only the owner's renew token renews; the delete token is not one.
    let missing = ShardId::of(b"never stored");
    let got = c.renew(MAX_LEASE, vec![(kept_id, tok), (missing, renew), (kept_id, renew)]).await.expect("renew");
    assert_eq!(got[..2], [Renewal::BadToken, Renewal::NotFound]);
    assert!(matches!(got[2], Renewal::Until(t) if t >= before + MAX_LEASE), "{got:?}");

    // The shard nobody renewed goes when its 3 s lease ends; the renewed one stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match c.get(dropped_id, 1 << 20).await {
            Err(cairn_net::Error::Refused { error: ShardError::NotFound(_), .. }) => break,
            Ok(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(300)).await,
            other => panic!("the unrenewed shard was not collected: {:?}", other.map(|b| b.len())),
        }
    }
    assert_eq!(c.get(kept_id, 1 << 20).await.expect("renewed shard"), kept);
    assert_eq!(c.get(capped_id, 1 << 20).await.expect("capped shard"), capped);
    let metrics = metrics(&node.admin()).await;
    assert!(metrics.contains("cairn_node_expired_total 1"), "{metrics}");
    assert!(metrics.contains("cairn_node_renewals_total 4"), "{metrics}");
    net.shutdown().await;
    node.stop();
    let (ok, out) = node.check();
    assert!(ok, "{out}");
}
