//! The Kademlia record store: only signed head records, only newer ones.
//!
//! Every record that reaches a Cairn peer through Kademlia `PUT_VALUE` goes
//! through [`HeadStore::put`], which applies [`cairn_proto::head::accept`]:
//! the key must be the record's id, the signature must verify, the sequence
//! must be higher than the one held. Anything else is refused, and Kademlia
//! resets the sender's request. Where records live is a [`RecordBackend`]:
//! memory for clients, RocksDB for storage nodes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_proto::RecordId;
use cairn_proto::head::{self, HeadRecord, MAX_HEAD_RECORD_SIZE};
use libp2p::PeerId;
use libp2p::kad::store::{self, MemoryStore, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// Where head records are kept. Implementations must be quick: they are
/// called from the network event loop (RocksDB point reads and small
/// writes are).
pub trait RecordBackend: Send + Sync + 'static {
    /// The stored encoding of the record under `id`.
    fn get(&self, id: &RecordId) -> Option<Vec<u8>>;
    /// Stores `bytes` under `id`, replacing what was there.
    fn put(&self, id: &RecordId, bytes: &[u8]) -> Result<(), String>;
    /// Forgets `id`.
    fn remove(&self, id: &RecordId);
    /// Number of records held.
    fn count(&self) -> usize;
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
}

impl RecordBackend for MemoryBackend {
    fn get(&self, id: &RecordId) -> Option<Vec<u8>> {
        self.records.lock().ok()?.get(id).cloned()
    }

    fn put(&self, id: &RecordId, bytes: &[u8]) -> Result<(), String> {
        let mut r = self.records.lock().map_err(|_| "poisoned".to_owned())?;
        if r.len() >= self.max && !r.contains_key(id) {
            return Err(format!("memory record store is full ({} records)", self.max));
        }
        r.insert(*id, bytes.to_vec());
        Ok(())
    }

    fn remove(&self, id: &RecordId) {
        if let Ok(mut r) = self.records.lock() {
            r.remove(id);
        }
    }

    fn count(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// The validating Kademlia store.
pub struct HeadStore {
    backend: Arc<dyn RecordBackend>,
    /// Provider records are not used by Cairn; kept in memory, bounded.
    providers: MemoryStore,
}

impl std::fmt::Debug for HeadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadStore").field("records", &self.backend.count()).finish()
    }
}

impl HeadStore {
    /// A store over `backend`; `local` is this peer's id.
    pub fn new(local: PeerId, backend: Arc<dyn RecordBackend>) -> Self {
        Self { backend, providers: MemoryStore::new(local) }
    }
}

/// The record id a Kademlia key names, if it is one.
pub fn record_id(key: &RecordKey) -> Option<RecordId> {
    key.as_ref().try_into().ok().map(RecordId)
}

/// Checks `offered` against what `backend` holds and stores it if accepted.
pub fn validate_and_store(backend: &dyn RecordBackend, key: &RecordKey, value: &[u8]) -> Result<(), String> {
    let id = record_id(key).ok_or("record key is not 32 bytes")?;
    if value.len() > MAX_HEAD_RECORD_SIZE {
        return Err(format!("record of {} bytes is too large", value.len()));
    }
    let offered = HeadRecord::from_bytes(value).map_err(|e| e.to_string())?;
    let stored = backend.get(&id).and_then(|b| HeadRecord::from_bytes(&b).ok());
    head::accept(&id, stored.as_ref(), &offered).map_err(|e| e.to_string())?;
    if stored.as_ref() == Some(&offered) {
        return Ok(());
    }
    backend.put(&id, value)
}

impl RecordStore for HeadStore {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        let id = record_id(k)?;
        let value = self.backend.get(&id)?;
        Some(Cow::Owned(Record { key: k.clone(), value, publisher: None, expires: None }))
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        validate_and_store(&*self.backend, &r.key, &r.value).map_err(|reason| {
            tracing::debug!(%reason, "refused a head record");
            // kad's error type has no "refused"; the sender sees a reset either way.
            store::Error::ValueTooLarge
        })
    }

    fn remove(&mut self, k: &RecordKey) {
        if let Some(id) = record_id(k) {
            self.backend.remove(&id);
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
