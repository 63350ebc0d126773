//! `cairn bench placement`: how evenly placement fills a large network of
//! nodes of mixed capacity, and how many hops a Kademlia lookup takes.
//!
//! Fill: `nodes` nodes with capacities drawn from a mix (40 % 1 TB, 30 %
//! 2 TB, 20 % 4 TB, 10 % 10 TB). Segments with random placement keys are
//! placed until the network is `fill` full on average, each as the client
//! places it: the pool is the nodes nearest to the key by XOR and to its
//! second key, half each (as many as `Transfer::put_shards_placed` asks
//! for), ordered by
//! `cairn_client::policy::order` on their free space, and the first `n`
//! with room take a shard. The baseline, in the same run, is placement by
//! distance alone (the nearest `n` with room), as before free space
//! counted. Printed: max/mean fill (a node's used / capacity, against the
//! network's average), and the share of nodes over 90 %.
//!
//! Hops: every node gets a Kademlia routing table (a bucket of up to 20
//! random nodes per shared-prefix length), and lookups of random keys run
//! as libp2p's do (α = 3 requests at a time, each answered by the 20
//! nearest the answering node knows), until the 20 nearest found have all
//! answered. A hop is one round of requests; printed are the hops until
//! the nearest node is found, and the rounds until the lookup ends (at
//! least 20 / α of them, whatever the size). Run at `nodes / 100`,
//! `nodes / 10` and `nodes`, so the growth is seen.

use std::collections::HashSet;

use cairn_client::policy::{Candidate, order};
use cairn_net::PeerId;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Nodes near the key that free space chooses among (20 for the lookup,
/// as `Transfer` asks for 3 × (10 shards + 4 spares)).
const POOL: usize = 42;
/// Kademlia's bucket size and replication factor.
const K: usize = 20;
/// Kademlia's parallelism.
const ALPHA: usize = 3;
/// Shard slots per TB of capacity in the simulation.
const SLOTS_PER_TB: u64 = 200;

struct Net {
    /// Node positions (the first 8 bytes of BLAKE3 of the peer id), sorted.
    pos: Vec<u64>,
    peers: Vec<PeerId>,
    cap: Vec<u64>,
    used: Vec<u64>,
}

fn position(peer: &PeerId) -> u64 {
    u64::from_be_bytes(blake3::hash(&peer.to_bytes()).as_bytes()[..8].try_into().unwrap_or_default())
}

impl Net {
    fn new(nodes: usize, rng: &mut impl Rng) -> Self {
        let mut all: Vec<(u64, PeerId, u64)> = (0..nodes)
            .map(|_| {
                let peer = PeerId::random();
                let tb = match rng.gen_range(0..10) {
                    0..=3 => 1,
                    4..=6 => 2,
                    7..=8 => 4,
                    _ => 10,
                };
                (position(&peer), peer, tb * SLOTS_PER_TB)
            })
            .collect();
        all.sort_unstable_by_key(|a| a.0);
        Self {
            pos: all.iter().map(|a| a.0).collect(),
            peers: all.iter().map(|a| a.1).collect(),
            cap: all.iter().map(|a| a.2).collect(),
            used: vec![0; nodes],
        }
    }

    /// The `count` nodes nearest `key` by XOR: all lie in the smallest
    /// block of a shared prefix that holds `count` nodes.
    fn nearest(&self, key: u64, count: usize) -> Vec<usize> {
        let mut bits = 64u32;
        let (lo, hi) = loop {
            let (lo, hi) = self.block(key, bits);
            if hi - lo >= count || bits == 0 {
                break (lo, hi);
            }
            bits -= 1;
        };
        let mut v: Vec<usize> = (lo..hi).collect();
        v.sort_unstable_by_key(|&i| self.pos[i] ^ key);
        v.truncate(count);
        v
    }

    /// The index range of the nodes whose first `bits` bits are `key`'s.
    fn block(&self, key: u64, bits: u32) -> (usize, usize) {
        let mask = if bits == 0 { 0 } else { u64::MAX << (64 - bits) };
        let start = key & mask;
        let end = start | !mask;
        (self.pos.partition_point(|&p| p < start), self.pos.partition_point(|&p| p <= end))
    }

    fn by_class(&self) -> String {
        let mut out = String::new();
        for tb in [1u64, 2, 4, 10] {
            let c = tb * SLOTS_PER_TB;
            let f: Vec<f64> =
                self.used.iter().zip(&self.cap).filter(|(_, x)| **x == c).map(|(u, x)| *u as f64 / *x as f64).collect();
            let mean = f.iter().sum::<f64>() / f.len().max(1) as f64;
            let max = f.iter().copied().fold(0.0, f64::max);
            out += &format!("{tb} TB: mean {mean:.3} max {max:.3}; ");
        }
        out
    }

    fn fill_ratio(&self) -> (f64, f64, f64) {
        let total: u64 = self.cap.iter().sum();
        let mean = self.used.iter().sum::<u64>() as f64 / total as f64;
        let fills: Vec<f64> = self.used.iter().zip(&self.cap).map(|(u, c)| *u as f64 / *c as f64).collect();
        let max = fills.iter().copied().fold(0.0, f64::max);
        let over = fills.iter().filter(|f| **f > 0.9).count() as f64 / fills.len() as f64;
        (mean, max, over)
    }
}

/// Places segments of `n` shards until the average fill is `fill`;
/// `weighted`: by free space, else by distance alone.
fn fill(net: &mut Net, n: usize, fill: f64, weighted: bool, rng: &mut impl Rng) -> u64 {
    let total: u64 = net.cap.iter().sum();
    let target = (total as f64 * fill) as u64;
    let mut placed = 0u64;
    let mut segments = 0u64;
    while placed < target {
        let key: [u8; 32] = rng.r#gen();
        let at = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
        // As the client does: half the pool near the key, half near its
        // second placement key (`cairn_client::policy::second_key`).
        let second = cairn_client::policy::second_key(&key);
        let at2 = u64::from_be_bytes(second[..8].try_into().unwrap_or_default());
        let mut pool = net.nearest(at, POOL / 2);
        for i in net.nearest(at2, POOL / 2) {
            if !pool.contains(&i) {
                pool.push(i);
            }
        }
        let chosen: Vec<usize> = if weighted {
            let cands: Vec<Candidate> = pool
                .iter()
                .map(|&i| Candidate {
                    space: Some((net.cap[i] - net.used[i], net.cap[i])),
                    ..Candidate::bare(net.peers[i])
                })
                .collect();
            order(&cands, &key, 1)
                .into_iter()
                .filter_map(|p| pool.iter().copied().find(|&i| net.peers[i] == p))
                .filter(|&i| net.used[i] + 1 + net.cap[i] / 100 <= net.cap[i])
                .take(n)
                .collect()
        } else {
            let near = net.nearest(at, POOL);
            near.into_iter().filter(|&i| net.used[i] + 1 + net.cap[i] / 100 <= net.cap[i]).take(n).collect()
        };
        if chosen.len() < n {
            // The neighbourhood is full: the put would fail here.
            segments += 1;
            if segments > 100 * (target / n as u64 + 1) {
                break;
            }
            continue;
        }
        for i in chosen {
            net.used[i] += 1;
            placed += 1;
        }
        segments += 1;
    }
    segments
}

/// Routing tables: for each node and each shared-prefix length, up to `K`
/// random nodes with that prefix length.
fn tables(net: &Net, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    (0..net.pos.len())
        .map(|me| {
            let p = net.pos[me];
            let mut known = Vec::new();
            for cpl in 0..64u32 {
                // Nodes sharing exactly `cpl` bits: the block of `p` with bit `cpl` flipped.
                let flipped = p ^ (1u64 << (63 - cpl));
                let (lo, hi) = net.block(flipped, cpl + 1);
                if hi > lo {
                    let mut ids: Vec<usize> = (lo..hi).collect();
                    ids.shuffle(rng);
                    known.extend(ids.into_iter().take(K));
                }
                if hi - lo < 1 && cpl > 20 {
                    break;
                }
            }
            known
        })
        .collect()
}

/// An iterative lookup of `key` from node `from`: the rounds until the
/// nearest node is found, and until the lookup ends.
fn lookup(net: &Net, tables: &[Vec<usize>], from: usize, key: u64) -> (u32, u32) {
    let dist = |i: usize| net.pos[i] ^ key;
    let target = net.nearest(key, 1)[0];
    let mut best: Vec<usize> = tables[from].clone();
    best.sort_unstable_by_key(|&i| dist(i));
    best.dedup();
    best.truncate(K);
    let mut asked: HashSet<usize> = HashSet::new();
    let mut hops = 0;
    let mut found = if best.contains(&target) || from == target { Some(0) } else { None };
    loop {
        let round: Vec<usize> = best.iter().copied().filter(|i| !asked.contains(i)).take(ALPHA).collect();
        if round.is_empty() {
            return (found.unwrap_or(hops), hops);
        }
        hops += 1;
        for &i in &round {
            asked.insert(i);
            let mut answer = tables[i].clone();
            answer.sort_unstable_by_key(|&j| dist(j));
            answer.truncate(K);
            best.extend(answer);
        }
        best.sort_unstable_by_key(|&i| dist(i));
        best.dedup();
        best.truncate(K);
        if found.is_none() && best.contains(&target) {
            found = Some(hops);
        }
    }
}

/// Mean and max hops to find the nearest node, and mean rounds to finish.
fn hops(nodes: usize, lookups: usize, rng: &mut impl Rng) -> (f64, u32, f64) {
    let net = Net::new(nodes, rng);
    let t = tables(&net, rng);
    let (mut total, mut rounds, mut max) = (0u64, 0u64, 0);
    for _ in 0..lookups {
        let (h, r) = lookup(&net, &t, rng.gen_range(0..nodes), rng.r#gen());
        total += u64::from(h);
        rounds += u64::from(r);
        max = max.max(h);
    }
    (total as f64 / lookups as f64, max, rounds as f64 / lookups as f64)
}

/// Runs the simulation and prints the figures.
pub fn run(nodes: usize, average_fill: f64, n: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    println!(
        "placement: {nodes} nodes (40 % 1 TB, 30 % 2 TB, 20 % 4 TB, 10 % 10 TB), segments of {n} shards, \
         filled to {:.0} % on average",
        average_fill * 100.0
    );
    let mut weighted = Net::new(nodes, &mut rng);
    let mut nearest = clone_net(&weighted);
    let t = std::time::Instant::now();
    let segs = fill(&mut weighted, n, average_fill, true, &mut rng);
    let (mean_w, max_w, over_w) = weighted.fill_ratio();
    let segs_b = fill(&mut nearest, n, average_fill, false, &mut rng);
    let (mean_b, max_b, over_b) = nearest.fill_ratio();
    println!("fill by capacity, free space weighted: {}", weighted.by_class());
    println!("fill by capacity, nearest by distance: {}", nearest.by_class());
    println!("| placement | segments | mean fill | max fill | max/mean | nodes over 90 % |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| free space weighted (Cairn) | {segs} | {:.3} | {:.3} | **{:.3}** | {:.2} % |",
        mean_w,
        max_w,
        max_w / mean_w,
        over_w * 100.0
    );
    println!(
        "| nearest by distance (baseline) | {segs_b} | {:.3} | {:.3} | {:.3} | {:.2} % |",
        mean_b,
        max_b,
        max_b / mean_b,
        over_b * 100.0
    );
    println!("fill simulated in {:.1} s", t.elapsed().as_secs_f64());
    println!();
    println!("| nodes | hops to the nearest node, mean | max | rounds until the lookup ends | log2(nodes) |");
    println!("|---|---|---|---|---|");
    for size in [nodes / 100, nodes / 10, nodes] {
        let size = size.max(K + 1);
        let (mean, max, rounds) = hops(size, 500, &mut rng);
        println!("| {size} | {mean:.2} | {max} | {rounds:.2} | {:.1} |", (size as f64).log2());
    }
    println!();
    println!("placement-max-mean: {:.3}", max_w / mean_w);
}

fn clone_net(net: &Net) -> Net {
    Net { pos: net.pos.clone(), peers: net.peers.clone(), cap: net.cap.clone(), used: net.used.clone() }
}
