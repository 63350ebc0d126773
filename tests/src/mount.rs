//! A `cairn mount` process for a [`TestCluster`](crate::TestCluster): its
//! own client config and bucket, a mount point and a cache directory in
//! the cluster's temp dir. Dropping it stops the process (SIGTERM, then
//! SIGKILL) and makes sure nothing stays mounted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{TestCluster, binary, cairn_setup};

/// Whether this machine can mount FUSE file systems.
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("SKIPPED: /dev/fuse is missing on this machine; the mount cannot be tested");
    }
    ok
}

/// A running (or stopped) mount.
#[derive(Debug)]
pub struct MountProcess {
    child: Option<Child>,
    /// The mount point.
    pub dir: PathBuf,
    /// Its client config.
    pub config: PathBuf,
    /// The bucket.
    pub bucket: String,
    /// The cache directory.
    pub cache: PathBuf,
    /// Where its standard error goes.
    pub log: PathBuf,
}

impl MountProcess {
    /// Makes a config and bucket `bucket` under `name` in the cluster's
    /// dir, and mounts it.
    pub fn start(cluster: &TestCluster, name: &str, bucket: &str, extra: &[&str]) -> Self {
        let base = cluster.dir().join(name);
        let config = base.join("config.toml");
        let mut init = vec!["init", "--no-passphrase"];
        let boot = cluster.bootstrap();
        for b in &boot {
            init.extend(["--bootstrap", b.as_str()]);
        }
        cairn_setup(&config, &init);
        cairn_setup(&config, &["mb", bucket]);
        let dir = base.join("mnt");
        std::fs::create_dir_all(&dir).expect("mount point");
        let mut m = Self {
            child: None,
            dir,
            config,
            bucket: bucket.into(),
            cache: base.join("cache"),
            log: base.join("mount.log"),
        };
        m.mount(extra);
        m
    }

    /// Mounts again (after [`Self::stop`] or [`Self::kill`]).
    pub fn mount(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "already mounted");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let mut child = Command::new(binary("cairn"))
            .arg("--config")
            .arg(&self.config)
            .arg("mount")
            .arg(&self.bucket)
            .arg(&self.dir)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start cairn mount");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("mounted ") => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    panic!("the mount exited before mounting:\n{}", self.log_text());
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// What it wrote to standard error.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, and waits for the process to unmount and exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.unmount_leftover();
                return status;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let _ = child.wait();
                self.unmount_leftover();
                panic!("the mount did not stop within 120 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unmount_leftover();
    }

    fn unmount_leftover(&self) {
        // Normally gone already (auto_unmount); never leave a dead mount.
        let _ = Command::new("fusermount3").arg("-uz").arg(&self.dir).stderr(Stdio::null()).status();
    }
}

impl Drop for MountProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unmount_leftover();
    }
}
