//! Private networks: nodes and clients that share a network key reach each
//! other; nothing without it connects to them, in either direction.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::bucket::{get_bytes, put_bytes};
use cairn_client::{Client, ClientConfig};
use cairn_crypto::RootSecret;
use cairn_net::{NetConfig, Network, NetworkKey, PeerId, ShardClient, Timeouts};
use cairn_tests::TestCluster;

fn network(cluster: &TestCluster, key: Option<NetworkKey>) -> Network {
    let boot = cluster.bootstrap().iter().map(|a| a.parse().expect("address")).collect();
    let cfg = NetConfig { network_key: key, ..NetConfig::client(boot) };
    Network::start(cfg, Arc::new(cairn_net::store::MemoryBackend::new(16))).expect("network")
}

/// Whether a peer with `key` gets an answer from node `peer`.
async fn answers(cluster: &TestCluster, key: Option<NetworkKey>, peer: PeerId) -> bool {
    let net = network(cluster, key);
    let timeouts = Timeouts { open: Duration::from_secs(5), request: Duration::from_secs(5) };
    let ok = ShardClient::new(net.handle.clone(), peer, timeouts).status().await.is_ok();
    net.shutdown().await;
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_network_admits_only_peers_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("network.key");
    let key = cairn_net::network_key::generate();
    cairn_net::network_key::write(&key_file, &key).expect("key");
    let cluster = TestCluster::start_private(6, Some(&key_file), |_, c| c);
    for a in cluster.bootstrap() {
        assert!(a.contains("/tcp/") && !a.contains("quic"), "a private node listens on TCP only: {a}");
    }

    // A client with the key stores and reads.
    let root = RootSecret::generate();
    let cfg = ClientConfig { network_key: Some(key), ..cluster.client_config(None) };
    let client = Client::connect(&root, cfg).await.expect("connect with the key");
    client.create_bucket("private", None).await.expect("mb");
    let b = client.bucket("private").await.expect("bucket");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    put_bytes(&b, "x", bytes.clone()).await.expect("put");
    assert_eq!(get_bytes(&b, "x").await.expect("get"), bytes);
    assert_eq!(client.status().await.iter().filter(|n| n.stats.is_ok()).count(), 6);
    client.shutdown().await;

    // Peers without the key, or with another, get nothing from any node.
    let peer: PeerId = cluster.peer_id(0).parse().expect("peer");
    assert!(answers(&cluster, Some(key), peer).await, "the key opens it");
    assert!(!answers(&cluster, None, peer).await, "a public peer got in");
    assert!(!answers(&cluster, Some(cairn_net::network_key::generate()), peer).await, "another network's peer got in");

    // A client without the key cannot use the network.
    let public = ClientConfig { network_key: None, ..cluster.client_config(None) };
    let refused = async {
        let c = Client::connect(&root, public).await?;
        let r = c.bucket("private").await.map(|_| ());
        c.shutdown().await;
        r
    };
    let r = tokio::time::timeout(Duration::from_secs(60), refused).await.expect("a clear error, not a hang");
    assert!(r.is_err(), "a client without the key reached the network");

    // A node without the key that tries to join is never seen by the network.
    let outsider_dir = dir.path().join("outsider");
    let boot = cluster.bootstrap().remove(0);
    let mut outsider =
        cairn_cli::devnet::start_node(&cairn_tests::binary("cairn-node"), &outsider_dir, Some(&boot), "1GiB")
            .expect("outsider starts");
    let addrs = std::fs::read_to_string(outsider_dir.join("node.addrs")).expect("addrs");
    let stranger: PeerId = addrs.lines().next().and_then(|l| l.rsplit('/').next()).expect("id").parse().expect("peer");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = Client::connect(&root, ClientConfig { network_key: Some(key), ..cluster.client_config(None) })
        .await
        .expect("connect");
    let known: Vec<PeerId> = client.status().await.iter().map(|n| n.node.peer).collect();
    assert!(!known.contains(&stranger));
    client.shutdown().await;
    outsider.kill();
}
