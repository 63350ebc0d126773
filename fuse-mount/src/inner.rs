//! The state behind the mount, and the operations that go to the bucket:
//! directory listings, opening stored versions, and uploading what was
//! written. The FUSE callbacks (`fs`) are a thin shell over this.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_client::{Bucket, Client, Opened, Patch, Posix, PutOptions};
use fuser::Errno;
use tokio_util::task::TaskTracker;

use crate::dirty::Dirty;
use crate::error::errno;
use crate::nodes::{Attr, NodeKind, ROOT, Table, join, split};
use crate::readahead::ReadAhead;

/// A file this small (or smaller) is uploaded whole when changed: the
/// bytes not written here are fetched first, so the upload is one data
/// version rather than many small extents.
pub const WHOLE_MAX: u64 = 64 << 20;
/// Written ranges closer than this are joined (the gap fetched) before an
/// upload of a larger file.
pub const GAP: u64 = 4 << 20;

/// How a mount behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where written files are kept until uploaded.
    pub cache_dir: PathBuf,
    /// Most bytes kept there; past it, a write uploads its file first.
    pub cache_size: u64,
    /// Refuse every change.
    pub read_only: bool,
    /// Owner of names without POSIX attributes (uid, gid).
    pub owner: (u32, u32),
    /// How long attributes and listings are trusted (the kernel's timeout
    /// too): another client's changes show after at most about this.
    pub ttl: Duration,
}

/// Poison-free lock (a panic elsewhere must not take the mount down).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A file with handles open or changes not yet uploaded.
#[derive(Debug, Default)]
pub struct FileState {
    /// Written and not uploaded.
    pub dirty: tokio::sync::Mutex<Option<Dirty>>,
    /// The stored version reads come from.
    pub base: Mutex<Option<Arc<Opened>>>,
    /// Open handles.
    pub open: AtomicUsize,
    /// Removed while open: nothing is uploaded.
    pub unlinked: AtomicBool,
}

/// An open directory's entries: inode, name, attributes.
pub type DirItems = Vec<(u64, String, Attr)>;

/// An open file.
#[derive(Debug)]
pub struct Handle {
    /// Its inode.
    pub ino: u64,
    /// Its state.
    pub state: Arc<FileState>,
    /// Its read-ahead.
    pub ahead: tokio::sync::Mutex<ReadAhead>,
}

/// Everything the callbacks share.
#[derive(Debug)]
pub struct Inner {
    /// The runtime network work runs on.
    pub rt: tokio::runtime::Handle,
    /// The client (for capacity).
    pub client: Arc<Client>,
    /// The bucket.
    pub bucket: Bucket,
    /// Settings.
    pub settings: Settings,
    /// Names, inode numbers and listings.
    pub table: Mutex<Table>,
    /// Files with state, by inode.
    pub files: Mutex<HashMap<u64, Arc<FileState>>>,
    /// Open files, by handle.
    pub handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Open directories: the listing taken at open.
    pub dirs: Mutex<HashMap<u64, Arc<DirItems>>>,
    /// Next handle number.
    pub next_fh: AtomicU64,
    /// Bytes held in the cache directory.
    pub used: AtomicU64,
    /// Requests running on the runtime.
    pub tasks: TaskTracker,
    /// Capacity, when last asked.
    pub capacity: Mutex<Option<(Instant, [u64; 2])>>,
    /// When the mount started (the time implied directories show).
    pub started_ms: u64,
    /// The mount is ending: changes are refused.
    pub closing: AtomicBool,
}

impl Inner {
    /// State for a mount of `bucket`.
    pub fn new(rt: tokio::runtime::Handle, client: Arc<Client>, bucket: Bucket, settings: Settings) -> Self {
        let started_ms = crate::nodes::ms(std::time::SystemTime::now());
        let root = Attr::dir(settings.owner, started_ms);
        Self {
            rt,
            client,
            bucket,
            table: Mutex::new(Table::new(root)),
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            used: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            capacity: Mutex::new(None),
            started_ms,
            closing: AtomicBool::new(false),
            settings,
        }
    }

    /// The path and attributes of `ino` (the size of a file being written
    /// is its local size).
    pub fn node(&self, ino: u64) -> Result<(String, Attr), Errno> {
        let (path, mut attr) = {
            let t = lock(&self.table);
            let n = t.get(ino).ok_or(Errno::ENOENT)?;
            (n.path.clone(), n.attr.clone())
        };
        if let Some(state) = lock(&self.files).get(&ino)
            && let Ok(d) = state.dirty.try_lock()
            && let Some(d) = d.as_ref()
        {
            attr.size = d.len;
        }
        Ok((path, attr))
    }

    /// The path of directory `ino`.
    pub fn dir_path(&self, ino: u64) -> Result<String, Errno> {
        let (path, attr) = self.node(ino)?;
        if attr.kind != NodeKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(path)
    }

    /// The names in `dir` and their attributes, from a listing at most
    /// `ttl` old (files created here and not yet uploaded included).
    pub fn children(&self, dir: &str) -> Result<Arc<BTreeMap<String, Attr>>, Errno> {
        self.rt.block_on(self.list(dir))
    }

    /// What [`Self::children`] says of `name` in `dir`, without building
    /// the listing when a fresh one is cached or the file was created here:
    /// a lookup or create in a large directory that writers are filling
    /// would otherwise copy the whole listing (with the files not yet
    /// uploaded added) for one name.
    pub fn child(&self, dir: &str, name: &str) -> Result<Option<Attr>, Errno> {
        let path = join(dir, name);
        let (local, cached) = {
            let t = lock(&self.table);
            (t.local.contains(&path).then(|| t.ino(&path)).flatten(), t.listing(dir, self.settings.ttl))
        };
        if let Some(ino) = local {
            return Ok(Some(self.node(ino)?.1));
        }
        match cached {
            Some(listed) => Ok(listed.get(name).cloned()),
            None => Ok(self.children(dir)?.get(name).cloned()),
        }
    }

    /// [`Self::children`], from async code.
    pub async fn list(&self, dir: &str) -> Result<Arc<BTreeMap<String, Attr>>, Errno> {
        let (cached, generation) = {
            let t = lock(&self.table);
            (t.listing(dir, self.settings.ttl), t.generation(dir))
        };
        let listed = match cached {
            Some(c) => c,
            None => {
                let fetched = self.fetch_dir(dir).await.map_err(|e| errno(&e))?;
                let fetched = Arc::new(fetched);
                lock(&self.table).cache_listing(dir, generation, Arc::clone(&fetched));
                fetched
            }
        };
        let local = lock(&self.table).local_in(dir);
        if local.is_empty() {
            return Ok(listed);
        }
        let mut all = (*listed).clone();
        for path in local {
            let ino = lock(&self.table).ino(&path);
            if let Some(ino) = ino {
                let (_, attr) = self.node(ino)?;
                all.insert(split(&path).1.to_string(), attr);
            }
        }
        Ok(Arc::new(all))
    }

    /// Reads the listing of `dir` from the index.
    async fn fetch_dir(&self, dir: &str) -> Result<BTreeMap<String, Attr>, cairn_client::Error> {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let owner = self.settings.owner;
        let mut out = BTreeMap::new();
        let mut after = String::new();
        loop {
            let page = self.bucket.list(&prefix, Some('/'), &after, 1000).await?;
            for o in &page.objects {
                let name = &o.key[prefix.len()..];
                if usable(name) {
                    out.insert(name.to_string(), Attr::of(o, owner));
                }
            }
            for p in &page.prefixes {
                let name = p[prefix.len()..].trim_end_matches('/');
                if usable(name) {
                    // A file and a directory of one name: the file shows.
                    out.entry(name.to_string()).or_insert_with(|| Attr::dir(owner, self.started_ms));
                }
            }
            match page.next_after {
                Some(n) => after = n,
                None => return Ok(out),
            }
        }
    }

    /// The entry `name` in directory `parent`: its inode and attributes.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<(u64, Attr), Errno> {
        let dir = self.dir_path(parent)?;
        let path = join(&dir, name);
        let attr = self.child(&dir, name)?.ok_or(Errno::ENOENT)?;
        let ino = self.remember(&path, attr);
        Ok((ino, self.node(ino)?.1))
    }

    /// Records what a listing said of `path` (a file with local changes
    /// keeps its own view).
    pub fn remember(&self, path: &str, attr: Attr) -> u64 {
        let mut t = lock(&self.table);
        if let Some(ino) = t.ino(path)
            && (t.local.contains(path) || lock(&self.files).get(&ino).is_some_and(|s| busy(s)))
        {
            return ino;
        }
        t.set(path, attr)
    }

    /// Attributes of `ino`, refreshed from its directory's listing when
    /// older than the ttl.
    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        let (path, attr, fresh) = {
            let t = lock(&self.table);
            let n = t.get(ino).ok_or(Errno::ENOENT)?;
            (n.path.clone(), n.attr.clone(), n.seen.elapsed() < self.settings.ttl || t.local.contains(&n.path))
        };
        if fresh || ino == ROOT {
            return Ok(self.node(ino)?.1);
        }
        let (dir, name) = split(&path);
        match self.children(dir)?.get(name) {
            Some(a) => {
                self.remember(&path, a.clone());
            }
            // Gone from the index; a file open here stays as it is.
            None if lock(&self.files).contains_key(&ino) => {}
            None if attr.kind == NodeKind::Dir && !self.children(&path)?.is_empty() => {}
            None => return Err(Errno::ENOENT),
        }
        Ok(self.node(ino)?.1)
    }

    /// Whether directory `path` holds anything.
    pub async fn has_children(&self, path: &str) -> Result<bool, Errno> {
        Ok(!self.list(path).await?.is_empty())
    }

    /// The state of file `ino` (made on first use).
    pub fn state(&self, ino: u64) -> Arc<FileState> {
        Arc::clone(lock(&self.files).entry(ino).or_default())
    }

    /// The stored version of `path` reads come from.
    pub async fn base(&self, state: &FileState, path: &str) -> Result<Arc<Opened>, Errno> {
        if let Some(b) = lock(&state.base).as_ref() {
            return Ok(Arc::clone(b));
        }
        let opened = Arc::new(self.bucket.open(path).await.map_err(|e| errno(&e))?);
        *lock(&state.base) = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// A new cache file for `ino`, holding nothing yet of a stored
    /// version of `size` bytes.
    pub fn new_dirty(&self, ino: u64, size: u64) -> Result<Dirty, Errno> {
        let name = format!("{ino}-{:016x}", rand::random::<u64>());
        let path = self.node(ino)?.0;
        Dirty::create(self.settings.cache_dir.join(name), &path, size).map_err(|e| {
            tracing::warn!(error = %e, "cannot make a cache file");
            Errno::from(e)
        })
    }

    /// The dirty state of `ino`, made if there is none.
    pub async fn dirty<'a>(
        &self,
        ino: u64,
        state: &'a FileState,
    ) -> Result<tokio::sync::MutexGuard<'a, Option<Dirty>>, Errno> {
        let mut g = state.dirty.lock().await;
        if g.is_none() {
            let local = {
                let t = lock(&self.table);
                t.get(ino).is_some_and(|n| t.local.contains(&n.path))
            };
            let (path, _) = self.node(ino)?;
            let size = if local { 0 } else { self.base(state, &path).await?.info.size };
            *g = Some(self.new_dirty(ino, size)?);
        }
        Ok(g)
    }

    /// Reads `range` of file `ino` through handle `h`.
    pub async fn read(&self, h: &Handle, range: std::ops::Range<u64>) -> Result<Vec<u8>, Errno> {
        let (path, _) = self.node(h.ino)?;
        {
            let g = h.state.dirty.lock().await;
            if let Some(d) = g.as_ref() {
                let mut out = Vec::new();
                for (piece, local) in d.plan(range) {
                    if local {
                        d.read_local(piece, &mut out)?;
                    } else {
                        let base = self.base(&h.state, &path).await?;
                        self.bucket.read(&base, piece, &mut out).await.map_err(|e| errno(&e))?;
                    }
                }
                return Ok(out);
            }
        }
        let base = self.base(&h.state, &path).await?;
        let end = range.end.min(base.info.size);
        if range.start >= end {
            return Ok(Vec::new());
        }
        let range = range.start..end;
        let chunks = h.ahead.lock().await.start(&self.bucket, &base, &range);
        match chunks {
            Some(chunks) => crate::readahead::assemble(chunks, range).await,
            None => {
                let mut out = Vec::with_capacity((range.end - range.start) as usize);
                self.bucket.read(&base, range, &mut out).await.map_err(|e| errno(&e))?;
                Ok(out)
            }
        }
    }

    /// Uploads what was written to `ino` and commits it: the whole file
    /// when the cache holds it (or it is small enough to fetch the rest),
    /// else only the written ranges. On failure the changes stay for the
    /// next try.
    pub async fn flush(&self, ino: u64, state: &FileState) -> Result<(), Errno> {
        let mut g = state.dirty.lock().await;
        if g.is_none() {
            return Ok(());
        }
        if state.unlinked.load(Ordering::SeqCst) {
            self.drop_dirty(g.take());
            return Ok(());
        }
        let (path, attr) = self.node(ino)?;
        let Some(d) = g.as_mut() else { return Ok(()) };
        let posix = Some(Posix { mode: attr.type_bits() | attr.perm, uid: attr.uid, gid: attr.gid });
        let posix = d.posix.or(posix);
        let result = match d.stream.take() {
            Some(s) if d.mtime_ms.is_none() && d.appended_only() => {
                let r = s.finish(d.len).await;
                d.stream_failed = r.is_err();
                r
            }
            other => {
                drop(other);
                self.upload(state, &path, d, posix).await?
            }
        };
        match result {
            Ok(info) => {
                self.drop_dirty(g.take());
                *lock(&state.base) = None;
                let attr = Attr::of(&info, self.settings.owner);
                let mut t = lock(&self.table);
                t.local.remove(&path);
                t.set(&path, attr.clone());
                let (dir, name) = split(&path);
                t.changed_child(dir, name, Some(attr));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "upload failed; the changes are kept for another try");
                Err(match errno(&e) {
                    Errno::ENOENT => Errno::EIO,
                    other => other,
                })
            }
        }
    }

    /// Starts streaming file `ino` up while it is written, if it is new,
    /// written in order and long enough ([`crate::stream`]).
    pub fn stream(&self, ino: u64, d: &mut Dirty) -> Result<(), Errno> {
        if d.stream.is_some() || d.stream_failed || d.len < crate::stream::STREAM_AFTER || !d.appended_only() {
            return Ok(());
        }
        let (path, attr) = self.node(ino)?;
        let posix = d.posix.or(Some(Posix { mode: attr.type_bits() | attr.perm, uid: attr.uid, gid: attr.gid }));
        let (bucket, rt) = (self.bucket.clone(), self.rt.clone());
        d.maybe_stream(|reader| {
            rt.spawn(async move { bucket.put(&path, reader, PutOptions { posix, ..PutOptions::default() }).await })
        })?;
        Ok(())
    }

    /// The ordinary upload of `d`: whole, or the written ranges.
    async fn upload(
        &self,
        state: &FileState,
        path: &str,
        d: &mut Dirty,
        posix: Option<Posix>,
    ) -> Result<Result<cairn_client::ObjectInfo, cairn_client::Error>, Errno> {
        self.fill(state, path, d).await?;
        Ok(if d.complete() {
            let mut opts = PutOptions { posix, modified_ms: d.mtime_ms, ..PutOptions::default() };
            if let Some(b) = lock(&state.base).as_ref() {
                opts.content_type = b.info.content_type.clone();
                opts.headers = b.info.headers.clone();
                opts.meta = b.info.meta.clone();
            }
            let reader = d.reader(0..d.len)?;
            self.bucket.put(path, reader, opts).await
        } else {
            let writes =
                d.written.iter().map(|r| Ok((r.start, d.reader(r.clone())?))).collect::<std::io::Result<Vec<_>>>()?;
            let patch = Patch { keep: d.keep, len: d.len, writes, posix, modified_ms: d.mtime_ms };
            self.bucket.patch(path, patch).await
        })
    }

    /// Fetches stored bytes into the cache so the upload is one piece (a
    /// file up to [`WHOLE_MAX`]) or joins written ranges closer than
    /// [`GAP`].
    async fn fill(&self, state: &FileState, path: &str, d: &mut Dirty) -> Result<(), Errno> {
        if d.complete() {
            return Ok(());
        }
        let whole = d.len <= WHOLE_MAX;
        let gaps: Vec<_> = d
            .plan(0..d.len)
            .into_iter()
            .filter(|(r, local)| !local && (whole || r.end - r.start < GAP && r.start > 0 && r.end < d.keep))
            .map(|(r, _)| r)
            .collect();
        for r in gaps {
            let base = self.base(state, path).await?;
            let mut buf = Vec::with_capacity((r.end - r.start) as usize);
            self.bucket.read(&base, r.clone(), &mut buf).await.map_err(|e| errno(&e))?;
            let added = d.write(r.start, &buf)?;
            self.used.fetch_add(added, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Forgets uploaded (or abandoned) changes.
    pub fn drop_dirty(&self, d: Option<Dirty>) {
        if let Some(d) = d {
            self.used.fetch_sub(d.written.total(), Ordering::SeqCst);
            d.remove();
        }
    }

    /// Uploads every file with changes; the ones that fail are moved to
    /// `kept` and named in the error.
    pub async fn flush_all(&self, kept: &std::path::Path) -> Result<(), crate::Error> {
        let files: Vec<(u64, Arc<FileState>)> = lock(&self.files).iter().map(|(i, s)| (*i, Arc::clone(s))).collect();
        let mut failed = Vec::new();
        for (ino, state) in files {
            if self.flush(ino, &state).await.is_ok() {
                continue;
            }
            let path = self.node(ino).map(|n| n.0).unwrap_or_default();
            if let Some(d) = state.dirty.lock().await.take() {
                let _ = std::fs::create_dir_all(kept);
                let to = crate::kept_name(kept, &path);
                let _ = std::fs::remove_file(crate::dirty::note_of(d.path()));
                match std::fs::rename(d.path(), &to) {
                    Ok(()) => eprintln!("cairn mount: {path} was not uploaded; its bytes are in {}", to.display()),
                    Err(e) => {
                        eprintln!("cairn mount: {path} was not uploaded; its bytes are in {} ({e})", d.path().display())
                    }
                }
            }
            failed.push(path);
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::NotUploaded { files: failed, kept: kept.to_path_buf() })
        }
    }

    /// Usable bytes and free bytes over the nodes (asked at most every
    /// 30 s), scaled by the bucket's code rate.
    pub async fn capacity(&self) -> [u64; 2] {
        if let Some((at, c)) = *lock(&self.capacity)
            && at.elapsed() < Duration::from_secs(30)
        {
            return c;
        }
        let (mut total, mut used) = (0u64, 0u64);
        for s in self.client.status().await {
            if let Ok(st) = s.stats {
                total += st.capacity;
                used += st.used.min(st.capacity);
            }
        }
        let set = self.bucket.settings();
        let scale = |b: u64| (u128::from(b) * u128::from(set.k) / u128::from(set.n.max(1))) as u64;
        let c = [scale(total), scale(total - used)];
        *lock(&self.capacity) = Some((Instant::now(), c));
        c
    }
}

/// Whether a file's state has changes or open handles.
fn busy(s: &FileState) -> bool {
    s.open.load(Ordering::SeqCst) > 0 || s.dirty.try_lock().map_or(true, |d| d.is_some())
}

/// Names a directory entry can have.
fn usable(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}
