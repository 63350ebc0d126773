//! The FUSE callbacks: a thin shell over [`Inner`]. What only touches
//! local state (lookups in cached listings, writes into the cache file)
//! answers on the FUSE thread; what goes to the network runs on the
//! runtime and answers when done, so a slow upload holds no other request.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use cairn_client::Posix;
use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::errno;
use crate::inner::{Handle, Inner, lock};
use crate::nodes::{Attr, NodeKind, join, ms, split};
use crate::readahead::ReadAhead;

/// The file system handed to fuser.
#[derive(Debug)]
pub struct CairnFs(pub Arc<Inner>);

impl CairnFs {
    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.0.tasks.spawn_on(f, &self.0.rt);
    }

    fn ttl(&self) -> Duration {
        self.0.settings.ttl
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.0.settings.read_only || self.0.closing.load(Ordering::SeqCst) { Err(Errno::EROFS) } else { Ok(()) }
    }

    fn open_handle(&self, ino: u64) -> u64 {
        let state = self.0.state(ino);
        state.open.fetch_add(1, Ordering::SeqCst);
        let fh = self.0.next_fh.fetch_add(1, Ordering::SeqCst);
        let h = Arc::new(Handle { ino, state, ahead: tokio::sync::Mutex::new(ReadAhead::default()) });
        lock(&self.0.handles).insert(fh, h);
        fh
    }

    /// `O_TRUNC`: the file starts empty here; the close commits it.
    fn truncate_on_open(&self, ino: u64, state: &crate::inner::FileState) -> Result<(), Errno> {
        let mut g = state.dirty.blocking_lock();
        match g.as_mut() {
            Some(d) => {
                let freed = d.truncate(0)?;
                self.0.used.fetch_sub(freed, Ordering::SeqCst);
            }
            None => *g = Some(self.0.new_dirty(ino, 0)?),
        }
        Ok(())
    }

    /// The directory and name a change applies to (refused when read-only).
    fn target(&self, parent: INodeNo, name: &OsStr) -> Result<(String, String), Errno> {
        self.writable()?;
        Ok((self.0.dir_path(parent.0)?, name_str(name)?.to_string()))
    }

    /// Uploads what file `ino` holds for `fh` (flush and fsync).
    fn upload(&self, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let inner = Arc::clone(&self.0);
        self.spawn(async move {
            let r = inner.flush(ino.0, &h.state).await;
            empty(reply, r);
        });
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        lock(&self.0.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    let s = name.to_str().ok_or(Errno::EINVAL)?;
    if s.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(s)
}

fn entry(reply: ReplyEntry, ttl: Duration, r: Result<(u64, Attr), Errno>) {
    match r {
        Ok((ino, attr)) => reply.entry(&ttl, &attr.to_fuse(ino), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn now_ms() -> u64 {
    ms(SystemTime::now())
}

impl Filesystem for CairnFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // `open(O_TRUNC)` arrives as one open, not as a truncate (which,
        // with nothing open, would commit an empty file) and then an open.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = name_str(name).and_then(|n| self.0.lookup(parent.0, n));
        entry(reply, self.ttl(), r);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl(), &a.to_fuse(ino.0)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        let inner = Arc::clone(&self.0);
        let ttl = self.ttl();
        let mtime = mtime.map(|t| match t {
            TimeOrNow::SpecificTime(t) => ms(t),
            TimeOrNow::Now => now_ms(),
        });
        self.spawn(async move {
            match setattr(&inner, ino.0, Change { mode, uid, gid, size, mtime }).await {
                Ok(a) => reply.attr(&ttl, &a.to_fuse(ino.0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.0.node(ino.0) {
            Ok((_, Attr { kind: NodeKind::Symlink(t), .. })) => reply.data(t.as_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let inner = Arc::clone(&self.0);
        let ttl = self.ttl();
        let owner = (req.uid(), req.gid());
        let prepared = self.target(parent, name);
        self.spawn(async move {
            let r = async {
                let (dir, name) = prepared?;
                let path = join(&dir, &name);
                if inner.list(&dir).await?.contains_key(&name) {
                    return Err(Errno::EEXIST);
                }
                let info = inner.bucket.mkdir(&format!("{path}/")).await.map_err(|e| errno(&e))?;
                let mut attr = Attr::dir(owner, info.modified_ms);
                attr.perm = mode & !umask & 0o7777;
                let mut t = lock(&inner.table);
                t.changed_child(&dir, &name, Some(attr.clone()));
                Ok((t.set(&path, attr.clone()), attr))
            }
            .await;
            entry(reply, ttl, r);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let inner = Arc::clone(&self.0);
        let prepared = self.target(parent, name);
        self.spawn(async move {
            let r = async {
                let (dir, name) = prepared?;
                unlink(&inner, &dir, &name).await
            }
            .await;
            empty(reply, r);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let inner = Arc::clone(&self.0);
        let prepared = self.target(parent, name);
        self.spawn(async move {
            let r = async {
                let (dir, name) = prepared?;
                let path = join(&dir, &name);
                let kids = inner.list(&dir).await?;
                match kids.get(&name).map(|a| &a.kind) {
                    None => return Err(Errno::ENOENT),
                    Some(NodeKind::Dir) => {}
                    Some(_) => return Err(Errno::ENOTDIR),
                }
                lock(&inner.table).changed(&path);
                if inner.has_children(&path).await? {
                    return Err(Errno::ENOTEMPTY);
                }
                match inner.bucket.delete(&format!("{path}/")).await {
                    // Implied by keys below it, which are gone: nothing to remove.
                    Ok(()) | Err(cairn_client::Error::NoSuchKey { .. }) => {}
                    Err(e) => return Err(errno(&e)),
                }
                let mut t = lock(&inner.table);
                t.remove(&path);
                t.changed_child(&dir, &name, None);
                Ok(())
            }
            .await;
            empty(reply, r);
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let inner = Arc::clone(&self.0);
        let ttl = self.ttl();
        let owner = (req.uid(), req.gid());
        let target = target.to_str().map(str::to_string).ok_or(Errno::EINVAL);
        let prepared = self.target(parent, link_name);
        self.spawn(async move {
            let r = async {
                let (dir, name) = prepared?;
                let target = target?;
                let path = join(&dir, &name);
                if inner.list(&dir).await?.contains_key(&name) {
                    return Err(Errno::EEXIST);
                }
                let info = inner.bucket.symlink(&path, &target).await.map_err(|e| errno(&e))?;
                let mut attr = Attr::of(&info, owner);
                attr.uid = owner.0;
                attr.gid = owner.1;
                let mut t = lock(&inner.table);
                t.changed_child(&dir, &name, Some(attr.clone()));
                Ok((t.set(&path, attr.clone()), attr))
            }
            .await;
            entry(reply, ttl, r);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let inner = Arc::clone(&self.0);
        let replace = !flags.contains(RenameFlags::RENAME_NOREPLACE);
        let prepared = self.target(parent, name).and_then(|from| Ok((from, self.target(newparent, newname)?)));
        self.spawn(async move {
            let r = async {
                let ((dir, name), (newdir, newname)) = prepared?;
                rename(&inner, (&dir, &name), (&newdir, &newname), replace).await
            }
            .await;
            empty(reply, r);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            if flags.acc_mode() != OpenAccMode::O_RDONLY {
                self.writable()?;
            }
            let (_, attr) = self.0.node(ino.0)?;
            match attr.kind {
                NodeKind::File => {}
                NodeKind::Dir => return Err(Errno::EISDIR),
                NodeKind::Symlink(_) => return Err(Errno::ELOOP),
            }
            let state = self.0.state(ino.0);
            if flags.0 & O_TRUNC != 0 && flags.acc_mode() != OpenAccMode::O_RDONLY {
                self.truncate_on_open(ino.0, &state)?;
            }
            // Reads start from the newest stored version seen.
            let stale = lock(&state.base)
                .as_ref()
                .is_some_and(|b| b.info.modified_ms != attr.mtime_ms || b.info.size != attr.size);
            let clean = state.dirty.try_lock().is_ok_and(|d| d.is_none());
            if stale && clean {
                *lock(&state.base) = None;
            }
            // The kernel's page cache of this file is the cache of recently
            // read blocks: kept across opens while the version is the same.
            let version = (attr.mtime_ms, attr.size);
            let keep = match lock(&self.0.table).get_mut(ino.0) {
                Some(n) if clean => n.opened.replace(version) == Some(version),
                Some(n) => {
                    n.opened = None;
                    false
                }
                None => false,
            };
            let flags = if keep { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
            Ok((self.open_handle(ino.0), flags))
        })();
        match r {
            Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let inner = Arc::clone(&self.0);
        self.spawn(async move {
            match inner.read(&h, offset..offset + u64::from(size)).await {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            self.writable()?;
            let h = self.handle(fh)?;
            let inner = &self.0;
            let over = inner.rt.block_on(async {
                let mut g = inner.dirty(ino.0, &h.state).await?;
                let d = g.as_mut().ok_or(Errno::EIO)?;
                let added = d.write(offset, data)?;
                // A write changes the time `utimens` set.
                d.mtime_ms = None;
                inner.stream(ino.0, d)?;
                Ok::<_, Errno>(inner.used.fetch_add(added, Ordering::SeqCst) + added > inner.settings.cache_size)
            })?;
            if over {
                // The cache is full: this file goes up now (one commit per
                // cache-full of a file larger than the cache).
                inner.rt.block_on(inner.flush(ino.0, &h.state))?;
            }
            Ok(data.len() as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.upload(ino, fh, reply);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(h) = lock(&self.0.handles).remove(&fh.0)
            && h.state.open.fetch_sub(1, Ordering::SeqCst) == 1
        {
            // Closed everywhere: keep the state only while it holds changes
            // (an upload that failed is tried again at the next flush or at
            // unmount).
            let mut files = lock(&self.0.files);
            if h.state.open.load(Ordering::SeqCst) == 0
                && h.state.dirty.try_lock().is_ok_and(|d| d.is_none())
                && files.get(&ino.0).is_some_and(|s| Arc::ptr_eq(s, &h.state))
            {
                files.remove(&ino.0);
            }
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.upload(ino, fh, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let dir = self.0.dir_path(ino.0)?;
            let kids = self.0.children(&dir)?;
            let mut items = Vec::with_capacity(kids.len());
            for (name, attr) in kids.iter() {
                let ino = self.0.remember(&join(&dir, name), attr.clone());
                items.push((ino, name.clone(), self.0.node(ino).map_or_else(|_| attr.clone(), |n| n.1)));
            }
            let fh = self.0.next_fh.fetch_add(1, Ordering::SeqCst);
            lock(&self.0.dirs).insert(fh, Arc::new(items));
            Ok(fh)
        })();
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(items) = lock(&self.0.dirs).get(&fh.0).cloned() else { return reply.error(Errno::EBADF) };
        let dots = [
            (ino.0, ".".to_string(), fuser::FileType::Directory),
            (ino.0, "..".to_string(), fuser::FileType::Directory),
        ];
        let all = dots.into_iter().chain(items.iter().map(|(i, n, a)| (*i, n.clone(), a.to_fuse(*i).kind)));
        for (i, (ino, name, kind)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some(items) = lock(&self.0.dirs).get(&fh.0).cloned() else { return reply.error(Errno::EBADF) };
        let ttl = self.ttl();
        let here = match self.0.node(ino.0) {
            Ok((_, a)) => a,
            Err(e) => return reply.error(e),
        };
        let dots = [(ino.0, ".".to_string(), here.clone()), (ino.0, "..".to_string(), here)];
        let all = dots.into_iter().chain(items.iter().cloned());
        for (i, (ino, name, attr)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, name, &ttl, &attr.to_fuse(ino), Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        lock(&self.0.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory changes are committed before they are answered.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let inner = Arc::clone(&self.0);
        self.spawn(async move {
            let [total, free] = inner.capacity().await;
            const BLOCK: u64 = 4096;
            reply.statfs(
                total / BLOCK,
                free / BLOCK,
                free / BLOCK,
                u64::MAX >> 1,
                u64::MAX >> 1,
                BLOCK as u32,
                255,
                BLOCK as u32,
            );
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOTSUP);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 { reply.size(0) } else { reply.data(&[]) }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOTSUP);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The kernel copies through read and write instead (and stops asking).
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // `default_permissions`: the kernel checks the mode bits.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let ttl = self.ttl();
        let r = (|| {
            self.writable()?;
            let dir = self.0.dir_path(parent.0)?;
            let name = name_str(name)?;
            let path = join(&dir, name);
            if let Some(existing) = self.0.child(&dir, name)? {
                if flags & O_EXCL != 0 {
                    return Err(Errno::EEXIST);
                }
                if existing.kind != NodeKind::File {
                    return Err(Errno::EISDIR);
                }
                let ino = self.0.remember(&path, existing);
                if flags & O_TRUNC != 0 {
                    self.truncate_on_open(ino, &self.0.state(ino))?;
                }
                let fh = self.open_handle(ino);
                return Ok((ino, self.0.node(ino)?.1, fh));
            }
            let attr = Attr {
                kind: NodeKind::File,
                size: 0,
                mtime_ms: now_ms(),
                perm: mode & !umask & 0o7777,
                uid: req.uid(),
                gid: req.gid(),
            };
            let ino = {
                let mut t = lock(&self.0.table);
                let ino = t.set(&path, attr.clone());
                t.local.insert(path.clone());
                ino
            };
            let state = self.0.state(ino);
            let mut d = self.0.new_dirty(ino, 0)?;
            d.posix = Some(Posix { mode: attr.type_bits() | attr.perm, uid: attr.uid, gid: attr.gid });
            *state.dirty.blocking_lock() = Some(d);
            let fh = self.open_handle(ino);
            Ok((ino, attr, fh))
        })();
        match r {
            Ok((ino, attr, fh)) => {
                reply.created(&ttl, &attr.to_fuse(ino), Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }
}

/// `O_EXCL` on Linux.
const O_EXCL: i32 = 0o200;

/// `O_TRUNC` on Linux.
const O_TRUNC: i32 = 0o1000;

/// What a `setattr` changes.
#[derive(Debug)]
struct Change {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    mtime: Option<u64>,
}

async fn setattr(inner: &Inner, ino: u64, c: Change) -> Result<Attr, Errno> {
    let (path, attr) = inner.node(ino)?;
    let mut new = attr.clone();
    new.perm = c.mode.map_or(new.perm, |m| m & 0o7777);
    new.uid = c.uid.unwrap_or(new.uid);
    new.gid = c.gid.unwrap_or(new.gid);
    new.mtime_ms = c.mtime.unwrap_or(new.mtime_ms);
    let owner_changed = new.perm != attr.perm || new.uid != attr.uid || new.gid != attr.gid;
    let posix = Posix { mode: new.type_bits() | new.perm, uid: new.uid, gid: new.gid };
    match attr.kind {
        // Directories hold no attributes of their own in the index: a
        // change lasts for the life of the mount (docs/MOUNT.md).
        NodeKind::Dir if c.size.is_some() => return Err(Errno::EISDIR),
        NodeKind::Dir => {}
        NodeKind::Symlink(_) if c.size.is_some() => return Err(Errno::EINVAL),
        NodeKind::Symlink(_) => new = store_attrs(inner, &path, posix, new.mtime_ms).await?,
        NodeKind::File => {
            let state = inner.state(ino);
            let local = lock(&inner.table).local.contains(&path);
            let dirty = state.dirty.lock().await.is_some();
            if c.size.is_some() || dirty || local {
                {
                    let mut g = inner.dirty(ino, &state).await?;
                    let d = g.as_mut().ok_or(Errno::EIO)?;
                    if let Some(s) = c.size {
                        let freed = d.truncate(s)?;
                        inner.used.fetch_sub(freed, Ordering::SeqCst);
                        new.size = s;
                    }
                    if owner_changed {
                        d.posix = Some(posix);
                    }
                    if let Some(t) = c.mtime {
                        d.mtime_ms = Some(t);
                    }
                }
                // `truncate(2)` on a file nobody has open: commit now.
                if state.open.load(Ordering::SeqCst) == 0 {
                    inner.flush(ino, &state).await?;
                    return inner.node(ino).map(|n| n.1);
                }
            } else {
                new = store_attrs(inner, &path, posix, new.mtime_ms).await?;
            }
        }
    }
    if let Some(n) = lock(&inner.table).get_mut(ino) {
        n.attr = Attr { size: n.attr.size, ..new.clone() };
        n.seen = std::time::Instant::now();
    }
    inner.node(ino).map(|n| n.1)
}

/// Records `posix` and `mtime_ms` with the stored entry of `path` (one
/// index update; the bytes stay).
async fn store_attrs(inner: &Inner, path: &str, posix: Posix, mtime_ms: u64) -> Result<Attr, Errno> {
    let info = inner
        .bucket
        .update(path, |e| {
            e.posix = Some(posix);
            e.modified_ms = mtime_ms;
            Ok(())
        })
        .await
        .map_err(|e| errno(&e))?;
    Ok(Attr::of(&info, inner.settings.owner))
}

async fn unlink(inner: &Inner, dir: &str, name: &str) -> Result<(), Errno> {
    let path = join(dir, name);
    let kids = inner.list(dir).await?;
    match kids.get(name).map(|a| &a.kind) {
        None => return Err(Errno::ENOENT),
        Some(NodeKind::Dir) => return Err(Errno::EISDIR),
        Some(_) => {}
    }
    let (ino, local) = {
        let t = lock(&inner.table);
        (t.ino(&path), t.local.contains(&path))
    };
    if let Some(state) = ino.and_then(|i| lock(&inner.files).get(&i).cloned()) {
        state.unlinked.store(true, Ordering::SeqCst);
        if let Ok(mut g) = state.dirty.try_lock() {
            inner.drop_dirty(g.take());
        }
    }
    if !local {
        // The last name in a directory: the directory stays (explicitly).
        let last = !dir.is_empty() && kids.len() == 1;
        let r = if last {
            inner.bucket.delete_keeping(&path, &format!("{dir}/")).await
        } else {
            inner.bucket.delete(&path).await
        };
        match r {
            Ok(()) | Err(cairn_client::Error::NoSuchKey { .. }) => {}
            Err(e) => return Err(errno(&e)),
        }
    }
    let mut t = lock(&inner.table);
    t.remove(&path);
    t.changed_child(dir, name, None);
    Ok(())
}

async fn rename(inner: &Inner, from: (&str, &str), to: (&str, &str), replace: bool) -> Result<(), Errno> {
    let (src, dst) = (join(from.0, from.1), join(to.0, to.1));
    let kids = inner.list(from.0).await?;
    let kind = kids.get(from.1).map(|a| a.kind.clone()).ok_or(Errno::ENOENT)?;
    let target = inner.list(to.0).await?.get(to.1).map(|a| a.kind.clone());
    if src == dst {
        return Ok(());
    }
    if target.is_some() && !replace {
        return Err(Errno::EEXIST);
    }
    // Changes below the source go up first, under their present names.
    let below = format!("{src}/");
    let pending: Vec<u64> = {
        let t = lock(&inner.table);
        lock(&inner.files)
            .keys()
            .copied()
            .filter(|i| t.get(*i).is_some_and(|n| n.path == src || n.path.starts_with(&below)))
            .collect()
    };
    for ino in pending {
        let state = inner.state(ino);
        inner.flush(ino, &state).await?;
    }
    let target_dir = target == Some(NodeKind::Dir);
    match (&kind, &target) {
        (NodeKind::Dir, Some(NodeKind::Dir)) => {}
        (NodeKind::Dir, Some(_)) => return Err(Errno::ENOTDIR),
        (_, Some(NodeKind::Dir)) => return Err(Errno::EISDIR),
        _ => {}
    }
    if target_dir && inner.has_children(&dst).await? {
        return Err(Errno::ENOTEMPTY);
    }
    if kind == NodeKind::Dir {
        let moved = inner.bucket.rename_tree(&below, &format!("{dst}/")).await.map_err(|e| errno(&e))?;
        if moved == 0 {
            return Err(Errno::ENOENT);
        }
    } else {
        inner.bucket.rename_with(&src, &dst, replace).await.map_err(|e| errno(&e))?;
    }
    // The source's directory keeps existing if it is now empty.
    if !from.0.is_empty() && from.0 != to.0 && kids.len() == 1 && !dst.starts_with(&format!("{}/", from.0)) {
        let _ = inner.bucket.mkdir(&format!("{}/", from.0)).await;
    }
    let mut t = lock(&inner.table);
    t.rename(&src, &dst);
    t.changed(from.0);
    t.changed(to.0);
    t.changed(split(&dst).0);
    Ok(())
}
