//! Usage accounting on a real `cairn-node` process: what a peer moved and
//! stores is counted, shown to it, on the dashboard (with charts a
//! headless Chromium renders) and in `/metrics`, and survives a restart.

mod common;

use cairn_proto::ShardId;
use common::{NodeProc, admin_page, bytes, client, metrics, shard_client, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_peer_uses_is_counted_shown_and_kept_across_a_restart() {
    let mut node = NodeProc::start(&["--capacity", "64MiB"]);
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (_, th) = token(1);
    let s = bytes(300_000, 1);
    let id = ShardId::of(&s);
    c.put(id, &s, th, 3600).await.expect("put");
    assert_eq!(c.get(id, 1 << 20).await.expect("get"), s);
    let u = c.usage().await.expect("usage");
    assert_eq!((u.received, u.sent, u.stored), (300_000, 300_000, 300_000), "{u:?}");
    assert!(u.requests >= 2, "{u:?}");
    let me = net.handle.local_peer_id().to_string();
    let page = admin_page(&node.admin(), "/").await;
    assert!(page.contains(&me[..20]), "the dashboard lists the peer: {page}");
    assert_eq!(page.matches("<svg").count(), 2, "a day's and a month's chart");
    let m = metrics(&node.admin()).await;
    assert!(m.contains(&format!("cairn_node_peer_received_bytes_total{{peer=\"{me}\"}} 300000")), "{m}");
    assert!(m.contains("cairn_node_peers_accounted 1"), "{m}");

    // A headless browser renders the dashboard's charts.
    match which_chromium() {
        None => eprintln!("skipped the browser check: chromium is not installed (scripts/setup.sh installs it)"),
        Some(bin) => {
            let dom = render(&bin, &format!("http://{}/", node.admin()));
            // The browser's serialization, not the page's source: the
            // server writes `<polyline …/>`, a parsed SVG comes back
            // with an end tag.
            assert_eq!(dom.matches("</polyline>").count(), 2, "{dom}");
            assert!(dom.contains("Top peers") && dom.contains(&me[..20]), "{dom}");
        }
    }

    // Kept in RocksDB: a restarted node still knows.
    node.stop();
    node.run();
    let page = admin_page(&node.admin(), "/").await;
    assert!(page.contains(&me[..20]), "the peer is remembered: {page}");
    let m = metrics(&node.admin()).await;
    assert!(m.contains(&format!("cairn_node_peer_received_bytes_total{{peer=\"{me}\"}} 300000")), "{m}");
}

fn which_chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(std::path::PathBuf::from).find(|p| p.exists())
}

/// The DOM of `url` after Chromium loaded and rendered it.
fn render(bin: &std::path::Path, url: &str) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
