//! The FUSE mount against real programs and a local copy: every test
//! mounts a bucket of a cluster of real nodes with `cairn mount` (a real
//! kernel mount) and uses it only through the file system.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_tests::TestCluster;
use cairn_tests::mount::{MountProcess, fuse_available};
use rand::{Rng, SeedableRng};

/// Runs `cmd` in `dir`; panics with its output if it fails.
fn sh(dir: &Path, cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().expect("run sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{cmd}` failed in {}:\n{text}", dir.display());
    text
}

/// What a tree holds: path → ("file", bytes) | ("dir", "") | ("link", target).
fn tree(root: &Path) -> BTreeMap<String, (&'static str, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
            let t = e.file_type().expect("type");
            if t.is_symlink() {
                let target = std::fs::read_link(&p).expect("readlink");
                out.insert(rel, ("link", target.to_string_lossy().into_owned().into_bytes()));
            } else if t.is_dir() {
                out.insert(rel, ("dir", Vec::new()));
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                assert_eq!(e.metadata().expect("stat").len(), bytes.len() as u64, "size of {rel}");
                out.insert(rel, ("file", bytes));
            }
        }
    }
    out
}

fn assert_same(model: &Path, mount: &Path, when: &str) {
    let (a, b) = (tree(model), tree(mount));
    let names = |t: &BTreeMap<String, (&'static str, Vec<u8>)>| -> Vec<(String, &'static str)> {
        t.iter().map(|(k, v)| (k.clone(), v.0)).collect()
    };
    assert_eq!(names(&a), names(&b), "{when}: different names");
    for (k, v) in &a {
        assert!(b[k] == *v, "{when}: {k} differs ({} vs {} bytes)", v.1.len(), b[k].1.len());
    }
}

fn random_bytes(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Applies one random step to `root`; the same seed gives the same steps.
fn step(root: &Path, rng: &mut rand::rngs::StdRng) {
    let files: Vec<PathBuf> =
        tree(root).into_iter().filter(|(_, v)| v.0 == "file").map(|(k, _)| root.join(k)).collect();
    let dirs: Vec<PathBuf> = std::iter::once(root.to_path_buf())
        .chain(tree(root).into_iter().filter(|(_, v)| v.0 == "dir").map(|(k, _)| root.join(k)))
        .collect();
    let dir = &dirs[rng.gen_range(0..dirs.len())];
    let name = format!("n{}", rng.gen_range(0..12));
    let file = (!files.is_empty()).then(|| files[rng.gen_range(0..files.len())].clone());
    let size = if rng.gen_bool(0.1) { rng.gen_range(1 << 20..3 << 20) } else { rng.gen_range(0..70_000) };
    match (rng.gen_range(0..10), file) {
        (0 | 1, _) | (_, None) => {
            let p = dir.join(&name);
            if !p.is_dir() {
                std::fs::write(&p, random_bytes(rng, size)).expect("write");
            }
        }
        (2, Some(f)) => {
            let mut h = std::fs::OpenOptions::new().append(true).open(f).expect("open");
            h.write_all(&random_bytes(rng, size / 4)).expect("append");
        }
        (3, Some(f)) => {
            let h = std::fs::OpenOptions::new().write(true).open(&f).expect("open");
            let len = h.metadata().expect("stat").len();
            let at = rng.gen_range(0..=len + 5000);
            let n = rng.gen_range(1..20_000);
            h.write_all_at(&random_bytes(rng, n), at).expect("pwrite");
        }
        (4, Some(f)) => {
            let h = std::fs::OpenOptions::new().write(true).open(&f).expect("open");
            let len = h.metadata().expect("stat").len();
            h.set_len(rng.gen_range(0..=len + 10_000)).expect("truncate");
        }
        (5, Some(f)) => {
            let to = dir.join(&name);
            if !to.is_dir() {
                std::fs::rename(&f, &to).expect("rename");
            }
        }
        (6, Some(f)) => {
            let to = dir.join(&name);
            if !to.is_dir() && to != f {
                std::fs::copy(&f, &to).expect("copy");
            }
        }
        (7, _) => {
            let p = dir.join(format!("d{}", rng.gen_range(0..4)));
            if !p.exists() {
                std::fs::create_dir(&p).expect("mkdir");
            }
        }
        (8, Some(f)) => std::fs::remove_file(&f).expect("rm"),
        (_, _) => {
            // rmdir of an empty directory, else a symlink.
            let empty =
                dirs.iter().skip(1).find(|d| std::fs::read_dir(d).map(|mut r| r.next().is_none()).unwrap_or(false));
            match empty {
                Some(d) => std::fs::remove_dir(d).expect("rmdir"),
                None => {
                    let p = dir.join(format!("l{}", rng.gen_range(0..3)));
                    if !p.exists() && p.symlink_metadata().is_err() {
                        std::os::unix::fs::symlink("some/target", &p).expect("symlink");
                    }
                }
            }
        }
    }
}

#[test]
fn file_operations_match_a_local_copy() {
    if !fuse_available() {
        return;
    }
    let cluster = TestCluster::start(8);
    let mut m = MountProcess::start(&cluster, "ops", "ops", &[]);
    let model = tempfile::tempdir().expect("model");
    for seed in 0..120u64 {
        // The same step on both sides (each from the same seed).
        step(model.path(), &mut rand::rngs::StdRng::seed_from_u64(seed));
        step(&m.dir, &mut rand::rngs::StdRng::seed_from_u64(seed));
        if seed % 20 == 19 {
            assert_same(model.path(), &m.dir, &format!("after step {seed}"));
        }
    }
    // Errors a program expects.
    std::fs::create_dir_all(m.dir.join("full/sub")).expect("mkdir -p");
    let err = |r: std::io::Result<()>| r.expect_err("must fail").raw_os_error();
    assert_eq!(err(std::fs::remove_dir(m.dir.join("full"))), Some(39), "rmdir of a non-empty dir: ENOTEMPTY");
    assert_eq!(err(std::fs::remove_file(m.dir.join("full"))), Some(21), "unlink of a dir: EISDIR");
    assert_eq!(err(std::fs::create_dir(m.dir.join("full"))), Some(17), "mkdir of an existing dir: EEXIST");
    assert_eq!(err(std::fs::read(m.dir.join("nothing")).map(|_| ())), Some(2), "ENOENT");
    assert_eq!(err(std::fs::hard_link(m.dir.join("full"), m.dir.join("h"))), Some(1), "link: EPERM");
    std::fs::remove_dir(m.dir.join("full/sub")).expect("rmdir");
    // An emptied directory stays until it is removed.
    assert!(m.dir.join("full").is_dir());
    std::fs::remove_dir(m.dir.join("full")).expect("rmdir");
    // A directory renamed with what is inside it; inode numbers stay.
    std::fs::create_dir_all(m.dir.join("ren/a/b")).expect("mkdir");
    std::fs::write(m.dir.join("ren/a/b/f"), b"inside").expect("write");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(m.dir.join("ren/a/b/f")).expect("stat"));
    std::fs::rename(m.dir.join("ren/a"), m.dir.join("ren/z")).expect("rename dir");
    let moved = std::fs::metadata(m.dir.join("ren/z/b/f")).expect("stat moved");
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&moved), ino);
    assert_eq!(std::fs::read(m.dir.join("ren/z/b/f")).expect("read"), b"inside");
    assert!(!m.dir.join("ren/a").exists());
    std::fs::remove_dir_all(m.dir.join("ren")).expect("rm -r");
    // A shell redirection onto an existing file (open with O_TRUNC).
    sh(&m.dir, "seq 1 100000 > trunc && echo short > trunc");
    assert_eq!(std::fs::read(m.dir.join("trunc")).expect("read"), b"short\n");
    std::fs::remove_file(m.dir.join("trunc")).expect("rm");
    // Modes and times are kept.
    let p = m.dir.join("moded");
    std::fs::write(&p, b"x").expect("write");
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o640)).expect("chmod");
    sh(&m.dir, "touch -d '2001-02-03 04:05:06' moded");
    let st = std::fs::metadata(&p).expect("stat");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&st.permissions()) & 0o777, 0o640);
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&st), 981173106);
    std::fs::remove_file(&p).expect("rm");
    // `ls -R` agrees, and everything is there after a remount.
    assert_eq!(sh(model.path(), "ls -R"), sh(&m.dir, "ls -R"));
    assert!(m.stop().success(), "clean unmount:\n{}", m.log_text());
    m.mount(&[]);
    assert_same(model.path(), &m.dir, "after a remount");
    assert!(!m.cache.join("kept").exists(), "nothing was left behind: {}", m.log_text());
}

#[test]
fn real_programs_work_in_the_mount() {
    if !fuse_available() {
        return;
    }
    let cluster = TestCluster::start(8);
    let mut m = MountProcess::start(&cluster, "progs", "progs", &[]);
    let work = tempfile::tempdir().expect("work");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").to_path_buf();
    // tar: a real tree (this repository's sources), extracted in the mount.
    sh(work.path(), &format!("tar -C {} -cf tree.tar client/src docs proto/src", src.display()));
    std::fs::create_dir(m.dir.join("tar")).expect("mkdir");
    sh(&m.dir.join("tar"), &format!("tar -xf {}/tree.tar", work.path().display()));
    sh(work.path(), &format!("mkdir t && tar -C t -xf tree.tar && diff -r t {}/tar", m.dir.display()));
    // git: a repository inside the mount.
    let g = m.dir.join("repo");
    std::fs::create_dir(&g).expect("mkdir");
    sh(&g, "git init -q && git config user.email t@example.invalid && git config user.name t");
    sh(&g, &format!("cp -r {}/client/src . && git add . && git commit -qm one", src.display()));
    sh(
        &g,
        "echo change >> src/lib.rs && git commit -qam two && git mv src/lib.rs src/moved.rs && git commit -qm three",
    );
    let log = sh(&g, "git log --oneline");
    assert_eq!(log.lines().count(), 3, "{log}");
    sh(&g, "git gc -q && git fsck --full && git status --porcelain");
    // rsync: in and back out, no differences.
    sh(work.path(), &format!("rsync -a {}/docs/ {}/synced/", src.display(), m.dir.display()));
    sh(work.path(), &format!("rsync -a {}/synced/ back/ && diff -r {}/docs back", m.dir.display(), src.display()));
    // sqlite: 10,000 inserts in 100 transactions, then an integrity check.
    let db = m.dir.join("db.sqlite");
    let script = format!(
        "import sqlite3\nc = sqlite3.connect('{}')\nc.execute('create table t (i integer primary key, v text)')\n\
         for tx in range(100):\n    with c:\n        c.executemany('insert into t (v) values (?)', \
         [('row %d %d' % (tx, j),) for j in range(100)])\n\
         assert c.execute('pragma integrity_check').fetchone()[0] == 'ok'\n\
         assert c.execute('select count(*) from t').fetchone()[0] == 10000\nc.close()\n",
        db.display()
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3");
    assert!(out.status.success(), "sqlite: {}", String::from_utf8_lossy(&out.stderr));
    // After a remount, all of it is still right.
    assert!(m.stop().success(), "clean unmount:\n{}", m.log_text());
    m.mount(&[]);
    sh(work.path(), &format!("diff -r t {}/tar", m.dir.display()));
    sh(&g, "git fsck --full && git log --oneline");
    let check = format!(
        "import sqlite3\nc = sqlite3.connect('{}')\nassert c.execute('pragma integrity_check').fetchone()[0] == 'ok'\n\
         assert c.execute('select count(*) from t').fetchone()[0] == 10000\n",
        db.display()
    );
    let out = Command::new("python3").arg("-c").arg(&check).output().expect("python3");
    assert!(out.status.success(), "sqlite after remount: {}", String::from_utf8_lossy(&out.stderr));
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn a_big_file_survives_a_remount_and_sigterm_keeps_an_open_file() {
    if !fuse_available() {
        return;
    }
    let cluster = TestCluster::start(8);
    let mut m = MountProcess::start(&cluster, "big", "big", &[]);
    let work = tempfile::tempdir().expect("work");
    let local = work.path().join("big");
    {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut f = std::fs::File::create(&local).expect("create");
        for _ in 0..200 {
            f.write_all(&random_bytes(&mut rng, 1 << 20)).expect("write");
        }
    }
    let want = sha256(&local);
    std::fs::copy(&local, m.dir.join("big")).expect("copy in");
    assert_eq!(sha256(&m.dir.join("big")), want);
    // A new file that starts streaming up and is then changed elsewhere
    // (the stream is dropped; the file goes up the ordinary way).
    let mut expect = Vec::new();
    {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut f = std::fs::File::create(m.dir.join("changed")).expect("create");
        for _ in 0..20 {
            let chunk = random_bytes(&mut rng, 1 << 20);
            f.write_all(&chunk).expect("write");
            expect.extend_from_slice(&chunk);
        }
        f.write_all_at(b"HEAD", 0).expect("pwrite");
        expect[..4].copy_from_slice(b"HEAD");
        f.set_len(19 << 20).expect("truncate");
        expect.truncate(19 << 20);
    }
    assert!(std::fs::read(m.dir.join("changed")).expect("read") == expect);
    // A file still open for writing when SIGTERM comes: its bytes go up
    // before the mount exits.
    let mut open = std::fs::File::create(m.dir.join("open")).expect("create");
    open.write_all(&[5u8; 3 << 20]).expect("write");
    assert!(m.stop().success(), "unmount with an open file:\n{}", m.log_text());
    drop(open);
    m.mount(&[]);
    assert_eq!(sha256(&m.dir.join("big")), want, "after a remount");
    assert_eq!(std::fs::read(m.dir.join("open")).expect("read"), vec![5u8; 3 << 20]);
    assert!(std::fs::read(m.dir.join("changed")).expect("read") == expect, "after a remount");
    // A range in the middle, as a program that seeks would read it.
    let f = std::fs::File::open(m.dir.join("big")).expect("open");
    let mut mid = vec![0u8; 100_000];
    f.read_exact_at(&mut mid, 150_000_000).expect("pread");
    let mut whole = vec![0u8; 100_000];
    std::fs::File::open(&local).expect("open").read_exact_at(&mut whole, 150_000_000).expect("pread");
    assert!(mid == whole);
    drop(f);
    // `fusermount3 -u` from outside ends the process cleanly.
    std::fs::write(m.dir.join("last"), b"last").expect("write");
    sh(work.path(), &format!("fusermount3 -u {}", m.dir.display()));
    assert!(m.stop().success());
    m.mount(&[]);
    assert_eq!(std::fs::read(m.dir.join("last")).expect("read"), b"last");
}

#[test]
fn a_failed_upload_is_an_error_and_the_bytes_are_not_lost() {
    if !fuse_available() {
        return;
    }
    let mut cluster = TestCluster::start(8);
    let mut m = MountProcess::start(&cluster, "fail", "fail", &[]);
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(m.dir.join("kept")).expect("create");
    f.write_all(&data).expect("write");
    // 5 nodes left: too few for the 8 shards of the default code, so the
    // upload cannot succeed.
    for i in 5..8 {
        cluster.kill(i);
    }
    let err = f.sync_all().expect_err("fsync with too few nodes must fail");
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    // close() reports it too (Python shows close's error; Rust drops it).
    let script = format!(
        "import os, sys\nfd = os.open('{}', os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'y' * 1500000)\n\
         try:\n    os.close(fd)\nexcept OSError as e:\n    sys.exit(0 if e.errno == 5 else 1)\nsys.exit(2)\n",
        m.dir.join("closed").display()
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3");
    assert_eq!(out.status.code(), Some(0), "close() must fail with EIO: {}", String::from_utf8_lossy(&out.stderr));
    for i in 5..8 {
        cluster.restart(i);
    }
    // The same handle, tried again, now succeeds.
    let start = Instant::now();
    while let Err(e) = f.sync_all() {
        assert!(start.elapsed() < Duration::from_secs(60), "fsync never recovered: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(f);
    // The closed file's bytes were kept and go up at unmount at the latest.
    assert!(m.stop().success(), "unmount uploads what is left:\n{}", m.log_text());
    m.mount(&[]);
    assert!(std::fs::read(m.dir.join("kept")).expect("read") == data);
    assert!(std::fs::read(m.dir.join("closed")).expect("read") == vec![b'y'; 1_500_000]);
}

#[test]
fn a_crash_loses_only_what_was_never_flushed_and_keeps_its_bytes() {
    if !fuse_available() {
        return;
    }
    let cluster = TestCluster::start(8);
    let mut m = MountProcess::start(&cluster, "crash", "crash", &[]);
    std::fs::create_dir(m.dir.join("d")).expect("mkdir");
    std::fs::write(m.dir.join("d/committed"), vec![1u8; 300_000]).expect("write");
    std::fs::write(m.dir.join("old"), b"old version").expect("write");
    // Changes that are never flushed: a new file and an overwrite.
    let mut open = std::fs::File::create(m.dir.join("d/unflushed")).expect("create");
    open.write_all(&[2u8; 100_000]).expect("write");
    let changed = std::fs::OpenOptions::new().write(true).open(m.dir.join("old")).expect("open");
    changed.write_all_at(b"NEW", 0).expect("pwrite");
    m.kill();
    drop((open, changed));
    m.mount(&[]);
    assert_eq!(std::fs::read(m.dir.join("d/committed")).expect("read"), vec![1u8; 300_000]);
    assert_eq!(std::fs::read(m.dir.join("old")).expect("read"), b"old version", "the old version, not a mix");
    assert!(!m.dir.join("d/unflushed").exists());
    // Their bytes are kept, under their names, and the mount said so.
    let kept = m.cache.join("kept");
    assert_eq!(std::fs::read(kept.join("d%2Funflushed")).expect("kept copy"), vec![2u8; 100_000]);
    assert!(kept.join("old").exists(), "the overwrite is kept too");
    assert!(m.log_text().contains("had not uploaded"), "{}", m.log_text());
}

#[test]
fn daemon_mode_detaches_and_stops_on_sigterm() {
    if !fuse_available() {
        return;
    }
    let cluster = TestCluster::start(8);
    let m = MountProcess::start(&cluster, "first", "shared", &[]);
    std::fs::write(m.dir.join("from-first"), b"one").expect("write");
    // A second mount of the same bucket, detached, sees it.
    let dir = cluster.dir().join("second-mnt");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let pid_file = cluster.dir().join("second.pid");
    let out = Command::new(cairn_tests::binary("cairn"))
        .arg("--config")
        .arg(&m.config)
        .args(["mount", "shared"])
        .arg(&dir)
        .arg("--cache-dir")
        .arg(cluster.dir().join("second-cache"))
        .arg("--daemon")
        .arg("--pid-file")
        .arg(&pid_file)
        .output()
        .expect("cairn mount --daemon");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid = std::fs::read_to_string(&pid_file).expect("pid file").trim().to_string();
    let unmount = scopeguard(&dir, &pid);
    assert_eq!(std::fs::read(dir.join("from-first")).expect("read through the second mount"), b"one");
    std::fs::write(dir.join("from-second"), b"two").expect("write");
    let start = Instant::now();
    while std::fs::read(m.dir.join("from-second")).ok().as_deref() != Some(b"two".as_slice()) {
        assert!(start.elapsed() < Duration::from_secs(10), "the first mount never saw the second's file");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A change by the other mount shows within a few seconds, though this
    // one read the old version before (its cached pages are dropped).
    std::fs::write(m.dir.join("from-first"), b"one, changed").expect("overwrite");
    let start = Instant::now();
    while std::fs::read(dir.join("from-first")).ok().as_deref() != Some(b"one, changed".as_slice()) {
        assert!(start.elapsed() < Duration::from_secs(10), "the change never showed in the second mount");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(unmount);
    assert!(!alive(&pid), "the daemon exited");
}

/// Whether process `pid` runs (a zombie nobody reaped does not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
}

/// Stops the daemon `pid` (SIGTERM, wait) and unmounts `dir` when dropped.
fn scopeguard(dir: &Path, pid: &str) -> impl Drop {
    struct Guard(PathBuf, String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg("-TERM").arg(&self.1).status();
            let start = Instant::now();
            while alive(&self.1) && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).stderr(std::process::Stdio::null()).status();
        }
    }
    Guard(dir.to_path_buf(), pid.to_string())
}
