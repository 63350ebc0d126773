//! Invariants of the crate graph, checked against `cargo metadata`:
//! - `cairn-storage-node` never depends (normal or build) on `cairn-crypto`
//!   or `cairn-client`: a node cannot leak a key it never links;
//! - `cairn-proto` and `cairn-crypto` stay pure: no async runtime, no network.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Package name → names of its normal and build dependencies (resolved).
fn graph() -> HashMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p["name"].as_str().expect("name")))
        .collect();
    let mut g = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
        let name = names[node["id"].as_str().expect("id")].to_owned();
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build")
            })
            .map(|d| names[d["pkg"].as_str().expect("pkg")].to_owned())
            .collect();
        g.insert(name, deps);
    }
    g
}

/// Everything `root` links, transitively (normal and build edges).
fn closure(g: &HashMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        for d in g.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn storage_node_never_links_crypto_or_client() {
    let g = graph();
    assert!(g.contains_key("cairn-storage-node"), "storage-node is a workspace member");
    let deps = closure(&g, "cairn-storage-node");
    for forbidden in ["cairn-crypto", "cairn-client", "cairn-s3-gateway", "cairn-fuse-mount"] {
        assert!(
            !deps.contains(forbidden),
            "cairn-storage-node depends on {forbidden}: nodes must never link key-handling code"
        );
    }
}

#[test]
fn the_checker_sees_real_edges() {
    // Guards the test above against passing vacuously on a broken graph.
    let g = graph();
    let client = closure(&g, "cairn-client");
    assert!(client.contains("cairn-crypto") && client.contains("cairn-proto"), "{client:?}");
    assert!(closure(&g, "cairn-cli").contains("cairn-client"));
}

#[test]
fn proto_and_crypto_stay_pure() {
    let g = graph();
    for krate in ["cairn-proto", "cairn-crypto"] {
        let deps = closure(&g, krate);
        for forbidden in ["tokio", "libp2p", "rocksdb", "cairn-net", "cairn-client"] {
            assert!(!deps.contains(forbidden), "{krate} depends on {forbidden}; it must stay free of I/O and runtimes");
        }
    }
}

#[test]
fn no_library_crate_depends_on_the_tests_crate() {
    let g = graph();
    for (name, deps) in &g {
        assert!(!deps.iter().any(|d| d == "cairn-tests"), "{name} depends on cairn-tests");
    }
}
