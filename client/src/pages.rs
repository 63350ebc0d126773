//! Sealed index pages in the network: encrypted with a tree's key, named by
//! BLAKE3 of the ciphertext (so a node cannot swap one), stored whole on
//! [`REPLICAS`] nodes, and kept in the local cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_crypto::SymmetricKey;
use cairn_proto::ShardId;

use crate::cache::Cache;
use crate::error::{Error, PageFault};
use crate::formats;
use crate::index::{Page, PagePtr};
use crate::recent::{self, Recent};
use crate::schedule;
use crate::transfer::{Outgoing, Transfer, delete_token, peer_of};
use cairn_net::PeerId;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Copies of each page. Any one is enough to read it; three survive two
/// lost nodes, as the default 4-of-6 code does.
pub const REPLICAS: usize = 3;
/// Copies attempted at once (the slowest are cancelled).
const ATTEMPTS: usize = REPLICAS + 1;
/// Largest page accepted from the network.
const MAX_PAGE: usize = formats::MAX_PAGE;
/// How long a page fetch waits for one holder before it asks the next too.
const PAGE_HEDGE: Duration = Duration::from_millis(300);

/// Pages of one tree (a bucket's index or the bucket list).
#[derive(Debug, Clone)]
pub struct Pages {
    key: SymmetricKey,
    /// Binds every page to its tree: the tree's public signing key.
    aad: Vec<u8>,
    transfer: Arc<Transfer>,
    cache: Option<Arc<Cache>>,
    /// Pages lately read or written, decoded (shared by clones).
    recent: Arc<Mutex<Recent<Arc<Page>>>>,
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
        let recent = Arc::new(Mutex::new(Recent::new(recent::BUDGET)));
        Self { key, aad, transfer, cache, recent }
    }

    /// The local cache, if there is one.
    pub fn cache(&self) -> Option<&Arc<Cache>> {
        self.cache.as_ref()
    }

    /// The transfers pages go through.
    pub fn transfer(&self) -> &Arc<Transfer> {
        &self.transfer
    }

    /// The key the tokens of this tree's pages derive from.
    pub fn token_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Seals and stores a page.
    pub async fn put(&self, page: &Page) -> Result<PagePtr, Error> {
        let sealed = self.key.seal(&self.aad, &formats::encode_page(page));
        let id = ShardId::of(&sealed);
        let len = sealed.len() as u32;
        let bytes = Bytes::from(sealed);
        self.keep(id, Arc::new(page.clone()), len as usize);
        self.cache_put(id, bytes.clone()).await;
        let copies = vec![Outgoing { id, bytes, key: *self.key.as_bytes() }; ATTEMPTS];
        let holders = self.transfer.put_shards(id.0, &copies, REPLICAS).await?;
        Ok(PagePtr { id, len, holders: holders.into_iter().flatten().collect() })
    }

    /// Fetches (or finds in the cache) and opens a page.
    pub async fn get(&self, ptr: &PagePtr) -> Result<Page, Error> {
        if let Some(page) = self.lock_recent().get(&ptr.id) {
            return Ok(Page::clone(&page));
        }
        let sealed = match self.cache_get(ptr.id).await {
            Some(s) => Bytes::from(s),
            None => self.fetch(ptr).await?,
        };
        let bad = |fault| Error::BadPage { id: ptr.id, fault };
        let plain = self.key.open(&self.aad, &sealed).map_err(|_| bad(PageFault::DoesNotOpen))?;
        let page = formats::decode_page(&plain).map_err(|e| bad(PageFault::Malformed(e)))?;
        self.keep(ptr.id, Arc::new(page.clone()), sealed.len());
        Ok(page)
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, Recent<Arc<Page>>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a page whose id is `id` (sealed, `len` bytes) in memory.
    fn keep(&self, id: ShardId, page: Arc<Page>, len: usize) {
        self.lock_recent().insert(id, page, len);
    }

    /// Fetches a page from its holders: the first at once, the next when
    /// one fails or after [`PAGE_HEDGE`] without an answer (a holder that
    /// is cut off would otherwise hold the read up for its timeouts); the
    /// first copy that matches its id wins. Holders that failed lately are
    /// asked last. A busy holder (`RateLimited`) is not counted as failed:
    /// once no other request is out, it is asked again after its rest
    /// ([`schedule::Rests`]).
    async fn fetch(&self, ptr: &PagePtr) -> Result<Bytes, Error> {
        let mut last = String::from("no holders recorded");
        let mut holders: Vec<PeerId> = ptr.holders.iter().filter_map(peer_of).collect();
        holders.sort_by_key(|p| self.transfer.nodes().penalized(p));
        let len = u64::from(ptr.len).min(MAX_PAGE as u64);
        let start = |peer: PeerId| {
            let client = self.transfer.client(peer);
            async move { (peer, client.get(ptr.id, len).await) }
        };
        let mut waiting = holders.into_iter();
        let mut running = FuturesUnordered::new();
        running.extend(waiting.next().map(start));
        // Busy holders: when they may be asked again, and their busy answers.
        let mut resting: Vec<(tokio::time::Instant, PeerId)> = Vec::new();
        let mut rests = schedule::Rests::default();
        loop {
            if running.is_empty() {
                let Some(first) = (0..resting.len()).min_by_key(|&i| resting[i].0) else { break };
                let (at, peer) = resting.swap_remove(first);
                tokio::time::sleep_until(at).await;
                running.push(start(peer));
                continue;
            }
            let hedge = tokio::time::sleep(PAGE_HEDGE);
            let more = waiting.len() > 0;
            tokio::select! {
                Some((peer, got)) = running.next() => {
                    match got {
                        Ok(bytes) if ptr.id.matches(&bytes) => {
                            self.transfer.nodes().report(peer, true);
                            let bytes = Bytes::from(bytes);
                            self.cache_put(ptr.id, bytes.clone()).await;
                            return Ok(bytes);
                        }
                        Ok(_) => {
                            self.transfer.nodes().report(peer, false);
                            last = format!("{peer} served a page that does not match its id");
                        }
                        Err(e) => {
                            match schedule::busy_asked(&e).and_then(|asked| rests.busy(peer, asked)) {
                                Some(rest) => resting.push((tokio::time::Instant::now() + rest, peer)),
                                None => self.transfer.nodes().report(peer, false),
                            }
                            last = e.to_string();
                        }
                    }
                    running.extend(waiting.next().map(start));
                }
                () = hedge, if more => running.extend(waiting.next().map(start)),
            }
        }
        Err(Error::PageUnavailable { id: ptr.id, reason: last })
    }

    /// A page from the cache (RocksDB runs on the blocking pool).
    async fn cache_get(&self, id: ShardId) -> Option<Vec<u8>> {
        let c = Arc::clone(self.cache.as_ref()?);
        tokio::task::spawn_blocking(move || c.page(&id)).await.ok().flatten()
    }

    async fn cache_put(&self, id: ShardId, bytes: Bytes) {
        if let Some(c) = &self.cache {
            let c = Arc::clone(c);
            let _ = tokio::task::spawn_blocking(move || c.put_page(&id, &bytes)).await;
        }
    }

    /// Deletes a page's copies (best effort).
    pub fn delete(&self, ptr: &PagePtr) {
        let key = self.key.as_bytes();
        let shards = ptr.holders.iter().map(|h| (ptr.id, h.clone(), delete_token(key, &ptr.id, h))).collect();
        self.transfer.delete_shards(shards);
    }
}
