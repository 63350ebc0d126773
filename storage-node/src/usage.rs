//! Usage accounting: what each peer uses of this node (bytes received and
//! sent, requests, and bytes stored × time), and the node's space and
//! traffic over the last day and month, for the dashboard, `/metrics` and
//! the peers themselves (`Request::Usage`).
//!
//! A [`Ledger`] is plain state: the service records each request, a tick
//! every minute integrates stored bytes over time and fills the history,
//! and the node keeps it in RocksDB (one value, written at each tick and
//! at shutdown), so it survives restarts. It holds at most
//! [`MAX_PEERS`] peers: past that, the least active peer that stores
//! nothing is dropped.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cairn_proto::codec;
use cairn_proto::shard::PeerUse;
use serde::{Deserialize, Serialize};

/// How often stored bytes are integrated and the ledger saved.
pub const TICK: Duration = Duration::from_secs(60);
/// Peers listed in `/metrics` and on the dashboard.
pub const TOP: usize = 10;
/// Most peers a ledger keeps.
pub const MAX_PEERS: usize = 10_000;
/// Seconds per slot of the day's history (5 minutes: 288 slots).
pub const DAY_SLOT: u64 = 300;
/// Slots of the day's history.
pub const DAY_SLOTS: usize = 288;
/// Seconds per slot of the month's history (a day: 30 slots).
pub const MONTH_SLOT: u64 = 86_400;
/// Slots of the month's history.
pub const MONTH_SLOTS: usize = 30;
const LEDGER_V1: u8 = 1;
/// Largest encoded ledger accepted at start.
const MAX_LEDGER: usize = 64 << 20;

/// One slot of history: space used at its end, traffic within it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Which slot (Unix seconds / slot length).
    pub slot: u64,
    /// Bytes stored.
    pub used: u64,
    /// Bytes received.
    pub received: u64,
    /// Bytes sent.
    pub sent: u64,
}

/// What the node knows of its peers and its past.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    peers: HashMap<Vec<u8>, PeerUse>,
    day: Vec<Sample>,
    month: Vec<Sample>,
    /// When the last tick ran (Unix seconds).
    ticked: u64,
}

impl Ledger {
    /// Counts one request of `peer` that moved `received` and `sent` body bytes.
    pub fn record(&mut self, peer: &[u8], received: u64, sent: u64) {
        if !self.peers.contains_key(peer) {
            if self.peers.len() >= MAX_PEERS {
                self.evict();
            }
            self.peers.insert(peer.to_vec(), PeerUse::default());
        }
        let Some(u) = self.peers.get_mut(peer) else { return };
        u.requests += 1;
        u.received += received;
        u.sent += sent;
        for h in [&mut self.day, &mut self.month] {
            if let Some(s) = h.last_mut() {
                s.received += received;
                s.sent += sent;
            }
        }
    }

    /// Drops the least active peer that stores nothing (or, if all store
    /// something, the least active).
    fn evict(&mut self) {
        let activity = |u: &PeerUse| u.byte_seconds.saturating_add(u.received).saturating_add(u.sent);
        let victim = self.peers.iter().min_by_key(|(_, u)| (u.stored > 0, activity(u))).map(|(p, _)| p.clone());
        if let Some(p) = victim {
            self.peers.remove(&p);
        }
    }

    /// Moves time on to `now`: each peer's stored bytes (`stored`) are
    /// integrated since the last tick, and the history gets the node's
    /// `used` bytes.
    pub fn tick(&mut self, now: u64, stored: &HashMap<Vec<u8>, u64>, used: u64) {
        let dt = if self.ticked == 0 { 0 } else { now.saturating_sub(self.ticked) };
        for (peer, bytes) in stored {
            if *bytes == 0 {
                continue;
            }
            if !self.peers.contains_key(peer) && self.peers.len() >= MAX_PEERS {
                self.evict();
            }
            let u = self.peers.entry(peer.clone()).or_default();
            u.stored = *bytes;
            u.byte_seconds = u.byte_seconds.saturating_add(bytes.saturating_mul(dt));
        }
        for (peer, u) in &mut self.peers {
            if !stored.contains_key(peer) {
                u.stored = 0;
            }
        }
        self.ticked = now;
        advance(&mut self.day, now / DAY_SLOT, DAY_SLOTS, used);
        advance(&mut self.month, now / MONTH_SLOT, MONTH_SLOTS, used);
    }

    /// What `peer` used.
    pub fn of(&self, peer: &[u8]) -> PeerUse {
        self.peers.get(peer).copied().unwrap_or_default()
    }

    /// The `n` peers that used the most (stored × time, then traffic).
    pub fn top(&self, n: usize) -> Vec<(Vec<u8>, PeerUse)> {
        let mut v: Vec<(Vec<u8>, PeerUse)> = self.peers.iter().map(|(p, u)| (p.clone(), *u)).collect();
        v.sort_by(|a, b| {
            let key = |u: &PeerUse| (u.byte_seconds, u.received.saturating_add(u.sent), u.requests);
            key(&b.1).cmp(&key(&a.1)).then(a.0.cmp(&b.0))
        });
        v.truncate(n);
        v
    }

    /// Peers known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The last day, oldest first, in 5-minute slots.
    pub fn day(&self) -> &[Sample] {
        &self.day
    }

    /// The last month, oldest first, in daily slots.
    pub fn month(&self) -> &[Sample] {
        &self.month
    }

    /// Encodes with a version marker.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_versioned(LEDGER_V1, self)
    }

    /// Decodes what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, cairn_proto::Error> {
        let l: Self = codec::from_versioned("usage ledger", LEDGER_V1, bytes, MAX_LEDGER)?;
        if l.peers.len() > MAX_PEERS || l.day.len() > DAY_SLOTS || l.month.len() > MONTH_SLOTS {
            return Err(cairn_proto::Error::Inconsistent { what: "usage ledger", reason: "too many entries".into() });
        }
        Ok(l)
    }
}

/// The ledger shared by the stream service, the admin pages and the tick.
#[derive(Debug, Default)]
pub struct Book(Mutex<Ledger>);

impl Book {
    /// A book holding `ledger`.
    pub fn new(ledger: Ledger) -> Self {
        Self(Mutex::new(ledger))
    }

    /// The ledger (held briefly: no I/O under it).
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A peer id's bytes as text (its base58 form), or hex if they are not one.
pub fn peer_name(peer: &[u8]) -> String {
    match cairn_net::PeerId::from_bytes(peer) {
        Ok(p) => p.to_string(),
        Err(_) => peer.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// A metric of each top peer: name, kind, help, and its value.
type Series = (&'static str, &'static str, &'static str, fn(&PeerUse) -> u64);

/// The Prometheus lines for the ledger: how many peers it holds, and the
/// [`TOP`] peers' figures, labelled by peer id.
pub fn render_metrics(ledger: &Ledger) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP cairn_node_peers_accounted Peers in the usage ledger.\n# TYPE cairn_node_peers_accounted gauge\ncairn_node_peers_accounted {}",
        ledger.len()
    );
    let top = ledger.top(TOP);
    let series: [Series; 5] = [
        ("peer_requests_total", "counter", "Requests served to the peer.", |u| u.requests),
        ("peer_received_bytes_total", "counter", "Shard bytes received from the peer.", |u| u.received),
        ("peer_sent_bytes_total", "counter", "Shard bytes sent to the peer.", |u| u.sent),
        ("peer_stored_bytes", "gauge", "Bytes of the peer's shards held (at the last tick).", |u| u.stored),
        ("peer_byte_seconds_total", "counter", "Bytes the peer stored, times seconds.", |u| u.byte_seconds),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(s, "# HELP cairn_node_{name} {help} Top {TOP} peers.\n# TYPE cairn_node_{name} {kind}");
        for (peer, u) in &top {
            let _ = writeln!(s, "cairn_node_{name}{{peer=\"{}\"}} {}", peer_name(peer), value(u));
        }
    }
    s
}

/// Starts slot `slot` in `history` if it is new (slots skipped while the
/// node was down are left out), keeping at most `max`, and sets its space.
fn advance(history: &mut Vec<Sample>, slot: u64, max: usize, used: u64) {
    if history.last().is_none_or(|s| s.slot < slot) {
        history.push(Sample { slot, ..Sample::default() });
        let extra = history.len().saturating_sub(max);
        history.drain(..extra);
    }
    if let Some(s) = history.last_mut() {
        s.used = used;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_and_stored_bytes_integrated_over_time() {
        let mut l = Ledger::default();
        l.tick(1_000, &HashMap::new(), 0);
        l.record(b"a", 100, 0);
        l.record(b"a", 0, 40);
        l.record(b"b", 5, 0);
        let stored: HashMap<Vec<u8>, u64> = [(b"a".to_vec(), 100)].into();
        l.tick(1_060, &stored, 100);
        l.tick(1_120, &stored, 100);
        let a = l.of(b"a");
        assert_eq!((a.requests, a.received, a.sent, a.stored, a.byte_seconds), (2, 100, 40, 100, 12_000));
        assert_eq!(l.of(b"b").byte_seconds, 0);
        assert_eq!(l.top(1)[0].0, b"a".to_vec());
        // A peer whose shards are gone stores nothing any more.
        l.tick(1_180, &HashMap::new(), 0);
        assert_eq!(l.of(b"a").stored, 0);
        assert_eq!(l.of(b"a").byte_seconds, 12_000);
    }

    #[test]
    fn history_keeps_a_day_and_a_month_of_slots() {
        let mut l = Ledger::default();
        for i in 0..400u64 {
            l.tick(i * DAY_SLOT, &HashMap::new(), i);
            l.record(b"p", 1, 2);
        }
        assert_eq!(l.day().len(), DAY_SLOTS);
        let last = l.day().last().copied().expect("slot");
        assert_eq!((last.used, last.received, last.sent), (399, 1, 2));
        assert!(l.day().windows(2).all(|w| w[0].slot < w[1].slot));
        assert_eq!(l.month().len(), 2, "400 slots of 5 minutes span two days");
        assert_eq!(l.month().iter().map(|s| s.received).sum::<u64>(), 400);
    }

    #[test]
    fn damaged_ledger_bytes_are_refused_without_a_panic() {
        let mut l = Ledger::default();
        let stored: HashMap<Vec<u8>, u64> = [(b"a".to_vec(), 5), (b"bb".to_vec(), 7)].into();
        l.tick(600, &stored, 12);
        l.record(b"a", 3, 4);
        l.tick(900, &stored, 12);
        let good = l.to_bytes();
        for cut in 0..good.len() {
            assert!(Ledger::from_bytes(&good[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = Ledger::from_bytes(&b);
            }
        }
        // A map that claims 2^35 peers: refused, not allocated.
        assert!(Ledger::from_bytes(&[LEDGER_V1, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    #[test]
    fn the_ledger_is_bounded_and_survives_a_round_trip() {
        let mut l = Ledger::default();
        let stored: HashMap<Vec<u8>, u64> = [(b"keeper".to_vec(), 5)].into();
        l.tick(10, &stored, 5);
        for i in 0..(MAX_PEERS + 50) as u32 {
            l.record(&i.to_le_bytes(), u64::from(i % 7), 0);
        }
        assert_eq!(l.len(), MAX_PEERS);
        assert_eq!(l.of(b"keeper").stored, 5, "a peer that stores something is kept");
        let back = Ledger::from_bytes(&l.to_bytes()).expect("decode");
        assert_eq!(back, l);
        assert!(Ledger::from_bytes(&[9, 1, 2]).is_err());
    }
}
