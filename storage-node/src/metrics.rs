//! Counters, shown at `/metrics` (Prometheus text format) and on the dashboard.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_proto::shard::{NodeStats, ShardError};

/// Error kinds, in the order of [`ShardError`]'s variants.
pub const ERROR_KINDS: [&str; 14] = [
    "not_found",
    "hash_mismatch",
    "no_space",
    "too_large",
    "bad_token",
    "bad_range",
    "rate_limited",
    "malformed",
    "internal",
    "head_refused",
    "records_full",
    "damaged",
    "leaving",
    "peer_quota",
];

/// Counters of one node since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Shards stored.
    pub puts: AtomicU64,
    /// Get requests served.
    pub gets: AtomicU64,
    /// Shards deleted.
    pub deletes: AtomicU64,
    /// Shard leases a renew request named (renewed or not).
    pub renewals: AtomicU64,
    /// Bytes received in shard bodies.
    pub bytes_in: AtomicU64,
    /// Bytes sent in shard bodies.
    pub bytes_out: AtomicU64,
    /// Streams being served now.
    pub active_streams: AtomicU64,
    /// Shards removed because their lease ended.
    pub expired: AtomicU64,
    /// Head-record reads answered.
    pub head_gets: AtomicU64,
    /// Head-record offers answered (stored or refused).
    pub head_puts: AtomicU64,
    /// Verified slices sent (proofs of possession).
    pub proofs: AtomicU64,
    /// Streams dropped at their request deadline.
    pub deadlines: AtomicU64,
    errors: [AtomicU64; 14],
}

/// The index of an error kind in [`ERROR_KINDS`].
pub fn error_kind(e: &ShardError) -> usize {
    match e {
        ShardError::NotFound(_) => 0,
        ShardError::HashMismatch(_) => 1,
        ShardError::NoSpace { .. } => 2,
        ShardError::TooLarge { .. } => 3,
        ShardError::BadToken(_) => 4,
        ShardError::BadRange { .. } => 5,
        ShardError::RateLimited { .. } => 6,
        ShardError::Malformed => 7,
        ShardError::Internal => 8,
        ShardError::HeadRefused(_) => 9,
        ShardError::RecordsFull { .. } => 10,
        ShardError::Damaged(_) => 11,
        ShardError::Leaving => 12,
        ShardError::PeerQuota { .. } => 13,
    }
}

impl Metrics {
    /// Counts an error answered to a peer.
    pub fn error(&self, e: &ShardError) {
        if let Some(c) = self.errors.get(error_kind(e)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Errors of each kind so far.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        ERROR_KINDS.iter().zip(&self.errors).map(|(k, c)| (*k, c.load(Ordering::Relaxed))).collect()
    }

    /// The Prometheus text exposition.
    pub fn render(
        &self,
        stats: &NodeStats,
        peers: usize,
        records: usize,
        uptime_secs: u64,
        leaving_until: Option<u64>,
    ) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                s,
                "# HELP cairn_node_{name} {help}\n# TYPE cairn_node_{name} {kind}\ncairn_node_{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "capacity_bytes",
            "gauge",
            "Bytes of shard data the node can hold: what the operator allows, or less if the disk has less room.",
            stats.capacity,
        );
        metric("used_bytes", "gauge", "Bytes of shard data stored.", stats.used);
        metric("shards", "gauge", "Shards stored.", stats.shards);
        metric("records", "gauge", "DHT head records stored.", records as u64);
        metric("peers", "gauge", "Peers connected.", peers as u64);
        metric(
            "leaving",
            "gauge",
            "1 while the node is leaving the network (cairn-node exit).",
            u64::from(leaving_until.is_some()),
        );
        metric(
            "leaving_until_seconds",
            "gauge",
            "When the drain ends (Unix seconds; 0 while staying).",
            leaving_until.unwrap_or(0),
        );
        metric("active_streams", "gauge", "Shard-protocol streams being served.", get(&self.active_streams));
        metric("uptime_seconds", "counter", "Seconds since start.", uptime_secs);
        metric("puts_total", "counter", "Shards stored.", get(&self.puts));
        metric("gets_total", "counter", "Get requests served.", get(&self.gets));
        metric("deletes_total", "counter", "Shards deleted by their owners.", get(&self.deletes));
        metric("proofs_total", "counter", "Verified slices sent (proofs of possession).", get(&self.proofs));
        metric("deadlines_total", "counter", "Streams dropped at their request deadline.", get(&self.deadlines));
        metric("renewals_total", "counter", "Shard leases named by renew requests.", get(&self.renewals));
        metric("expired_total", "counter", "Shards collected after their lease ended.", get(&self.expired));
        metric("head_gets_total", "counter", "Head-record reads answered.", get(&self.head_gets));
        metric("head_puts_total", "counter", "Head-record offers answered.", get(&self.head_puts));
        metric("bytes_in_total", "counter", "Shard bytes received.", get(&self.bytes_in));
        metric("bytes_out_total", "counter", "Shard bytes sent.", get(&self.bytes_out));
        let _ = writeln!(
            s,
            "# HELP cairn_node_errors_total Requests refused, by kind.\n# TYPE cairn_node_errors_total counter"
        );
        for (kind, n) in self.errors() {
            let _ = writeln!(s, "cairn_node_errors_total{{kind=\"{kind}\"}} {n}");
        }
        s
    }
}
