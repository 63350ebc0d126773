//! The S3 gateway against real S3 programs: boto3, the aws cli, rclone,
//! s3cmd and restic, each against a `cairn gateway` process over a
//! cluster of real nodes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_crypto::RootSecret;
use cairn_tests::TestCluster;
use cairn_tests::gateway::{GatewayProcess, venv};

fn suite() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/s3"))
}

/// Runs `cmd`, showing its output; panics if it fails.
fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{what} failed:\n{text}");
}

fn python(gw: &GatewayProcess, script: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(venv().join("bin/python"));
    c.arg(suite().join(script)).args([&gw.endpoint, &gw.key, &gw.secret]).args(extra);
    c
}

#[test]
fn boto3_uses_every_supported_operation() {
    let cluster = TestCluster::start(8);
    let gw = GatewayProcess::start_with(&cluster, "boto", &["--metrics", "127.0.0.1:0"]);
    run(python(&gw, "boto3_suite.py", &[]), "the boto3 suite");
    let metrics = gw.metrics();
    for line in ["cairn_s3_requests_total{method=\"PUT\",status=\"200\"}", "cairn_s3_request_seconds_count"] {
        assert!(metrics.contains(line), "no {line} in the metrics:\n{metrics}");
    }
}

#[test]
fn uploads_cross_gateways_of_one_account_and_keys_keep_their_scope() {
    let cluster = TestCluster::start(8);
    let a = GatewayProcess::start(&cluster, "two");
    let b = a.another();
    let out = Command::new(cairn_tests::binary("cairn"))
        .arg("--config")
        .arg(&a.config)
        .args(["gateway", "keys", "add", "reader", "--read-only", "--bucket", "shared"])
        .output()
        .expect("keys add");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines().find_map(|l| l.strip_prefix(label)).map(|v| v.trim().to_string()).expect("key printed")
    };
    let (ro_key, ro_secret) = (field("access key:"), field("secret:"));
    let mut c = Command::new(venv().join("bin/python"));
    c.arg(suite().join("two_gateways.py")).args([&a.endpoint, &b.endpoint, &a.key, &a.secret, &ro_key, &ro_secret]);
    run(c, "two gateways");
}

#[test]
fn aws_cli_rclone_s3cmd_and_restic_just_work() {
    let cluster = TestCluster::start(8);
    let gw = GatewayProcess::start(&cluster, "tools");
    let mut c = Command::new("bash");
    let path = format!("{}:{}", venv().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    c.arg(suite().join("tools.sh"))
        .args([&gw.endpoint, &gw.key, &gw.secret])
        .arg(cluster.dir().join("tools-work"))
        .env("PATH", path)
        .env("HOME", cluster.dir());
    run(c, "aws cli, rclone, s3cmd and restic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_errors_and_store_nothing() {
    let cluster = TestCluster::start(8);
    let gw = GatewayProcess::start(&cluster, "bad");
    let watcher = cluster.client(&RootSecret::generate()).await;
    let used =
        || async { watcher.status().await.into_iter().map(|s| s.stats.map(|s| s.used).unwrap_or(0)).sum::<u64>() };
    run(python(&gw, "bad_input.py", &["prepare"]), "bad-input setup");
    let before = used().await;
    run(python(&gw, "bad_input.py", &["attack"]), "bad input");
    // A PUT cut off mid-body stored shards; they are deleted at once.
    let deadline = Instant::now() + cairn_tests::DEADLINE;
    loop {
        let now = used().await;
        if now <= before {
            break;
        }
        assert!(Instant::now() < deadline, "nodes hold {now} bytes after bad input, {before} before");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watcher.shutdown().await;
}

#[test]
fn boto3_over_tls_with_trailing_checksums() {
    let cluster = TestCluster::start(8);
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).expect("cert");
    let (cert_pem, key_pem) = (cluster.dir().join("cert.pem"), cluster.dir().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).expect("write key");
    let (c, k) = (cert_pem.to_str().expect("utf-8"), key_pem.to_str().expect("utf-8"));
    let gw = GatewayProcess::start_with(&cluster, "tls", &["--tls-cert", c, "--tls-key", k]);
    assert!(gw.endpoint.starts_with("https://"), "{}", gw.endpoint);
    run(python(&gw, "tls_suite.py", &[c]), "boto3 over TLS");
}
