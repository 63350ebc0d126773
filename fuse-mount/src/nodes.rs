//! Inode numbers and what is known of each name: paths map to inode
//! numbers that stay the same for the life of the mount (renames move the
//! number with the name), and directory listings are cached for a short
//! time so that `ls -l` and path walks do not go to the index per name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_client::{Kind, ObjectInfo};
use fuser::{FileAttr, FileType, INodeNo};

/// The root directory's inode number.
pub const ROOT: u64 = 1;

/// What a name is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory (explicit or implied by the keys below it).
    Dir,
    /// A symbolic link to the target.
    Symlink(String),
}

/// A name's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// File, directory or symlink.
    pub kind: NodeKind,
    /// Bytes.
    pub size: u64,
    /// Last modified, ms since the epoch.
    pub mtime_ms: u64,
    /// Permission bits (`0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Attr {
    /// A directory with the mount's defaults.
    pub fn dir(owner: (u32, u32), mtime_ms: u64) -> Self {
        Self { kind: NodeKind::Dir, size: 0, mtime_ms, perm: 0o755, uid: owner.0, gid: owner.1 }
    }

    /// The attributes of a stored object (objects written over S3 have no
    /// POSIX attributes: they get the mount owner's and 0644).
    pub fn of(info: &ObjectInfo, owner: (u32, u32)) -> Self {
        let (kind, size, perm) = match &info.kind {
            Kind::File => (NodeKind::File, info.size, 0o644),
            Kind::Directory => (NodeKind::Dir, 0, 0o755),
            Kind::Symlink(t) => (NodeKind::Symlink(t.clone()), t.len() as u64, 0o777),
        };
        let (perm, uid, gid) = match info.posix {
            Some(p) => (p.mode & 0o7777, p.uid, p.gid),
            None => (perm, owner.0, owner.1),
        };
        Self { kind, size, mtime_ms: info.modified_ms, perm, uid, gid }
    }

    /// The type bits of `st_mode`.
    pub fn type_bits(&self) -> u32 {
        match self.kind {
            NodeKind::File => 0o100000,
            NodeKind::Dir => 0o040000,
            NodeKind::Symlink(_) => 0o120000,
        }
    }

    /// As the kernel wants it.
    pub fn to_fuse(&self, ino: u64) -> FileAttr {
        let t = UNIX_EPOCH + Duration::from_millis(self.mtime_ms);
        let kind = match self.kind {
            NodeKind::File => FileType::RegularFile,
            NodeKind::Dir => FileType::Directory,
            NodeKind::Symlink(_) => FileType::Symlink,
        };
        FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm: self.perm as u16,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 * 1024,
            flags: 0,
        }
    }
}

/// Milliseconds since the epoch of `t`.
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `dir/name` (`name` at the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// The directory holding `path`, and the name in it.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// A cached listing of one directory.
#[derive(Clone, Debug)]
pub struct Listing {
    /// When it was read.
    pub at: Instant,
    /// Names and attributes.
    pub children: Arc<BTreeMap<String, Attr>>,
}

/// One known name.
#[derive(Debug)]
pub struct Node {
    /// Its path in the bucket (the root is "").
    pub path: String,
    /// Its attributes when last seen.
    pub attr: Attr,
    /// When they were seen.
    pub seen: Instant,
    /// The version (mtime, size) the kernel cached pages of at the last
    /// open: if the next open finds the same, the pages are kept.
    pub opened: Option<(u64, u64)>,
}

/// Inode numbers, names and cached listings.
#[derive(Debug)]
pub struct Table {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
    listings: HashMap<String, Listing>,
    /// Bumped by every change made here to a directory, so a listing read
    /// before the change is not cached after it.
    generations: HashMap<String, u64>,
    /// Files created here and not yet uploaded (not in any listing).
    pub local: BTreeSet<String>,
}

impl Table {
    /// A table holding the root directory.
    pub fn new(root: Attr) -> Self {
        let mut t = Self {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next: ROOT + 1,
            listings: HashMap::new(),
            generations: HashMap::new(),
            local: BTreeSet::new(),
        };
        t.by_ino.insert(ROOT, Node { path: String::new(), attr: root, seen: Instant::now(), opened: None });
        t.by_path.insert(String::new(), ROOT);
        t
    }

    /// The node of `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.by_ino.get(&ino)
    }

    /// The node of `ino`, to change.
    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.by_ino.get_mut(&ino)
    }

    /// The inode number of `path`, if known.
    pub fn ino(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Records `attr` for `path` (seen now); returns its inode number,
    /// allocating one for a new name.
    pub fn set(&mut self, path: &str, attr: Attr) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                // A directory's attributes live only here (docs/MOUNT.md):
                // a listing that sees it again does not reset them.
                if !(n.attr.kind == NodeKind::Dir && attr.kind == NodeKind::Dir) {
                    n.attr = attr;
                }
                n.seen = Instant::now();
            }
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, Node { path: path.to_string(), attr, seen: Instant::now(), opened: None });
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    /// Forgets the name `path` (its inode number is never reused).
    pub fn remove(&mut self, path: &str) {
        if let Some(ino) = self.by_path.remove(path) {
            self.by_ino.remove(&ino);
        }
        self.local.remove(path);
    }

    /// Moves `from` (and, for a directory, every name below it) to `to`,
    /// keeping their inode numbers; whatever `to` named before is forgotten.
    pub fn rename(&mut self, from: &str, to: &str) {
        let below = format!("{from}/");
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&below))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        self.remove(to);
        let gone: Vec<String> = self.by_path.keys().filter(|p| p.starts_with(&format!("{to}/"))).cloned().collect();
        for p in gone {
            self.remove(&p);
        }
        for (old, ino) in moved {
            let new = format!("{to}{}", &old[from.len()..]);
            self.by_path.remove(&old);
            if self.local.remove(&old) {
                self.local.insert(new.clone());
            }
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.path = new.clone();
            }
            self.by_path.insert(new, ino);
        }
        self.listings.retain(|d, _| d != from && !d.starts_with(&below));
    }

    /// The cached listing of `dir`, if younger than `ttl`.
    pub fn listing(&self, dir: &str, ttl: Duration) -> Option<Arc<BTreeMap<String, Attr>>> {
        self.listings.get(dir).filter(|l| l.at.elapsed() < ttl).map(|l| Arc::clone(&l.children))
    }

    /// The change count of `dir`.
    pub fn generation(&self, dir: &str) -> u64 {
        self.generations.get(dir).copied().unwrap_or(0)
    }

    /// Caches a listing of `dir` read at generation `generation` (unless
    /// the directory changed here since).
    pub fn cache_listing(&mut self, dir: &str, generation: u64, children: Arc<BTreeMap<String, Attr>>) {
        if self.generation(dir) == generation {
            self.listings.insert(dir.to_string(), Listing { at: Instant::now(), children });
        }
    }

    /// Notes a change to `dir` made here: its cached listing is dropped.
    pub fn changed(&mut self, dir: &str) {
        *self.generations.entry(dir.to_string()).or_default() += 1;
        self.listings.remove(dir);
    }

    /// Notes that `name` in `dir` changed here (None: it is gone): the
    /// cached listing is updated rather than dropped, so a directory being
    /// filled is not listed again per file.
    pub fn changed_child(&mut self, dir: &str, name: &str, attr: Option<Attr>) {
        *self.generations.entry(dir.to_string()).or_default() += 1;
        if let Some(l) = self.listings.get_mut(dir) {
            let children = Arc::make_mut(&mut l.children);
            match attr {
                Some(a) => children.insert(name.to_string(), a),
                None => children.remove(name),
            };
        }
    }

    /// Files created here, not yet uploaded, directly in `dir`.
    pub fn local_in(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        self.local
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .filter(|p| !p[prefix.len()..].contains('/'))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Attr {
        Attr { kind: NodeKind::File, size: 1, mtime_ms: 0, perm: 0o644, uid: 0, gid: 0 }
    }

    #[test]
    fn renaming_a_directory_keeps_every_inode_number() {
        let mut t = Table::new(Attr::dir((0, 0), 0));
        let d = t.set("a", Attr::dir((0, 0), 0));
        t.set("a", Attr { perm: 0o700, ..Attr::dir((0, 0), 5) });
        assert_eq!(t.get(d).map(|n| n.attr.perm), Some(0o755), "a listing keeps a directory's mode");
        let f = t.set("a/x", file());
        let g = t.set("a/b/y", file());
        let other = t.set("ab", file());
        let old = t.set("c/z", file());
        t.local.insert("a/b/y".into());
        t.rename("a", "c");
        assert_eq!(t.ino("c"), Some(d));
        assert_eq!(t.ino("c/x"), Some(f));
        assert_eq!(t.ino("c/b/y"), Some(g));
        assert_eq!(t.get(g).map(|n| n.path.as_str()), Some("c/b/y"));
        assert_eq!(t.ino("ab"), Some(other), "a name that only starts alike stays");
        assert_eq!(t.ino("a/x"), None);
        assert!(t.get(old).is_none(), "what the target held is forgotten");
        assert_eq!(t.local_in("c/b"), vec!["c/b/y".to_string()]);
        assert!(t.local_in("c").is_empty());
        // A new name never reuses a number.
        let n = t.set("a", file());
        assert!(n > old);
    }

    #[test]
    fn a_listing_read_before_a_change_is_not_cached() {
        let mut t = Table::new(Attr::dir((0, 0), 0));
        let g = t.generation("d");
        t.changed("d");
        t.cache_listing("d", g, Arc::new(BTreeMap::new()));
        assert!(t.listing("d", Duration::from_secs(60)).is_none());
        let g = t.generation("d");
        t.cache_listing("d", g, Arc::new(BTreeMap::new()));
        assert!(t.listing("d", Duration::from_secs(60)).is_some());
        // A change made here updates the cached listing in place.
        t.changed_child("d", "f", Some(file()));
        let l = t.listing("d", Duration::from_secs(60)).expect("still cached");
        assert_eq!(l.get("f"), Some(&file()));
        t.changed_child("d", "f", None);
        assert!(t.listing("d", Duration::from_secs(60)).expect("cached").is_empty());
        assert!(t.listing("d", Duration::ZERO).is_none());
    }
}
