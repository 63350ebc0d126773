//! Sealed index pages in the network: encrypted with a tree's key, named by
//! BLAKE3 of the ciphertext (so a node cannot swap one), stored whole on
//! [`REPLICAS`] nodes, and kept in the local cache.

use std::sync::Arc;

use bytes::Bytes;
use cairn_crypto::{SymmetricKey, delete_token};
use cairn_proto::ShardId;
use cairn_proto::codec;

use crate::cache::Cache;
use crate::error::Error;
use crate::index::{Page, PagePtr};
use crate::transfer::{Outgoing, Transfer, peer_of};

/// Copies of each page. Any one is enough to read it; three survive two
/// lost nodes, as the default 4-of-6 code does.
pub const REPLICAS: usize = 3;
/// Copies attempted at once (the slowest are cancelled).
const ATTEMPTS: usize = REPLICAS + 1;
/// Largest page accepted from the network.
const MAX_PAGE: usize = 16 * 1024 * 1024;
/// Version marker of the page encoding.
const PAGE_V1: u8 = 1;

/// Pages of one tree (a bucket's index or the bucket list).
#[derive(Debug, Clone)]
pub struct Pages {
    key: SymmetricKey,
    /// Binds every page to its tree: the tree's public signing key.
    aad: Vec<u8>,
    transfer: Arc<Transfer>,
    cache: Option<Arc<Cache>>,
}

impl Pages {
    /// Pages sealed with `key`, bound to the tree whose head is signed by `tree_public_key`.
    pub fn new(
        key: SymmetricKey,
        tree_public_key: [u8; 32],
        transfer: Arc<Transfer>,
        cache: Option<Arc<Cache>>,
    ) -> Self {
        let mut aad = b"cairn 2026 index page v1\0".to_vec();
        aad.extend_from_slice(&tree_public_key);
        Self { key, aad, transfer, cache }
    }

    /// The token that deletes a page's copies.
    pub fn token(&self, id: &ShardId) -> [u8; 32] {
        delete_token(self.key.as_bytes(), &id.0)
    }

    /// Seals and stores a page.
    pub async fn put(&self, page: &Page) -> Result<PagePtr, Error> {
        let sealed = self.key.seal(&self.aad, &codec::to_versioned(PAGE_V1, page));
        let id = ShardId::of(&sealed);
        if let Some(c) = &self.cache {
            c.put_page(&id, &sealed);
        }
        let len = sealed.len() as u32;
        let bytes = Bytes::from(sealed);
        let copies = vec![Outgoing { id, bytes, token: self.token(&id) }; ATTEMPTS];
        let holders = self.transfer.put_shards(id.0, &copies, REPLICAS).await?;
        Ok(PagePtr { id, len, holders: holders.into_iter().flatten().collect() })
    }

    /// Fetches (or finds in the cache) and opens a page.
    pub async fn get(&self, ptr: &PagePtr) -> Result<Page, Error> {
        let sealed = match self.cache.as_ref().and_then(|c| c.page(&ptr.id)) {
            Some(s) => s,
            None => self.fetch(ptr).await?,
        };
        let plain =
            self.key.open(&self.aad, &sealed).map_err(|_| Error::Index(format!("page {} does not open", ptr.id)))?;
        codec::from_versioned("index page", PAGE_V1, &plain, MAX_PAGE).map_err(|e| Error::Index(e.to_string()))
    }

    async fn fetch(&self, ptr: &PagePtr) -> Result<Vec<u8>, Error> {
        let mut last = String::from("no holders recorded");
        for holder in &ptr.holders {
            let Some(peer) = peer_of(holder) else { continue };
            match self.transfer.client(peer).get(ptr.id, u64::from(ptr.len).min(MAX_PAGE as u64)).await {
                Ok(bytes) if ptr.id.matches(&bytes) => {
                    self.transfer.nodes().report(peer, true);
                    if let Some(c) = &self.cache {
                        c.put_page(&ptr.id, &bytes);
                    }
                    return Ok(bytes);
                }
                Ok(_) => {
                    self.transfer.nodes().report(peer, false);
                    last = format!("{peer} served a page that does not match its id");
                }
                Err(e) => {
                    self.transfer.nodes().report(peer, false);
                    last = e.to_string();
                }
            }
        }
        Err(Error::PageUnavailable { id: ptr.id, reason: last })
    }

    /// Deletes a page's copies (best effort).
    pub fn delete(&self, ptr: &PagePtr) {
        let token = self.token(&ptr.id);
        let shards = ptr.holders.iter().map(|h| (ptr.id, h.clone(), token)).collect();
        self.transfer.delete_shards(shards);
    }
}
