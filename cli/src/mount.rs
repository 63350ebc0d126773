//! `cairn mount BUCKET DIR`: a bucket as a folder, in the foreground
//! until Ctrl-C, SIGTERM or `fusermount3 -u DIR`, or detached with
//! `--daemon`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_client::Client;

/// What the foreground process prints once the mount is ready.
pub const READY: &str = "mounted ";

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountArgs {
    /// The bucket.
    pub bucket: String,
    /// The mount point.
    pub dir: PathBuf,
    /// Where written files wait for upload.
    pub cache_dir: PathBuf,
    /// Most bytes waiting there.
    pub cache_size: u64,
    /// Refuse changes.
    pub read_only: bool,
    /// Other users may use it.
    pub allow_other: bool,
}

/// The default cache directory of `bucket` for the config at `config`.
pub fn default_cache_dir(config: &Path, bucket: &str) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("mount-cache").join(bucket)
}

/// Mounts and serves until `stop` (or an unmount from outside); then
/// uploads what is left.
pub async fn serve(
    client: Arc<Client>,
    args: &MountArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&args.dir).with_context(|| format!("mount point {}", args.dir.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", args.dir.display());
    }
    let bucket = client.bucket(&args.bucket).await?;
    let opts = cairn_fuse_mount::Options {
        cache_dir: args.cache_dir.clone(),
        cache_size: args.cache_size,
        read_only: args.read_only,
        allow_other: args.allow_other,
        ttl: Duration::from_secs(1),
    };
    let rt = tokio::runtime::Handle::current();
    let dir = args.dir.clone();
    let mounted =
        tokio::task::spawn_blocking(move || cairn_fuse_mount::mount(rt, client, bucket, &dir, &opts)).await??;
    println!("{READY}{} at {}", args.bucket, args.dir.display());
    mounted.run(stop).await?;
    eprintln!("unmounted {}", args.dir.display());
    Ok(())
}

/// `--daemon`: starts this command again without it, in a session of its
/// own with its log in the cache directory, waits until it has mounted,
/// writes its pid to `pid_file`, and returns.
pub fn daemonize(cache_dir: &Path, pid_file: &Path) -> anyhow::Result<()> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(cache_dir)?;
    let log_path = cache_dir.join("mount.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let args: Vec<_> = std::env::args_os().skip(1).filter(|a| a != "--daemon").collect();
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let out = child.stdout.take().context("no stdout")?;
    for line in std::io::BufReader::new(out).lines() {
        let line = line?;
        if line.starts_with(READY) {
            std::fs::write(pid_file, format!("{}\n", child.id()))?;
            println!("{line} (pid {}, log {})", child.id(), log_path.display());
            return Ok(());
        }
    }
    let status = child.wait()?;
    bail!("the mount did not start ({status}); see {}", log_path.display())
}
