//! Placement policy: which nodes may hold a segment's shards, and in what
//! order they are tried. Plain functions and state, decided here and
//! enforced by the upload schedule ([`crate::schedule::PutSchedule`]) and
//! by repair.
//!
//! - **Regions** (sovereignty): a bucket may keep every shard inside a
//!   list of regions; nodes elsewhere, or that declare none, are never
//!   candidates.
//! - **Spread**: a bucket may place each segment over at least `spread`
//!   regions, with no region holding more than `n - k` shards, so losing
//!   any one region loses nothing. The cap is hard: the schedule counts
//!   every upload in flight or stored against it, so whichever `n`
//!   uploads win, it holds, and a put that cannot keep it fails. The
//!   spread is how candidates are ordered: round-robin over regions, so a
//!   segment spans as many as have nodes up. While a region is cut off
//!   the others take its share (up to the cap), and `cairn stat` shows
//!   segments over fewer regions than asked.
//! - **Diversity**: no two shards of a segment on one IP address, /24
//!   (IPv4) or /48 (IPv6). Loopback addresses are exempt (a devnet on one
//!   machine). When the healthy candidates span fewer networks than
//!   shards, each network may hold `⌈n / networks⌉` and the plan says it
//!   is [`Plan::crowded`]. The cap is soft: when an upload finds no node
//!   left that keeps it (nodes failed), the schedule lifts it
//!   ([`Limits::relax`]) rather than fail the put, and `cairn stat`
//!   shows the shards that share a network.
//! - **Capacity**: candidates are ordered least full first (by share of
//!   capacity used, with a little per-key randomness: [`order`]), so a
//!   node with twice the free space gets about twice the new shards until
//!   both are as full; nodes without room for a shard (or with less than
//!   1 % free) come after all others but nodes that failed lately. The
//!   pool they are chosen from is two DHT neighbourhoods (`cairn bench
//!   placement` shows why: one neighbourhood cannot even out the density
//!   of node ids, two can).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use cairn_net::{Multiaddr, PeerId, libp2p_protocol};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A bucket's placement rules, kept in its bucket-list entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Regions every shard must be in (empty: anywhere).
    pub regions: Vec<String>,
    /// Regions each segment is spread over (0 or 1: no rule).
    pub spread: u8,
    /// No two shards of a segment on one network (IP, /24, /48).
    pub diversity: bool,
}

impl Default for Placement {
    fn default() -> Self {
        Self { regions: Vec::new(), spread: 0, diversity: true }
    }
}

/// Most regions a bucket may name.
pub const MAX_REGIONS: usize = 32;

impl Placement {
    /// Whether candidates need their regions known.
    pub fn needs_regions(&self) -> bool {
        !self.regions.is_empty() || self.spread > 1
    }

    /// Whether a node in `region` may hold shards.
    pub fn allows(&self, region: Option<&str>) -> bool {
        self.regions.is_empty() || region.is_some_and(|r| self.regions.iter().any(|x| x == r))
    }

    /// Most shards (of `n` kept, `k` needed) one region may hold: `n - k`
    /// with a spread rule, else `None`.
    pub fn region_cap(&self, k: u16, n: u16) -> Option<usize> {
        (self.spread > 1).then(|| usize::from(n.saturating_sub(k)))
    }

    /// Checks the rules against the code (`k` of `n`).
    pub fn validate(&self, k: u16, n: u16) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::BadPlacement { reason });
        if self.regions.len() > MAX_REGIONS {
            return bad(format!("at most {MAX_REGIONS} regions"));
        }
        for r in &self.regions {
            if r.is_empty() {
                return bad("an empty region name".into());
            }
            cairn_proto::profile::check_name(r).map_err(|e| Error::BadPlacement { reason: e.to_string() })?;
        }
        if self.spread > 1 {
            if usize::from(self.spread) > usize::from(n) {
                return bad(format!("a spread over {} regions needs at least as many shards (n = {n})", self.spread));
            }
            let cap = self.region_cap(k, n).unwrap_or(0);
            if cap * usize::from(self.spread) < usize::from(n) {
                return bad(format!(
                    "{k}-of-{n} over {} regions puts more than n-k = {cap} shards in some region, whose loss loses data",
                    self.spread
                ));
            }
            if !self.regions.is_empty() && self.regions.len() < usize::from(self.spread) {
                return bad(format!("a spread over {} regions, but only {} allowed", self.spread, self.regions.len()));
            }
        }
        Ok(())
    }
}

/// The network a node is in, for diversity: its /24 (IPv4) or /48 (IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetGroup {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6([u8; 6]),
}

/// The network of the first address in `addrs` that is not loopback or
/// unspecified (`None`: exempt from diversity).
pub fn net_group(addrs: &[Multiaddr]) -> Option<NetGroup> {
    addrs.iter().find_map(|a| {
        a.iter()
            .find_map(|p| match p {
                libp2p_protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
                libp2p_protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
                _ => None,
            })
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map(|ip| match ip {
                IpAddr::V4(v) => {
                    let o = v.octets();
                    NetGroup::V4([o[0], o[1], o[2]])
                }
                IpAddr::V6(v) => {
                    let o = v.octets();
                    NetGroup::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
                }
            })
    })
}

/// What placement knows of one candidate node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub peer: PeerId,
    /// Its signed region (`None`: unknown or none declared).
    pub region: Option<String>,
    /// Its network, for diversity (`None`: exempt).
    pub net: Option<NetGroup>,
    /// Its free bytes and capacity, when known.
    pub space: Option<(u64, u64)>,
    /// It failed a request lately.
    pub penalized: bool,
}

impl Candidate {
    /// A node placement knows nothing about.
    pub fn bare(peer: PeerId) -> Self {
        Self { peer, region: None, net: None, space: None, penalized: false }
    }

    /// Whether it has room for a shard of `shard_len` bytes, with 1 % of
    /// its capacity to spare (unknown: assumed).
    pub fn has_room(&self, shard_len: u64) -> bool {
        self.space.is_none_or(|(free, capacity)| free >= shard_len.saturating_add(capacity / 100))
    }
}

/// Counts of shards per group (region, network) against caps, over the
/// uploads in flight and stored: [`Self::fits`] before an upload starts,
/// [`Self::take`] when it does, [`Self::release`] when it ends without
/// being kept.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    of: HashMap<PeerId, Vec<usize>>,
    caps: Vec<usize>,
    used: Vec<usize>,
    /// Caps that give way when nothing else is left (diversity).
    soft: Vec<bool>,
    relaxed: bool,
}

impl Limits {
    /// No limits.
    pub fn none() -> Self {
        Self::default()
    }

    fn group(&mut self, cap: usize) -> usize {
        self.caps.push(cap);
        self.used.push(0);
        self.soft.push(false);
        self.caps.len() - 1
    }

    fn soft_group(&mut self, cap: usize) -> usize {
        let g = self.group(cap);
        self.soft[g] = true;
        g
    }

    /// Whether `peer` may take one more shard once the soft caps are lifted.
    pub fn fits_relaxed(&self, peer: &PeerId) -> bool {
        self.of.get(peer).is_none_or(|gs| gs.iter().all(|&g| self.soft[g] || self.used[g] < self.caps[g]))
    }

    /// Lifts the soft caps; whether there were any to lift.
    pub fn relax(&mut self) -> bool {
        let had = !self.relaxed && self.soft.iter().any(|s| *s);
        self.relaxed = true;
        had
    }

    fn add(&mut self, peer: PeerId, group: usize) {
        self.of.entry(peer).or_default().push(group);
    }

    /// Whether `peer` may take one more shard.
    pub fn fits(&self, peer: &PeerId) -> bool {
        self.of
            .get(peer)
            .is_none_or(|gs| gs.iter().all(|&g| (self.relaxed && self.soft[g]) || self.used[g] < self.caps[g]))
    }

    /// `peer` takes a shard.
    pub fn take(&mut self, peer: &PeerId) {
        for &g in self.of.get(peer).into_iter().flatten() {
            self.used[g] += 1;
        }
    }

    /// A shard `peer` took is not kept.
    pub fn release(&mut self, peer: &PeerId) {
        for &g in self.of.get(peer).into_iter().flatten() {
            self.used[g] = self.used[g].saturating_sub(1);
        }
    }
}

/// Where a segment's shards go: the candidates in the order to try them,
/// and the limits the schedule keeps.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Candidates allowed by the rules, best first.
    pub order: Vec<PeerId>,
    /// Caps per region and network.
    pub limits: Limits,
    /// Fewer networks than shards: some networks hold more than one.
    pub crowded: bool,
}

/// A uniform number in (0, 1] from BLAKE3 of the peer and the key.
fn unit(peer: &PeerId, key: &[u8; 32]) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(&peer.to_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or_default());
    ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// The second placement key of a segment: candidates come from the DHT
/// neighbourhoods of both keys, half each.
pub fn second_key(key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("cairn 2026 second placement key v1", key)
}

/// How much of a node's capacity a per-key random term may outweigh: it
/// decides between nodes about as full, so that segments at once do not
/// all go to the one least full node.
pub const JITTER: f64 = 0.02;

/// Orders candidates: those with room, least full first (used share of
/// capacity plus up to [`JITTER`] of per-key randomness; unknown space
/// counts as the median share known); then those without room; then
/// penalized ones. Filling the least full first gives a node with twice
/// the free space about twice the new shards until they are as full.
/// Deterministic for a key and a set.
pub fn order(cands: &[Candidate], key: &[u8; 32], shard_len: u64) -> Vec<PeerId> {
    let share = |(free, cap): (u64, u64)| 1.0 - free.min(cap) as f64 / cap.max(1) as f64;
    let mut shares: Vec<f64> = cands.iter().filter_map(|c| c.space.map(share)).collect();
    shares.sort_by(f64::total_cmp);
    let median = shares.get(shares.len() / 2).copied().unwrap_or(0.0);
    let mut scored: Vec<(u8, f64, PeerId)> = cands
        .iter()
        .map(|c| {
            let class = if c.penalized {
                2
            } else if !c.has_room(shard_len) {
                1
            } else {
                0
            };
            (class, c.space.map_or(median, share) + JITTER * unit(&c.peer, key), c.peer)
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    scored.into_iter().map(|(_, _, p)| p).collect()
}

/// Plans the placement of a segment's shards: `n` of them must be kept, `k`
/// read it. `existing` are holders that keep shards of the segment (a
/// repair); they count against the caps and are not candidates.
pub fn plan(
    rules: &Placement,
    k: u16,
    n: u16,
    cands: &[Candidate],
    existing: &[Candidate],
    key: &[u8; 32],
    shard_len: u64,
) -> Result<Plan, Error> {
    let allowed: Vec<Candidate> = cands
        .iter()
        .filter(|c| rules.allows(c.region.as_deref()) && !existing.iter().any(|e| e.peer == c.peer))
        // A spread needs every region known: a node that declares none
        // could share one with anyone.
        .filter(|c| rules.spread <= 1 || c.region.is_some())
        .cloned()
        .collect();
    // Nodes that failed lately count: they are tried last, not never.
    let needed = usize::from(n).saturating_sub(existing.len());
    if !rules.regions.is_empty() && allowed.len() < needed {
        return Err(Error::PolicyUnmet {
            need: format!("{needed} nodes in {}", rules.regions.join(", ")),
            found: census(cands),
        });
    }
    let mut limits = Limits::none();
    if let Some(cap) = rules.region_cap(k, n) {
        let mut per: BTreeMap<&str, (usize, Vec<PeerId>)> = BTreeMap::new();
        for c in existing {
            per.entry(c.region.as_deref().unwrap_or("")).or_default().0 += 1;
        }
        for c in &allowed {
            per.entry(c.region.as_deref().unwrap_or("")).or_default().1.push(c.peer);
        }
        let room: usize = per.values().map(|(held, free)| cap.saturating_sub(*held).min(free.len())).sum();
        if room < needed {
            return Err(Error::PolicyUnmet {
                need: format!("{n} shards with at most n-k = {cap} in any one region"),
                found: census(cands),
            });
        }
        for (r, (held, _)) in &per {
            let g = limits.group(cap);
            limits.used[g] = *held;
            for c in allowed.iter().chain(existing).filter(|c| c.region.as_deref() == Some(*r)) {
                limits.add(c.peer, g);
            }
        }
    }
    let mut crowded = false;
    if rules.diversity {
        let mut nets: BTreeMap<NetGroup, Vec<&Candidate>> = BTreeMap::new();
        for c in allowed.iter().chain(existing) {
            if let Some(g) = c.net {
                nets.entry(g).or_default().push(c);
            }
        }
        // Networks are counted over the nodes that did not fail lately.
        let healthy = |c: &&Candidate| !c.penalized;
        let exempt = allowed.iter().chain(existing).filter(healthy).filter(|c| c.net.is_none()).count();
        let groups = nets.values().filter(|m| m.iter().any(healthy)).count() + exempt;
        let cap = if groups >= usize::from(n) { 1 } else { usize::from(n).div_ceil(groups.max(1)) };
        crowded = cap > 1 && !nets.is_empty();
        for members in nets.values() {
            let g = limits.soft_group(cap);
            for c in members {
                if existing.iter().any(|e| e.peer == c.peer) {
                    limits.used[g] += 1;
                }
                limits.add(c.peer, g);
            }
        }
    }
    let mut ordered = order(&allowed, key, shard_len);
    if rules.spread > 1 {
        ordered = round_robin(ordered, |p| allowed.iter().find(|c| c.peer == *p).and_then(|c| c.region.clone()));
    }
    Ok(Plan { order: ordered, limits, crowded })
}

/// Interleaves `order` by region (each region's nodes keep their order;
/// regions take turns in the order of their best node), so that the first
/// picks span as many regions as there are.
fn round_robin(order: Vec<PeerId>, region: impl Fn(&PeerId) -> Option<String>) -> Vec<PeerId> {
    let mut queues: Vec<(Option<String>, std::collections::VecDeque<PeerId>)> = Vec::new();
    for p in order {
        let r = region(&p);
        match queues.iter_mut().find(|(q, _)| *q == r) {
            Some((_, q)) => q.push_back(p),
            None => queues.push((r, [p].into())),
        }
    }
    let mut out = Vec::new();
    while queues.iter().any(|(_, q)| !q.is_empty()) {
        for (_, q) in &mut queues {
            out.extend(q.pop_front());
        }
    }
    out
}

/// "eu: 3, us: 2, none: 1" of the candidates, for errors.
pub fn census(cands: &[Candidate]) -> String {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for c in cands {
        *per.entry(c.region.as_deref().unwrap_or("none")).or_default() += 1;
    }
    if per.is_empty() {
        return "no nodes".into();
    }
    per.iter().map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(region: &str, net: u8) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            region: (!region.is_empty()).then(|| region.to_string()),
            net: (net > 0).then_some(NetGroup::V4([10, 0, net])),
            space: None,
            penalized: false,
        }
    }

    /// Simulates an upload: takes candidates in order while they fit.
    fn pick(p: &mut Plan, count: usize) -> Vec<PeerId> {
        let mut out = Vec::new();
        for peer in p.order.clone() {
            if out.len() == count {
                break;
            }
            if p.limits.fits(&peer) {
                p.limits.take(&peer);
                out.push(peer);
            }
        }
        out
    }

    fn region_of<'a>(all: &'a [Candidate], p: &PeerId) -> &'a str {
        all.iter().find(|c| c.peer == *p).and_then(|c| c.region.as_deref()).unwrap_or("")
    }

    #[test]
    fn regions_keep_shards_inside() {
        let all: Vec<Candidate> = ["eu", "us", "eu", "ap", "eu", "us", "eu", "eu"].iter().map(|r| node(r, 0)).collect();
        let rules = Placement { regions: vec!["eu".into()], ..Default::default() };
        let mut p = plan(&rules, 2, 4, &all, &[], &[1; 32], 100).expect("plan");
        assert_eq!(p.order.len(), 5);
        for peer in pick(&mut p, 4) {
            assert_eq!(region_of(&all, &peer), "eu");
        }
        // Six needed, five in eu: refused, saying what there is.
        let e = plan(&rules, 2, 6, &all, &[], &[1; 32], 100).expect_err("too few");
        let text = e.to_string();
        assert!(text.contains("6 nodes in eu") && text.contains("eu: 5") && text.contains("us: 2"), "{text}");
    }

    #[test]
    fn a_spread_caps_every_region() {
        let all: Vec<Candidate> =
            (0..12).map(|i| node(["eu", "us", "ap"][i % 3], 0)).chain((0..6).map(|_| node("eu", 0))).collect();
        let rules = Placement { spread: 3, ..Default::default() };
        assert_eq!(rules.region_cap(4, 8), Some(4));
        assert!(rules.validate(4, 8).is_ok());
        assert!(rules.validate(4, 6).is_ok(), "2 per region × 3 = 6");
        assert!(rules.validate(5, 6).is_err(), "1 per region × 3 < 6");
        assert!(rules.validate(4, 4).is_err(), "no parity");
        for key in 0..20u8 {
            let mut p = plan(&rules, 4, 8, &all, &[], &[key; 32], 100).expect("plan");
            let got = pick(&mut p, 14);
            assert_eq!(got.len(), 12, "eu capped at 4 of its 10");
            let mut per: HashMap<&str, usize> = HashMap::new();
            for peer in &got[..8] {
                *per.entry(region_of(&all, peer)).or_default() += 1;
            }
            assert!(per.len() == 3 && per.values().all(|&c| c <= 3), "the first 8 span all 3: {per:?}");
        }
        // A region cut off: the two others take its share, up to n-k each.
        let two: Vec<Candidate> = (0..10).map(|i| node(["eu", "us"][i % 2], 0)).collect();
        let mut p = plan(&rules, 4, 8, &two, &[], &[0; 32], 100).expect("two regions");
        assert_eq!(pick(&mut p, 10).len(), 8);
        // One region cannot hold 8 shards with at most 4 in it.
        let one: Vec<Candidate> = (0..10).map(|_| node("eu", 0)).collect();
        let e = plan(&rules, 4, 8, &one, &[], &[0; 32], 100).expect_err("one region");
        assert!(e.to_string().contains("at most n-k = 4"), "{e}");
    }

    #[test]
    fn a_spread_counts_the_holders_kept() {
        let all: Vec<Candidate> = (0..12).map(|i| node(["eu", "us", "ap"][i % 3], 0)).collect();
        let rules = Placement { spread: 3, ..Default::default() };
        // Repair keeps 4 shards in eu and 2 in us: the 2 others go to us or ap, never eu.
        let existing: Vec<Candidate> = [0, 3, 6, 9, 1, 4].iter().map(|&i| all[i].clone()).collect();
        let mut p = plan(&rules, 4, 8, &all, &existing, &[3; 32], 100).expect("plan");
        let got = pick(&mut p, 20);
        let regions: Vec<&str> = got.iter().map(|p| region_of(&all, p)).collect();
        assert_eq!(regions.iter().filter(|r| **r == "eu").count(), 0, "{regions:?}");
        assert_eq!(regions.iter().filter(|r| **r == "us").count(), 2, "us had 2 of 4: {regions:?}");
    }

    #[test]
    fn diversity_keeps_one_shard_per_network() {
        let all: Vec<Candidate> = (0..12).map(|i| node("", (i % 6 + 1) as u8)).collect();
        let rules = Placement::default();
        let mut p = plan(&rules, 2, 4, &all, &[], &[5; 32], 100).expect("plan");
        assert!(!p.crowded);
        let got = pick(&mut p, 6);
        assert_eq!(got.len(), 6, "six networks");
        let nets: std::collections::HashSet<_> =
            got.iter().map(|g| all.iter().find(|c| c.peer == *g).and_then(|c| c.net)).collect();
        assert_eq!(nets.len(), 6);
        // Three networks for 8 shards: three per network, and said.
        let small: Vec<Candidate> = (0..9).map(|i| node("", (i % 3 + 1) as u8)).collect();
        let mut p = plan(&rules, 4, 8, &small, &[], &[5; 32], 100).expect("plan");
        assert!(p.crowded);
        assert_eq!(pick(&mut p, 9).len(), 9);
        // Loopback nodes are exempt; diversity off lets anything through.
        let local: Vec<Candidate> = (0..8).map(|_| node("", 0)).collect();
        let mut p = plan(&rules, 4, 8, &local, &[], &[5; 32], 100).expect("plan");
        assert!(!p.crowded);
        assert_eq!(pick(&mut p, 8).len(), 8);
    }

    #[test]
    fn released_slots_are_free_again() {
        let all: Vec<Candidate> = (0..4).map(|_| node("", 1)).collect();
        let mut limits = plan(&Placement::default(), 1, 1, &all, &[], &[0; 32], 1).expect("plan").limits;
        assert!(limits.fits(&all[0].peer));
        limits.take(&all[0].peer);
        assert!(!limits.fits(&all[1].peer));
        limits.release(&all[0].peer);
        assert!(limits.fits(&all[1].peer));
        // Diversity is soft: lifted, the network may take more.
        limits.take(&all[0].peer);
        assert!(!limits.fits(&all[1].peer) && limits.fits_relaxed(&all[1].peer));
        assert!(limits.relax());
        assert!(limits.fits(&all[1].peer));
        assert!(!limits.relax(), "lifted once");
    }

    #[test]
    fn net_groups_come_from_addresses() {
        let a = |s: &str| s.parse::<Multiaddr>().expect("addr");
        assert_eq!(net_group(&[a("/ip4/127.0.0.1/udp/1/quic-v1")]), None);
        assert_eq!(
            net_group(&[a("/ip4/127.0.0.1/udp/1/quic-v1"), a("/ip4/192.168.7.9/tcp/4")]),
            Some(NetGroup::V4([192, 168, 7]))
        );
        assert_eq!(net_group(&[a("/ip6/2001:db8:1:2::5/tcp/4")]), Some(NetGroup::V6([0x20, 0x01, 0x0d, 0xb8, 0, 1])));
        assert_eq!(net_group(&[a("/ip6/::1/tcp/4")]), None);
    }

    #[test]
    fn nodes_of_mixed_capacity_fill_evenly() {
        // 60 nodes of 1, 2 and 4 units filled to 70 % with 8-shard
        // segments: every node ends within 10 % of the average fill.
        let caps: Vec<u64> = (0..60).map(|i| [1000, 2000, 4000][i % 3]).collect();
        let mut used = vec![0u64; 60];
        let peers: Vec<PeerId> = (0..60).map(|_| PeerId::random()).collect();
        let total: u64 = caps.iter().sum();
        let mut key = 0u64;
        while used.iter().sum::<u64>() * 10 < total * 7 {
            key += 1;
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&key.to_le_bytes());
            let cands: Vec<Candidate> = (0..60)
                .map(|i| Candidate { space: Some((caps[i] - used[i], caps[i])), ..Candidate::bare(peers[i]) })
                .collect();
            for p in order(&cands, &k, 1).into_iter().take(8) {
                let i = peers.iter().position(|x| *x == p).expect("peer");
                used[i] += 1;
            }
        }
        let fills: Vec<f64> = used.iter().zip(&caps).map(|(u, c)| *u as f64 / *c as f64).collect();
        let max = fills.iter().copied().fold(0.0, f64::max);
        assert!(max < 0.77, "max fill {max:.3} at 70 % average");
    }

    #[test]
    fn nodes_as_full_take_turns() {
        let all: Vec<Candidate> =
            (0..4).map(|_| Candidate { space: Some((500, 1000)), ..Candidate::bare(PeerId::random()) }).collect();
        let mut first = HashMap::new();
        for key in 0..400u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&key.to_le_bytes());
            *first.entry(order(&all, &k, 1)[0]).or_insert(0) += 1;
        }
        assert_eq!(first.len(), 4, "{first:?}");
        assert!(first.values().all(|&n| n > 60), "{first:?}");
    }

    #[test]
    fn full_and_penalized_nodes_come_last() {
        let mut all: Vec<Candidate> = (0..5).map(|_| node("", 0)).collect();
        all[0].space = Some((50, 10_000)); // less than 1 % free
        all[1].penalized = true;
        for c in &mut all[2..] {
            c.space = Some((5_000, 10_000));
        }
        let o = order(&all, &[9; 32], 10);
        assert_eq!(o[3], all[0].peer);
        assert_eq!(o[4], all[1].peer);
    }
}
