//! Range reads over the network: for a part of a segment, only the 64 KiB
//! blocks that cover it are fetched, from the data shards that hold them
//! (`ShardClient::get_range`), checked by their AEAD tags and decrypted.
//! If a data shard's holder fails, the same columns are asked of every
//! shard as verified slices (`ShardClient::prove`: each piece is checked
//! against its shard's id before use, parity shards included) and the
//! missing columns rebuilt from any `k`. If that fails too, or a block does
//! not authenticate, the segment is read the safe way: whole shards, each
//! verified against its id, decoded from any `k`.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use cairn_crypto::{DataKey, ObjectCipher};
use cairn_proto::manifest::{ObjectManifest, ShardPlacement};
use cairn_proto::proof::{self, MAX_PROOF_RANGE};
use cairn_proto::shard::ByteRange;

use crate::bucket::Bucket;
use crate::error::Error;
use crate::range::{ShardSource, columns_of, read_segment_range};
use crate::segment::SegmentPos;
use crate::transfer::peer_of;

/// How long a ranged read waits on its holders before it reads around
/// those still silent.
const RANGE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Pieces of data shards fetched for one range: `(shard, range) → bytes`.
struct Fetched(HashMap<(u16, u32, u32), Bytes>);

impl ShardSource for Fetched {
    fn read(&self, index: u16, range: Range<u32>) -> Option<Bytes> {
        self.0.get(&(index, range.start, range.end)).cloned()
    }
}

/// Verified columns of shards: per shard, where its bytes start.
struct Proven(HashMap<u16, (u32, Bytes)>);

impl ShardSource for Proven {
    fn read(&self, index: u16, range: Range<u32>) -> Option<Bytes> {
        let (at, bytes) = self.0.get(&index)?;
        let from = range.start.checked_sub(*at)? as usize;
        let to = from + (range.end - range.start) as usize;
        (to <= bytes.len()).then(|| bytes.slice(from..to))
    }
}

/// Reads plaintext bytes `plain` of segment `i` (of `count`) of `m` from
/// `source` on the blocking pool: the outer error is the pool's, the inner
/// one the read's (the caller then reads another way).
async fn read_from(
    m: &ObjectManifest,
    i: u64,
    count: u64,
    plain: Range<u32>,
    source: impl ShardSource + Send + 'static,
) -> Result<Result<Vec<u8>, Error>, Error> {
    let seg = &m.segments[i as usize];
    let layout = m.layout.segment(seg.plain_len);
    let ids: Vec<_> = seg.shards.iter().map(|s| s.id).collect();
    let cipher = ObjectCipher::new(&DataKey::from_bytes(m.data_key), m.version.0);
    let pos = SegmentPos { index: i, last: i + 1 == count };
    tokio::task::spawn_blocking(move || read_segment_range(&cipher, layout, pos, &ids, plain, &source))
        .await
        .map_err(|_| Error::WorkerPanicked)
}

impl Bucket {
    /// Plaintext bytes `plain` of segment `i` of `m`.
    pub(crate) async fn fetch_segment_range(
        &self,
        m: &ObjectManifest,
        i: u64,
        plain: Range<u32>,
    ) -> Result<Vec<u8>, Error> {
        let count = m.segments.len() as u64;
        let seg = &m.segments[i as usize];
        let layout = m.layout.segment(seg.plain_len);
        let blocks = layout.blocks_covering(plain.clone());
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        let cipher_range = layout.block_cipher_range(blocks.start).start..layout.block_cipher_range(blocks.end - 1).end;
        let wanted = layout.data_pieces(cipher_range);
        let fetches = wanted.iter().map(|(s, r)| async move {
            let shard = seg.shards.get(usize::from(*s))?;
            let peer = peer_of(shard.holder.as_ref()?)?;
            let len = u64::from(r.end - r.start);
            match self.transfer().client(peer).get_range(shard.id, u64::from(r.start), len).await {
                Ok(bytes) => {
                    self.transfer().count_fetched(bytes.len());
                    Some(((*s, r.start, r.end), Bytes::from(bytes)))
                }
                Err(e) => {
                    tracing::debug!(segment = i, shard = s, error = %e, "range fetch failed");
                    self.transfer().nodes().report(peer, false);
                    None
                }
            }
        });
        // A holder that failed lately or is cut off is not waited for: the
        // proofs below read around it.
        let down = wanted.iter().any(|(s, _)| {
            let holder = seg.shards.get(usize::from(*s)).and_then(|sh| peer_of(sh.holder.as_ref()?));
            holder.is_none_or(|p| self.transfer().nodes().penalized(&p))
        });
        let got: Option<HashMap<_, _>> = if down {
            None
        } else {
            match tokio::time::timeout(RANGE_WAIT, futures::future::join_all(fetches)).await {
                Ok(all) => all.into_iter().collect(),
                Err(_) => None,
            }
        };
        if let Some(pieces) = got {
            match read_from(m, i, count, plain.clone(), Fetched(pieces)).await? {
                Ok(bytes) => return Ok(bytes),
                Err(e) => tracing::warn!(segment = i, error = %e, "a ranged read did not verify; reading whole shards"),
            }
        }
        // A data shard's holder failed: the same columns from every shard,
        // as verified slices, and the missing ones rebuilt.
        // Holders that failed lately are asked last; the proofs end once
        // `k` shards' columns are verified.
        let cols = columns_of(&wanted, layout.shard_len());
        let mut order: Vec<(bool, usize)> = seg
            .shards
            .iter()
            .enumerate()
            .map(|(j, sh)| {
                let p = sh.holder.as_ref().and_then(peer_of);
                (p.is_none_or(|p| self.transfer().nodes().penalized(&p)), j)
            })
            .collect();
        order.sort_unstable();
        let prove = |j: usize| {
            let cols = cols.clone();
            let shard = &seg.shards[j];
            async move { Some((j as u16, (cols.start, self.prove_columns(shard, seg.shard_len, cols).await?))) }
        };
        let k = usize::from(layout.k);
        let mut waiting = order.into_iter().map(|(_, j)| j);
        let mut running: futures::stream::FuturesUnordered<_> = waiting.by_ref().take(k).map(prove).collect();
        let mut proven: HashMap<u16, (u32, Bytes)> = HashMap::new();
        while proven.len() < k {
            let hedge = tokio::time::sleep(RANGE_WAIT);
            tokio::select! {
                next = futures::StreamExt::next(&mut running) => match next {
                    Some(Some((j, got))) => {
                        proven.insert(j, got);
                    }
                    // A holder failed: the next one.
                    Some(None) => running.extend(waiting.next().map(prove)),
                    None => break,
                },
                // Late: one more holder at a time.
                () = hedge => match waiting.next() {
                    Some(j) => running.push(prove(j)),
                    None if running.is_empty() => break,
                    None => {}
                },
            }
        }
        if proven.len() >= usize::from(layout.k) {
            match read_from(m, i, count, plain.clone(), Proven(proven)).await? {
                Ok(bytes) => return Ok(bytes),
                Err(e) => {
                    tracing::warn!(segment = i, error = %e, "a degraded ranged read failed; reading whole shards")
                }
            }
        }
        let (_, whole) = self.fetch_segment(m, i, count).await?;
        let out = whole.get(plain.start as usize..plain.end as usize).map(<[u8]>::to_vec);
        crate::pool::global().give(whole);
        out.ok_or(Error::BadRange {
            start: u64::from(plain.start),
            end: u64::from(plain.end),
            size: seg.plain_len.into(),
        })
    }

    /// Bytes `cols` of a shard of `len` bytes from its holder, as verified
    /// slices of at most [`MAX_PROOF_RANGE`] each; `None` if the holder
    /// fails or a slice does not verify.
    async fn prove_columns(&self, shard: &ShardPlacement, len: u32, cols: Range<u32>) -> Option<Bytes> {
        let peer = peer_of(shard.holder.as_ref()?)?;
        let client = self.transfer().client(peer);
        let mut out = Vec::with_capacity(cols.len());
        let mut at = u64::from(cols.start);
        while at < u64::from(cols.end) {
            let range = ByteRange { offset: at, len: (u64::from(cols.end) - at).min(MAX_PROOF_RANGE) };
            let slice = match client.prove(shard.id, range).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(shard = %shard.id, error = %e, "proof of a range failed");
                    return None;
                }
            };
            self.transfer().count_fetched(slice.len());
            let Ok((start, bytes)) = proof::verify(&shard.id, u64::from(len), range, &slice) else {
                tracing::warn!(%peer, shard = %shard.id, "a node's slice does not verify");
                self.transfer().nodes().report(peer, false);
                return None;
            };
            let from = (at - start) as usize;
            out.extend_from_slice(bytes.get(from..from + range.len as usize)?);
            at += range.len;
        }
        Some(Bytes::from(out))
    }
}
