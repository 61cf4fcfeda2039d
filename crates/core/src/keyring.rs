//! The key service: the master key, the wrapped keys in the key ring, and the unwrapped workspace keys
//! this node holds in memory.
//!
//! SECURITY: the server stays sealed (refuses to serve) when the master key does not match the key ring;
//! it never generates a key over existing data. Destroying a workspace's keys is final: the key ring
//! records the destruction and refuses to store keys for that workspace again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secureflows_crypto::jws::{SigningAlgorithm, SigningKey};
use secureflows_crypto::{
    DataKey, IndexKey, KeyPurpose, MasterKey, WrapContext, random_key_bytes, unwrap_key, wrap_key,
};

use crate::cache::GuardedCache;
use crate::store::{KeyringStore, StoredKey, StoredSigningKey};
use crate::{Error, Result, Timestamp, WorkspaceId};

/// A workspace's unwrapped keys.
pub struct WorkspaceKeys {
    active: Arc<DataKey>,
    versions: HashMap<u32, Arc<DataKey>>,
    index: IndexKey,
}

impl std::fmt::Debug for WorkspaceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceKeys")
            .field("active_version", &self.active.version())
            .finish_non_exhaustive()
    }
}

impl WorkspaceKeys {
    /// The data key new writes use.
    pub fn active(&self) -> &DataKey {
        &self.active
    }

    /// The data key of a version (to open older ciphertexts).
    pub fn version(&self, version: u32) -> Option<&DataKey> {
        self.versions.get(&version).map(|k| k.as_ref())
    }

    /// The index key (blind indexes).
    pub fn index(&self) -> &IndexKey {
        &self.index
    }

    /// Opens a sealed value with whichever version sealed it.
    pub fn open(&self, aad: &secureflows_crypto::Aad, sealed: &[u8]) -> Result<Vec<u8>> {
        let version = secureflows_crypto::peek_key_version(sealed)?;
        let key = self
            .version(version)
            .ok_or(Error::Integrity("unknown data key version"))?;
        Ok(secureflows_crypto::open(key, aad, sealed)?)
    }

    /// Seals a value with the active key.
    pub fn seal(&self, aad: &secureflows_crypto::Aad, plaintext: &[u8]) -> Result<Vec<u8>> {
        Ok(secureflows_crypto::seal(&self.active, aad, plaintext)?)
    }
}

/// The master key and the key ring.
pub struct KeyService {
    master: MasterKey,
    store: Arc<dyn KeyringStore>,
    cache: GuardedCache<WorkspaceId, Arc<WorkspaceKeys>>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

fn data_ctx(owner: &str, version: u32) -> WrapContext<'_> {
    WrapContext {
        purpose: KeyPurpose::Data,
        owner,
        version,
    }
}

fn index_ctx(owner: &str) -> WrapContext<'_> {
    WrapContext {
        purpose: KeyPurpose::Index,
        owner,
        version: 1,
    }
}

fn signing_ctx(kid: &str) -> WrapContext<'_> {
    WrapContext {
        purpose: KeyPurpose::Signing,
        owner: kid,
        version: 1,
    }
}

impl KeyService {
    /// A key service over `store`, holding at most `capacity` workspaces' keys in memory.
    pub fn new(master: MasterKey, store: Arc<dyn KeyringStore>, capacity: u64) -> Self {
        KeyService {
            master,
            store,
            cache: GuardedCache::new(capacity, Duration::from_secs(3600)),
        }
    }

    /// The master key's public id.
    pub fn master_key_id(&self) -> &str {
        self.master.id()
    }

    /// Refuses a master key that did not wrap the keys in the key ring (the sealed state).
    pub async fn check_master_key(&self) -> Result<()> {
        let ids = self.store.master_key_ids().await?;
        if ids.iter().any(|id| id != self.master.id()) {
            return Err(Error::Unavailable(
                "sealed: the master key does not match the key ring",
            ));
        }
        Ok(())
    }

    /// Whether the key ring is empty (a fresh install).
    pub async fn keyring_is_empty(&self) -> Result<bool> {
        self.store.is_empty().await
    }

    /// Generates and stores a new workspace's data key (version 1) and index key.
    pub async fn create_workspace_keys(&self, workspace: WorkspaceId, now: Timestamp) -> Result<()> {
        let owner = workspace.to_string();
        let data = random_key_bytes()?;
        let index = random_key_bytes()?;
        let keys = [
            StoredKey {
                owner: owner.clone(),
                purpose: KeyPurpose::Data,
                version: 1,
                wrapped: wrap_key(&self.master, data_ctx(&owner, 1), data.as_ref())?,
                master_key_id: self.master.id().to_owned(),
                active: true,
                created_at: now,
            },
            StoredKey {
                owner: owner.clone(),
                purpose: KeyPurpose::Index,
                version: 1,
                wrapped: wrap_key(&self.master, index_ctx(&owner), index.as_ref())?,
                master_key_id: self.master.id().to_owned(),
                active: true,
                created_at: now,
            },
        ];
        self.store.insert_keys(&keys).await
    }

    /// The workspace's keys, from memory or unwrapped from the key ring. `NotFound` if the workspace
    /// has no keys (never had, or destroyed).
    pub async fn workspace_keys(
        &self,
        workspace: WorkspaceId,
        trust_cache: bool,
    ) -> Result<Arc<WorkspaceKeys>> {
        self.cache
            .get_or_load(&workspace, trust_cache, || self.load_workspace_keys(workspace))
            .await?
            .ok_or(Error::NotFound("workspace keys"))
    }

    async fn load_workspace_keys(&self, workspace: WorkspaceId) -> Result<Option<Arc<WorkspaceKeys>>> {
        let owner = workspace.to_string();
        let stored = self.store.workspace_keys(&owner).await?;
        let mut versions = HashMap::new();
        let mut active = None;
        let mut index = None;
        for key in &stored {
            if key.master_key_id != self.master.id() {
                return Err(Error::Unavailable(
                    "sealed: the master key does not match the key ring",
                ));
            }
            match key.purpose {
                KeyPurpose::Data => {
                    let raw = unwrap_key(&self.master, data_ctx(&owner, key.version), &key.wrapped)?;
                    let dk = Arc::new(DataKey::from_bytes(key.version, &raw)?);
                    if key.active {
                        active = Some(dk.clone());
                    }
                    versions.insert(key.version, dk);
                }
                KeyPurpose::Index => {
                    let raw = unwrap_key(&self.master, index_ctx(&owner), &key.wrapped)?;
                    index = Some(IndexKey::from_bytes(&raw)?);
                }
                KeyPurpose::Signing => {}
            }
        }
        match (active, index) {
            (Some(active), Some(index)) => Ok(Some(Arc::new(WorkspaceKeys {
                active,
                versions,
                index,
            }))),
            (None, None) => Ok(None),
            _ => Err(Error::Integrity("workspace key set is incomplete")),
        }
    }

    /// Adds a new data-key version and makes it active; older versions still open what they sealed.
    /// Returns the new version.
    pub async fn rotate_data_key(&self, workspace: WorkspaceId, now: Timestamp) -> Result<u32> {
        let owner = workspace.to_string();
        let stored = self.store.workspace_keys(&owner).await?;
        let latest = stored
            .iter()
            .filter(|k| k.purpose == KeyPurpose::Data)
            .map(|k| k.version)
            .max()
            .ok_or(Error::NotFound("workspace keys"))?;
        let version = latest
            .checked_add(1)
            .ok_or(Error::Conflict("data key versions exhausted"))?;
        let raw = random_key_bytes()?;
        let key = StoredKey {
            owner: owner.clone(),
            purpose: KeyPurpose::Data,
            version,
            wrapped: wrap_key(&self.master, data_ctx(&owner, version), raw.as_ref())?,
            master_key_id: self.master.id().to_owned(),
            active: true,
            created_at: now,
        };
        self.store.add_data_key(&key).await?;
        self.evict(workspace);
        Ok(version)
    }

    /// Destroys every key of the workspace (crypto-shredding) and forgets them in memory.
    pub async fn destroy_workspace_keys(&self, workspace: WorkspaceId, now: Timestamp) -> Result<()> {
        self.store
            .destroy_workspace_keys(&workspace.to_string(), now)
            .await?;
        self.evict(workspace);
        Ok(())
    }

    /// Whether the workspace's keys were destroyed.
    pub async fn is_destroyed(&self, workspace: WorkspaceId) -> Result<bool> {
        self.store.is_destroyed(&workspace.to_string()).await
    }

    /// Forgets a workspace's unwrapped keys on this node.
    pub fn evict(&self, workspace: WorkspaceId) {
        self.cache.invalidate(&workspace);
    }

    /// Every signing key, unwrapped, with its stored record.
    pub async fn signing_keys(&self) -> Result<Vec<(StoredSigningKey, SigningKey)>> {
        let stored = self.store.signing_keys().await?;
        let mut out = Vec::with_capacity(stored.len());
        for record in stored {
            if record.master_key_id != self.master.id() {
                return Err(Error::Unavailable(
                    "sealed: the master key does not match the key ring",
                ));
            }
            let alg =
                SigningAlgorithm::parse(&record.alg).ok_or(Error::Integrity("unknown signing algorithm"))?;
            let raw = unwrap_key(&self.master, signing_ctx(&record.kid), &record.wrapped)?;
            let key = SigningKey::from_pkcs8(alg, &raw)?;
            if key.kid() != record.kid {
                return Err(Error::Integrity("signing key id does not match its key"));
            }
            out.push((record, key));
        }
        Ok(out)
    }

    /// Generates a signing key and makes it the active one; the previous key is retired but stays
    /// published until the tokens it signed have expired. Returns the new key id.
    pub async fn add_signing_key(&self, alg: SigningAlgorithm, now: Timestamp) -> Result<String> {
        // RSA generation takes a while; keep it off the async executor's threads where possible.
        let key = generate_signing_key(alg).await?;
        let record = StoredSigningKey {
            kid: key.kid().to_owned(),
            alg: alg.as_str().to_owned(),
            wrapped: wrap_key(&self.master, signing_ctx(key.kid()), key.private_pkcs8())?,
            public_jwk: key.public_jwk().to_string(),
            master_key_id: self.master.id().to_owned(),
            created_at: now,
            retired_at: None,
        };
        self.store.insert_signing_key(&record, now).await?;
        Ok(record.kid)
    }

    /// Deletes signing keys retired before `before`.
    pub async fn prune_signing_keys(&self, before: Timestamp) -> Result<u64> {
        self.store.delete_signing_keys_retired_before(before).await
    }

    /// Rewraps every key in the key ring under `new_master`, in one transaction. Keys already wrapped by
    /// `new_master` are left alone, so an interrupted rotation can simply be run again.
    /// Returns how many keys were rewrapped.
    pub async fn rewrap_all(&self, new_master: &MasterKey) -> Result<usize> {
        let (keys, signing) = self.store.all_keys().await?;
        let mut new_keys = Vec::new();
        for mut key in keys {
            if key.master_key_id == new_master.id() {
                continue;
            }
            if key.master_key_id != self.master.id() {
                return Err(Error::Unavailable(
                    "sealed: a key is wrapped by an unknown master key",
                ));
            }
            let ctx = match key.purpose {
                KeyPurpose::Data => data_ctx(&key.owner, key.version),
                KeyPurpose::Index => index_ctx(&key.owner),
                KeyPurpose::Signing => return Err(Error::Integrity("signing key stored as workspace key")),
            };
            let raw = unwrap_key(&self.master, ctx, &key.wrapped)?;
            key.wrapped = wrap_key(new_master, ctx, &raw)?;
            key.master_key_id = new_master.id().to_owned();
            new_keys.push(key);
        }
        let mut new_signing = Vec::new();
        for mut key in signing {
            if key.master_key_id == new_master.id() {
                continue;
            }
            if key.master_key_id != self.master.id() {
                return Err(Error::Unavailable(
                    "sealed: a key is wrapped by an unknown master key",
                ));
            }
            let raw = unwrap_key(&self.master, signing_ctx(&key.kid), &key.wrapped)?;
            key.wrapped = wrap_key(new_master, signing_ctx(&key.kid), &raw)?;
            key.master_key_id = new_master.id().to_owned();
            new_signing.push(key);
        }
        self.store.replace_wrapped(&new_keys, &new_signing).await?;
        Ok(new_keys.len() + new_signing.len())
    }
}

async fn generate_signing_key(alg: SigningAlgorithm) -> Result<SigningKey> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| Ok(SigningKey::generate(alg)?))
        }
        _ => Ok(SigningKey::generate(alg)?),
    }
}
