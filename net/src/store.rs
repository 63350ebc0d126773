//! The Kademlia record store: only signed head records, only newer ones.
//!
//! Every record that reaches a Cairn peer through Kademlia `PUT_VALUE` goes
//! through [`HeadStore::put`], which applies [`cairn_proto::head::accept`]:
//! the key must be the record's id, the signature must verify, the sequence
//! must be higher than the one held. Anything else is refused. (Records
//! other peers send come to the event loop as events and are offered to
//! [`Heads`] on the blocking pool; this store's `put` serves the peer's own
//! publishes.) Where records live is a [`RecordBackend`]: memory for
//! clients, RocksDB for storage nodes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_proto::RecordId;
use cairn_proto::head::{self, HeadRecord, MAX_HEAD_RECORD_SIZE, RecordRefused};
use libp2p::PeerId;
use libp2p::kad::store::{self, MemoryStore, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// Why a backend could not store a record.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The store holds as many records as it may.
    #[error("the record store is full ({max} records)")]
    Full {
        /// Its limit.
        max: usize,
    },
    /// The storage under it failed.
    #[error("the record store failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where head records are kept. Reads must be quick: Kademlia's `GET_VALUE`
/// is answered from the network event loop (a RocksDB point read is);
/// writes from other peers run on the blocking pool.
pub trait RecordBackend: Send + Sync + 'static {
    /// The stored encoding of the record under `id`.
    fn get(&self, id: &RecordId) -> Option<Vec<u8>>;
    /// Whether a record is stored under `id` (valid or not).
    fn contains(&self, id: &RecordId) -> bool {
        self.get(id).is_some()
    }
    /// Stores `bytes` under `id`, replacing what was there.
    fn put(&self, id: &RecordId, bytes: &[u8]) -> Result<(), BackendError>;
    /// Forgets `id`.
    fn remove(&self, id: &RecordId);
    /// Number of records held.
    fn count(&self) -> usize;
    /// Notes that the record under `id` was offered (stored or confirmed)
    /// at `now` (Unix seconds): records nobody offers again for a long
    /// time can then be dropped. Backends that keep records only for a
    /// process's life need not.
    fn touch(&self, _id: &RecordId, _now: u64) {}
}

/// Records in memory, at most `max` of them (clients, tests).
#[derive(Debug)]
pub struct MemoryBackend {
    records: Mutex<HashMap<RecordId, Vec<u8>>>,
    max: usize,
}

impl MemoryBackend {
    /// Holds at most `max` records.
    pub fn new(max: usize) -> Self {
        Self { records: Mutex::default(), max }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<RecordId, Vec<u8>>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RecordBackend for MemoryBackend {
    fn get(&self, id: &RecordId) -> Option<Vec<u8>> {
        self.records().get(id).cloned()
    }

    fn put(&self, id: &RecordId, bytes: &[u8]) -> Result<(), BackendError> {
        let mut r = self.records();
        if r.len() >= self.max && !r.contains_key(id) {
            return Err(BackendError::Full { max: self.max });
        }
        r.insert(*id, bytes.to_vec());
        Ok(())
    }

    fn remove(&self, id: &RecordId) {
        self.records().remove(id);
    }

    fn count(&self) -> usize {
        self.records().len()
    }
}

/// Why an offered head record was not stored.
#[derive(Debug, thiserror::Error)]
pub enum Offer {
    /// The record is invalid, or not newer than the one held.
    #[error(transparent)]
    Refused(#[from] RecordRefused),
    /// The record does not decode or is too large to.
    #[error("the record does not decode: {0}")]
    Malformed(#[from] cairn_proto::Error),
    /// The record is valid and newer, but the backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The head records one peer holds: a [`RecordBackend`] behind the
/// compare-and-swap of [`head::accept`]. Kademlia's `PUT_VALUE` (on the
/// event loop) and the shard protocol's `PutHead` (on the node's stream
/// tasks) both come through here, and one lock makes each check-and-store
/// atomic, so two records with one sequence can never both be accepted.
pub struct Heads {
    backend: Arc<dyn RecordBackend>,
    cas: Mutex<()>,
}

impl std::fmt::Debug for Heads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heads").field("records", &self.backend.count()).finish()
    }
}

impl Heads {
    /// Records kept in `backend`.
    pub fn new(backend: Arc<dyn RecordBackend>) -> Arc<Self> {
        Arc::new(Self { backend, cas: Mutex::new(()) })
    }

    /// The valid record held under `id`.
    pub fn get(&self, id: &RecordId) -> Option<HeadRecord> {
        let held = HeadRecord::from_bytes(&self.backend.get(id)?).ok()?;
        (held.record_id() == *id && held.verify().is_ok()).then_some(held)
    }

    /// Stores `offered` under `id` if [`head::accept`] takes it; a record
    /// equal to the one held is accepted and not written again. A record
    /// refused as stale comes back with the one held (see [`Self::get`]).
    pub fn offer(&self, id: &RecordId, offered: &HeadRecord) -> Result<(), Offer> {
        let _cas = self.cas.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.backend.get(id).and_then(|b| HeadRecord::from_bytes(&b).ok());
        head::accept(id, held.as_ref(), offered)?;
        if held.as_ref() != Some(offered) {
            self.backend.put(id, &offered.to_bytes())?;
        }
        // Stored, or published again: the owner still cares for it.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.backend.touch(id, now);
        Ok(())
    }

    /// Decodes and offers the bytes of a Kademlia record.
    pub fn offer_bytes(&self, key: &RecordKey, value: &[u8]) -> Result<(), Offer> {
        let id = record_id(key).ok_or(RecordRefused::WrongId)?;
        if value.len() > MAX_HEAD_RECORD_SIZE {
            return Err(RecordRefused::TooLarge(value.len()).into());
        }
        self.offer(&id, &HeadRecord::from_bytes(value)?)
    }

    /// Number of records held.
    pub fn count(&self) -> usize {
        self.backend.count()
    }

    /// Whether something is stored under `id`: a point read, with no
    /// decoding or signature check (those come with [`Self::offer`]).
    pub fn holds(&self, id: &RecordId) -> bool {
        self.backend.contains(id)
    }

    fn raw(&self, id: &RecordId) -> Option<Vec<u8>> {
        self.backend.get(id)
    }

    fn remove(&self, id: &RecordId) {
        let _cas = self.cas.lock().unwrap_or_else(|e| e.into_inner());
        self.backend.remove(id);
    }
}

/// The validating Kademlia store.
pub struct HeadStore {
    heads: Arc<Heads>,
    /// Provider records are not used by Cairn; kept in memory, bounded.
    providers: MemoryStore,
}

impl std::fmt::Debug for HeadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadStore").field("records", &self.heads.count()).finish()
    }
}

impl HeadStore {
    /// A store over `heads`; `local` is this peer's id.
    pub fn new(local: PeerId, heads: Arc<Heads>) -> Self {
        Self { heads, providers: MemoryStore::new(local) }
    }
}

/// The record id a Kademlia key names, if it is one.
pub fn record_id(key: &RecordKey) -> Option<RecordId> {
    key.as_ref().try_into().ok().map(RecordId)
}

impl RecordStore for HeadStore {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        let id = record_id(k)?;
        let value = self.heads.raw(&id)?;
        Some(Cow::Owned(Record { key: k.clone(), value, publisher: None, expires: None }))
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        self.heads.offer_bytes(&r.key, &r.value).map_err(|reason| {
            tracing::debug!(%reason, "refused a head record");
            // kad's error type has no "refused"; the sender sees a reset either way.
            store::Error::ValueTooLarge
        })
    }

    fn remove(&mut self, k: &RecordKey) {
        if let Some(id) = record_id(k) {
            self.heads.remove(&id);
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        // Republishing is the owner's job (clients republish their heads);
        // nodes do not re-replicate, so there is nothing to iterate.
        Vec::new().into_iter()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        self.providers.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.providers.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.providers.remove_provider(k, p);
    }
}
