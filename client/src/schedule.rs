//! When a segment's shard uploads and downloads start, and where: the
//! scheduling of [`Transfer::put_shards`](crate::transfer::Transfer::put_shards)
//! and [`Transfer::get_shards`](crate::transfer::Transfer::get_shards) as
//! plain state machines ([`PutSchedule`], [`GetSchedule`]), driven by a thin async shell that
//! does the uploads. It is told what happened (an upload ended, the hedge
//! timer fired, the uploads all ended) and answers with what to start; it
//! never waits or sends, so its tests run on a virtual clock with scripted
//! node outcomes.
//!
//! The rules:
//! - `want` shards must be stored, each on its own node; the slots beyond
//!   `want` (the bucket's `extra`) are spares.
//! - [`Hedging::Eager`] starts every slot at once; [`Hedging::Adaptive`]
//!   starts `want` and, when the others are late (at twice the time the
//!   first stored one took, at least [`HEDGE_MIN`], or [`HEDGE`] if none
//!   has been stored), one more upload per late shard: an unstarted spare
//!   slot, else the late shard again on another node.
//! - A failed upload moves to the next candidate node at once.
//! - A second copy of a stored shard is surplus (deleted by the shell).
//! - When every upload has ended, the unstarted spares are the last resort.
//! - A node is started only if the placement [`Limits`] let it take one
//!   more shard (regions, networks: [`crate::policy`]); an upload that
//!   ends without being kept gives its slot back.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use cairn_net::PeerId;
use tokio::time::Instant;

use crate::policy::Limits;
use crate::transfer::Hedging;

/// How long transfers may go without any finishing before spares start.
pub const HEDGE: Duration = Duration::from_secs(2);
/// Spares never start sooner than this after the first requests.
pub const HEDGE_MIN: Duration = Duration::from_millis(200);

/// When the spares of a transfer that started at `start` are due, given
/// how long its first finished request took.
pub fn hedge_at(start: Instant, first_done: Option<Duration>) -> Instant {
    start + first_done.map_or(HEDGE, |t| (t * 2).max(HEDGE_MIN))
}

/// What the shell is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Upload shard `.0` to node `.1`.
    Start(usize, PeerId),
    /// Node `.1` stored a second copy of shard `.0`: delete it.
    Surplus(usize, PeerId),
}

/// How an upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node stored the shard.
    Stored,
    /// The node failed or refused: try another.
    Failed,
    /// The shell gave the upload up (shutdown): not the node's fault, and
    /// not tried again.
    Abandoned,
    /// The node is busy (it answered `RateLimited`): another candidate
    /// takes the shard now if there is one, and the node is a candidate
    /// again after this long, or longer each time it answers busy again
    /// ([`rest`]), [`MAX_RESTS`] times at most.
    Busy(Duration),
}

/// Longest a busy node's answer makes the schedule wait for it.
pub const MAX_REST: Duration = Duration::from_secs(2);
/// Busy answers a schedule takes from one node; past them it is failed.
pub const MAX_RESTS: u32 = 6;

/// The wait a node asked for, if `error` says it is busy (`RateLimited`).
pub fn busy_asked(error: &cairn_net::Error) -> Option<Duration> {
    match error {
        cairn_net::Error::Refused { error: cairn_proto::shard::ShardError::RateLimited { retry_after_ms }, .. } => {
            Some(Duration::from_millis(*retry_after_ms))
        }
        _ => None,
    }
}

/// How long to wait before asking a node again after `error`, its `nth`
/// busy answer to this request (from 0); `None` when the error is not
/// "busy", or the node was asked [`MAX_RESTS`] times already.
pub fn busy_wait(error: &cairn_net::Error, nth: u32) -> Option<Duration> {
    busy_asked(error).filter(|_| nth < MAX_RESTS).map(|asked| rest(asked, nth))
}

/// Busy answers per node within one transfer.
#[derive(Debug, Default)]
pub struct Rests(Vec<(PeerId, u32)>);

impl Rests {
    /// `peer` answered busy, asking for `asked`: how long it rests before
    /// it is asked again ([`rest`]), or `None` past [`MAX_RESTS`] answers.
    pub fn busy(&mut self, peer: PeerId, asked: Duration) -> Option<Duration> {
        let nth = match self.0.iter_mut().find(|r| r.0 == peer) {
            Some(r) => {
                r.1 += 1;
                r.1 - 1
            }
            None => {
                self.0.push((peer, 1));
                0
            }
        };
        (nth < MAX_RESTS).then(|| rest(asked, nth))
    }
}

/// How long a node that answered busy for the `nth` time (from 0) rests:
/// what it asked for, at least 50 ms doubled each time, at most
/// [`MAX_REST`] (many clients of one device back off together).
pub fn rest(asked: Duration, nth: u32) -> Duration {
    asked.max(Duration::from_millis(50).saturating_mul(1 << nth.min(16))).min(MAX_REST)
}

/// The scheduling state of one segment's upload.
#[derive(Debug)]
pub struct PutSchedule {
    want: usize,
    candidates: VecDeque<PeerId>,
    limits: Limits,
    holders: Vec<Option<PeerId>>,
    /// Uploads running per shard.
    flying: Vec<usize>,
    unstarted: Range<usize>,
    began: Instant,
    first_done: Option<Duration>,
    next_hedge: Option<Instant>,
    stored: usize,
    /// Busy nodes, and when they are candidates again.
    resting: Vec<(Instant, PeerId)>,
    rests: Rests,
}

impl PutSchedule {
    /// A schedule for `shards` slots of which `want` must be stored, on
    /// `candidates` (in order of preference), starting at `now`; and the
    /// uploads to start at once.
    pub fn new(
        shards: usize,
        want: usize,
        hedging: Hedging,
        candidates: impl IntoIterator<Item = PeerId>,
        now: Instant,
    ) -> (Self, Vec<Step>) {
        Self::limited(shards, want, hedging, candidates, Limits::none(), now)
    }

    /// [`Self::new`] under placement `limits`.
    pub fn limited(
        shards: usize,
        want: usize,
        hedging: Hedging,
        candidates: impl IntoIterator<Item = PeerId>,
        limits: Limits,
        now: Instant,
    ) -> (Self, Vec<Step>) {
        let first = match hedging {
            Hedging::Eager => shards,
            Hedging::Adaptive => want.min(shards),
        };
        let mut s = Self {
            want,
            candidates: candidates.into_iter().collect(),
            limits,
            holders: vec![None; shards],
            flying: vec![0; shards],
            unstarted: first..shards,
            began: now,
            first_done: None,
            next_hedge: None,
            stored: 0,
            resting: Vec::new(),
            rests: Rests::default(),
        };
        let mut steps = Vec::new();
        for i in 0..first {
            let Some(peer) = s.next_candidate() else { break };
            steps.push(s.start(i, peer));
        }
        (s, steps)
    }

    fn start(&mut self, i: usize, peer: PeerId) -> Step {
        self.flying[i] += 1;
        self.limits.take(&peer);
        Step::Start(i, peer)
    }

    /// The first candidate the limits let take a shard, taken off the
    /// list; the soft limits are lifted when only they stand in the way.
    fn next_candidate(&mut self) -> Option<PeerId> {
        if let Some(at) = self.candidates.iter().position(|p| self.limits.fits(p)) {
            return self.candidates.remove(at);
        }
        if self.candidates.iter().any(|p| self.limits.fits_relaxed(p)) && self.limits.relax() {
            return self.next_candidate();
        }
        None
    }

    fn has_candidate(&self) -> bool {
        self.candidates.iter().any(|p| self.limits.fits(p) || self.limits.fits_relaxed(p))
    }

    /// More nodes to try, after those given so far.
    pub fn add_candidates(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.candidates.extend(peers);
    }

    /// Whether every candidate is used while shards are still needed (the
    /// shell may find more nodes).
    pub fn needs_candidates(&self) -> bool {
        !self.has_candidate() && !self.done()
    }

    fn hedge_time(&self) -> Instant {
        self.next_hedge.unwrap_or_else(|| hedge_at(self.began, self.first_done))
    }

    /// When [`Self::on_hedge`] is due: the hedge time, or sooner when a
    /// busy node is a candidate again; `None` when nothing can start (no
    /// candidate left and none resting, or enough stored).
    pub fn hedge_due(&self) -> Option<Instant> {
        if self.done() {
            return None;
        }
        let hedge = self.has_candidate().then(|| self.hedge_time());
        let rest = self.resting.iter().map(|r| r.0).min();
        match (hedge, rest) {
            (Some(h), Some(r)) => Some(h.min(r)),
            (h, r) => h.or(r),
        }
    }

    /// The timer fired at `now`: busy nodes whose wait is over are
    /// candidates again (first in line) and take the shards left with no
    /// upload; at the hedge time, one more upload per late shard still
    /// needed.
    pub fn on_hedge(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        let (woken, resting): (Vec<_>, Vec<_>) = self.resting.drain(..).partition(|r| r.0 <= now);
        self.resting = resting;
        for (_, peer) in woken.into_iter().rev() {
            self.candidates.push_front(peer);
        }
        let flying = (0..self.holders.len()).filter(|&i| self.flying[i] > 0 && self.holders[i].is_none()).count();
        let needed = self.want.saturating_sub(self.stored + flying);
        let idle: Vec<usize> = (0..self.unstarted.start)
            .filter(|&i| self.flying[i] == 0 && self.holders[i].is_none())
            .take(needed)
            .collect();
        for i in idle {
            let Some(peer) = self.next_candidate() else { break };
            steps.push(self.start(i, peer));
        }
        if now < self.hedge_time() {
            return steps;
        }
        let late: Vec<usize> =
            (0..self.holders.len()).filter(|&i| self.flying[i] > 0 && self.holders[i].is_none()).collect();
        for j in late.into_iter().take(self.want.saturating_sub(self.stored)) {
            let Some(peer) = self.next_candidate() else { break };
            let i = self.unstarted.next().unwrap_or(j);
            steps.push(self.start(i, peer));
        }
        self.next_hedge = Some(hedge_at(now, self.first_done));
        steps
    }

    /// The upload of shard `i` to `peer` ended at `now`.
    pub fn on_done(&mut self, i: usize, peer: PeerId, outcome: Outcome, now: Instant) -> Vec<Step> {
        self.flying[i] = self.flying[i].saturating_sub(1);
        if outcome != Outcome::Stored || self.holders[i].is_some() {
            // Not kept: its slot is free again.
            self.limits.release(&peer);
        }
        match outcome {
            Outcome::Stored if self.holders[i].is_some() => vec![Step::Surplus(i, peer)],
            Outcome::Stored => {
                self.first_done.get_or_insert_with(|| now.saturating_duration_since(self.began));
                self.holders[i] = Some(peer);
                self.stored += 1;
                Vec::new()
            }
            Outcome::Abandoned => Vec::new(),
            Outcome::Busy(wait) => {
                if let Some(rest) = self.rests.busy(peer, wait) {
                    self.resting.push((now + rest, peer));
                }
                self.retry(i)
            }
            Outcome::Failed => self.retry(i),
        }
    }

    /// Shard `i` again on the next candidate, if it is still needed and
    /// nothing uploads it.
    fn retry(&mut self, i: usize) -> Vec<Step> {
        if self.holders[i].is_none()
            && self.flying[i] == 0
            && let Some(next) = self.next_candidate()
        {
            vec![self.start(i, next)]
        } else {
            Vec::new()
        }
    }

    /// Every upload started has ended: an unstarted spare on a fresh node,
    /// if both are left (`None`: the schedule cannot go on).
    pub fn on_idle(&mut self) -> Option<Step> {
        if !self.has_candidate() {
            return None;
        }
        let i = self.unstarted.next()?;
        let peer = self.next_candidate()?;
        Some(self.start(i, peer))
    }

    /// Whether `want` shards are stored.
    pub fn done(&self) -> bool {
        self.stored >= self.want
    }

    /// Shards stored.
    pub fn stored(&self) -> usize {
        self.stored
    }

    /// Where each shard is stored (`None`: nowhere).
    pub fn holders(&self) -> &[Option<PeerId>] {
        &self.holders
    }
}

/// A holder is slow when its time is over this many times the median of
/// the holders' times ...
pub const SLOW_FACTOR: f64 = 3.0;
/// ... plus this much (so that small differences never count).
pub const SLOW_MARGIN: Duration = Duration::from_millis(5);

/// What a download costs, for comparing holders: its time, shrunk by
/// the bytes it moved (`took / (1 + bytes / 1 MiB)`), so that a small
/// request counts about its round trip and a large one its time per MiB.
pub fn read_cost(took: Duration, bytes: u64) -> Duration {
    took.div_f64(1.0 + bytes as f64 / f64::from(1u32 << 20))
}

/// One holder of a segment's shard, as the read order sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The shard's index (below `k`: a data shard).
    pub shard: usize,
    /// Its holder.
    pub peer: PeerId,
    /// The holder failed lately.
    pub penalized: bool,
    /// How long its downloads take ([`read_cost`]), if timed.
    pub time: Option<Duration>,
}

/// The order in which a segment's holders are asked: holders that failed
/// lately last; before them, holders that are slow (over [`SLOW_FACTOR`]
/// times the median time of the timed holders, plus [`SLOW_MARGIN`]);
/// among the rest, data shards first (read without decoding), by index.
/// So the `k` nearest holders are read whenever the data shards' holders
/// are not much slower than the others, and nothing is decoded when
/// they are all about as fast.
pub fn read_order(holders: &[Holder]) -> Vec<(usize, PeerId)> {
    let mut times: Vec<Duration> = holders.iter().filter_map(|h| h.time).collect();
    times.sort_unstable();
    let limit = times.get(times.len() / 2).map(|m| m.mul_f64(SLOW_FACTOR) + SLOW_MARGIN);
    let slow = |h: &Holder| matches!((h.time, limit), (Some(t), Some(l)) if t > l);
    let mut v: Vec<&Holder> = holders.iter().collect();
    v.sort_by_key(|h| (h.penalized, slow(h), h.shard));
    v.into_iter().map(|h| (h.shard, h.peer)).collect()
}

/// What a download schedule asks of the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Fetch shard `.0` from node `.1`.
    Start(usize, PeerId),
}

/// How a shard download ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Got {
    /// The bytes match the shard's id.
    Good,
    /// The node sent bytes that do not match: it is named as bad.
    Corrupt,
    /// No bytes (the node failed, refused or timed out).
    Failed,
    /// The node is busy (it answered `RateLimited`, asking for this
    /// wait): another holder is asked now if there is one, and the node
    /// again after its rest ([`rest`], [`MAX_RESTS`] times at most).
    Busy(Duration),
}

/// The scheduling of [`Transfer::get_shards`](crate::transfer::Transfer::get_shards):
/// `k` verified shards wanted, from holders in order of preference (data
/// shards first, nodes that failed lately last). `k` requests start (one
/// more with [`Hedging::Eager`]); once the first answers show the others
/// are late (at [`hedge_at`]), a spare for each request still out, as many
/// as are still needed, then more per [`HEDGE`] without news, so a dead
/// node costs a fraction of a second; a failed or corrupt answer moves to
/// the next holder at once, and so does a busy one, which is asked again
/// after its rest.
#[derive(Debug)]
pub struct GetSchedule {
    k: usize,
    order: VecDeque<(usize, PeerId)>,
    /// Shards and nodes with a request out.
    asked: Vec<(usize, PeerId)>,
    began: Instant,
    last_news: Instant,
    first_done: Option<Duration>,
    hedged: usize,
    good: usize,
    /// Busy holders and when they may be asked again.
    resting: Vec<(Instant, usize, PeerId)>,
    rests: Rests,
}

impl GetSchedule {
    /// A schedule for `k` shards from `order`, starting at `now`; and the
    /// requests to start at once.
    pub fn new(
        k: usize,
        order: impl IntoIterator<Item = (usize, PeerId)>,
        hedging: Hedging,
        now: Instant,
    ) -> (Self, Vec<Fetch>) {
        let spare = match hedging {
            Hedging::Eager => 1,
            Hedging::Adaptive => 0,
        };
        let mut s = Self {
            k,
            order: order.into_iter().collect(),
            asked: Vec::new(),
            began: now,
            last_news: now,
            first_done: None,
            hedged: spare,
            good: 0,
            resting: Vec::new(),
            rests: Rests::default(),
        };
        let steps = (0..k + spare).filter_map(|_| s.next()).collect();
        (s, steps)
    }

    fn next(&mut self) -> Option<Fetch> {
        let (i, p) = self.order.pop_front()?;
        self.asked.push((i, p));
        Some(Fetch::Start(i, p))
    }

    /// When [`Self::on_hedge`] is due: at [`hedge_at`] for the first
    /// spares, then [`HEDGE`] after the last news.
    /// Or earlier, when a busy holder's rest ends.
    pub fn hedge_due(&self) -> Instant {
        let hedge = if self.hedged == 0 { hedge_at(self.began, self.first_done) } else { self.last_news + HEDGE };
        self.resting.iter().map(|r| r.0).min().map_or(hedge, |r| r.min(hedge))
    }

    /// Whether busy holders wait for their rest to end.
    pub fn resting(&self) -> bool {
        !self.resting.is_empty()
    }

    /// The hedge timer fired at `now`. Busy holders whose rest ended are
    /// candidates again, first in line, and asked while fewer requests are
    /// out than shards still needed; else a spare per request still out,
    /// as many as are still needed (at least one).
    pub fn on_hedge(&mut self, now: Instant) -> Vec<Fetch> {
        let before = self.resting.len();
        let mut ready = Vec::new();
        self.resting.retain(|&(at, i, p)| {
            let due = at <= now;
            if due {
                ready.push((i, p));
            }
            !due
        });
        if self.resting.len() < before {
            for r in ready.into_iter().rev() {
                self.order.push_front(r);
            }
            let want = self.k.saturating_sub(self.good);
            return (self.asked.len()..want).filter_map(|_| self.next()).collect();
        }
        self.hedged += 1;
        self.last_news = now;
        let n = self.asked.len().min(self.k.saturating_sub(self.good)).max(1);
        (0..n).filter_map(|_| self.next()).collect()
    }

    /// The request to `peer` ended at `now`.
    pub fn on_done(&mut self, peer: PeerId, got: Got, now: Instant) -> Vec<Fetch> {
        self.last_news = now;
        let shard = self.asked.iter().position(|a| a.1 == peer).map(|at| self.asked.swap_remove(at).0);
        match got {
            Got::Good => {
                self.first_done.get_or_insert_with(|| now.saturating_duration_since(self.began));
                self.good += 1;
                return Vec::new();
            }
            Got::Busy(asked) => {
                if let (Some(i), Some(rest)) = (shard, self.rests.busy(peer, asked)) {
                    self.resting.push((now + rest, i, peer));
                }
            }
            Got::Corrupt | Got::Failed => {}
        }
        self.next().into_iter().collect()
    }

    /// Whether `k` good shards are in.
    pub fn done(&self) -> bool {
        self.good >= self.k
    }

    /// Good shards so far.
    pub fn good(&self) -> usize {
        self.good
    }

    /// Nodes whose requests are still out (judged by the shell once the
    /// schedule is done).
    pub fn into_pending(self) -> Vec<PeerId> {
        self.asked.into_iter().map(|a| a.1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted run: each started upload ends after the delay and with
    /// the outcome the node is given, on a virtual clock.
    struct Sim {
        t0: Instant,
        now: Duration,
        /// (ends at, shard, node, outcome)
        running: Vec<(Duration, usize, PeerId, Outcome)>,
        nodes: Vec<(PeerId, Duration, Outcome)>,
        surplus: Vec<(usize, PeerId)>,
        starts: Vec<(Duration, usize, PeerId)>,
        /// Per node: how many more uploads it answers busy, and the wait
        /// it asks for.
        busy: Vec<(usize, Duration)>,
    }

    impl Sim {
        fn new(nodes: &[(u64, Outcome)]) -> Self {
            Self {
                t0: Instant::now(),
                now: Duration::ZERO,
                running: Vec::new(),
                nodes: nodes.iter().map(|&(ms, o)| (PeerId::random(), Duration::from_millis(ms), o)).collect(),
                surplus: Vec::new(),
                starts: Vec::new(),
                busy: vec![(0, Duration::ZERO); nodes.len()],
            }
        }

        /// Node `n` answers its next `times` uploads busy, asking for `wait`.
        fn busy(mut self, n: usize, times: usize, wait: u64) -> Self {
            self.busy[n] = (times, Duration::from_millis(wait));
            self
        }

        fn peers(&self) -> Vec<PeerId> {
            self.nodes.iter().map(|n| n.0).collect()
        }

        fn node(&self, p: PeerId) -> usize {
            self.nodes.iter().position(|n| n.0 == p).expect("a node")
        }

        fn apply(&mut self, steps: Vec<Step>) {
            for s in steps {
                match s {
                    Step::Start(i, p) => {
                        let n = self.node(p);
                        let (_, mut delay, mut outcome) = self.nodes[n];
                        if self.busy[n].0 > 0 {
                            self.busy[n].0 -= 1;
                            (delay, outcome) = (Duration::from_millis(1), Outcome::Busy(self.busy[n].1));
                        }
                        self.starts.push((self.now, i, p));
                        self.running.push((self.now + delay, i, p, outcome));
                    }
                    Step::Surplus(i, p) => self.surplus.push((i, p)),
                }
            }
        }

        /// Runs the schedule to its end, as the shell does.
        fn run(&mut self, shards: usize, want: usize, hedging: Hedging) -> PutSchedule {
            let (mut s, steps) = PutSchedule::new(shards, want, hedging, self.peers(), self.t0);
            self.apply(steps);
            while !s.done() {
                self.running.sort_by_key(|r| r.0);
                let hedge = s.hedge_due().map(|d| d.duration_since(self.t0));
                let next = self.running.first().map(|r| r.0);
                match (next, hedge) {
                    (_, Some(h)) if next.is_none_or(|n| h < n) => {
                        self.now = h;
                        let steps = s.on_hedge(self.t0 + h);
                        self.apply(steps);
                    }
                    (Some(_), _) => {
                        let (at, i, p, o) = self.running.remove(0);
                        self.now = at;
                        let steps = s.on_done(i, p, o, self.t0 + at);
                        self.apply(steps);
                    }
                    (None, _) => match s.on_idle() {
                        Some(step) => self.apply(vec![step]),
                        None => break,
                    },
                }
            }
            s
        }
    }

    const OK: Outcome = Outcome::Stored;
    const FAIL: Outcome = Outcome::Failed;

    #[test]
    fn adaptive_starts_want_then_hedges_late_shards_at_twice_the_first_time() {
        // 6 of 8: five nodes answer in 100 ms, one takes 10 s.
        let mut sim =
            Sim::new(&[(100, OK), (100, OK), (100, OK), (100, OK), (100, OK), (10_000, OK), (100, OK), (100, OK)]);
        let s = sim.run(8, 6, Hedging::Adaptive);
        assert_eq!(s.stored(), 6);
        assert_eq!(sim.starts.iter().filter(|s| s.0.is_zero()).count(), 6, "want at once, spares held back");
        // The late shard is hedged at 200 ms (2 × 100 ms) with a spare slot.
        let hedge = sim.starts.iter().find(|s| !s.0.is_zero()).expect("a hedge");
        assert_eq!((hedge.0, hedge.1), (Duration::from_millis(200), 6));
        assert_eq!(sim.now, Duration::from_millis(300), "done when the hedge is stored, not at 10 s");
        assert_eq!(s.holders().iter().filter(|h| h.is_some()).count(), 6);
        assert!(s.holders()[5].is_none(), "the slow one is not recorded");
    }

    #[test]
    fn nothing_stored_hedges_at_the_fixed_delay_and_nothing_is_hedged_without_candidates() {
        let mut sim = Sim::new(&[(5_000, OK), (5_000, OK), (100, OK)]);
        let s = sim.run(3, 2, Hedging::Adaptive);
        assert_eq!(sim.starts[2], (HEDGE, 2, sim.nodes[2].0), "no answer yet: hedged at {HEDGE:?}");
        assert_eq!(s.stored(), 2);
        let (s, _) = PutSchedule::new(2, 2, Hedging::Adaptive, [PeerId::random(), PeerId::random()], Instant::now());
        assert_eq!(s.hedge_due(), None, "no node left to hedge on");
    }

    #[test]
    fn a_failure_moves_to_the_next_candidate_at_once() {
        let mut sim = Sim::new(&[(50, FAIL), (100, OK), (100, OK), (100, OK)]);
        let s = sim.run(2, 2, Hedging::Adaptive);
        assert_eq!(s.stored(), 2);
        assert_eq!(sim.starts[2], (Duration::from_millis(50), 0, sim.nodes[2].0), "shard 0 again at once");
        assert_eq!(s.holders()[0], Some(sim.nodes[2].0));
    }

    #[test]
    fn a_busy_node_is_asked_again_after_the_wait_it_asked_for() {
        // Two shards on two nodes; the second answers busy twice (wait
        // 300 ms) and there is no other node: the schedule waits, then
        // stores there.
        let mut sim = Sim::new(&[(100, OK), (100, OK)]).busy(1, 2, 300);
        let s = sim.run(2, 2, Hedging::Adaptive);
        assert_eq!(s.stored(), 2, "{:?}", sim.starts);
        let on_busy: Vec<Duration> = sim.starts.iter().filter(|s| s.2 == sim.nodes[1].0).map(|s| s.0).collect();
        assert_eq!(on_busy, [0, 301, 602].map(Duration::from_millis), "asked again only after each wait");
        assert_eq!(s.holders()[1], Some(sim.nodes[1].0));
        // With another node free, the shard goes there at once.
        let mut sim = Sim::new(&[(100, OK), (100, OK), (100, OK)]).busy(1, 1, 300);
        let s = sim.run(2, 2, Hedging::Adaptive);
        assert_eq!(sim.starts[2], (Duration::from_millis(1), 1, sim.nodes[2].0));
        assert_eq!(s.stored(), 2);
        // The wait is capped, and a node busy past MAX_RESTS per slot is failed.
        let mut sim = Sim::new(&[(100, OK), (100, OK)]).busy(1, 100, 60_000);
        let s = sim.run(2, 2, Hedging::Adaptive);
        assert_eq!(s.stored(), 1, "gives up");
        let on_busy: Vec<Duration> = sim.starts.iter().filter(|s| s.2 == sim.nodes[1].0).map(|s| s.0).collect();
        assert_eq!(on_busy.len(), MAX_RESTS as usize + 1, "the first ask, then one per rest: {on_busy:?}");
        assert!(on_busy.windows(2).all(|w| w[1] - w[0] <= MAX_REST + Duration::from_millis(1)), "{on_busy:?}");
        // Backing off: 50 ms doubled each time, unless the node asks for more.
        let waits: Vec<u64> = (0..7).map(|n| rest(Duration::ZERO, n).as_millis() as u64).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000]);
        assert_eq!(rest(Duration::from_millis(700), 1), Duration::from_millis(700));
        // A request to one node waits the same way, then gives up.
        let peer = PeerId::random();
        let busy = cairn_net::Error::Refused {
            peer,
            error: cairn_proto::shard::ShardError::RateLimited { retry_after_ms: 10 },
        };
        assert_eq!(busy_wait(&busy, 0), Some(Duration::from_millis(50)));
        assert_eq!(busy_wait(&busy, MAX_RESTS), None);
        let failed = cairn_net::Error::Refused { peer, error: cairn_proto::shard::ShardError::Internal };
        assert_eq!(busy_wait(&failed, 0), None);
    }

    #[test]
    fn eager_starts_every_slot_and_keeps_the_first_want() {
        let mut sim = Sim::new(&[(300, OK), (100, OK), (100, OK), (200, OK)]);
        let s = sim.run(4, 2, Hedging::Eager);
        assert_eq!(sim.starts.len(), 4);
        assert!(sim.starts.iter().all(|s| s.0.is_zero()));
        assert_eq!(s.holders().iter().flatten().count(), 2);
        assert_eq!(sim.now, Duration::from_millis(100));
    }

    #[test]
    fn a_second_copy_of_a_stored_shard_is_surplus() {
        // One slot only, so the hedge re-sends shard 0 to another node;
        // both copies land.
        let mut sim = Sim::new(&[(3_000, OK), (100, OK)]);
        let (mut s, steps) = PutSchedule::new(1, 1, Hedging::Adaptive, sim.peers(), sim.t0);
        sim.apply(steps);
        let steps = s.on_hedge(sim.t0 + HEDGE);
        assert_eq!(steps, vec![Step::Start(0, sim.nodes[1].0)]);
        assert!(s.on_done(0, sim.nodes[1].0, OK, sim.t0 + HEDGE).is_empty());
        assert!(s.done());
        assert_eq!(s.on_done(0, sim.nodes[0].0, OK, sim.t0 + HEDGE * 2), vec![Step::Surplus(0, sim.nodes[0].0)]);
        assert_eq!(s.holders(), &[Some(sim.nodes[1].0)]);
    }

    #[test]
    fn spares_are_the_last_resort_and_a_schedule_without_nodes_ends() {
        // Want 2 of 3 on 3 nodes, one fails: the spare slot goes on the
        // third node once the others have ended.
        let mut sim = Sim::new(&[(100, OK), (100, FAIL), (100, OK)]);
        let s = sim.run(3, 2, Hedging::Adaptive);
        assert_eq!(s.stored(), 2);
        // Too few nodes: the schedule stops short, and says so.
        let mut sim = Sim::new(&[(100, OK), (100, FAIL)]);
        let mut s = sim.run(3, 2, Hedging::Adaptive);
        assert_eq!(s.stored(), 1);
        assert!(s.needs_candidates());
        assert_eq!(s.on_idle(), None);
        // Abandoned uploads are not tried again.
        let (mut s, _) =
            PutSchedule::new(1, 1, Hedging::Adaptive, [PeerId::random(), PeerId::random()], Instant::now());
        assert!(s.on_done(0, PeerId::random(), Outcome::Abandoned, Instant::now()).is_empty());
    }
    /// Runs a download schedule against scripted nodes: (delay ms, outcome).
    fn run_get(k: usize, nodes: &[(u64, Got)], hedging: Hedging) -> (GetSchedule, Vec<(Duration, usize)>, Duration) {
        let t0 = Instant::now();
        let peers: Vec<PeerId> = nodes.iter().map(|_| PeerId::random()).collect();
        let (mut s, first) = GetSchedule::new(k, peers.iter().copied().enumerate(), hedging, t0);
        let mut now = Duration::ZERO;
        let mut starts = Vec::new();
        let mut running: Vec<(Duration, usize)> = Vec::new();
        let apply = |steps: Vec<Fetch>,
                     now: Duration,
                     starts: &mut Vec<(Duration, usize)>,
                     running: &mut Vec<(Duration, usize)>| {
            for Fetch::Start(i, _) in steps {
                starts.push((now, i));
                running.push((now + Duration::from_millis(nodes[i].0), i));
            }
        };
        apply(first, now, &mut starts, &mut running);
        // A node scripted busy answers busy the first time, then good.
        let mut answered = vec![0u32; nodes.len()];
        while !s.done() {
            running.sort();
            let hedge = s.hedge_due().duration_since(t0);
            match running.first().copied() {
                Some((at, i)) if at <= hedge => {
                    running.remove(0);
                    now = at;
                    let got = match nodes[i].1 {
                        Got::Busy(_) if answered[i] > 0 => Got::Good,
                        g => g,
                    };
                    answered[i] += 1;
                    let steps = s.on_done(peers[i], got, t0 + at);
                    apply(steps, now, &mut starts, &mut running);
                }
                None if starts.len() >= nodes.len() && !s.resting() => break,
                _ => {
                    now = hedge;
                    let steps = s.on_hedge(t0 + hedge);
                    if steps.is_empty() && running.is_empty() {
                        break;
                    }
                    apply(steps, now, &mut starts, &mut running);
                }
            }
        }
        (s, starts, now)
    }

    #[test]
    fn downloads_ask_k_then_a_spare_per_late_request_and_move_on_from_bad_answers() {
        const G: Got = Got::Good;
        // 4 of 6: one data shard's holder hangs; its spare (shard 4) is
        // asked at twice the first answer's time.
        let (s, starts, now) =
            run_get(4, &[(50, G), (50, G), (60_000, G), (50, G), (50, G), (50, G)], Hedging::Adaptive);
        assert!(s.done());
        assert_eq!(starts[..4].iter().map(|s| s.1).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(starts[4], (HEDGE_MIN, 4), "hedged at max(2 × 50 ms, 200 ms)");
        assert_eq!(now, HEDGE_MIN + Duration::from_millis(50));
        assert_eq!(s.into_pending().len(), 1, "the hung request is left to the shell to judge");
        // A corrupt answer moves to the next holder at once.
        let (s, starts, _) = run_get(2, &[(10, Got::Corrupt), (10, G), (10, G)], Hedging::Adaptive);
        assert!(s.done());
        assert_eq!(starts[2], (Duration::from_millis(10), 2));
        // Eager asks one more at once.
        let (_, starts, _) = run_get(2, &[(10, G), (10, G), (10, G)], Hedging::Eager);
        assert_eq!(starts.iter().filter(|s| s.0.is_zero()).count(), 3);
        // Too few good holders: the schedule ends short.
        let (s, _, _) = run_get(3, &[(10, G), (10, Got::Failed), (10, G)], Hedging::Adaptive);
        assert_eq!((s.done(), s.good()), (false, 2));
        // A busy holder: the next holder at once, and the busy one again
        // after its rest (what it asked, at least 50 ms) when it is needed.
        let busy = Got::Busy(Duration::from_millis(20));
        let (s, starts, now) = run_get(2, &[(10, busy), (10, G), (10, G)], Hedging::Adaptive);
        assert!(s.done());
        assert_eq!(starts[2], (Duration::from_millis(10), 2), "the next holder, at once");
        assert_eq!(now, Duration::from_millis(20));
        let (s, starts, now) = run_get(2, &[(10, busy), (10, G)], Hedging::Adaptive);
        assert!(s.done(), "the busy holder is the only one left: asked again");
        assert_eq!(starts[2], (Duration::from_millis(60), 0), "after 50 ms of rest");
        assert_eq!(now, Duration::from_millis(70));
    }

    #[test]
    fn reads_leave_slow_holders_for_last_and_keep_data_shards_first_otherwise() {
        let ms = Duration::from_millis;
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        let holder = |shard: usize, time: Option<u64>| Holder {
            shard,
            peer: peers[shard],
            penalized: false,
            time: time.map(ms),
        };
        // All about as fast (or not timed yet): data shards first.
        let even: Vec<Holder> = (0..6).map(|i| holder(i, Some(4 + i as u64))).collect();
        let order: Vec<usize> = read_order(&even).into_iter().map(|(i, _)| i).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        let untimed: Vec<Holder> = (0..6).map(|i| holder(i, None)).collect();
        assert_eq!(read_order(&untimed)[0].0, 0);
        // Data shard 1's holder is far slower than the median: it goes
        // after the parity holders, before a holder that failed lately.
        let mut slow = even.clone();
        slow[1].time = Some(ms(200));
        slow[2].penalized = true;
        let order: Vec<usize> = read_order(&slow).into_iter().map(|(i, _)| i).collect();
        assert_eq!(order, vec![0, 3, 4, 5, 1, 2]);
        // Twice as slow is not slow: small differences never reorder.
        let mut near = even;
        near[0].time = Some(ms(12));
        assert_eq!(read_order(&near)[0].0, 0);
        // Read cost: a small request counts its time, a large one its time per MiB.
        assert_eq!(read_cost(ms(10), 0), ms(10));
        assert_eq!(read_cost(ms(300), 2 << 20), ms(100));
    }
}
