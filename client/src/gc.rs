//! Data shared between names, and its collection.
//!
//! Copies and renames share data versions, so deleting or overwriting a
//! name cannot delete its data at once. Instead, in the same commit that
//! replaces or removes an entry, the tree's [`Retire`] hook ([`Retirer`])
//! queues the old entry's data versions under `\0g/<time>/<random>`. A
//! sweep ([`plan`]) takes the queue entries older than the delay, walks
//! every live entry of the bucket for the versions still in use, deletes
//! from the nodes the queued versions that nothing uses, and drops the
//! queue entries.
//!
//! Why a reachability sweep and not reference counts: counts must be
//! exact across compare-and-swap retries and merges of diverged heads,
//! where a lost or doubled increment deletes live data; a sweep reads the
//! truth (the index itself) and cannot drift. It costs one walk of the
//! index per sweep, not per delete, and the walk is served from the local
//! page cache. The delay (`ClientConfig::gc_delay`, 10 minutes, as
//! Garage's) gives a writer that copied from an older view time to commit.

use std::collections::HashSet;

use cairn_proto::ObjectVersionId;
use cairn_proto::manifest::ObjectManifest;

use crate::entry::Body;
use crate::formats::{self, Garbage};
use crate::index::{Op, Value};
use crate::tree::Retire;

/// Keys the index keeps for itself start with NUL (no object key may).
pub const INTERNAL: char = '\0';
/// The garbage queue.
pub const GARBAGE_PREFIX: &str = "\0g/";

/// Queues the data of replaced entries (see the module docs).
#[derive(Debug)]
pub struct Retirer;

impl Retire for Retirer {
    fn retire(&self, key: &str, old: &Value, now_ms: u64) -> Option<Op> {
        if key.starts_with(GARBAGE_PREFIX) {
            return None;
        }
        let entry = formats::decode_entry(old.live()?).ok()?;
        let Body::Stored(s) = entry.body else { return None };
        if s.data.is_empty() {
            return None;
        }
        Some(Op::put(garbage_key(now_ms, rand::random()), formats::encode_garbage(&Garbage { data: s.data })))
    }
}

/// The queue key of garbage retired at `now_ms`.
pub fn garbage_key(now_ms: u64, nonce: u64) -> String {
    format!("{GARBAGE_PREFIX}{now_ms:016x}/{nonce:016x}")
}

/// When a queue entry was retired.
pub fn garbage_time(key: &str) -> Option<u64> {
    let hex = key.strip_prefix(GARBAGE_PREFIX)?.get(..16)?;
    u64::from_str_radix(hex, 16).ok()
}

/// What a sweep does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Data versions to delete from the nodes (each once).
    pub delete: Vec<ObjectManifest>,
    /// Queue entries to drop.
    pub drop: Vec<String>,
}

/// Decides a sweep: of the queue entries `due` (already old enough), the
/// versions that no live entry uses (`used`) are deleted; every due entry
/// is dropped.
pub fn plan(due: Vec<(String, Garbage)>, used: &HashSet<ObjectVersionId>) -> Sweep {
    let mut sweep = Sweep::default();
    let mut seen = HashSet::new();
    for (key, g) in due {
        for m in g.data {
            if !used.contains(&m.version) && seen.insert(m.version) {
                sweep.delete.push(m);
            }
        }
        sweep.drop.push(key);
    }
    sweep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::fake;
    use crate::entry::{Entry, Stored};
    use crate::index::Stamp;

    #[test]
    fn replaced_stored_entries_are_queued_and_inline_ones_are_not() {
        let stored = Entry::file(Body::Stored(Stored::whole(fake(1, 0), 0)), 0);
        let v = |e: &Entry| Value { stamp: Stamp::default(), data: Some(formats::encode_entry(e).into()) };
        // A zero-length stored body holds no data.
        assert_eq!(Retirer.retire("k", &v(&stored), 5), None);
        assert_eq!(Retirer.retire("k", &v(&Entry::file(Body::Inline(vec![1]), 0)), 5), None);
        let key = garbage_key(0x1234, 9);
        assert_eq!(garbage_time(&key), Some(0x1234));
        assert!(key.starts_with(GARBAGE_PREFIX));
        assert_eq!(garbage_time("a/b"), None);
    }

    #[test]
    fn a_sweep_deletes_only_what_nothing_uses() {
        let g = |tags: &[u8]| Garbage { data: tags.iter().map(|&t| fake(t, 1)).collect() };
        let used: HashSet<_> = [ObjectVersionId([2; 16])].into_iter().collect();
        let sweep = plan(vec![("a".into(), g(&[1, 2])), ("b".into(), g(&[1, 3]))], &used);
        let deleted: Vec<u8> = sweep.delete.iter().map(|m| m.version.0[0]).collect();
        assert_eq!(deleted, vec![1, 3], "2 is used; 1 is deleted once");
        assert_eq!(sweep.drop, vec!["a".to_string(), "b".to_string()]);
    }
}

/// A bucket's sweep settings and state.
#[derive(Debug)]
pub struct Collector {
    /// How old a queue entry must be before its data may go.
    pub delay: std::time::Duration,
    /// A sweep is running (one at a time per bucket handle).
    pub running: std::sync::atomic::AtomicBool,
    /// Another sweep was asked for while one ran.
    pub requested: std::sync::atomic::AtomicBool,
    /// A sweep is set for when queued data becomes due.
    pub timer: std::sync::atomic::AtomicBool,
}

impl Collector {
    /// A collector that waits `delay`.
    pub fn new(delay: std::time::Duration) -> std::sync::Arc<Self> {
        use std::sync::atomic::AtomicBool;
        std::sync::Arc::new(Self {
            delay,
            running: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            timer: AtomicBool::new(false),
        })
    }
}
