//! The shard store: shard bytes in plain files, everything else in RocksDB.
//!
//! ```text
//! DATA_DIR/shards/ab/abcdef…   one file per shard, named by its id (hex)
//! DATA_DIR/tmp/                 puts in progress
//! DATA_DIR/db/                  RocksDB:  's' ‖ shard id           → ShardMeta
//!                                         'b' ‖ shard id           → a small shard's bytes
//!                                         'e' ‖ expiry (BE) ‖ id   → ()   (lease index)
//!                                         'r' ‖ record id          → head record
//!                                         'q' ‖ record id          → when last offered (u64 LE)
//!                                         'x' ‖ offered (BE) ‖ id  → ()   (record TTL index)
//!                                         'o' ‖ shard id           → outboard (proofs; a cache)
//!                                         'p' ‖ shard id           → uploader's peer id (quotas)
//! ```
//!
//! Why files and not RocksDB blobs: a put streams into a file while it is
//! hashed, where a RocksDB value must be buffered whole (up to the maximum
//! shard size, per concurrent put); a range read is one `pread`, where a
//! blob `get` reads the whole value. Measured in docs/BENCHMARKS.md.
//!
//! Small shards (index pages, the shards of small objects: up to
//! [`ShardStore::set_small_shard_size`], 128 KiB by default) are the
//! exception: their bytes go into RocksDB in the batch that records their
//! metadata. Buffering them costs nothing, and a file would cost a create,
//! a rename, an unlink later and a second synced write; on an ext4 without
//! a journal, creating a file after many deletes also scans the inode
//! bitmap past every recently freed inode (~1 ms each on these machines:
//! docs/BENCHMARKS.md, session 15). A shard is read from RocksDB when its
//! bytes are there and from its file otherwise, so a node whose threshold
//! changes keeps reading what it stored before.
//!
//! Crash safety: a put writes `tmp/…`, checks its hash, `fsync`s, renames
//! it into `shards/`, and only then commits its metadata in one RocksDB
//! batch. A delete commits first and removes the file after. So at any
//! instant of a `kill -9` a file in `shards/` holds exactly the bytes of its
//! id; at start [`ShardStore::open`] removes `tmp/`, files without metadata
//! and metadata without (or with a short) file, and recomputes the byte
//! count from the metadata, so capacity accounting never drifts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cairn_proto::node::{MAX_OWNERS, ShardMeta};
use cairn_proto::proof::{self, ProofError};
use cairn_proto::shard::{ByteRange, NodeStats, Renewal, ShardError, owner_of, renew_token_of};
use cairn_proto::{RecordId, ShardId};
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::error::Error;
use crate::quota::PeerUsage;

const SHARD_PREFIX: u8 = b's';
const LEASE_PREFIX: u8 = b'e';
const RECORD_PREFIX: u8 = b'r';
/// `'p' ‖ shard id → the peer that uploaded it`, for per-peer quotas.
const UPLOADER_PREFIX: u8 = b'p';
/// `'b' ‖ shard id → the bytes of a small shard`.
const BODY_PREFIX: u8 = b'b';

/// Shards up to this many bytes are kept in RocksDB by default.
pub const DEFAULT_SMALL_SHARD: u64 = 128 * 1024;

/// `prefix ‖ id`: the key of every per-shard and per-record row.
fn id_key(prefix: u8, id: &[u8; 32]) -> [u8; 33] {
    let mut k = [prefix; 33];
    k[1..].copy_from_slice(id);
    k
}

fn body_key(id: &ShardId) -> [u8; 33] {
    id_key(BODY_PREFIX, &id.0)
}

/// The bytes of a new shard, as [`ShardStore::commit`] takes them.
#[derive(Debug, Clone, Copy)]
pub enum NewBody<'a> {
    /// A verified, synced temp file, moved into `shards/`.
    File(&'a Path),
    /// A small shard's bytes, verified, stored in the metadata's batch.
    Small(&'a [u8]),
}

/// A stored shard's bytes, opened for reading.
#[derive(Debug)]
pub enum Body {
    /// A small shard, read whole from RocksDB.
    Small(Vec<u8>),
    /// A shard file.
    File(fs::File),
}

fn uploader_key(id: &ShardId) -> [u8; 33] {
    id_key(UPLOADER_PREFIX, &id.0)
}

/// Disk space a node leaves free beside its shards, for RocksDB, its
/// logs and temp files: a disk that fills up anyway refuses puts with
/// `NoSpace`, and the node keeps serving what it holds.
pub const DISK_HEADROOM: u64 = 64 << 20;

/// `'u' → the usage ledger` ([`crate::usage::Ledger`]).
const USAGE_KEY: &[u8] = b"u";

/// `'o' ‖ shard id → outboard` ([`cairn_proto::proof`]), made at the
/// first proof asked of the shard and removed with it.
const OUTBOARD_PREFIX: u8 = b'o';
/// `'q' ‖ record id → u64 LE`: when the record was last offered.
const OFFERED_PREFIX: u8 = b'q';
/// `'x' ‖ offered (BE) ‖ record id → ()`: the same, in time order.
const OFFERED_INDEX: u8 = b'x';

fn offered_key(id: &RecordId) -> [u8; 33] {
    id_key(OFFERED_PREFIX, &id.0)
}

fn offered_index(at: u64, id: &RecordId) -> [u8; 41] {
    let mut k = [OFFERED_INDEX; 41];
    k[1..9].copy_from_slice(&at.to_be_bytes());
    k[9..].copy_from_slice(&id.0);
    k
}

fn shard_key(id: &ShardId) -> [u8; 33] {
    id_key(SHARD_PREFIX, &id.0)
}

fn outboard_key(id: &ShardId) -> [u8; 33] {
    id_key(OUTBOARD_PREFIX, &id.0)
}

fn lease_key(expires_at: u64, id: &ShardId) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = LEASE_PREFIX;
    k[1..9].copy_from_slice(&expires_at.to_be_bytes());
    k[9..].copy_from_slice(&id.0);
    k
}

fn record_key(id: &RecordId) -> [u8; 33] {
    id_key(RECORD_PREFIX, &id.0)
}

/// Bytes and shards stored, and bytes promised to puts in progress.
#[derive(Debug, Default)]
struct Accounting {
    used: u64,
    shards: u64,
    reserved: u64,
}

/// Space promised to a put in progress; given back on drop unless committed.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
    accounting: Arc<Mutex<Accounting>>,
    /// The uploading peer, and its usage (its promise is given back too).
    peer: Vec<u8>,
    usage: Arc<PeerUsage>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut a) = self.accounting.lock() {
            a.reserved = a.reserved.saturating_sub(self.bytes);
        }
        self.usage.release(&self.peer, self.bytes);
    }
}

/// What [`ShardStore::open`] cleaned up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Interrupted puts removed from `tmp/`.
    pub temp_files: usize,
    /// Shard files with no metadata (crash between rename and commit).
    pub orphan_files: usize,
    /// Metadata whose file was missing or short.
    pub lost_shards: usize,
}

/// The result of checking every shard against its id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Shards whose file hashes to their id.
    pub good: u64,
    /// Shards whose file does not (bit rot, tampering).
    pub bad: Vec<ShardId>,
    /// Sum of the sizes of all stored shards.
    pub bytes: u64,
}

/// Shard files plus RocksDB metadata.
pub struct ShardStore {
    db: DB,
    shards_dir: PathBuf,
    tmp_dir: PathBuf,
    capacity: u64,
    max_shard: u64,
    accounting: Arc<Mutex<Accounting>>,
    /// Serialises commits and deletes of one shard (striped by id), so that
    /// commits of different shards reach RocksDB together and share one
    /// synced WAL write (its group commit).
    stripes: Box<[Mutex<()>]>,
    records: AtomicUsize,
    /// Most head records held (`usize::MAX` until [`Self::set_max_records`]).
    max_records: AtomicUsize,
    /// Bytes stored per uploading peer, and the quota.
    usage: Arc<PeerUsage>,
    /// Whether puts are being refused because the disk is full (logged
    /// when it starts and ends).
    disk_full: std::sync::atomic::AtomicBool,
    /// Shards up to this size are kept in RocksDB, not in files.
    small_shard: std::sync::atomic::AtomicU64,
}

/// Lock stripes for [`ShardStore::stripes`].
const STRIPES: usize = 64;

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore").field("dir", &self.shards_dir).field("stats", &self.stats()).finish()
    }
}

impl ShardStore {
    /// Opens (creating if needed) the store in `data_dir` and recovers from
    /// any interrupted work. Blocking.
    pub fn open(data_dir: &Path, capacity: u64, max_shard: u64) -> Result<(Self, Recovery), Error> {
        let shards_dir = data_dir.join("shards");
        let tmp_dir = data_dir.join("tmp");
        for d in [&shards_dir, &tmp_dir] {
            fs::create_dir_all(d).map_err(Error::io(d))?;
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(64 << 20);
        let db = DB::open(&opts, data_dir.join("db"))?;
        let store = Self {
            db,
            shards_dir,
            tmp_dir,
            capacity,
            max_shard,
            accounting: Arc::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            records: AtomicUsize::new(0),
            max_records: AtomicUsize::new(usize::MAX),
            usage: Arc::default(),
            disk_full: std::sync::atomic::AtomicBool::new(false),
            small_shard: std::sync::atomic::AtomicU64::new(DEFAULT_SMALL_SHARD),
        };
        let recovery = store.recover()?;
        Ok((store, recovery))
    }

    fn recover(&self) -> Result<Recovery, Error> {
        let mut r = Recovery::default();
        for entry in fs::read_dir(&self.tmp_dir).map_err(Error::io(&self.tmp_dir))? {
            let path = entry.map_err(Error::io(&self.tmp_dir))?.path();
            fs::remove_file(&path).map_err(Error::io(&path))?;
            r.temp_files += 1;
        }
        // Files without metadata.
        for sub in fs::read_dir(&self.shards_dir).map_err(Error::io(&self.shards_dir))? {
            let sub = sub.map_err(Error::io(&self.shards_dir))?.path();
            for f in fs::read_dir(&sub).map_err(Error::io(&sub))? {
                let path = f.map_err(Error::io(&sub))?.path();
                let id = path.file_name().and_then(|n| n.to_str()).and_then(parse_hex_id);
                let known = match id {
                    Some(id) => self.db.get_pinned(shard_key(&id))?.is_some(),
                    None => false,
                };
                if !known {
                    fs::remove_file(&path).map_err(Error::io(&path))?;
                    r.orphan_files += 1;
                }
            }
        }
        // Metadata without a whole file; recount.
        let mut used = 0u64;
        let mut shards = 0u64;
        let mut batch = WriteBatch::default();
        self.for_each_shard(|id, meta| {
            let on_disk = match self.db.get_pinned(body_key(&id))? {
                Some(b) => Some(b.len() as u64),
                None => fs::metadata(self.path(&id)).map(|m| m.len()).ok(),
            };
            if on_disk == Some(meta.len) {
                used += meta.len;
                shards += 1;
            } else {
                batch.delete(shard_key(&id));
                batch.delete(lease_key(meta.expires_at, &id));
                batch.delete(outboard_key(&id));
                batch.delete(uploader_key(&id));
                batch.delete(body_key(&id));
                let _ = fs::remove_file(self.path(&id));
                r.lost_shards += 1;
            }
            Ok(())
        })?;
        self.db.write(batch)?;
        // Per-peer usage, from who uploaded each shard still held.
        let mut batch = WriteBatch::default();
        for item in self.db.prefix_iterator([UPLOADER_PREFIX]) {
            let (k, peer) = item?;
            if k.first() != Some(&UPLOADER_PREFIX) {
                break;
            }
            let Some(id) = k.get(1..).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(ShardId) else { continue };
            match self.meta(&id)? {
                Some(meta) => self.usage.stored(&peer, meta.len),
                None => batch.delete(uploader_key(&id)),
            }
        }
        self.db.write(batch)?;
        let records = self
            .db
            .prefix_iterator([RECORD_PREFIX])
            .take_while(|i| matches!(i, Ok((k, _)) if k.first() == Some(&RECORD_PREFIX)))
            .count();
        self.records.store(records, Ordering::Relaxed);
        if let Ok(mut a) = self.accounting.lock() {
            a.used = used;
            a.shards = shards;
        }
        Ok(r)
    }

    /// Calls `f` with every stored shard's id and metadata, in id order.
    fn for_each_shard(&self, mut f: impl FnMut(ShardId, ShardMeta) -> Result<(), Error>) -> Result<(), Error> {
        for item in self.db.iterator(IteratorMode::From(&[SHARD_PREFIX], Direction::Forward)) {
            let (k, v) = item?;
            if k.first() != Some(&SHARD_PREFIX) {
                break;
            }
            let Some(id) = k.get(1..).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(ShardId) else { continue };
            let meta = ShardMeta::from_bytes(&v)?;
            f(id, meta)?;
        }
        Ok(())
    }

    /// Where the shard's file lives.
    pub fn path(&self, id: &ShardId) -> PathBuf {
        let hex = id.to_hex();
        self.shards_dir.join(&hex[..2]).join(hex)
    }

    /// A fresh path for a put in progress: unique within this process (a
    /// counter) and across restarts (`tmp/` is emptied at start). Callers
    /// open it with `create_new`, so two puts can never share a file.
    pub fn temp_path(&self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir.join(format!("{}-{n}", std::process::id()))
    }

    /// The largest shard accepted.
    pub fn max_shard(&self) -> u64 {
        self.max_shard
    }

    /// Capacity figures. The capacity is what the operator allows, or
    /// less when the disk has less room: what the node can still take.
    pub fn stats(&self) -> NodeStats {
        let (used, shards) = self.accounting.lock().map(|a| (a.used, a.shards)).unwrap_or_default();
        let capacity = self.capacity.min(used.saturating_add(self.disk_room()));
        NodeStats { capacity, used, shards }
    }

    /// Bytes the disk holding the shards can still take, less
    /// [`DISK_HEADROOM`] for RocksDB, logs and temp files (`u64::MAX` if
    /// the file system does not say).
    pub fn disk_room(&self) -> u64 {
        match rustix::fs::statvfs(&self.shards_dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize).saturating_sub(DISK_HEADROOM),
            Err(_) => u64::MAX,
        }
    }

    /// Metadata of a stored shard.
    pub fn meta(&self, id: &ShardId) -> Result<Option<ShardMeta>, Error> {
        match self.db.get_pinned(shard_key(id))? {
            Some(v) => Ok(Some(ShardMeta::from_bytes(&v)?)),
            None => Ok(None),
        }
    }

    /// Promises `len` bytes to a put, or refuses for lack of space. A shard
    /// already stored needs no new space.
    pub fn reserve(&self, id: &ShardId, len: u64, peer: &[u8]) -> Result<Reservation, ShardError> {
        if len > self.max_shard {
            return Err(ShardError::TooLarge { len, max: self.max_shard });
        }
        let exists = self.meta(id).map_err(|_| ShardError::Internal)?.is_some();
        let bytes = if exists { 0 } else { len };
        let disk = if bytes > 0 { self.disk_room() } else { u64::MAX };
        let mut a = self.accounting.lock().map_err(|_| ShardError::Internal)?;
        let allowed = self.capacity.saturating_sub(a.used + a.reserved);
        let available = allowed.min(disk.saturating_sub(a.reserved));
        if bytes > available {
            if available < allowed && !self.disk_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    dir = %self.shards_dir.display(),
                    room = disk,
                    "the disk is full before `capacity` is: refusing new shards until there is room \
                     (free some space or lower `capacity`); stored shards are still served"
                );
            }
            return Err(ShardError::NoSpace { needed: bytes, available });
        }
        if bytes > 0 && self.disk_full.swap(false, Ordering::Relaxed) {
            tracing::info!("the disk has room again: accepting new shards");
        }
        self.usage.reserve(peer, bytes)?;
        a.reserved += bytes;
        Ok(Reservation {
            bytes,
            accounting: Arc::clone(&self.accounting),
            peer: peer.to_vec(),
            usage: Arc::clone(&self.usage),
        })
    }

    /// Sets the most bytes one peer may store (0: no limit).
    pub fn set_peer_quota(&self, bytes: u64) {
        self.usage.set_quota(bytes);
    }

    /// Bytes the peer `peer` (its id's bytes) stores here.
    pub fn peer_usage(&self, peer: &[u8]) -> u64 {
        self.usage.used(peer)
    }

    /// Bytes stored per uploading peer, for every peer that stores any.
    pub fn stored_by_peer(&self) -> std::collections::HashMap<Vec<u8>, u64> {
        self.usage.all_stored()
    }

    /// The usage ledger saved last, if any. Blocking.
    pub fn load_usage(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get(USAGE_KEY)?)
    }

    /// Saves the usage ledger. Blocking.
    pub fn save_usage(&self, bytes: &[u8]) -> Result<(), Error> {
        Ok(self.db.put(USAGE_KEY, bytes)?)
    }

    /// Removes the uploader record of a shard that goes in `batch`; returns
    /// who it was, to count the bytes off once the batch is written.
    fn forget_uploader(&self, id: &ShardId, batch: &mut WriteBatch) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        let peer = self.db.get(uploader_key(id))?;
        if peer.is_some() {
            batch.delete(uploader_key(id));
        }
        Ok(peer)
    }

    /// Stores a verified shard: moves a synced temp file into place, or
    /// puts a small shard's bytes in the batch that records it, with the
    /// byte count. If the shard is already stored, adds the uploader as an
    /// owner and extends the lease instead. Blocking.
    pub fn commit(
        &self,
        id: &ShardId,
        body: NewBody<'_>,
        len: u64,
        owner: [u8; 32],
        expires_at: u64,
        reservation: Reservation,
    ) -> Result<(), Error> {
        let poisoned = || Error::Io { path: self.shards_dir.clone(), source: std::io::Error::other("poisoned") };
        let _stripe = self.stripe(id).map_err(|()| poisoned())?;
        let mut batch = WriteBatch::default();
        let fresh = match self.meta(id)? {
            Some(mut meta) => {
                if let NewBody::File(temp) = body {
                    fs::remove_file(temp).map_err(Error::io(temp))?;
                }
                if !meta.owners.contains(&owner) && meta.owners.len() < MAX_OWNERS {
                    meta.owners.push(owner);
                }
                if expires_at > meta.expires_at {
                    batch.delete(lease_key(meta.expires_at, id));
                    meta.expires_at = expires_at;
                }
                batch.put(lease_key(meta.expires_at, id), []);
                batch.put(shard_key(id), meta.to_bytes());
                false
            }
            None => {
                match body {
                    NewBody::File(temp) => {
                        let path = self.path(id);
                        if let Some(dir) = path.parent() {
                            fs::create_dir_all(dir).map_err(Error::io(dir))?;
                        }
                        fs::rename(temp, &path).map_err(Error::io(&path))?;
                    }
                    NewBody::Small(bytes) => batch.put(body_key(id), bytes),
                }
                let meta = ShardMeta { len, owners: vec![owner], expires_at };
                batch.put(shard_key(id), meta.to_bytes());
                batch.put(lease_key(expires_at, id), []);
                batch.put(uploader_key(id), &reservation.peer);
                true
            }
        };
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        if fresh {
            let mut a = self.accounting.lock().map_err(|_| poisoned())?;
            a.used += len;
            a.shards += 1;
            drop(a);
            self.usage.stored(&reservation.peer, len);
        }
        drop(reservation);
        Ok(())
    }

    /// Removes `owner`'s claim on the shard; the shard goes when no claim is
    /// left. Blocking.
    pub fn delete(&self, id: &ShardId, token: &[u8; 32]) -> Result<(), ShardError> {
        let owner = owner_of(&renew_token_of(token));
        let _stripe = self.stripe(id).map_err(|()| ShardError::Internal)?;
        let mut meta = self.meta(id).map_err(|_| ShardError::Internal)?.ok_or(ShardError::NotFound(*id))?;
        let Some(i) = meta.owners.iter().position(|o| *o == owner) else {
            return Err(ShardError::BadToken(*id));
        };
        meta.owners.swap_remove(i);
        let mut batch = WriteBatch::default();
        let gone = meta.owners.is_empty();
        let mut uploader = None;
        let small = gone && self.is_small(id).map_err(|_| ShardError::Internal)?;
        if gone {
            batch.delete(shard_key(id));
            batch.delete(lease_key(meta.expires_at, id));
            batch.delete(outboard_key(id));
            batch.delete(body_key(id));
            uploader = self.forget_uploader(id, &mut batch).map_err(|_| ShardError::Internal)?;
        } else {
            batch.put(shard_key(id), meta.to_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|_| ShardError::Internal)?;
        if let Some(peer) = uploader {
            self.usage.removed(&peer, meta.len);
        }
        if gone {
            let mut a = self.accounting.lock().map_err(|_| ShardError::Internal)?;
            a.used = a.used.saturating_sub(meta.len);
            a.shards = a.shards.saturating_sub(1);
            drop(a);
            if !small {
                let _ = fs::remove_file(self.path(id));
            }
        }
        Ok(())
    }

    /// Whether the shard's bytes are in RocksDB (else in its file).
    fn is_small(&self, id: &ShardId) -> Result<bool, Error> {
        Ok(self.db.get_pinned(body_key(id))?.is_some())
    }

    /// Keeps shards up to `bytes` in RocksDB rather than in files of their
    /// own (0: every shard in a file). Shards already stored stay where
    /// they are.
    pub fn set_small_shard_size(&self, bytes: u64) {
        self.small_shard.store(bytes, Ordering::Relaxed);
    }

    /// Whether a new shard of `len` bytes goes into RocksDB.
    pub fn keeps_small(&self, len: u64) -> bool {
        len <= self.small_shard.load(Ordering::Relaxed)
    }

    /// A stored shard's metadata and bytes, or `None`. Blocking (a small
    /// shard is read whole).
    pub fn open_shard(&self, id: &ShardId) -> Result<Option<(ShardMeta, Body)>, Error> {
        let Some(meta) = self.meta(id)? else { return Ok(None) };
        if let Some(bytes) = self.db.get(body_key(id))? {
            return Ok(Some((meta, Body::Small(bytes))));
        }
        match fs::File::open(self.path(id)) {
            Ok(f) => Ok(Some((meta, Body::File(f)))),
            // Deleted since its metadata was read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { path: self.path(id), source: e }),
        }
    }

    /// Extends the leases of `shards` to at least `expires_at`, each only if
    /// its renew token is one of its owners'; one synced batch. Blocking.
    pub fn renew(&self, shards: &[(ShardId, [u8; 32])], expires_at: u64) -> Result<Vec<Renewal>, Error> {
        // Every stripe involved is held until the batch is written, taken
        // in order, so that no commit, delete or collection of these shards
        // interleaves (a delete in between would be undone).
        let mut stripes: Vec<usize> = shards.iter().map(|(id, _)| stripe_of(id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let poisoned = || Error::Io { path: self.shards_dir.clone(), source: std::io::Error::other("poisoned") };
        let _held =
            stripes.iter().map(|&i| self.stripes[i].lock().map_err(|_| poisoned())).collect::<Result<Vec<_>, _>>()?;
        // Per shard: the lease it had, and its metadata as this batch
        // leaves it (a shard may be named twice).
        let mut metas: std::collections::HashMap<ShardId, Option<(u64, ShardMeta)>> = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(shards.len());
        for (id, token) in shards {
            let meta = match metas.entry(*id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.meta(id)?.map(|m| (m.expires_at, m))),
            };
            out.push(match meta {
                None => Renewal::NotFound,
                Some((_, m)) if !m.owners.contains(&owner_of(token)) => Renewal::BadToken,
                Some((_, m)) => {
                    m.expires_at = m.expires_at.max(expires_at);
                    Renewal::Until(m.expires_at)
                }
            });
        }
        let mut batch = WriteBatch::default();
        for (id, (old, meta)) in metas.into_iter().filter_map(|(id, m)| Some((id, m?))) {
            if meta.expires_at != old {
                batch.delete(lease_key(old, &id));
                batch.put(lease_key(meta.expires_at, &id), []);
                batch.put(shard_key(&id), meta.to_bytes());
            }
        }
        if !batch.is_empty() {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            self.db.write_opt(batch, &wo)?;
        }
        Ok(out)
    }

    /// The entries of a time-ordered index (`prefix ‖ time (BE) ‖ id`)
    /// with a time before `before`, oldest first.
    fn due(&self, prefix: u8, before: u64) -> Result<Vec<(u64, [u8; 32])>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&[prefix], Direction::Forward)) {
            let (k, _) = item?;
            if k.first() != Some(&prefix) || k.len() != 41 {
                break;
            }
            let at = u64::from_be_bytes(k[1..9].try_into().unwrap_or_default());
            if at >= before {
                break;
            }
            if let Ok(id) = <[u8; 32]>::try_from(&k[9..]) {
                out.push((at, id));
            }
        }
        Ok(out)
    }

    /// Deletes every shard whose lease ended before `now` (Unix seconds).
    /// Returns how many went. Blocking.
    pub fn collect_expired(&self, now: u64) -> Result<usize, Error> {
        let mut n = 0;
        for (at, id) in self.due(LEASE_PREFIX, now)? {
            let id = ShardId(id);
            let poisoned = || Error::Io { path: self.shards_dir.clone(), source: std::io::Error::other("poisoned") };
            let _stripe = self.stripe(&id).map_err(|()| poisoned())?;
            let mut batch = WriteBatch::default();
            batch.delete(lease_key(at, &id));
            if let Some(meta) = self.meta(&id)?.filter(|m| m.expires_at == at) {
                let small = self.is_small(&id)?;
                batch.delete(shard_key(&id));
                batch.delete(outboard_key(&id));
                batch.delete(body_key(&id));
                let uploader = self.forget_uploader(&id, &mut batch)?;
                self.db.write(batch)?;
                if let Some(peer) = uploader {
                    self.usage.removed(&peer, meta.len);
                }
                let mut a = self.accounting.lock().map_err(|_| poisoned())?;
                a.used = a.used.saturating_sub(meta.len);
                a.shards = a.shards.saturating_sub(1);
                drop(a);
                if !small {
                    let _ = fs::remove_file(self.path(&id));
                }
                n += 1;
            } else {
                self.db.write(batch)?;
            }
        }
        Ok(n)
    }

    /// The verified slice of `range` of a stored shard ([`cairn_proto::proof`]).
    /// The shard's outboard is made from its file at the first proof and
    /// kept; a file whose bytes no longer hash to the id answers
    /// [`ShardError::Damaged`]. Blocking.
    pub fn prove(&self, id: &ShardId, range: ByteRange) -> Result<Vec<u8>, ShardError> {
        let internal = |e: &dyn std::fmt::Display| {
            tracing::error!(shard = %id, error = %e, "cannot prove a shard");
            ShardError::Internal
        };
        let (meta, body) = self.open_shard(id).map_err(|e| internal(&e))?.ok_or(ShardError::NotFound(*id))?;
        let Some(range) = proof::proved_range(range, meta.len) else {
            return Err(ShardError::BadRange { offset: range.offset, len: range.len, total: meta.len });
        };
        let damaged = || {
            tracing::error!(shard = %id, "shard bytes no longer match the id");
            ShardError::Damaged(*id)
        };
        let outboard = match self.db.get(outboard_key(id)).map_err(|e| internal(&e))? {
            Some(o) => o,
            None => {
                let made = match &body {
                    Body::Small(b) => proof::outboard(b.as_slice(), meta.len),
                    Body::File(f) => proof::outboard(std::io::BufReader::new(f), meta.len),
                };
                let (root, o) = made.map_err(|e| internal(&e))?;
                if root != *id {
                    return Err(damaged());
                }
                // A cache: made again if lost, so the write is not synced.
                self.db.put(outboard_key(id), &o).map_err(|e| internal(&e))?;
                o
            }
        };
        let sliced = match &body {
            Body::Small(b) => proof::slice(b.as_slice(), id, meta.len, &outboard, range),
            Body::File(f) => proof::slice(f, id, meta.len, &outboard, range),
        };
        sliced.map_err(|e| match e {
            ProofError::Damaged => damaged(),
            e => internal(&e),
        })
    }

    /// Hashes every stored shard and compares with its id. Blocking; reads
    /// everything.
    pub fn check(&self) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();
        self.for_each_shard(|id, meta| {
            report.bytes += meta.len;
            let ok = match self.db.get_pinned(body_key(&id))? {
                Some(b) => id.matches(&b),
                None => fs::File::open(self.path(&id))
                    .and_then(|f| {
                        let mut h = blake3::Hasher::new();
                        h.update_reader(f)?;
                        Ok(h.finalize())
                    })
                    .map(|h| h.as_bytes() == &id.0)
                    .unwrap_or(false),
            };
            if ok {
                report.good += 1;
            } else {
                report.bad.push(id);
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// Locks the stripe of `id`.
    fn stripe(&self, id: &ShardId) -> Result<std::sync::MutexGuard<'_, ()>, ()> {
        self.stripes[stripe_of(id)].lock().map_err(|_| ())
    }

    /// Drops the head records last offered before `before` (Unix
    /// seconds): their owners stopped publishing them (a client publishes
    /// its heads at every commit and every renewal or repair walk).
    /// Records stored before offers were noted are kept. Returns how many
    /// went. Blocking.
    pub fn expire_records(&self, before: u64) -> Result<usize, Error> {
        let mut n = 0;
        for (at, id) in self.due(OFFERED_INDEX, before)? {
            let id = RecordId(id);
            let mut batch = WriteBatch::default();
            batch.delete(offered_index(at, &id));
            // Offered again since the scan: only the old index entry goes.
            // (An offer racing this check by microseconds, after a silence
            // of a whole TTL, can lose its record on this node; the
            // owner's next publish stores it again.)
            let current = self.db.get(offered_key(&id))?.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok());
            let gone = current.map(u64::from_le_bytes) == Some(at) && self.db.get_pinned(record_key(&id))?.is_some();
            if gone {
                batch.delete(offered_key(&id));
                batch.delete(record_key(&id));
            }
            self.db.write(batch)?;
            if gone {
                self.records.fetch_sub(1, Ordering::Relaxed);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Holds at most `max` head records: new ones beyond are refused.
    pub fn set_max_records(&self, max: usize) {
        self.max_records.store(max, Ordering::Relaxed);
    }

    /// Flushes memtables and the WAL; called at shutdown.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush_wal(true)?;
        self.db.flush()?;
        Ok(())
    }
}

/// Which of [`ShardStore::stripes`] guards `id`.
fn stripe_of(id: &ShardId) -> usize {
    usize::from(id.0[0]) % STRIPES
}

fn parse_hex_id(s: &str) -> Option<ShardId> {
    if s.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(ShardId(id))
}

impl cairn_net::store::RecordBackend for ShardStore {
    fn get(&self, id: &RecordId) -> Option<Vec<u8>> {
        self.db.get(record_key(id)).ok().flatten()
    }

    fn contains(&self, id: &RecordId) -> bool {
        matches!(self.db.get_pinned(record_key(id)), Ok(Some(_)))
    }

    fn put(&self, id: &RecordId, bytes: &[u8]) -> Result<(), cairn_net::store::BackendError> {
        let failed = |e: rocksdb::Error| cairn_net::store::BackendError::Failed(Box::new(e));
        let existed = self.db.get_pinned(record_key(id)).map_err(failed)?.is_some();
        let max = self.max_records.load(Ordering::Relaxed);
        if !existed && self.records.load(Ordering::Relaxed) >= max {
            return Err(cairn_net::store::BackendError::Full { max });
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_opt(record_key(id), bytes, &wo).map_err(failed)?;
        if !existed {
            self.records.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn remove(&self, id: &RecordId) {
        let held = matches!(self.db.get_pinned(record_key(id)), Ok(Some(_)));
        if held && self.db.delete(record_key(id)).is_ok() {
            self.records.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn touch(&self, id: &RecordId, now: u64) {
        // Not synced: a lost touch only makes a record look older.
        let mut batch = WriteBatch::default();
        if let Ok(Some(v)) = self.db.get(offered_key(id))
            && let Ok(old) = <[u8; 8]>::try_from(v.as_slice())
        {
            batch.delete(offered_index(u64::from_le_bytes(old), id));
        }
        batch.put(offered_key(id), now.to_le_bytes());
        batch.put(offered_index(now, id), []);
        if let Err(e) = self.db.write(batch) {
            tracing::debug!(error = %e, "cannot note a record offer");
        }
    }

    fn count(&self) -> usize {
        self.records.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &ShardStore, bytes: &[u8], owner: [u8; 32]) -> ShardId {
        let id = ShardId::of(bytes);
        let r = store.reserve(&id, bytes.len() as u64, b"peer").expect("space");
        let tmp = store.temp_path();
        fs::write(&tmp, bytes).expect("write");
        store.commit(&id, NewBody::File(&tmp), bytes.len() as u64, owner, u64::MAX, r).expect("commit");
        id
    }

    #[test]
    fn capacity_owners_and_recovery() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = ShardStore::open(dir.path(), 100, 60).expect("open");
        let token = [1u8; 32];
        let owner = owner_for(&token);
        let a = put(&store, &[7u8; 60], owner);
        assert!(matches!(store.reserve(&ShardId([9; 32]), 61, b"peer"), Err(ShardError::TooLarge { .. })));
        assert!(matches!(
            store.reserve(&ShardId([9; 32]), 41, b"peer"),
            Err(ShardError::NoSpace { needed: 41, available: 40 })
        ));
        // The same shard again needs no space and adds an owner.
        let other = [2u8; 32];
        put(&store, &[7u8; 60], owner_for(&other));
        assert_eq!(store.stats().used, 60);
        assert!(matches!(store.delete(&a, &[3; 32]), Err(ShardError::BadToken(_))));
        store.delete(&a, &token).expect("first owner");
        assert_eq!(store.stats().shards, 1);
        // Crash leftovers: a temp file, an orphan file, metadata without a file.
        fs::write(store.temp_path(), b"partial").expect("tmp");
        let orphan = store.path(&ShardId::of(b"orphan"));
        fs::create_dir_all(orphan.parent().expect("dir")).expect("mkdir");
        fs::write(&orphan, b"orphan").expect("orphan");
        let lost = put(&store, &[5u8; 10], owner);
        fs::remove_file(store.path(&lost)).expect("lose it");
        drop(store);
        let (store, rec) = ShardStore::open(dir.path(), 100, 60).expect("reopen");
        assert_eq!(rec, Recovery { temp_files: 1, orphan_files: 1, lost_shards: 1 });
        assert_eq!(store.stats().used, 60);
        let report = store.check().expect("check");
        assert_eq!((report.good, report.bad.len(), report.bytes), (1, 0, 60));
        store.delete(&a, &other).expect("last owner");
        assert_eq!(store.stats().used, 0);
        assert!(!store.path(&a).exists());
    }

    fn put_small(store: &ShardStore, bytes: &[u8], owner: [u8; 32], expires_at: u64) -> ShardId {
        let id = ShardId::of(bytes);
        let r = store.reserve(&id, bytes.len() as u64, b"peer").expect("space");
        store.commit(&id, NewBody::Small(bytes), bytes.len() as u64, owner, expires_at, r).expect("commit");
        id
    }

    fn read(store: &ShardStore, id: &ShardId) -> Option<Vec<u8>> {
        let (meta, body) = store.open_shard(id).expect("open")?;
        let bytes = match body {
            Body::Small(b) => b,
            Body::File(f) => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut &f, &mut v).expect("read");
                v
            }
        };
        assert_eq!(bytes.len() as u64, meta.len);
        Some(bytes)
    }

    #[test]
    fn small_shards_live_in_the_database_and_behave_as_files_do() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = ShardStore::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        assert!(store.keeps_small(DEFAULT_SMALL_SHARD) && !store.keeps_small(DEFAULT_SMALL_SHARD + 1));
        let token = [1u8; 32];
        let owner = owner_for(&token);
        let small: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let id = put_small(&store, &small, owner, u64::MAX);
        let big = put(&store, &[9u8; 200_000], owner);
        // No file for the small one; both read back.
        assert!(!store.path(&id).exists() && store.path(&big).exists());
        assert_eq!(read(&store, &id).as_deref(), Some(small.as_slice()));
        assert_eq!(read(&store, &big).map(|b| b.len()), Some(200_000));
        // A second owner of a small shard adds no bytes.
        let other = [2u8; 32];
        put_small(&store, &small, owner_for(&other), u64::MAX);
        assert_eq!((store.stats().used, store.stats().shards), (270_000, 2));
        // Proofs and checks read it from the database.
        let at = ByteRange { offset: 65_000, len: 100 };
        let slice = store.prove(&id, at).expect("prove");
        proof::verify(&id, small.len() as u64, at, &slice).expect("verifies");
        assert_eq!(store.check().expect("check").good, 2);
        // Kept across a restart, counted once.
        drop(store);
        let (store, rec) = ShardStore::open(dir.path(), 1 << 20, 1 << 20).expect("reopen");
        assert_eq!(rec, Recovery::default());
        assert_eq!((store.stats().used, store.stats().shards), (270_000, 2));
        // Rotten bytes in the database are found as a rotten file is.
        let mut rotten = small.clone();
        rotten[10] ^= 1;
        store.db.put(body_key(&id), &rotten).expect("rot");
        store.db.delete(outboard_key(&id)).expect("drop the outboard");
        assert_eq!(store.prove(&id, at), Err(ShardError::Damaged(id)));
        assert_eq!(store.check().expect("check").bad, vec![id]);
        store.db.put(body_key(&id), &small).expect("mend");
        // The last owner's delete removes the bytes; a lease's end too.
        store.delete(&id, &token).expect("first owner");
        assert!(read(&store, &id).is_some());
        store.delete(&id, &other).expect("last owner");
        assert!(read(&store, &id).is_none());
        assert!(store.db.get(body_key(&id)).expect("get").is_none());
        let brief = put_small(&store, b"brief", owner, 50);
        assert_eq!(store.collect_expired(100).expect("collect"), 1);
        assert!(read(&store, &brief).is_none() && store.db.get(body_key(&brief)).expect("get").is_none());
        assert_eq!((store.stats().used, store.stats().shards), (200_000, 1));
    }

    #[test]
    fn concurrent_commits_of_one_shard_count_it_once_and_keep_every_owner() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = ShardStore::open(dir.path(), 10_000, 100).expect("open");
        let store = Arc::new(store);
        let bytes = [3u8; 100];
        let id = ShardId::of(&bytes);
        // Reserve before any commit, as racing puts do: each sees no shard
        // yet and reserves its bytes.
        let puts: Vec<_> = (0..8u8)
            .map(|i| {
                let r = store.reserve(&id, 100, b"peer").expect("space");
                let tmp = store.temp_path();
                fs::write(&tmp, bytes).expect("write");
                (i, r, tmp)
            })
            .collect();
        let other = put(&store, &[4u8; 50], [9; 32]);
        std::thread::scope(|s| {
            for (i, r, tmp) in puts {
                let store = Arc::clone(&store);
                let owner = owner_for(&[i; 32]);
                s.spawn(move || store.commit(&id, NewBody::File(&tmp), 100, owner, u64::MAX, r).expect("commit"));
            }
        });
        let meta = store.meta(&id).expect("meta").expect("stored");
        assert_eq!(meta.owners.len(), 8);
        let stats = store.stats();
        assert_eq!((stats.used, stats.shards), (150, 2));
        assert!(fs::read_dir(&store.tmp_dir).expect("tmp dir").next().is_none(), "temp files left");
        drop(store);
        let (store, rec) = ShardStore::open(dir.path(), 10_000, 100).expect("reopen");
        assert_eq!(rec, Recovery::default());
        assert_eq!(store.stats().used, 150);
        // Every owner but the last leaves the bytes in place.
        for i in 0..7u8 {
            store.delete(&id, &[i; 32]).expect("an owner's token");
            assert_eq!(store.stats().used, 150);
        }
        store.delete(&other, &[0; 32]).expect_err("not its token");
        store.delete(&id, &[7; 32]).expect("the last owner");
        assert_eq!(store.stats().used, 50);
        assert!(!store.path(&id).exists());
    }

    /// The owner hash a client sends for a delete token.
    fn owner_for(delete_token: &[u8; 32]) -> [u8; 32] {
        owner_of(&renew_token_of(delete_token))
    }

    #[test]
    fn renewals_need_an_owners_renew_token_and_never_shorten_a_lease() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = ShardStore::open(dir.path(), 1000, 100).expect("open");
        let token = [5u8; 32];
        let id = ShardId::of(b"renew me");
        let r = store.reserve(&id, 8, b"peer").expect("space");
        let tmp = store.temp_path();
        fs::write(&tmp, b"renew me").expect("write");
        store.commit(&id, NewBody::File(&tmp), 8, owner_for(&token), 50, r).expect("commit");
        let renew = renew_token_of(&token);
        let missing = ShardId::of(b"never stored");
        let got = store.renew(&[(id, renew), (missing, renew), (id, token)], 100).expect("renew");
        // The delete token itself is not a renew token.
        assert_eq!(got, vec![Renewal::Until(100), Renewal::NotFound, Renewal::BadToken]);
        assert_eq!(store.renew(&[(id, token)], 200).expect("renew"), vec![Renewal::BadToken]);
        assert_eq!(store.renew(&[(id, renew)], 70).expect("renew"), vec![Renewal::Until(100)]);
        // The old lease entry went: nothing is collected at its end.
        assert_eq!(store.collect_expired(60).expect("gc"), 0);
        // A renew token cannot delete; the delete token can.
        assert_eq!(store.delete(&id, &renew), Err(ShardError::BadToken(id)));
        drop(store);
        let (store, _) = ShardStore::open(dir.path(), 1000, 100).expect("reopen");
        assert_eq!(store.meta(&id).expect("meta").expect("kept").expires_at, 100);
        assert_eq!(store.collect_expired(101).expect("gc"), 1);
        assert_eq!(store.stats().used, 0);
    }

    #[test]
    fn records_not_offered_again_within_the_ttl_are_dropped() {
        use cairn_net::store::RecordBackend;
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = ShardStore::open(dir.path(), 1000, 100).expect("open");
        let (old, fresh, legacy) = (RecordId([1; 32]), RecordId([2; 32]), RecordId([3; 32]));
        for id in [&old, &fresh, &legacy] {
            store.put(id, b"record").expect("put");
        }
        store.touch(&old, 100);
        store.touch(&fresh, 100);
        store.touch(&fresh, 500);
        assert_eq!(store.expire_records(100).expect("expire"), 0);
        assert_eq!(store.expire_records(400).expect("expire"), 1);
        assert!(store.get(&old).is_none());
        assert!(store.get(&fresh).is_some(), "offered again at 500");
        assert!(store.get(&legacy).is_some(), "never offered: kept");
        assert_eq!(store.count(), 2);
        drop(store);
        let (store, _) = ShardStore::open(dir.path(), 1000, 100).expect("reopen");
        assert_eq!(store.count(), 2, "the count survives a restart");
        assert_eq!(store.expire_records(501).expect("expire"), 1);
        assert_eq!(store.count(), 1);
    }

    #[test]
    fn expired_leases_are_collected() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = ShardStore::open(dir.path(), 1000, 100).expect("open");
        let id = ShardId::of(b"short lease");
        let r = store.reserve(&id, 11, b"peer").expect("space");
        let tmp = store.temp_path();
        fs::write(&tmp, b"short lease").expect("write");
        store.commit(&id, NewBody::File(&tmp), 11, [0; 32], 50, r).expect("commit");
        assert_eq!(store.collect_expired(49).expect("gc"), 0);
        assert_eq!(store.collect_expired(51).expect("gc"), 1);
        assert_eq!(store.stats().used, 0);
        assert!(store.meta(&id).expect("meta").is_none());
    }
}
