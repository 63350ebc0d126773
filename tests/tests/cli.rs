//! The `cairn` command against a real cluster, as a user runs it: object
//! commands through `cairn agent` (the default) and, with
//! `CAIRN_AGENT=off`, each in its own process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn_tests::{TestCluster, binary};

thread_local! {
    /// Whether this test's object commands may go through an agent.
    static AGENT: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Stops the config's agent when the test ends, passed or not.
struct StopAgent(PathBuf);

impl Drop for StopAgent {
    fn drop(&mut self) {
        // Not `binary`, whose check may fail: a panic here, while a failed
        // test unwinds, would abort the whole test binary.
        let Ok(bin) = std::panic::catch_unwind(|| binary("cairn")) else { return };
        let _ = Command::new(bin).arg("--config").arg(&self.0).args(["agent", "stop"]).output();
    }
}

fn cairn(config: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(binary("cairn"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CAIRN_PASSPHRASE", "correct horse battery staple")
        .env("CAIRN_AGENT", if AGENT.get() { "on" } else { "off" })
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
    a_user_session(true);
}

#[test]
fn the_cli_does_the_same_with_each_command_in_its_own_process() {
    a_user_session(false);
}

fn a_user_session(agent: bool) {
    AGENT.set(agent);
    let cluster = TestCluster::start(6);
    let config = cluster.dir().join("home/config.toml");
    let _stop = StopAgent(config.clone());
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
    // A wrong passphrase is told apart from a damaged key file. (A
    // running agent holds the key it was started with: stop it first.)
    ok(&config, &["agent", "stop"]);
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
    let _stop = StopAgent(config.clone());
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

/// The pid in `cairn agent status`, if an agent runs.
fn agent_pid(config: &Path) -> Option<u32> {
    let status = ok(config, &["agent", "status"]);
    status.strip_prefix("agent ")?.split_whitespace().next()?.parse().ok()
}

/// Runs `check` every 100 ms until it holds (or fails the test after 15 s).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !check() {
        assert!(std::time::Instant::now() < until, "{what}: not after 15 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Puts `line` before the config's first line (top-level keys go first).
fn prepend(config: &Path, line: &str) {
    let text = std::fs::read_to_string(config).expect("config");
    std::fs::write(config, format!("{line}\n{text}")).expect("write config");
}

#[test]
fn the_agent_serves_until_it_should_end_and_a_caller_that_leaves_stores_nothing() {
    let cluster = TestCluster::start(6);
    let config = cluster.dir().join("home/config.toml");
    let _stop = StopAgent(config.clone());
    let boot = cluster.bootstrap().remove(0);
    ok(&config, &["init", "--bootstrap", &boot]);
    assert!(ok(&config, &["agent", "status"]).starts_with("no agent runs"));
    ok(&config, &["mb", "agent", "--k", "3", "--n", "4"]);
    // The first object command starts the agent; the next ones use it.
    let piped = cairn(&config, &["put", "-", "agent/a.txt"], Some(b"through the agent\n"));
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    assert_eq!(ok(&config, &["get", "agent/a.txt", "-"]), "through the agent\n");
    let pid = agent_pid(&config).expect("an agent runs");
    assert!(ok(&config, &["agent", "status"]).contains("2 commands run"));
    let socket = cluster.dir().join("home/cache-agent/sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).expect("socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only its user may talk to the agent");
    // A file the agent writes for a caller gets the caller's umask, not
    // the agent's (which is this test's, inherited by the first call).
    for (umask, want) in [("077", 0o600), ("002", 0o664)] {
        let target = cluster.dir().join(format!("got-{umask}"));
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" --config \"$1\" get agent/a.txt \"$2\""))
            .arg(binary("cairn"))
            .arg(&config)
            .arg(&target)
            .env("CAIRN_PASSPHRASE", "correct horse battery staple")
            .output()
            .expect("sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mode = std::fs::metadata(&target).expect("fetched file").permissions().mode();
        assert_eq!(mode & 0o777, want, "a get with umask {umask}");
    }
    assert_eq!(agent_pid(&config), Some(pid), "the gets went through the agent");

    // A caller killed while its input still flows stores nothing, and the
    // agent goes on serving others.
    let mut child = Command::new(binary("cairn"))
        .arg("--config")
        .arg(&config)
        .args(["put", "-", "agent/cut.bin"])
        .env("CAIRN_PASSPHRASE", "correct horse battery staple")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cairn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(&vec![7u8; 3 << 20]).expect("write stdin");
    child.kill().expect("kill");
    child.wait().expect("wait");
    drop(input);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cut = cairn(&config, &["get", "agent/cut.bin", "-"], None);
    assert!(!cut.status.success(), "a put cut short was stored");
    assert!(String::from_utf8_lossy(&cut.stderr).contains("no object"), "{}", String::from_utf8_lossy(&cut.stderr));
    assert!(ok(&config, &["ls", "agent"]).contains("a.txt"));
    assert_eq!(agent_pid(&config), Some(pid));

    // A changed config ends the agent; commands go on (here or in a new one).
    prepend(&config, "agent_idle = \"1s\"");
    eventually("a new agent after the config changed", || {
        assert!(ok(&config, &["ls", "agent"]).contains("a.txt"));
        agent_pid(&config).is_some_and(|p| p != pid)
    });
    // One second without a command ends it.
    eventually("the agent ends when idle", || agent_pid(&config).is_none());
    assert!(!socket.exists(), "the socket outlived its agent");

    // Stopped on request, and never started where the config says off.
    ok(&config, &["ls", "agent"]);
    assert!(agent_pid(&config).is_some());
    assert!(ok(&config, &["agent", "stop"]).contains("agent stopped"));
    assert!(agent_pid(&config).is_none());
    prepend(&config, "agent_idle = \"off\"");
    let text = std::fs::read_to_string(&config).expect("config").replacen("agent_idle = \"1s\"\n", "", 1);
    std::fs::write(&config, text).expect("write config");
    assert_eq!(ok(&config, &["get", "agent/a.txt", "-"]), "through the agent\n");
    assert!(agent_pid(&config).is_none());
}
