//! Graceful exit. `cairn-node exit` writes `DATA_DIR/leaving` (the Unix
//! second the drain ends); the running node reads it within
//! [`WATCH_EVERY`] (and at start, so an exit survives a restart). From
//! then on the node refuses new shards with
//! [`ShardError::Leaving`](cairn_proto::shard::ShardError::Leaving), says
//! it is leaving in its answer to `Status` (repairers then move its shards
//! elsewhere and delete its copies), keeps serving what it holds, and
//! stops by itself once it holds nothing or the drain ends ([`drained`]).
//! A `kill` without exit is ordinary churn, which repair handles too.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;

/// The file `cairn-node exit` writes in the data dir.
pub const LEAVING_FILE: &str = "leaving";
/// How often the running node looks at the file and at its progress.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Whether a leaving node may stop: it holds nothing any more, or its
/// drain period is over.
pub fn drained(until: u64, now: u64, shards: u64) -> bool {
    shards == 0 || now >= until
}

/// Asks the node in `data_dir` (running or not) to leave, draining until
/// `until` (Unix seconds).
pub fn request(data_dir: &Path, until: u64) -> Result<(), Error> {
    let tmp = data_dir.join(format!(".{LEAVING_FILE}.tmp"));
    std::fs::write(&tmp, format!("{until}\n")).map_err(Error::io(&tmp))?;
    let path = data_dir.join(LEAVING_FILE);
    std::fs::rename(&tmp, &path).map_err(Error::io(path))
}

/// Takes an exit request back; `false` if there was none.
pub fn cancel(data_dir: &Path) -> Result<bool, Error> {
    let path = data_dir.join(LEAVING_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// The drain end requested for `data_dir`, if any.
pub fn read(data_dir: &Path) -> Result<Option<u64>, Error> {
    let path = data_dir.join(LEAVING_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| Error::Config {
            path,
            reason: "not a Unix time; remove it, or run `cairn-node exit` again".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Parses a drain period: `30s`, `90m`, `12h`, `7d`.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}`: write e.g. 7d, 12h, 90m or 30s"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit is one of s, m, h, d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// What the running node knows of its exit.
#[derive(Debug, Default)]
pub struct Leaving {
    /// Drain end (Unix seconds); 0 while staying.
    until: AtomicU64,
    /// Shards held when the exit was first seen (for progress).
    at_start: AtomicU64,
}

impl Leaving {
    /// The drain end, while leaving.
    pub fn until(&self) -> Option<u64> {
        Some(self.until.load(Ordering::Relaxed)).filter(|&u| u > 0)
    }

    /// Shards held when the exit began.
    pub fn shards_at_start(&self) -> u64 {
        self.at_start.load(Ordering::Relaxed)
    }

    /// Takes in what the file says, with `shards` held now. Returns whether
    /// this changed the standing (to log it).
    pub fn update(&self, requested: Option<u64>, shards: u64) -> bool {
        let new = requested.unwrap_or(0);
        let old = self.until.swap(new, Ordering::Relaxed);
        if old == 0 && new > 0 {
            self.at_start.store(shards, Ordering::Relaxed);
        }
        old != new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_drained_when_empty_or_out_of_time() {
        assert!(!drained(100, 50, 3));
        assert!(drained(100, 50, 0));
        assert!(drained(100, 100, 3));
    }

    #[test]
    fn requests_round_trip_through_the_file_and_can_be_taken_back() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(read(dir.path()).expect("read"), None);
        request(dir.path(), 1234).expect("request");
        assert_eq!(read(dir.path()).expect("read"), Some(1234));
        assert!(cancel(dir.path()).expect("cancel"));
        assert!(!cancel(dir.path()).expect("cancel again"));
        std::fs::write(dir.path().join(LEAVING_FILE), "soon").expect("write");
        assert!(read(dir.path()).expect_err("garbage").to_string().contains("cairn-node exit"));
    }

    #[test]
    fn the_state_remembers_where_the_drain_started() {
        let l = Leaving::default();
        assert_eq!(l.until(), None);
        assert!(l.update(Some(500), 40));
        assert!(!l.update(Some(500), 30), "unchanged");
        assert_eq!((l.until(), l.shards_at_start()), (Some(500), 40));
        assert!(l.update(None, 30), "taken back");
        assert_eq!(l.until(), None);
    }

    #[test]
    fn periods_parse_with_units() {
        assert_eq!(parse_period("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_period("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_period("30"), Ok(Duration::from_secs(30)));
        assert!(parse_period("a week").is_err());
        assert!(parse_period("3w").is_err());
    }
}
