//! A node whose disk fills up before its `capacity` does (a small disk,
//! or another program filling it): it refuses new shards with `NoSpace`
//! and says so in its log and its figures, keeps serving every shard it
//! holds, starts again on the full disk, and takes shards again once
//! there is room. On a real tmpfs of 160 MiB; needs root to mount it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_net::Error;
use cairn_proto::ShardId;
use cairn_proto::shard::ShardError;
use common::{NodeProc, bytes, client, shard_client, token};

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount tmpfs");
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file until the disk refuses; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![7u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

fn no_space(e: &Error) -> bool {
    matches!(e, Error::Refused { error: ShardError::NoSpace { .. }, .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_shards_and_keeps_serving_what_it_holds() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "160M");
    let mut node = NodeProc::start_in(disk.0.join("node"), &["--capacity", "1GiB"]);
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    let (_, owner) = token(1);

    // The node takes 4 MiB shards until the disk (not its 1 GiB capacity)
    // is full, then refuses with NoSpace.
    let mut stored: Vec<(ShardId, Vec<u8>)> = Vec::new();
    let refusal = loop {
        assert!(stored.len() < 40, "160 MiB cannot hold 40 shards of 4 MiB");
        let s = bytes(4 << 20, stored.len() as u8);
        let id = ShardId::of(&s);
        match c.put(id, &s, owner, 3600).await {
            Ok(()) => stored.push((id, s)),
            Err(e) => break e,
        }
    };
    assert!(no_space(&refusal), "{refusal}");
    assert!(stored.len() >= 3, "only {} shards fit", stored.len());
    let st = c.status().await.expect("status").stats;
    assert!(st.capacity < 200 << 20, "the capacity it reports is what the disk can take: {st:?}");
    assert!(st.capacity.saturating_sub(st.used) < 4 << 20, "{st:?}");
    assert!(node.log().contains("the disk is full"), "{}", node.log());

    // Another program fills the rest: still NoSpace, never a lost shard.
    let filler = fill(&disk.0);
    let small = bytes(100_000, 200);
    let e = c.put(ShardId::of(&small), &small, owner, 3600).await.expect_err("the disk is full");
    assert!(no_space(&e), "{e}");
    for (id, s) in &stored {
        assert!(c.get(*id, 8 << 20).await.expect("a stored shard reads") == *s);
    }

    // It stops and starts again on the full disk, and serves what it has.
    node.stop();
    node.run();
    let net = client(vec![node.quic()]);
    let c = shard_client(&net, &node);
    for (id, s) in &stored {
        assert!(c.get(*id, 8 << 20).await.expect("read after a restart on a full disk") == *s);
    }

    // Writes to its database while the disk is full (a delete, head
    // records) fail or succeed, but do not wedge it.
    let (delete, _) = token(1);
    let (gone, _) = stored.pop().expect("a shard");
    let deleted = c.delete(gone, delete).await;
    eprintln!("a delete on the full disk: {deleted:?}");

    // Room again: it takes shards again.
    std::fs::remove_file(&filler).expect("rm filler");
    if deleted.is_err() {
        c.delete(gone, delete).await.expect("a delete once there is room");
    }
    assert!(c.get(gone, 8 << 20).await.is_err(), "deleted");
    c.put(ShardId::of(&small), &small, owner, 3600).await.expect("a put once there is room");
    assert!(c.get(ShardId::of(&small), 1 << 20).await.expect("get") == small);
    drop(node);
}
