//! `cairn bench durability`: how likely a segment is to be lost in a year,
//! and what repair costs, from a model of node churn and repair.
//!
//! A segment has `n` shards on `n` distinct nodes. Each holder leaves
//! (churn) or fails at a constant rate `λ` per year. While `h ≥ r` (the
//! repair threshold) holders are up, nothing happens but losses; below it,
//! a repair walk (every `interval`, so found after `interval / 2` on
//! average) plus the transfer (`k` shards fetched, the lost ones stored,
//! within the bandwidth budget) brings it back to `n`, at rate `μ`. The
//! segment is lost if `h` falls below `k` first.
//!
//! Two estimates of the same chain, printed side by side:
//! - closed form: an episode starts each time `h` drops below `r` (one
//!   cycle: the times to lose `n - r + 1` holders, plus the repair), and is
//!   lost with probability `∏_{h=k}^{r-1} hλ / (hλ + μ)`;
//! - Monte Carlo over episodes, with importance sampling (losses are drawn
//!   with probability ½ and weighted back), since a probability of 1e-12
//!   cannot be seen by plain sampling.
//!
//! Repair bandwidth per node: each month a `churn` share of the nodes
//! leaves with `stored` bytes each; rebuilding `s` shards of a segment at
//! once moves `k + s` shards.

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// The model's inputs.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// Shards needed.
    pub k: u16,
    /// Shards stored.
    pub n: u16,
    /// Repair when fewer than this are healthy.
    pub r: u16,
    /// Share of nodes that leave per month (0.1 = 10 %).
    pub churn: f64,
    /// Share of nodes that fail per year, on top of churn.
    pub failures: f64,
    /// Time between two repair walks.
    pub interval: Duration,
    /// Bytes per shard.
    pub shard: f64,
    /// Repair bandwidth budget, bytes per second.
    pub budget: f64,
    /// Bytes of shards each node stores (for repair traffic).
    pub stored: f64,
}

const YEAR: f64 = 365.25 * 86_400.0;
const MONTH: f64 = YEAR / 12.0;

impl Model {
    /// Loss rate of one holder, per year.
    fn lambda(&self) -> f64 {
        -(1.0 - self.churn).ln() * 12.0 - (1.0 - self.failures).ln()
    }

    /// Repair rate once below the threshold, per year.
    fn mu(&self) -> f64 {
        let lost = f64::from(self.n - self.r + 1);
        let transfer = (f64::from(self.k) + lost) * self.shard / self.budget;
        YEAR / (self.interval.as_secs_f64() / 2.0 + transfer)
    }

    /// Mean time (years) from a full segment to its first drop below `r`.
    fn time_to_episode(&self) -> f64 {
        let l = self.lambda();
        (self.r..=self.n).map(|h| 1.0 / (f64::from(h) * l)).sum()
    }

    /// Probability that an episode ends in loss (closed form).
    fn episode_loss(&self) -> f64 {
        let (l, m) = (self.lambda(), self.mu());
        (self.k..self.r).map(|h| f64::from(h) * l / (f64::from(h) * l + m)).product()
    }

    /// Annual probability of losing the segment (closed form).
    pub fn closed_form(&self) -> f64 {
        let rate = 1.0 / (self.time_to_episode() + 1.0 / self.mu());
        -(-(rate * self.episode_loss())).exp_m1()
    }

    /// Annual probability of loss, by Monte Carlo over `trials` episodes.
    pub fn monte_carlo(&self, trials: u64, seed: u64) -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (l, m) = (self.lambda(), self.mu());
        let mut lost = 0.0;
        let mut time = 0.0;
        for _ in 0..trials {
            // Down to r - 1 by losses only.
            for h in self.r..=self.n {
                time += exp(&mut rng, f64::from(h) * l);
            }
            // The race between losses and the repair, losses drawn with
            // probability ½ and weighted by their true probability.
            let mut h = self.r - 1;
            let mut weight = 1.0;
            loop {
                if h < self.k {
                    lost += weight;
                    break;
                }
                let fail = f64::from(h) * l;
                let p = fail / (fail + m);
                time += exp(&mut rng, fail + m);
                if rng.r#gen::<bool>() {
                    weight *= p / 0.5;
                    h -= 1;
                } else {
                    // Repaired: the episode adds nothing to the loss.
                    break;
                }
            }
        }
        let rate = trials as f64 / time;
        -(-(rate * lost / trials as f64)).exp_m1()
    }

    /// Repair traffic per node, bytes per second on average.
    pub fn repair_traffic(&self) -> f64 {
        let s = f64::from(self.n - self.r + 1);
        self.churn * self.stored * (f64::from(self.k) + s) / s / MONTH
    }
}

fn exp(rng: &mut impl Rng, rate: f64) -> f64 {
    -(1.0 - rng.r#gen::<f64>()).ln() / rate
}

/// Nines of an annual loss probability (`-log10 p`).
pub fn nines(p: f64) -> f64 {
    if p <= 0.0 { f64::INFINITY } else { -p.log10() }
}

/// Runs the model for the defaults and a few codes, and prints them.
pub fn run(nodes: u64, base: Model, trials: u64) {
    println!(
        "durability model: {nodes} nodes, {:.0} % monthly churn, {:.1} % yearly failures, repair walk every {:?}, budget {:.0} MB/s, {:.1} TB per node",
        base.churn * 100.0,
        base.failures * 100.0,
        base.interval,
        base.budget / 1e6,
        base.stored / 1e12
    );
    println!(
        "(each segment's shards sit on distinct nodes, so the count of nodes does not change a segment's odds; it sets the traffic per node only)"
    );
    println!(
        "{:<28} {:>13} {:>13} {:>8} {:>8} {:>16}",
        "code", "closed form", "monte carlo", "nines", "mc nines", "repair MB/s/node"
    );
    let mut codes = vec![(base, "default".to_string())];
    for (k, n, r) in [(4, 6, 6), (4, 8, 6), (8, 12, 12), (8, 16, 12), (10, 30, 14), (29, 80, 35)] {
        codes.push((Model { k, n, r, ..base }, String::new()));
    }
    for (m, note) in &codes {
        let cf = m.closed_form();
        let mc = m.monte_carlo(trials, 7);
        println!(
            "{:<28} {:>13.3e} {:>13.3e} {:>8.2} {:>8.2} {:>16.3}",
            format!("{}-of-{}, repair below {} {note}", m.k, m.n, m.r),
            cf,
            mc,
            nines(cf),
            nines(mc),
            m.repair_traffic() / 1e6
        );
    }
    println!("durability-nines: {:.2}", nines(base.closed_form()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(k: u16, n: u16, r: u16) -> Model {
        Model {
            k,
            n,
            r,
            churn: 0.1,
            failures: 0.02,
            interval: Duration::from_secs(3600),
            shard: 4e6,
            budget: 50e6,
            stored: 1e12,
        }
    }

    #[test]
    fn monte_carlo_agrees_with_the_closed_form() {
        for m in [model(4, 6, 6), model(4, 8, 6), model(2, 3, 3)] {
            let (cf, mc) = (m.closed_form(), m.monte_carlo(200_000, 1));
            assert!((mc / cf - 1.0).abs() < 0.1, "{m:?}: closed form {cf:e}, monte carlo {mc:e}");
        }
    }

    #[test]
    fn more_margin_faster_repair_and_less_churn_all_help() {
        let base = model(4, 6, 6);
        assert!(model(4, 8, 8).closed_form() < base.closed_form());
        let slow = Model { interval: Duration::from_secs(86_400), ..base };
        assert!(slow.closed_form() > base.closed_form());
        let calm = Model { churn: 0.01, ..base };
        assert!(calm.closed_form() < base.closed_form());
        // Lazy repair costs durability and saves traffic.
        assert!(model(4, 8, 6).closed_form() > model(4, 8, 8).closed_form());
        assert!(model(4, 8, 6).repair_traffic() < model(4, 8, 8).repair_traffic());
        assert!((nines(1e-11) - 11.0).abs() < 1e-9);
    }
}
