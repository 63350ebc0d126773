//! Where shards are, by region: what the placement tests check.

use std::collections::HashMap;

use cairn_client::{Bucket, Client};
use cairn_net::PeerId;

/// The regions the placement tests give their nodes, round-robin.
pub const REGIONS: [&str; 3] = ["eu", "us", "ap"];

/// The region of every node, by peer id, from the nodes' signed profiles.
pub async fn regions_of(client: &Client) -> HashMap<PeerId, String> {
    client.status().await.into_iter().filter_map(|n| Some((n.node.peer, n.region?.0))).collect()
}

/// The region of each shard of each segment of `key` (empty for a node
/// not in `regions`).
pub async fn shard_regions(b: &Bucket, key: &str, regions: &HashMap<PeerId, String>) -> Vec<Vec<String>> {
    b.holders(key)
        .await
        .expect("holders")
        .into_iter()
        .map(|seg| seg.into_iter().flatten().map(|p| regions.get(&p).cloned().unwrap_or_default()).collect())
        .collect()
}
