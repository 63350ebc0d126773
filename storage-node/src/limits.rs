//! Per-peer admission: concurrent streams and a token-bucket request rate;
//! and a per-peer quota of new head records per hour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libp2p::PeerId;

use crate::config::Limits;

/// Most peers tracked at once; idle entries are dropped beyond it.
const MAX_TRACKED_PEERS: usize = 10_000;

#[derive(Debug)]
struct PeerState {
    active: usize,
    tokens: f64,
    last: Instant,
    /// Bytes of body the peer may still move now (may go negative: a
    /// request is charged whole, the debt refills at the byte rate).
    bytes: f64,
    bytes_at: Instant,
}

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer has too many streams open.
    TooManyStreams,
    /// The peer is sending requests too fast.
    TooFast {
        /// Milliseconds until a token is available.
        retry_after_ms: u64,
    },
}

/// Admission control shared by all streams.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    peers: Mutex<HashMap<PeerId, PeerState>>,
}

/// Held while a stream is served; frees the peer's slot on drop.
#[derive(Debug)]
pub struct Admitted {
    peer: PeerId,
    limiter: Arc<Limiter>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.limiter.peers.lock()
            && let Some(p) = peers.get_mut(&self.peer)
        {
            p.active = p.active.saturating_sub(1);
        }
    }
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, peers: Mutex::default() })
    }

    /// Admits one more stream from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: PeerId, now: Instant) -> Result<Admitted, Refusal> {
        let rate = f64::from(self.limits.requests_per_second_per_peer.max(1));
        let burst = rate * 2.0;
        let mut peers = self.peers.lock().map_err(|_| Refusal::TooManyStreams)?;
        if peers.len() >= MAX_TRACKED_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, p| p.active > 0);
        }
        let p = peers.entry(peer).or_insert(PeerState {
            active: 0,
            tokens: burst,
            last: now,
            bytes: self.byte_burst(),
            bytes_at: now,
        });
        p.tokens = (p.tokens + now.saturating_duration_since(p.last).as_secs_f64() * rate).min(burst);
        p.last = now;
        if p.active >= self.limits.max_streams_per_peer {
            return Err(Refusal::TooManyStreams);
        }
        if p.tokens < 1.0 {
            return Err(Refusal::TooFast { retry_after_ms: ((1.0 - p.tokens) / rate * 1000.0).ceil() as u64 });
        }
        p.tokens -= 1.0;
        p.active += 1;
        Ok(Admitted { peer, limiter: Arc::clone(self) })
    }

    /// Bytes per second of bodies one peer may move (0: no limit).
    fn byte_rate(&self) -> f64 {
        self.limits.mib_per_second_per_peer as f64 * 1024.0 * 1024.0
    }

    /// What a peer may move at once: four seconds' worth, and at least one
    /// shard of the largest size.
    fn byte_burst(&self) -> f64 {
        (self.byte_rate() * 4.0).max(cairn_proto::shard::MAX_SHARD_SIZE as f64)
    }

    /// Charges `bytes` of body (a put's or a get's) to `peer`, whose stream
    /// was admitted, or says in how many milliseconds it may ask again: a
    /// peer in debt is refused until its allowance refills.
    pub fn charge(&self, peer: PeerId, bytes: u64, now: Instant) -> Result<(), u64> {
        let rate = self.byte_rate();
        if rate == 0.0 {
            return Ok(());
        }
        let burst = self.byte_burst();
        let mut peers = self.peers.lock().map_err(|_| 1000u64)?;
        let Some(p) = peers.get_mut(&peer) else { return Ok(()) };
        p.bytes = (p.bytes + now.saturating_duration_since(p.bytes_at).as_secs_f64() * rate).min(burst);
        p.bytes_at = now;
        if p.bytes < 0.0 {
            return Err(((-p.bytes) / rate * 1000.0).ceil().max(1.0) as u64);
        }
        p.bytes -= bytes as f64;
        Ok(())
    }
}

/// The window of [`RecordQuota`].
const RECORD_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// New head records per peer and hour: records are small, but a peer that
/// creates them without end (peer ids are free, keys too) would fill the
/// store that every bucket's head lives in.
#[derive(Debug)]
pub struct RecordQuota {
    per_window: u32,
    peers: Mutex<HashMap<PeerId, (Instant, u32)>>,
}

impl RecordQuota {
    /// `per_hour` new records per peer.
    pub fn new(per_hour: u32) -> Arc<Self> {
        Arc::new(Self { per_window: per_hour, peers: Mutex::default() })
    }

    /// Counts one new record from `peer` at `now`, or says in how many
    /// milliseconds the peer may create one again.
    pub fn take(&self, peer: PeerId, now: Instant) -> Result<(), u64> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_TRACKED_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, (start, _)| now.saturating_duration_since(*start) < RECORD_WINDOW);
        }
        let (start, count) = peers.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= RECORD_WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= self.per_window {
            let left = (*start + RECORD_WINDOW).saturating_duration_since(now);
            return Err(left.as_millis().max(1) as u64);
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn streams_and_rate_are_limited_per_peer() {
        let l = Limiter::new(Limits { max_streams_per_peer: 2, requests_per_second_per_peer: 10, ..Limits::default() });
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        let s1 = l.admit(a, t).expect("1");
        let _s2 = l.admit(a, t).expect("2");
        assert_eq!(l.admit(a, t).err(), Some(Refusal::TooManyStreams));
        assert!(l.admit(b, t).is_ok(), "other peers are not affected");
        drop(s1);
        assert!(l.admit(a, t).is_ok());
        // Burst of 20 tokens: 3 used by a; exhaust the rest sequentially.
        let mut used = 0;
        while let Ok(s) = l.admit(b, t) {
            drop(s);
            used += 1;
        }
        assert_eq!(used, 19);
        assert!(matches!(l.admit(b, t), Err(Refusal::TooFast { retry_after_ms: 100 })));
        assert!(l.admit(b, t + Duration::from_millis(150)).is_ok(), "tokens refill");
    }

    #[test]
    fn bytes_are_limited_per_peer_and_a_debt_refills_at_the_rate() {
        let l = Limiter::new(Limits { mib_per_second_per_peer: 1, ..Limits::default() });
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        let _sa = l.admit(a, t).expect("a");
        let _sb = l.admit(b, t).expect("b");
        let burst = cairn_proto::shard::MAX_SHARD_SIZE;
        l.charge(a, burst, t).expect("a burst of one largest shard passes");
        l.charge(a, 2 << 20, t).expect("charged whole: the peer goes 2 MiB into debt");
        assert_eq!(l.charge(a, 1, t), Err(2000), "refused until the debt is paid at 1 MiB/s");
        l.charge(b, burst, t).expect("other peers are not affected");
        l.charge(a, 1, t + Duration::from_secs(2)).expect("paid off");
        let free = Limiter::new(Limits { mib_per_second_per_peer: 0, ..Limits::default() });
        let _s = free.admit(a, t).expect("a");
        for _ in 0..10 {
            free.charge(a, u64::MAX / 16, t).expect("no limit");
        }
    }

    #[test]
    fn new_records_are_counted_per_peer_per_hour() {
        let q = RecordQuota::new(3);
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        for _ in 0..3 {
            q.take(a, t).expect("within the quota");
        }
        assert_eq!(q.take(a, t + Duration::from_secs(600)), Err(3_000_000));
        q.take(b, t).expect("other peers are not affected");
        q.take(a, t + Duration::from_secs(3600)).expect("a new hour");
    }
}
