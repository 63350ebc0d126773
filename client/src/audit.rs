//! Audits: a holder proves it still has a shard by sending a verified slice
//! ([`cairn_proto::proof`]) of a range the auditor picks at random. The
//! auditor checks it against the shard id and length it already knows, so
//! nothing is precomputed and a node that dropped or altered the bytes
//! cannot answer.
//!
//! The policy follows Storj's: a repair walk audits a few shards of each
//! holder it meets ([`Sampler`], a reservoir per node). A wrong or missing
//! answer fails the node at once; a node that does not answer is
//! *contained* and asked again, up to [`CONTAINED_RETRIES`] times, then
//! failed ([`Standing`]). Repair treats a failed node's shards as lost.
//! [`Sampler`] and [`Standing`] are plain state, tested without a network.

use std::collections::HashMap;
use std::time::Duration;

use cairn_net::PeerId;
use cairn_proto::proof::{self, ProofError};
use cairn_proto::shard::{ByteRange, ShardError};
use cairn_proto::{NodeId, ShardId};
use rand::Rng;

use crate::transfer::Transfer;

/// Times a contained node is asked again before it is failed.
pub const CONTAINED_RETRIES: u8 = 3;
/// How long one audit may take.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before asking a contained node again (doubled each time).
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What one audit found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The slice verified.
    Verified,
    /// The node answered, and not with a slice that verifies.
    Failed(Failure),
    /// No answer (down, timed out, busy).
    Unreachable,
}

/// How a node failed an audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Its slice does not verify against the shard id.
    BadProof(ProofError),
    /// It does not hold the shard.
    Missing,
    /// It says its copy is damaged.
    Damaged,
    /// It refused otherwise, or answered something else.
    Refused,
}

/// A shard to audit: its id and length (the verifier needs both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The shard.
    pub id: ShardId,
    /// Its length in bytes.
    pub len: u64,
}

/// A random range to prove: one byte, whose 16 KiB group the slice carries.
pub fn pick(len: u64, rng: &mut impl Rng) -> ByteRange {
    ByteRange { offset: rng.gen_range(0..len.max(1)), len: 1 }
}

/// Judges a node's answer to a proof of `range` of `sample`.
pub fn judge(sample: Sample, range: ByteRange, answer: Result<Vec<u8>, cairn_net::Error>) -> Verdict {
    match answer {
        Ok(slice) => match proof::verify(&sample.id, sample.len, range, &slice) {
            Ok(_) => Verdict::Verified,
            Err(e) => Verdict::Failed(Failure::BadProof(e)),
        },
        Err(cairn_net::Error::Refused { error, .. }) => match error {
            ShardError::NotFound(_) => Verdict::Failed(Failure::Missing),
            ShardError::Damaged(_) => Verdict::Failed(Failure::Damaged),
            ShardError::RateLimited { .. } | ShardError::Internal => Verdict::Unreachable,
            _ => Verdict::Failed(Failure::Refused),
        },
        Err(cairn_net::Error::Malformed { .. } | cairn_net::Error::UnexpectedResponse { .. }) => {
            Verdict::Failed(Failure::Refused)
        }
        Err(_) => Verdict::Unreachable,
    }
}

/// Audits one shard at `peer` once.
pub async fn audit(transfer: &Transfer, peer: PeerId, sample: Sample) -> Verdict {
    let range = pick(sample.len, &mut rand::thread_rng());
    let answer = tokio::time::timeout(AUDIT_TIMEOUT, transfer.client(peer).prove(sample.id, range)).await;
    match answer {
        Ok(answer) => judge(sample, range, answer),
        Err(_) => Verdict::Unreachable,
    }
}

/// Where a node stands after the audits of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Every audit so far verified.
    Good,
    /// The last audit got no answer; asked again up to
    /// [`CONTAINED_RETRIES`] times (the count so far).
    Contained(u8),
    /// It failed an audit, or stayed silent through its retries.
    Failed,
}

impl Standing {
    /// The standing after one more verdict. Failed is final.
    pub fn after(self, v: &Verdict) -> Self {
        match (self, v) {
            (Self::Failed, _) | (_, Verdict::Failed(_)) => Self::Failed,
            (Self::Contained(n), Verdict::Unreachable) if n >= CONTAINED_RETRIES => Self::Failed,
            (Self::Contained(n), Verdict::Unreachable) => Self::Contained(n + 1),
            (Self::Good, Verdict::Unreachable) => Self::Contained(1),
            (Self::Contained(_) | Self::Good, Verdict::Verified) => Self::Good,
        }
    }
}

/// Audits `samples` of one node, one after the other, asking again while
/// it is contained. Returns its standing and the audits sent.
pub async fn audit_node(transfer: &Transfer, peer: PeerId, samples: &[Sample]) -> (Standing, u64) {
    let mut standing = Standing::Good;
    let mut sent = 0;
    for &sample in samples {
        let mut wait = RETRY_AFTER;
        loop {
            let verdict = audit(transfer, peer, sample).await;
            sent += 1;
            if let Verdict::Failed(f) = &verdict {
                tracing::warn!(%peer, shard = %sample.id, failure = ?f, "a holder failed an audit");
            }
            standing = standing.after(&verdict);
            match standing {
                Standing::Contained(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Standing::Good => break,
                Standing::Failed => return (standing, sent),
            }
        }
    }
    (standing, sent)
}

/// Picks up to `per_node` shards of each holder, uniformly among those
/// offered (reservoir sampling), in bounded memory.
#[derive(Debug)]
pub struct Sampler {
    per_node: usize,
    nodes: HashMap<NodeId, (u64, Vec<Sample>)>,
}

impl Sampler {
    /// A sampler keeping `per_node` shards per holder.
    pub fn new(per_node: usize) -> Self {
        Self { per_node, nodes: HashMap::new() }
    }

    /// Offers a shard `node` is recorded to hold.
    pub fn offer(&mut self, node: &NodeId, sample: Sample, rng: &mut impl Rng) {
        if self.per_node == 0 {
            return;
        }
        let (seen, kept) = self.nodes.entry(node.clone()).or_default();
        *seen += 1;
        if kept.len() < self.per_node {
            kept.push(sample);
        } else {
            let j = rng.gen_range(0..*seen);
            if let Some(slot) = kept.get_mut(j as usize) {
                *slot = sample;
            }
        }
    }

    /// The holders met, and the shards chosen of each.
    pub fn into_samples(self) -> HashMap<NodeId, Vec<Sample>> {
        self.nodes.into_iter().map(|(n, (_, s))| (n, s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn sample(i: u8) -> Sample {
        Sample { id: ShardId([i; 32]), len: 1 << 20 }
    }

    #[test]
    fn a_wrong_answer_fails_at_once_and_silence_after_the_retries() {
        let fail = Verdict::Failed(Failure::Missing);
        assert_eq!(Standing::Good.after(&fail), Standing::Failed);
        assert_eq!(Standing::Contained(2).after(&fail), Standing::Failed);
        assert_eq!(Standing::Failed.after(&Verdict::Verified), Standing::Failed);
        let mut s = Standing::Good;
        for n in 1..=CONTAINED_RETRIES {
            s = s.after(&Verdict::Unreachable);
            assert_eq!(s, Standing::Contained(n));
        }
        assert_eq!(s.after(&Verdict::Verified), Standing::Good, "an answer ends containment");
        assert_eq!(s.after(&Verdict::Unreachable), Standing::Failed);
    }

    #[test]
    fn answers_are_judged_by_the_proof_not_by_the_node() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let (id, ob) = proof::outboard(&data[..], data.len() as u64).expect("outboard");
        let s = Sample { id, len: data.len() as u64 };
        let range = pick(s.len, &mut StdRng::seed_from_u64(1));
        let slice = proof::slice(&data[..], &id, s.len, &ob, range).expect("slice");
        assert_eq!(judge(s, range, Ok(slice.clone())), Verdict::Verified);
        let mut bad = slice;
        bad[100] ^= 1;
        assert!(matches!(judge(s, range, Ok(bad)), Verdict::Failed(Failure::BadProof(_))));
        let peer = PeerId::random();
        let refused = |error| cairn_net::Error::Refused { peer, error };
        assert_eq!(judge(s, range, Err(refused(ShardError::NotFound(id)))), Verdict::Failed(Failure::Missing));
        assert_eq!(judge(s, range, Err(refused(ShardError::Damaged(id)))), Verdict::Failed(Failure::Damaged));
        assert_eq!(judge(s, range, Err(refused(ShardError::RateLimited { retry_after_ms: 5 }))), Verdict::Unreachable);
        assert_eq!(judge(s, range, Err(cairn_net::Error::Timeout { peer })), Verdict::Unreachable);
    }

    #[test]
    fn the_sampler_keeps_a_bounded_uniform_sample_per_node() {
        let mut rng = StdRng::seed_from_u64(7);
        let node = NodeId::from_bytes(vec![1]).expect("id");
        let mut hits = [0u32; 10];
        for _ in 0..2000 {
            let mut s = Sampler::new(2);
            for i in 0..10 {
                s.offer(&node, sample(i), &mut rng);
            }
            let got = s.into_samples().remove(&node).expect("node");
            assert_eq!(got.len(), 2);
            assert_ne!(got[0], got[1]);
            for g in got {
                hits[usize::from(g.id.0[0])] += 1;
            }
        }
        // Each of 10 shards is kept with probability 1/5: 400 of 2000.
        assert!(hits.iter().all(|&h| (300..500).contains(&h)), "{hits:?}");
        let mut none = Sampler::new(0);
        none.offer(&node, sample(1), &mut rng);
        assert!(none.into_samples().is_empty());
    }
}
