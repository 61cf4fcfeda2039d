//! The session vault: per-user key/value data of one application, sealed under the workspace's data
//! key before it is written.
//!
//! Key names are validated by one grammar ([`VaultKey`]) and compared byte for byte. In storage a name
//! exists only as a keyed hash (for look-up) and sealed (for listing). Values are sealed together with
//! their content type; the associated data binds workspace, application, user and key name, so a
//! ciphertext copied onto another row fails to open.

use std::fmt;
use std::sync::Arc;

use secureflows_crypto::{Aad, blind_index};

use crate::audit::NewEvent;
use crate::auth::session::SessionCaller;
use crate::console::ConsoleCaller;
use crate::keyring::WorkspaceKeys;
use crate::store::{PutOutcome, VaultLocator, VaultWrite};
use crate::{ApplicationId, Error, ForbiddenReason, Result, Services, Timestamp, UserId, WorkspaceId};

/// Longest key name, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;
/// Content type of values stored without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A vault key name: 1 to 128 characters from `A-Z a-z 0-9 . _ - :`, starting with a letter or digit,
/// and never containing `..`. Case-sensitive; compared byte for byte.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VaultKey(String);

impl VaultKey {
    /// Parses a key name, or says why it is not one (400).
    pub fn parse(name: &str) -> Result<VaultKey> {
        let bad = |why: &str| Err(Error::Malformed(format!("invalid key: {why}")));
        if name.is_empty() {
            return bad("empty");
        }
        if name.len() > MAX_KEY_LEN {
            return bad("longer than 128 characters");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        {
            return bad("only A-Z a-z 0-9 . _ - : are allowed");
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("must start with a letter or digit");
        }
        if name.contains("..") {
            return bad("must not contain '..'");
        }
        Ok(VaultKey(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key names are user data: never in logs.
        f.write_str("VaultKey(..)")
    }
}

/// Validates a content type to store beside a value (visible ASCII and spaces, at most 255 bytes).
pub fn parse_content_type(value: Option<&str>) -> Result<String> {
    match value {
        None | Some("") => Ok(DEFAULT_CONTENT_TYPE.to_owned()),
        Some(ct) if ct.len() <= MAX_CONTENT_TYPE_LEN && ct.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            Ok(ct.to_owned())
        }
        Some(_) => Err(Error::Malformed("invalid content type".to_owned())),
    }
}

/// What the vault tells about a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMeta {
    /// Key name.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// First written.
    pub created_at: Timestamp,
    /// Last written.
    pub updated_at: Timestamp,
    /// Expires unless written again.
    pub expires_at: Timestamp,
}

/// One of the caller's values in a listing. `key` is `None` when its sealed name does not open
/// (tampering, or a key this server no longer holds): the value is listed as unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedValue {
    /// Key name, if it opens.
    pub key: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// First written.
    pub created_at: Timestamp,
    /// Last written.
    pub updated_at: Timestamp,
    /// Expires unless written again.
    pub expires_at: Timestamp,
}

/// A value as stored by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// Content type given when it was stored.
    pub content_type: String,
    /// The bytes, exactly as stored.
    pub bytes: Vec<u8>,
    /// Metadata.
    pub meta: ValueMeta,
}

impl fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredValue")
            .field("size", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Whether a set created the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetResult {
    /// New key.
    Created,
    /// Replaced an existing value.
    Replaced,
}

struct Place {
    workspace: WorkspaceId,
    application: ApplicationId,
    user: UserId,
}

impl Place {
    fn of(caller: &SessionCaller) -> Place {
        Place {
            workspace: caller.token.workspace,
            application: caller.application.id,
            user: caller.token.user,
        }
    }

    fn key_index(&self, keys: &WorkspaceKeys, key: &str) -> [u8; 32] {
        blind_index(
            keys.index(),
            &Aad::new("sf.vault.key.v1")
                .field(self.application.as_uuid().as_bytes())
                .field(self.user.as_uuid().as_bytes())
                .field(key),
        )
    }

    fn locator(&self, key_index: [u8; 32]) -> VaultLocator {
        VaultLocator {
            workspace_id: self.workspace,
            application_id: self.application,
            user_id: self.user,
            key_index,
        }
    }

    fn value_aad(&self, key: &str) -> Aad {
        Aad::new("sf.vault.value.v1")
            .field(self.workspace.as_uuid().as_bytes())
            .field(self.application.as_uuid().as_bytes())
            .field(self.user.as_uuid().as_bytes())
            .field(key)
    }

    fn name_aad(&self, key_index: &[u8]) -> Aad {
        Aad::new("sf.vault.name.v1")
            .field(self.workspace.as_uuid().as_bytes())
            .field(self.application.as_uuid().as_bytes())
            .field(self.user.as_uuid().as_bytes())
            .field(key_index)
    }
}

fn encode_payload(content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + content_type.len() + bytes.len());
    out.push(u8::try_from(content_type.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(bytes);
    out
}

fn decode_payload(mut payload: Vec<u8>) -> Result<(String, Vec<u8>)> {
    let len = usize::from(*payload.first().ok_or(Error::Integrity("empty vault payload"))?);
    if payload.len() < 1 + len {
        return Err(Error::Integrity("short vault payload"));
    }
    let content_type = String::from_utf8(payload[1..1 + len].to_vec())
        .map_err(|_| Error::Integrity("vault content type is not UTF-8"))?;
    payload.drain(..1 + len);
    Ok((content_type, payload))
}

impl Services {
    /// Keys that open `sealed`: the caller's, or, when it names a data-key version this node has not
    /// loaded yet (another node rotated a moment ago), the workspace's keys loaded afresh.
    async fn keys_for(&self, caller: &SessionCaller, sealed: &[u8]) -> Result<Arc<WorkspaceKeys>> {
        self.keys_opening(caller.token.workspace, &caller.keys, sealed)
            .await
    }

    /// Keys that open `sealed`: `keys`, or the workspace's keys loaded afresh when `sealed` names a
    /// data-key version this node has not loaded yet (another node rotated a moment ago).
    pub(crate) async fn keys_opening(
        &self,
        workspace: WorkspaceId,
        keys: &Arc<WorkspaceKeys>,
        sealed: &[u8],
    ) -> Result<Arc<WorkspaceKeys>> {
        let version = secureflows_crypto::peek_key_version(sealed)?;
        if keys.version(version).is_some() {
            return Ok(keys.clone());
        }
        self.keys.evict(workspace);
        self.keys.workspace_keys(workspace, false).await
    }

    /// An administrator's read of a user's keys in every application (metadata only). OWNER and ADMIN
    /// only, never SUPPORT; audited as `vault.admin.list`.
    pub async fn admin_list_values(
        &self,
        caller: &ConsoleCaller,
        user: UserId,
    ) -> Result<Vec<(ApplicationId, ValueMeta)>> {
        caller.require_admin()?;
        let workspace = caller.workspace_id();
        self.find_member(workspace, user).await?;
        let now = self.clock.now();
        let entries = self.stores.vault.list_user_values(workspace, user, now).await?;
        let mut out = Vec::with_capacity(entries.len());
        for (application, entry) in entries {
            let place = Place {
                workspace,
                application,
                user,
            };
            let keys = self
                .keys_opening(workspace, &caller.keys, &entry.name_sealed)
                .await?;
            let name = keys.open(&place.name_aad(&entry.key_index), &entry.name_sealed)?;
            let key = String::from_utf8(name).map_err(|_| Error::Integrity("vault key name is not UTF-8"))?;
            out.push((
                application,
                ValueMeta {
                    key,
                    size: entry.size,
                    created_at: entry.created_at,
                    updated_at: entry.updated_at,
                    expires_at: entry.expires_at,
                },
            ));
        }
        out.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
        self.record(
            workspace,
            &caller.keys,
            &caller.actor,
            vec![
                NewEvent::new("vault.admin.list", "user", user)
                    .values(None, Some(serde_json::json!({"keys": out.len()}))),
            ],
        )
        .await?;
        Ok(out)
    }

    /// An administrator's read of one of a user's values, decrypted here in the API layer. OWNER and
    /// ADMIN only, never SUPPORT; audited as `vault.admin.read` naming the key (sealed in the event).
    pub async fn admin_get_value(
        &self,
        caller: &ConsoleCaller,
        user: UserId,
        application: ApplicationId,
        key: &VaultKey,
    ) -> Result<StoredValue> {
        caller.require_admin()?;
        let workspace = caller.workspace_id();
        self.find_member(workspace, user).await?;
        self.find_workspace_application(workspace, application).await?;
        let place = Place {
            workspace,
            application,
            user,
        };
        let key_index = place.key_index(&caller.keys, key.as_str());
        let now = self.clock.now();
        let entry = self
            .stores
            .vault
            .get_value(&place.locator(key_index), now)
            .await?
            .ok_or(Error::NotFound("value"))?;
        // The read is recorded before the value leaves the server.
        self.record(
            workspace,
            &caller.keys,
            &caller.actor,
            vec![NewEvent::new("vault.admin.read", "user", user).values(
                None,
                Some(serde_json::json!({"application_id": application, "key": key.as_str()})),
            )],
        )
        .await?;
        let keys = self
            .keys_opening(workspace, &caller.keys, &entry.value_sealed)
            .await?;
        let payload = keys.open(&place.value_aad(key.as_str()), &entry.value_sealed)?;
        let (content_type, bytes) = decode_payload(payload)?;
        Ok(StoredValue {
            content_type,
            bytes,
            meta: ValueMeta {
                key: key.as_str().to_owned(),
                size: entry.size,
                created_at: entry.created_at,
                updated_at: entry.updated_at,
                expires_at: entry.expires_at,
            },
        })
    }

    /// Everything the workspace holds about a user, in the clear, for the user themself (GDPR/CCPA
    /// access and portability): profile, and every vault value of every application (JSON values as
    /// JSON, others base64). Audited as `user.data_export`.
    pub async fn export_user_data(
        &self,
        user: &crate::User,
        actor: &crate::audit::Actor,
    ) -> Result<serde_json::Value> {
        use base64::Engine as _;
        let workspace = user.workspace_id;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let entries = self
            .stores
            .vault
            .list_user_values(workspace, user.id, self.clock.now())
            .await?;
        let mut values = Vec::with_capacity(entries.len());
        for (application, entry) in entries {
            let place = Place {
                workspace,
                application,
                user: user.id,
            };
            let name_keys = self.keys_opening(workspace, &keys, &entry.name_sealed).await?;
            let name = name_keys.open(&place.name_aad(&entry.key_index), &entry.name_sealed)?;
            let key = String::from_utf8(name).map_err(|_| Error::Integrity("vault key name is not UTF-8"))?;
            // The listing carries metadata only: read the value itself (it may have expired since).
            let key_index: [u8; 32] = entry
                .key_index
                .as_slice()
                .try_into()
                .map_err(|_| Error::Integrity("vault key index"))?;
            let now = self.clock.now();
            let Some(stored) = self
                .stores
                .vault
                .get_value(&place.locator(key_index), now)
                .await?
            else {
                continue;
            };
            let value_keys = self.keys_opening(workspace, &keys, &stored.value_sealed).await?;
            let (content_type, bytes) =
                decode_payload(value_keys.open(&place.value_aad(&key), &stored.value_sealed)?)?;
            let value = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(json) if content_type.starts_with("application/json") => json,
                _ => serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(&bytes)),
            };
            values.push(serde_json::json!({
                "application_id": application,
                "key": key,
                "content_type": content_type,
                "value": value,
                "updated_at": entry.updated_at.rfc3339(),
                "expires_at": entry.expires_at.rfc3339(),
            }));
        }
        let mut actor = actor.clone();
        actor.kind = crate::audit::ActorKind::EndUser;
        actor.id = Some(user.id);
        self.record(
            workspace,
            &keys,
            &actor,
            vec![
                NewEvent::new("user.data_export", "user", user.id)
                    .values(None, Some(serde_json::json!({"values": values.len()}))),
            ],
        )
        .await?;
        Ok(serde_json::json!({
            "user": {
                "id": user.id,
                "email": self.user_email(&keys, user),
                "name": self.user_name(&keys, user),
                "role": user.role.as_str(),
                "created_at": user.created_at.rfc3339(),
            },
            "vault": values,
            "exported_at": self.clock.now().rfc3339(),
        }))
    }

    /// The largest value the caller's plan allows, in bytes.
    pub fn value_limit(&self, caller: &SessionCaller) -> u64 {
        caller.limits.max_value_bytes
    }

    /// Stores `bytes` with `content_type` under `key` for the caller. Durable when it returns.
    ///
    /// Errors: `TooLarge` (413) over the plan's value size; `Forbidden(QuotaExceeded)` (403) for a new
    /// key beyond the plan's keys per user.
    pub async fn set_value(
        &self,
        caller: &SessionCaller,
        key: &VaultKey,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<(ValueMeta, SetResult)> {
        let limit = self.value_limit(caller);
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
            return Err(Error::TooLarge { limit });
        }
        let place = Place::of(caller);
        let keys = &caller.keys;
        let key_index = place.key_index(keys, key.as_str());
        let value_sealed = keys.seal(
            &place.value_aad(key.as_str()),
            &encode_payload(content_type, bytes),
        )?;
        let name_sealed = keys.seal(&place.name_aad(&key_index), key.as_str().as_bytes())?;
        let now = self.clock.now();
        let expires_at = now.plus(caller.application.data_ttl);
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let write = VaultWrite {
            locator: place.locator(key_index),
            name_sealed,
            value_sealed,
            size,
            now,
            expires_at,
            max_keys: caller.limits.max_keys_per_user,
        };
        let (created_at, result) = match self.stores.vault.put_value(&write).await? {
            PutOutcome::Created => (now, SetResult::Created),
            PutOutcome::Replaced { created_at } => (created_at, SetResult::Replaced),
            PutOutcome::QuotaExceeded => {
                return Err(Error::Forbidden(ForbiddenReason::QuotaExceeded(
                    crate::Quota::Keys,
                )));
            }
        };
        let meta = ValueMeta {
            key: key.as_str().to_owned(),
            size,
            created_at,
            updated_at: now,
            expires_at,
        };
        Ok((meta, result))
    }

    /// The caller's value under `key`, decrypted. `NotFound` if missing or expired.
    pub async fn get_value(&self, caller: &SessionCaller, key: &VaultKey) -> Result<StoredValue> {
        let place = Place::of(caller);
        let keys = &caller.keys;
        let key_index = place.key_index(keys, key.as_str());
        let now = self.clock.now();
        let entry = self
            .stores
            .vault
            .get_value(&place.locator(key_index), now)
            .await?
            .ok_or(Error::NotFound("value"))?;
        let keys = self.keys_for(caller, &entry.value_sealed).await?;
        let payload = keys.open(&place.value_aad(key.as_str()), &entry.value_sealed)?;
        let (content_type, bytes) = decode_payload(payload)?;
        Ok(StoredValue {
            content_type,
            bytes,
            meta: ValueMeta {
                key: key.as_str().to_owned(),
                size: entry.size,
                created_at: entry.created_at,
                updated_at: entry.updated_at,
                expires_at: entry.expires_at,
            },
        })
    }

    /// The caller's keys in this application, sorted by name.
    pub async fn list_values(&self, caller: &SessionCaller) -> Result<Vec<ListedValue>> {
        let place = Place::of(caller);
        let now = self.clock.now();
        let entries = self
            .stores
            .vault
            .list_values(place.workspace, place.application, place.user, now)
            .await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let opened = async {
                let keys = self.keys_for(caller, &entry.name_sealed).await?;
                let name = keys.open(&place.name_aad(&entry.key_index), &entry.name_sealed)?;
                String::from_utf8(name).map_err(|_| Error::Integrity("vault key name is not UTF-8"))
            };
            let key = match opened.await {
                Ok(key) => Some(key),
                // One tampered row (or one sealed under a key this server no longer has) must not hide
                // the others: it is listed without its name, and reported.
                Err(Error::Integrity(what)) => {
                    tracing::error!(
                        target: "security",
                        workspace = %place.workspace,
                        application = %place.application,
                        user = %place.user,
                        what,
                        "a vault key name failed authentication; listed as unreadable"
                    );
                    None
                }
                Err(e) => return Err(e),
            };
            out.push(ListedValue {
                key,
                size: entry.size,
                created_at: entry.created_at,
                updated_at: entry.updated_at,
                expires_at: entry.expires_at,
            });
        }
        // By name; unreadable values last.
        out.sort_by(|a, b| (a.key.is_none(), &a.key).cmp(&(b.key.is_none(), &b.key)));
        Ok(out)
    }

    /// Deletes the caller's value under `key`. `NotFound` if there was none.
    pub async fn delete_value(&self, caller: &SessionCaller, key: &VaultKey) -> Result<()> {
        let place = Place::of(caller);
        let keys = &caller.keys;
        let key_index = place.key_index(keys, key.as_str());
        let now = self.clock.now();
        if self
            .stores
            .vault
            .delete_value(&place.locator(key_index), now)
            .await?
        {
            Ok(())
        } else {
            Err(Error::NotFound("value"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_grammar() {
        for ok in [
            "a",
            "A1",
            "profile.theme",
            "cart:items",
            "x-y_z.1",
            &"k".repeat(128),
        ] {
            assert!(VaultKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            "a..b",
            ".hidden",
            "-x",
            "a b",
            "a\0b",
            "é",
            "a\\b",
            "%2e",
            &"k".repeat(129),
        ] {
            assert!(VaultKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payload_round_trip() {
        let p = encode_payload("text/plain; charset=utf-8", b"\x00\xffhello");
        let (ct, bytes) = decode_payload(p).unwrap();
        assert_eq!(ct, "text/plain; charset=utf-8");
        assert_eq!(bytes, b"\x00\xffhello");
        assert!(decode_payload(vec![]).is_err());
        assert!(decode_payload(vec![5, b'a']).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(parse_content_type(None).unwrap(), DEFAULT_CONTENT_TYPE);
        assert!(parse_content_type(Some("application/json")).is_ok());
        assert!(parse_content_type(Some("a\r\nb")).is_err());
        assert!(parse_content_type(Some(&"a".repeat(256))).is_err());
    }
}
