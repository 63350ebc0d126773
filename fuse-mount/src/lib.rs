//! # cairn-fuse-mount
//!
//! A bucket as a folder, through FUSE ([`fuser`]). Keys with `/` are
//! directories; files, directories and symlinks are index entries with
//! POSIX attributes; renames and copies move no data.
//!
//! - Writes land in a local cache file ([`dirty`]); `flush` (every
//!   `close`) and `fsync` upload what changed and commit it, and answer
//!   only then: a failed upload is an `EIO` to the program, and the
//!   changes stay cached for the next try. Unmounting uploads what is
//!   left, and keeps the local copy of anything that could not go up.
//! - Reads come from the stored version, with read-ahead for sequential
//!   readers ([`readahead`]); a file being written reads its own bytes.
//! - Listings are cached for a short time ([`nodes`]); inode numbers stay
//!   the same for the life of the mount.
//!
//! docs/MOUNT.md says what POSIX behaviour holds and what differs.

pub mod dirty;
pub mod error;
mod fs;
pub mod inner;
pub mod nodes;
pub mod ranges;
pub mod readahead;
pub mod stream;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{Bucket, Client};
use fuser::{Config, MountOption, SessionACL, SessionUnmounter};

pub use error::Error;
use inner::{Inner, Settings};

/// How to mount.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where written files wait for their upload.
    pub cache_dir: PathBuf,
    /// Most bytes waiting there.
    pub cache_size: u64,
    /// Refuse changes.
    pub read_only: bool,
    /// Let other users use the mount (their access checked by mode bits).
    pub allow_other: bool,
    /// How long attributes and listings are trusted.
    pub ttl: Duration,
}

/// The uid and gid this process runs as.
pub fn process_owner() -> (u32, u32) {
    std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
}

/// A mounted bucket.
#[derive(Debug)]
pub struct Mounted {
    inner: Arc<Inner>,
    unmounter: SessionUnmounter,
    ended: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
    kept: PathBuf,
    files: PathBuf,
    dir: PathBuf,
}

/// Mounts `bucket` at `dir`; network work runs on `rt`.
pub fn mount(
    rt: tokio::runtime::Handle,
    client: Arc<Client>,
    bucket: Bucket,
    dir: &Path,
    opts: &Options,
) -> Result<Mounted, Error> {
    let cache = |e| Error::Cache { path: opts.cache_dir.clone(), source: e };
    let files = opts.cache_dir.join(format!("files-{}", std::process::id()));
    let kept = opts.cache_dir.join("kept");
    std::fs::create_dir_all(&files).map_err(cache)?;
    rescue_leftovers(&opts.cache_dir, &files, &kept).map_err(cache)?;
    let settings = Settings {
        cache_dir: files.clone(),
        cache_size: opts.cache_size,
        read_only: opts.read_only,
        owner: process_owner(),
        ttl: opts.ttl,
    };
    let name = bucket.name().to_string();
    let inner = Arc::new(Inner::new(rt, client, bucket, settings));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("cairn:{name}")),
        MountOption::Subtype("cairn".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        if opts.read_only { MountOption::RO } else { MountOption::RW },
    ];
    // Without `allow_other`/`allow_root` fusermount refuses auto_unmount;
    // root may always ask for `allow_root`.
    config.acl = if opts.allow_other {
        SessionACL::All
    } else if process_owner().0 == 0 {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    if config.acl != SessionACL::Owner {
        // If this process dies, the kernel mount goes with it.
        config.mount_options.push(MountOption::AutoUnmount);
    }
    config.n_threads = Some(8);
    config.clone_fd = true;
    let fail = |e| Error::Mount { path: dir.to_path_buf(), source: e };
    let mut session = fuser::Session::new(fs::CairnFs(Arc::clone(&inner)), dir, &config).map_err(fail)?;
    // `Session::spawn` would take the mount away from the unmounter; a
    // thread of ours running the session leaves it shared.
    let unmounter = session.unmount_callable();
    let (tx, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cairn-mount".into())
        .spawn(move || {
            let _ = tx.send(session.run());
        })
        .map_err(fail)?;
    Ok(Mounted { inner, unmounter, ended, kept, files, dir: dir.to_path_buf() })
}

impl Mounted {
    /// Serves until `stop` resolves or the mount is unmounted from outside
    /// (`fusermount3 -u`); then uploads every change still waiting. Files
    /// that cannot be uploaded are kept on disk and named in the error.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let ended = tokio::select! {
            () = stop => None,
            r = &mut self.ended => Some(r),
        };
        if ended.is_none() {
            tracing::info!(dir = %self.dir.display(), "unmounting");
            // Detached at once, even with files open; fuser's own unmount
            // (through fusermount's auto-unmount socket) did not end the
            // mount on these machines, so it is done here as a user would.
            let detached = std::process::Command::new("fusermount3").arg("-uz").arg(&self.dir).status();
            if !detached.is_ok_and(|s| s.success()) {
                let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
            }
            let _ = self.unmounter.unmount();
            // A file still open keeps the session up: don't wait for it.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.ended).await;
        }
        // From here a write is refused, so every byte written before is
        // in what goes up now.
        self.inner.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        tracing::info!("unmounted; uploading what is left");
        let r = self.inner.flush_all(&self.kept).await;
        let _ = std::fs::remove_dir(&self.files);
        r
    }
}

/// Where the bytes of `path` (in the bucket) are kept in `kept`: its path
/// with `/` written `%2F`, and a number if that name is taken.
pub fn kept_name(kept: &Path, path: &str) -> PathBuf {
    let base = path.replace('%', "%25").replace('/', "%2F");
    let mut to = kept.join(&base);
    let mut n = 1;
    while to.exists() {
        to = kept.join(format!("{base}.{n}"));
        n += 1;
    }
    to
}

/// Moves cache files of mounts that are no longer running (a crash) to
/// `kept`, named after the file they hold, so nothing written is deleted
/// unseen.
fn rescue_leftovers(cache: &Path, mine: &Path, kept: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(cache)? {
        let path = e?.path();
        let Some(pid) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("files-")) else {
            continue;
        };
        if path == mine || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let mut moved = Vec::new();
        for f in std::fs::read_dir(&path)? {
            let f = f?.path();
            if f.extension().is_some_and(|x| x == "path") {
                continue;
            }
            let note = dirty::note_of(&f);
            let name = std::fs::read_to_string(&note).unwrap_or_else(|_| f.to_string_lossy().into_owned());
            std::fs::create_dir_all(kept)?;
            std::fs::rename(&f, kept_name(kept, &name))?;
            let _ = std::fs::remove_file(&note);
            moved.push(name);
        }
        std::fs::remove_dir_all(&path)?;
        if !moved.is_empty() {
            eprintln!(
                "cairn mount: a mount that stopped had not uploaded {}; their bytes are in {}",
                moved.join(", "),
                kept.display()
            );
        }
    }
    Ok(())
}
