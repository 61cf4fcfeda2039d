//! The API-access log: one record per Session API call. Key names in it are sealed like everything else
//! a user stores; the client address and user agent are kept for security review.

use secureflows_crypto::Aad;

use crate::store::AccessEntry;
use crate::{ApplicationId, Services, Timestamp, UserId, WorkspaceId};

/// A record as the HTTP layer gathers it (the key name in the clear, in memory only).
#[derive(Clone)]
pub struct AccessRecord {
    /// Workspace, when identified.
    pub workspace_id: Option<WorkspaceId>,
    /// Application, when identified.
    pub application_id: Option<ApplicationId>,
    /// User, when identified.
    pub user_id: Option<UserId>,
    /// Method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Key name, for routes that name one.
    pub key: Option<String>,
    /// Status.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Client address.
    pub client_ip: String,
    /// User agent.
    pub user_agent: String,
    /// Request id.
    pub request_id: String,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// When.
    pub at: Timestamp,
}

impl std::fmt::Debug for AccessRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRecord")
            .field("route", &self.route)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Replaces control characters (CR, LF, ESC, …) and truncates to `max` characters, so that logged text
/// can never forge a line or a terminal sequence.
pub fn neutralize(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The associated data of a sealed key name in the access log.
pub fn access_key_aad(workspace: WorkspaceId, request_id: &str) -> Aad {
    Aad::new("sf.access.key.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(request_id)
}

impl Services {
    /// Seals what must be sealed in a batch of records, ready to store. A key name whose workspace has
    /// no keys any more (deleted meanwhile) is dropped; the rest of the record is kept.
    pub async fn seal_access_records(&self, records: Vec<AccessRecord>) -> Vec<AccessEntry> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let key_sealed = match (r.workspace_id, r.key.as_deref()) {
                (Some(ws), Some(key)) => match self.keys.workspace_keys(ws, self.state.trusted()).await {
                    Ok(keys) => keys.seal(&access_key_aad(ws, &r.request_id), key.as_bytes()).ok(),
                    Err(_) => None,
                },
                _ => None,
            };
            out.push(AccessEntry {
                workspace_id: r.workspace_id,
                application_id: r.application_id,
                user_id: r.user_id,
                method: r.method,
                route: r.route,
                key_sealed,
                status: r.status,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                client_ip: r.client_ip,
                user_agent: neutralize(&r.user_agent, 256),
                request_id: r.request_id,
                duration_us: r.duration_us,
                at: r.at,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::neutralize;

    #[test]
    fn control_characters_are_neutralised() {
        let text = neutralize("agent\r\nX-Injected: 1\u{1b}[31m\u{0}", 100);
        assert!(!text.contains(['\r', '\n', '\u{1b}', '\0']));
        assert!(text.starts_with("agent"));
        assert_eq!(neutralize(&"é".repeat(300), 256).chars().count(), 256);
    }
}
