//! Range reads over the network: for a part of a segment, only the 64 KiB
//! blocks that cover it are fetched, from the data shards that hold them
//! (`ShardClient::get_range`), checked by their AEAD tags and decrypted.
//! If a holder fails or a block does not authenticate, the segment is read
//! the safe way: whole shards, each verified against its id, decoded from
//! any `k`.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use cairn_crypto::{DataKey, ObjectCipher};
use cairn_proto::manifest::ObjectManifest;

use crate::bucket::Bucket;
use crate::error::Error;
use crate::range::{ShardSource, read_segment_range};
use crate::segment::SegmentPos;
use crate::transfer::peer_of;

/// Pieces of data shards fetched for one range: `(shard, range) → bytes`.
struct Fetched(HashMap<(u16, u32, u32), Bytes>);

impl ShardSource for Fetched {
    fn read(&self, index: u16, range: Range<u32>) -> Option<Bytes> {
        self.0.get(&(index, range.start, range.end)).cloned()
    }
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
        let got: Option<HashMap<_, _>> = futures::future::join_all(fetches).await.into_iter().collect();
        if let Some(pieces) = got {
            let ids: Vec<_> = seg.shards.iter().map(|s| s.id).collect();
            let cipher = ObjectCipher::new(&DataKey::from_bytes(m.data_key), m.version.0);
            let pos = SegmentPos { index: i, last: i + 1 == count };
            let want = plain.clone();
            let source = Fetched(pieces);
            let read =
                tokio::task::spawn_blocking(move || read_segment_range(&cipher, layout, pos, &ids, want, &source))
                    .await
                    .map_err(|_| Error::WorkerPanicked)?;
            match read {
                Ok(bytes) => return Ok(bytes),
                Err(e) => tracing::warn!(segment = i, error = %e, "a ranged read did not verify; reading whole shards"),
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
}
