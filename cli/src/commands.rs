//! The object and bucket commands: connect, do one thing, print, leave.
//! Those a script calls often ([`Call`]) also run in `cairn agent`, with
//! the caller's input and output ([`Io`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_client::{Bucket, Client, ClientConfig, Kind, MetadataDirective, PutOptions};
use cairn_proto::units::format_size;
use serde::{Deserialize, Serialize};

use crate::io::Io;
use cairn_cli::config::{ConfigFile, open_key};

/// A line of text for standard output, sent at the next `Io::flush`
/// (which returns an error when stdout is gone: `cairn stat … | head`;
/// `main` ends quietly on a broken pipe).
macro_rules! out {
    ($io:expr, $($t:tt)*) => {{
        use std::io::Write as _;
        writeln!($io.text, $($t)*)?;
    }};
}

/// An object or bucket command that `cairn agent` can run for a caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    /// `cairn put`.
    Put { local: PathBuf, target: String, content_type: Option<String>, meta: Vec<(String, String)> },
    /// `cairn get`.
    Get { source: String, local: PathBuf, range: Option<(u64, Option<u64>)> },
    /// `cairn cp` (`remove`: `cairn mv`).
    Cp { source: String, target: String, remove: bool },
    /// `cairn ls`.
    Ls { path: String, recursive: bool },
    /// `cairn rm`.
    Rm { path: String },
    /// `cairn stat`.
    Stat { path: String },
    /// `cairn buckets`.
    Buckets,
    /// `cairn rb`.
    Rb { bucket: String },
}

impl Call {
    /// Runs the command; what it printed is flushed even when it fails.
    pub async fn run(self, client: &Client, io: &mut Io) -> anyhow::Result<()> {
        let result = match self {
            Call::Put { local, target, content_type, meta } => {
                put(client, io, &local, &target, content_type, meta).await
            }
            Call::Get { source, local, range } => get(client, io, &source, &local, range).await,
            Call::Cp { source, target, remove } => cp(client, io, &source, &target, remove).await,
            Call::Ls { path, recursive } => ls(client, io, &path, recursive).await,
            Call::Rm { path } => rm(client, io, &path).await,
            Call::Stat { path } => stat(client, io, &path).await,
            Call::Buckets => buckets(client, io).await,
            Call::Rb { bucket } => match client.delete_bucket(&bucket).await {
                Ok(()) => {
                    out!(io, "removed bucket {bucket}");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            },
        };
        let flushed = io.flush().await;
        result?;
        Ok(flushed?)
    }
}

/// `BUCKET/KEY` (or `BUCKET`, `BUCKET/PREFIX`) split in two.
pub fn split_path(path: &str) -> (&str, &str) {
    match path.split_once('/') {
        Some((b, k)) => (b, k),
        None => (path, ""),
    }
}

fn need_key(path: &str) -> anyhow::Result<(&str, &str)> {
    let (b, k) = split_path(path);
    if k.is_empty() {
        bail!("{path:?} names no object: write BUCKET/KEY");
    }
    Ok((b, k))
}

/// Connects with the config at `path`, for a process that serves (a
/// gateway, a mount, a bench).
pub async fn connect(path: &Path) -> anyhow::Result<Client> {
    connect_as(path, false).await
}

/// Connects with the config at `path`; `one_shot`: for one command, after
/// which the process ends (see `ClientConfig::one_shot`).
pub async fn connect_as(path: &Path, one_shot: bool) -> anyhow::Result<Client> {
    let file = ConfigFile::load(path)?;
    let root = open_key(&file.key_path(path))?;
    let cfg = ClientConfig { one_shot, ..file.client_config(path)? };
    Client::connect(&root, cfg).await.context("cannot join the network")
}

/// Parses `NAME=VALUE` user metadata.
pub fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_ascii_lowercase(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// Parses `START-END` (inclusive) or `START-`.
pub fn parse_range(s: &str) -> Result<(u64, Option<u64>), String> {
    let bad = || format!("{s:?} is not START-END or START-");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = a.parse().map_err(|_| bad())?;
    let end = if b.is_empty() { None } else { Some(b.parse::<u64>().map_err(|_| bad())?) };
    if end.is_some_and(|e| e < start) {
        return Err(format!("{s:?}: the end is before the start"));
    }
    Ok((start, end))
}

/// `cairn put LOCAL BUCKET/KEY` (`-` = stdin).
pub async fn put(
    client: &Client,
    io: &mut Io,
    local: &Path,
    target: &str,
    content_type: Option<String>,
    meta: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let (b, key) = need_key(target)?;
    let bucket = client.bucket(b).await?;
    let opts = PutOptions { content_type, meta, ..PutOptions::default() };
    let info = if local == Path::new("-") {
        bucket.put(key, io.stdin().await?, opts).await?
    } else {
        let local = io.path(local);
        let file = std::fs::File::open(&local).with_context(|| format!("cannot open {}", local.display()))?;
        let len = file.metadata().map(|m| m.len()).ok();
        let pb = io.bar(len, key);
        let info = bucket.put(key, pb.wrap_read(file), opts).await;
        pb.finish_and_clear();
        info?
    };
    out!(io, "stored {b}/{} ({} bytes)", info.key, info.size);
    Ok(())
}

/// `cairn get BUCKET/KEY LOCAL [--range START-END]` (`-` = stdout).
pub async fn get(
    client: &Client,
    io: &mut Io,
    source: &str,
    local: &Path,
    range: Option<(u64, Option<u64>)>,
) -> anyhow::Result<()> {
    let (b, key) = need_key(source)?;
    let bucket = client.bucket(b).await?;
    let info = bucket.head(key).await?;
    let range = match range {
        None => None,
        Some((start, _)) if start >= info.size => {
            bail!("range starts at {start}, past the end of {b}/{key} ({} bytes)", info.size)
        }
        Some((start, end)) => Some(start..end.map_or(info.size, |e| (e + 1).min(info.size))),
    };
    let len = range.as_ref().map_or(info.size, |r| r.end - r.start);
    if local == Path::new("-") {
        bucket.get(key, range, io.stdout().await?).await?;
        return Ok(());
    }
    // Write next to the target and rename, so a failed get never leaves a
    // half-written file under the real name.
    let local = &io.path(local);
    let tmp = tmp_name(local);
    let file = tokio::fs::File::create(&tmp).await.with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Some(mode) = io.new_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).await?;
    }
    let sync = file.try_clone().await?;
    let pb = io.bar(Some(len), key);
    let mut out = pb.wrap_async_write(file);
    let result = bucket.get(key, range, &mut out).await;
    pb.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    drop(out);
    sync.sync_all().await?;
    std::fs::rename(&tmp, local).with_context(|| format!("cannot write {}", local.display()))?;
    io.note(format!("fetched {b}/{key} ({len} bytes) to {}", local.display())).await?;
    Ok(())
}

/// `cairn cp|mv BUCKET/KEY BUCKET/KEY`: index-only within a bucket; across
/// buckets the bytes are read and stored again (each bucket has its own keys).
pub async fn cp(client: &Client, io: &mut Io, source: &str, target: &str, remove: bool) -> anyhow::Result<()> {
    let (sb, sk) = need_key(source)?;
    let (tb, tk) = need_key(target)?;
    let src = client.bucket(sb).await?;
    if sb == tb {
        if remove {
            src.rename(sk, tk).await?;
        } else {
            src.copy(sk, tk, MetadataDirective::Copy).await?;
        }
    } else {
        let dst = client.bucket(tb).await?;
        // Through a temp file: a put fed by a failing get would store a
        // truncated object.
        let file = tempfile::tempfile().context("cannot create a temp file")?;
        let mut out = tokio::fs::File::from_std(file.try_clone()?);
        let info = src.get(sk, None, &mut out).await?;
        drop(out);
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
        let opts = PutOptions {
            content_type: info.content_type,
            meta: info.meta,
            headers: info.headers,
            ..PutOptions::default()
        };
        dst.put(tk, file, opts).await?;
        if remove {
            src.delete(sk).await?;
        }
    }
    out!(io, "{} {sb}/{sk} to {tb}/{tk}", if remove { "moved" } else { "copied" });
    Ok(())
}

fn tmp_name(local: &Path) -> PathBuf {
    let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    local.with_file_name(format!(".{name}.cairn-{:08x}", rand::random::<u32>()))
}

fn date(ms: u64) -> String {
    // UTC, without a date crate: days since the epoch to a civil date.
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `cairn ls BUCKET[/PREFIX] [-r]`.
pub async fn ls(client: &Client, io: &mut Io, path: &str, recursive: bool) -> anyhow::Result<()> {
    let (b, prefix) = split_path(path);
    let bucket = client.bucket(b).await?;
    let delimiter = if recursive { None } else { Some('/') };
    let mut after = String::new();
    loop {
        let page = bucket.list(prefix, delimiter, &after, 1000).await?;
        for p in &page.prefixes {
            out!(io, "{:>19} {:>12}  {p}", "", "DIR");
        }
        for o in &page.objects {
            out!(io, "{} {:>12}  {}", date(o.modified_ms), o.size, o.key);
        }
        io.flush().await?;
        match page.next_after {
            Some(a) => after = a,
            None => return Ok(()),
        }
    }
}

/// `cairn rm BUCKET/KEY`.
pub async fn rm(client: &Client, io: &mut Io, path: &str) -> anyhow::Result<()> {
    let (b, key) = need_key(path)?;
    client.bucket(b).await?.delete(key).await?;
    out!(io, "removed {b}/{key}");
    Ok(())
}

/// `cairn stat BUCKET/KEY`.
pub async fn stat(client: &Client, io: &mut Io, path: &str) -> anyhow::Result<()> {
    let (b, key) = need_key(path)?;
    let bucket: Bucket = client.bucket(b).await?;
    let (info, health) = bucket.stat(key).await?;
    out!(io, "object:   {b}/{}", info.key);
    out!(io, "size:     {} bytes", info.size);
    out!(io, "modified: {} UTC", date(info.modified_ms));
    match &info.kind {
        Kind::File => {}
        Kind::Directory => out!(io, "kind:     directory"),
        Kind::Symlink(t) => out!(io, "kind:     symlink to {t}"),
    }
    if let Some(ct) = &info.content_type {
        out!(io, "type:     {ct}");
    }
    if let Some(etag) = &info.etag {
        out!(io, "etag:     \"{etag}\"");
    }
    for (k, v) in info.headers.iter().chain(&info.meta) {
        out!(io, "meta:     {k}: {v}");
    }
    if info.extents > 0 {
        out!(io, "extents:  {}", info.extents);
    }
    match info.layout {
        None => out!(io, "stored:   inside the bucket index (objects under 32 KiB)"),
        Some(l) => {
            let s = bucket.settings();
            out!(io, "segments: {} of up to {} bytes", info.segments, l.segment_size);
            out!(
                io,
                "code:     any {} of {} shards read a segment ({} stored, {} extra tried)",
                l.k,
                s.n,
                s.n,
                s.extra
            );
            out!(io, "placement: {}", placement_text(bucket.placement()));
            for h in health {
                let state = match h.healthy {
                    x if x < h.k => "UNREADABLE",
                    x if x < cairn_client::repair::threshold(h.k as u16, s.n) => "degraded: repair will rebuild",
                    _ => "healthy",
                };
                out!(
                    io,
                    "  segment {:>5}: {}/{} holders answer, {} needed: {state}",
                    h.index,
                    h.healthy,
                    h.stored,
                    h.k
                );
                let regions: Vec<&str> = h.regions.iter().map(|r| r.as_deref().unwrap_or("-")).collect();
                out!(io, "                 regions: {}", regions.join(" "));
                if h.crowded > 0 {
                    out!(
                        io,
                        "                 {} shards share a network with another shard: too few networks",
                        h.crowded
                    );
                }
            }
        }
    }
    Ok(())
}

/// A bucket's placement rules in words.
pub fn placement_text(p: &cairn_client::policy::Placement) -> String {
    let mut parts = Vec::new();
    if !p.regions.is_empty() {
        parts.push(format!("inside {}", p.regions.join(", ")));
    }
    if p.spread > 1 {
        parts.push(format!("each segment over at least {} regions", p.spread));
    }
    parts.push(if p.diversity { "one shard per network" } else { "networks may repeat" }.into());
    parts.join("; ")
}

/// `cairn buckets`.
pub async fn buckets(client: &Client, io: &mut Io) -> anyhow::Result<()> {
    for b in client.buckets().await? {
        let s = b.settings;
        out!(
            io,
            "{}  {}  k={} n={} extra={}  {}",
            date(b.created_ms),
            b.name,
            s.k,
            s.n,
            s.extra,
            placement_text(&b.placement)
        );
    }
    Ok(())
}

/// `cairn status`.
pub async fn status(client: &Client, io: &mut Io) -> anyhow::Result<()> {
    let nodes = client.status().await;
    let up = nodes.iter().filter(|n| n.stats.is_ok()).count();
    out!(io, "{} storage nodes known, {up} reachable", nodes.len());
    match client.lookup().await {
        Ok(l) => out!(
            io,
            "DHT lookup of a random key: {} requests ({} answered, {} failed), {} nodes found, {:.1} ms",
            l.requests,
            l.answered,
            l.failed,
            l.found,
            l.took.as_secs_f64() * 1000.0
        ),
        Err(e) => out!(io, "DHT lookup of a random key failed: {e}"),
    }
    for n in nodes {
        match &n.stats {
            Ok(s) => out!(
                io,
                "  {}  {}  {:<12} {:>6.1} ms  {} shards, {} of {} bytes used{}{}",
                n.node.peer,
                if n.leaving_until.is_some() { "leaving" } else { "up   " },
                match &n.region {
                    Some((r, z)) if !r.is_empty() && !z.is_empty() => format!("{r}/{z}"),
                    Some((r, _)) if !r.is_empty() => r.clone(),
                    _ => "-".into(),
                },
                n.rtt.as_secs_f64() * 1000.0,
                s.shards,
                s.used,
                s.capacity,
                match n.leaving_until {
                    Some(t) => format!(" (no new shards; drained by {})", date(t * 1000)),
                    None => String::new(),
                },
                match n.usage {
                    Some(u) => format!(
                        "; you: {} stored, {}·h, {} sent, {} fetched, {} requests",
                        format_size(u.stored),
                        format_size(u.byte_seconds / 3600),
                        format_size(u.received),
                        format_size(u.sent),
                        u.requests
                    ),
                    None => String::new(),
                }
            ),
            Err(e) => out!(io, "  {}  DOWN  {e}", n.node.peer),
        }
    }
    if up == 0 {
        bail!("no storage node answers: check that they run and the bootstrap addresses in your config");
    }
    Ok(())
}

/// `cairn renew`: renews leases and says what could not be.
pub async fn renew(client: &Client, io: &mut Io, buckets: &[String]) -> anyhow::Result<()> {
    let only = (!buckets.is_empty()).then_some(buckets);
    let r = client.renew(only).await?;
    out!(
        io,
        "renewed {} copies in {} requests ({} trees, {} leaf pages walked, {} skipped as renewed lately)",
        r.renewed,
        r.requests,
        r.trees,
        r.leaves,
        r.skipped
    );
    if let Some(t) = r.earliest {
        out!(io, "earliest lease end: {} UTC", date(t * 1000));
    }
    out!(io, "head records published again: {}", r.heads);
    if !r.complete() {
        out!(
            io,
            "not renewed: {} copies no longer held, {} refused, {} at nodes that did not answer (repair rebuilds them)",
            r.missing,
            r.refused,
            r.unreachable
        );
    }
    Ok(())
}

/// `cairn repair`: one walk, or one every `every` until Ctrl-C.
pub async fn repair(
    client: &Client,
    io: &mut Io,
    buckets: &[String],
    every: Option<std::time::Duration>,
    budget: u64,
) -> anyhow::Result<()> {
    let only = (!buckets.is_empty()).then_some(buckets);
    let opts = cairn_client::RepairOptions { budget };
    loop {
        let r = client.repair(only, opts).await?;
        out!(
            io,
            "{} objects, {} holders ({} down, {} leaving, {} outside the bucket's regions; {} failed of {} audits): {} segments below threshold or misplaced, {} repaired ({} shards, {} bytes moved), {} failed, {} changed meanwhile; {} index pages stored again, {} head records published again",
            r.objects,
            r.holders,
            r.down,
            r.leaving,
            r.misplaced,
            r.audit_failures,
            r.audits,
            r.damaged,
            r.repaired,
            r.shards,
            r.bytes,
            r.failed,
            r.conflicts,
            r.pages,
            r.heads
        );
        io.flush().await?;
        let Some(every) = every else {
            if r.failed > 0 {
                bail!("{} segments could not be repaired (too few shards or nodes left); see the log", r.failed);
            }
            return Ok(());
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
