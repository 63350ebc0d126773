//! The client's local cache in RocksDB: sealed index pages (by id, so they
//! never go stale) and the storage nodes seen lately, so that `ls` and
//! `stat` are quick and a client can find nodes when its bootstrap
//! addresses are gone. The network copy is always the truth.
//!
//! Keys: `'p' ‖ page id → sealed page`, `'m' ‖ peer id → addresses and
//! health` ([`crate::formats::NodeMemo`]),
//! `'h' ‖ record id → the newest head seen` ([`crate::formats::Mark`]),
//! `'r' ‖ record id → the record's closest nodes` ([`crate::formats::RecordPeers`]),
//! `'l' ‖ page id → u64 LE`: until when every lease a leaf page covers
//! was last renewed ([`crate::renew`]).
//! Pages stay sealed on disk: the cache holds nothing a node does not.

use std::path::{Path, PathBuf};

use cairn_proto::{RecordId, ShardId};

use crate::formats::{self, Mark, NodeMemo, RecordPeers};
use rocksdb::{DB, Direction, IteratorMode, Options};

/// Pages above this size are not cached.
const MAX_CACHED_PAGE: usize = 4 * 1024 * 1024;

/// Sibling caches tried when the cache is held by another process.
pub const SPARE_SLOTS: usize = 3;

/// An open cache. Reads and writes are small; callers may use it from async
/// code (RocksDB point operations on a local SSD take microseconds).
pub struct Cache {
    db: DB,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("path", &self.db.path()).finish()
    }
}

fn page_key(id: &ShardId) -> [u8; 33] {
    let mut k = [b'p'; 33];
    k[1..].copy_from_slice(&id.0);
    k
}

fn lease_key(page: &ShardId) -> [u8; 33] {
    let mut k = [b'l'; 33];
    k[1..].copy_from_slice(&page.0);
    k
}

fn mark_key(record: &RecordId) -> [u8; 33] {
    record_key(b'h', record)
}

fn record_key(kind: u8, record: &RecordId) -> [u8; 33] {
    let mut k = [kind; 33];
    k[1..].copy_from_slice(&record.0);
    k
}

/// Why the cache cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Its directory cannot be made.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// RocksDB refused (another process has it open, or it is damaged).
    #[error(transparent)]
    Open(#[from] rocksdb::Error),
}

impl Cache {
    /// Opens (or creates) the cache in `dir`. Fails if another process has
    /// it open; callers then go on without a cache.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Create { path: dir.into(), source })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        // A CLI call opens the cache once per process.
        opts.set_skip_stats_update_on_db_open(true);
        let db = DB::open(&opts, dir)?;
        Ok(Self { db })
    }

    /// Opens the cache in `dir`, or, when it cannot be opened (above all
    /// because another process holds it: a gateway or a mount beside CLI
    /// calls on the same config), the first of up to [`SPARE_SLOTS`]
    /// siblings (`dir.1`, `dir.2`, …) that opens, so that each process
    /// keeps its memory of nodes and pages; why `dir` did not open is
    /// logged. Returns the cache and the directory it opened; the first
    /// error if none opens.
    pub fn open_free(dir: &Path) -> Result<(Self, PathBuf), CacheError> {
        let first = match Self::open(dir) {
            Ok(c) => return Ok((c, dir.to_path_buf())),
            Err(e) => e,
        };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "cache".into());
        for slot in 1..=SPARE_SLOTS {
            let spare = dir.with_file_name(format!("{name}.{slot}"));
            if let Ok(c) = Self::open(&spare) {
                tracing::info!(error = %first, dir = %spare.display(), "the cache is busy; using a spare one");
                return Ok((c, spare));
            }
        }
        Err(first)
    }

    /// A sealed page, if cached and still matching its id.
    pub fn page(&self, id: &ShardId) -> Option<Vec<u8>> {
        let bytes = self.db.get(page_key(id)).ok().flatten()?;
        id.matches(&bytes).then_some(bytes)
    }

    /// Keeps a sealed page.
    pub fn put_page(&self, id: &ShardId, sealed: &[u8]) {
        if sealed.len() <= MAX_CACHED_PAGE
            && let Err(e) = self.db.put(page_key(id), sealed)
        {
            tracing::debug!(error = %e, "cache write failed");
        }
    }

    /// The newest head seen of a tree.
    pub fn mark(&self, record: &RecordId) -> Option<Mark> {
        let bytes = self.db.get(mark_key(record)).ok().flatten()?;
        formats::decode_mark(&bytes).ok()
    }

    /// Remembers the newest head seen of a tree (never lowers it).
    pub fn put_mark(&self, record: &RecordId, mark: &Mark) {
        if self.mark(record).is_some_and(|m| m.seq > mark.seq) {
            return;
        }
        if let Err(e) = self.db.put(mark_key(record), formats::encode_mark(mark)) {
            tracing::debug!(error = %e, "cache write failed");
        }
    }

    /// The closest nodes of a head record, as last looked up.
    pub fn record_peers(&self, record: &RecordId) -> Option<RecordPeers> {
        let bytes = self.db.get(record_key(b'r', record)).ok().flatten()?;
        formats::decode_record_peers(&bytes).ok()
    }

    /// Remembers the closest nodes of a head record.
    pub fn put_record_peers(&self, record: &RecordId, peers: &RecordPeers) {
        if let Err(e) = self.db.put(record_key(b'r', record), formats::encode_record_peers(peers)) {
            tracing::debug!(error = %e, "cache write failed");
        }
    }

    /// Until when every lease a leaf page covers was last renewed.
    pub fn renewed_until(&self, page: &ShardId) -> Option<u64> {
        let bytes = self.db.get(lease_key(page)).ok().flatten()?;
        Some(u64::from_le_bytes(bytes.as_slice().try_into().ok()?))
    }

    /// Remembers until when every lease a leaf page covers runs.
    pub fn put_renewed_until(&self, page: &ShardId, until: u64) {
        if let Err(e) = self.db.put(lease_key(page), until.to_le_bytes()) {
            tracing::debug!(error = %e, "cache write failed");
        }
    }

    /// Remembers a storage node.
    pub fn put_node(&self, peer: &[u8], memo: &NodeMemo) {
        let mut k = Vec::with_capacity(1 + peer.len());
        k.push(b'm');
        k.extend_from_slice(peer);
        if let Err(e) = self.db.put(k, formats::encode_node(memo)) {
            tracing::debug!(error = %e, "cache write failed");
        }
    }

    /// The storage nodes remembered: `(peer id bytes, memo)`.
    pub fn nodes(&self) -> Vec<(Vec<u8>, NodeMemo)> {
        self.db
            .iterator(IteratorMode::From(b"m", Direction::Forward))
            .map_while(Result::ok)
            .take_while(|(k, _)| k.first() == Some(&b'm'))
            .filter_map(|(k, v)| Some((k[1..].to_vec(), formats::decode_node(&v).ok()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_cache_gives_way_to_a_spare_one() {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("cache");
        let (first, at) = Cache::open_free(&dir).expect("open");
        assert_eq!(at, dir);
        let (second, at) = Cache::open_free(&dir).expect("a spare");
        assert_eq!(at, top.path().join("cache.1"));
        let held: Vec<Cache> = (2..=SPARE_SLOTS).map(|_| Cache::open_free(&dir).expect("a spare").0).collect();
        assert!(Cache::open_free(&dir).is_err(), "every slot is held");
        drop((first, second, held));
        assert_eq!(Cache::open_free(&dir).expect("free again").1, dir);
    }

    #[test]
    fn pages_are_checked_against_their_id_and_nodes_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        let page = b"sealed page".to_vec();
        let id = ShardId::of(&page);
        cache.put_page(&id, &page);
        assert_eq!(cache.page(&id), Some(page));
        // A page stored under the wrong id is never returned.
        let other = ShardId([9; 32]);
        cache.put_page(&other, b"not it");
        assert_eq!(cache.page(&other), None);
        let memo = NodeMemo { addrs: vec!["/ip4/127.0.0.1/udp/1/quic-v1".into()], down_until_ms: Some(7) };
        cache.put_node(b"peer-a", &memo);
        assert_eq!(cache.nodes(), vec![(b"peer-a".to_vec(), memo)]);
        let rec = RecordId([1; 32]);
        assert_eq!(cache.mark(&rec), None);
        cache.put_mark(&rec, &Mark { seq: 5, root: None });
        cache.put_mark(&rec, &Mark { seq: 3, root: None });
        assert_eq!(cache.mark(&rec).map(|m| m.seq), Some(5), "a mark never goes down");
        let peers = RecordPeers { found_ms: 9, peers: vec![b"peer-a".to_vec()] };
        assert_eq!(cache.record_peers(&rec), None);
        cache.put_record_peers(&rec, &peers);
        assert_eq!(cache.record_peers(&rec), Some(peers));
        // A second open of the same directory is refused, not corrupted.
        assert!(Cache::open(dir.path()).is_err());
    }
}
