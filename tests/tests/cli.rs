//! The `cairn` command against a real cluster, as a user runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_tests::{TestCluster, binary};

fn cairn(config: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(binary("cairn"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CAIRN_PASSPHRASE", "correct horse battery staple")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cairn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("cairn output")
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = cairn(config, args, None);
    assert!(out.status.success(), "cairn {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_cli_does_what_a_user_expects() {
    let cluster = TestCluster::start(6);
    let config = cluster.dir().join("home/config.toml");
    let boot = cluster.bootstrap().remove(0);
    // With a passphrase from CAIRN_PASSPHRASE; a second init refuses to overwrite.
    ok(&config, &["init", "--bootstrap", &boot]);
    let again = cairn(&config, &["init"], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // Small buckets need a code that fits six nodes: 3 of 4 (+2 extra).
    ok(&config, &["mb", "docs", "--k", "3", "--n", "4"]);
    let dup = cairn(&config, &["mb", "docs"], None);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists already"), "duplicate mb");
    assert!(ok(&config, &["buckets"]).contains("docs  k=3 n=4 extra=2"));
    let file = cluster.dir().join("report.bin");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &body).expect("write file");
    ok(&config, &["put", file.to_str().expect("utf-8"), "docs/reports/2026.bin"]);
    let piped = cairn(&config, &["put", "-", "docs/notes.txt"], Some(b"from stdin\n"));
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    let top = ok(&config, &["ls", "docs"]);
    assert!(top.contains("DIR  reports/") && top.contains("11  notes.txt"), "{top}");
    let all = ok(&config, &["ls", "-r", "docs"]);
    assert!(all.contains("3000000  reports/2026.bin"), "{all}");
    let copy = cluster.dir().join("copy.bin");
    ok(&config, &["get", "docs/reports/2026.bin", copy.to_str().expect("utf-8")]);
    assert!(std::fs::read(&copy).expect("copy") == body);
    assert_eq!(ok(&config, &["get", "docs/notes.txt", "-"]), "from stdin\n");
    let stat = ok(&config, &["stat", "docs/reports/2026.bin"]);
    assert!(stat.contains("segments: 1") && stat.contains("4/4 holders answer"), "{stat}");
    let status = ok(&config, &["status"]);
    assert!(status.contains("6 storage nodes known, 6 reachable"), "{status}");
    assert!(status.contains("DHT lookup of a random key: ") && status.contains("nodes found"), "{status}");
    // Every call above ran as this device's identity, created beside the
    // config: the nodes holding the file's four shards count them as ours.
    let holding = status.lines().filter(|l| l.contains("; you: ") && !l.contains("you: 0 B stored")).count();
    assert!(holding >= 4, "{status}");
    use std::os::unix::fs::PermissionsExt;
    let identity = std::fs::metadata(cluster.dir().join("home/identity.key")).expect("identity.key");
    assert_eq!(identity.permissions().mode() & 0o777, 0o600);
    // Errors are sentences that say what to do.
    let missing = cairn(&config, &["get", "docs/nope", "-"], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no object \"nope\" in bucket \"docs\""));
    let nobucket = cairn(&config, &["ls", "nothere"], None);
    assert!(String::from_utf8_lossy(&nobucket.stderr).contains("cairn mb nothere"));
    let full = cairn(&config, &["rb", "docs"], None);
    assert!(String::from_utf8_lossy(&full.stderr).contains("not empty"));
    ok(&config, &["rm", "docs/reports/2026.bin"]);
    ok(&config, &["rm", "docs/notes.txt"]);
    ok(&config, &["rb", "docs"]);
    assert_eq!(ok(&config, &["buckets"]), "");
    // A wrong passphrase is told apart from a damaged key file.
    let out = Command::new(binary("cairn"))
        .args(["--config", config.to_str().expect("utf-8"), "buckets"])
        .env("CAIRN_PASSPHRASE", "wrong")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("passphrase"));
}

/// Every `cairn` process of a device runs as the device's identity
/// (`identity.key` beside the config): many at once must not trip the
/// nodes' per-peer limits (16 at once once failed 10 times in 16).
#[test]
fn many_cli_calls_of_one_device_at_once_all_succeed() {
    let cluster = TestCluster::start(6);
    let config = cluster.dir().join("home/config.toml");
    let boot = cluster.bootstrap().remove(0);
    ok(&config, &["init", "--bootstrap", &boot]);
    ok(&config, &["mb", "many", "--k", "3", "--n", "4"]);
    let file = cluster.dir().join("part.bin");
    let body: Vec<u8> = (0..20_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &body).expect("write file");
    let path = file.to_str().expect("utf-8").to_string();
    let calls: Vec<std::thread::JoinHandle<Output>> = (0..24)
        .map(|i| {
            let (config, path) = (config.clone(), path.clone());
            std::thread::spawn(move || cairn(&config, &["put", &path, &format!("many/f{i}")], None))
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let out = call.join().expect("thread");
        assert!(out.status.success(), "put {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let listed = ok(&config, &["ls", "many"]);
    assert_eq!(listed.lines().count(), 24, "{listed}");
    let copy = cluster.dir().join("back.bin");
    ok(&config, &["get", "many/f7", copy.to_str().expect("utf-8")]);
    assert!(std::fs::read(&copy).expect("copy") == body);
}
