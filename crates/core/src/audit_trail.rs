//! Reading the audit trails: the audit log (opened, filtered, exported as JSON Lines or CSV, verified)
//! and the API-access log. OWNER, ADMIN and SUPPORT read them; a SUPPORT read is itself audited.

use std::sync::Arc;

use serde::Serialize;

use crate::access::access_key_aad;
use crate::audit::{self, ChainFault, ChainVerifier, EventFilter, SealedDetails, StoredEvent};
use crate::console::ConsoleCaller;
use crate::keyring::WorkspaceKeys;
use crate::store::{AccessEntry, AccessFilter};
use crate::{Error, Result, Services, WorkspaceId};

/// One audit event, opened: the flat record of listings and exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    /// Workspace (the nil UUID for instance-level events).
    pub workspace_id: WorkspaceId,
    /// Position in the workspace's chain.
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// `user`, `end_user`, `support`, `operator` or `system`.
    pub actor_kind: String,
    /// User or SUPPORT operator id.
    pub actor_id: Option<String>,
    /// Action, e.g. `user.role.change`.
    pub action: String,
    /// Resource type.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// Value before.
    pub old: Option<serde_json::Value>,
    /// Value after.
    pub new: Option<serde_json::Value>,
    /// Client address.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Chained hash (hex).
    pub hash: String,
}

impl EventRecord {
    fn of(e: &StoredEvent, d: SealedDetails) -> Self {
        EventRecord {
            workspace_id: e.workspace_id,
            seq: e.seq,
            id: e.event.id.hyphenated().to_string(),
            at: e.event.at.rfc3339(),
            actor_kind: e.event.actor_kind.as_str().to_owned(),
            actor_id: e.event.actor_id.map(|a| a.to_string()),
            action: e.event.action.clone(),
            resource_type: e.event.resource_type.clone(),
            resource_id: e.event.resource_id.clone(),
            old: d.old,
            new: d.new,
            client_ip: d.client_ip,
            user_agent: d.user_agent,
            request_id: d.request_id,
            hash: hex::encode(&e.hash),
        }
    }
}

/// One API-access record with its key name opened.
#[derive(Debug, Clone)]
pub struct AccessRecordView {
    /// Position (the page cursor).
    pub position: i64,
    /// The record.
    pub entry: AccessEntry,
    /// Key name, when the route names one.
    pub key: Option<String>,
}

/// The result of verifying one chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Workspace (the nil UUID: the instance's chain).
    pub workspace_id: WorkspaceId,
    /// Events checked.
    pub events: u64,
    /// Recorded head: sequence number and hash (hex); keep it elsewhere to detect a rewound log.
    pub head_seq: Option<i64>,
    /// Head hash (hex).
    pub head_hash: Option<String>,
    /// Whether the keys to check it exist (a deleted workspace's do not).
    pub keys_available: bool,
    /// What is wrong; empty when the chain is intact.
    pub faults: Vec<ChainFault>,
}

/// Most events per export request.
pub const EXPORT_BATCH: u32 = 10_000;

impl Services {
    /// A page of the caller's workspace's audit events, newest first.
    pub async fn list_events(
        &self,
        caller: &ConsoleCaller,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        caller.require_metadata_reader()?;
        let events = self
            .stores
            .audit
            .list_events(caller.workspace_id(), filter, limit)
            .await?;
        self.audit_support_read(caller, "audit_log", caller.workspace_id().to_string())
            .await?;
        self.open_for(caller, &events).await
    }

    /// Opens events for a caller: with whichever data-key version sealed them, and for SUPPORT without
    /// the personal data (old and new values, client address, user agent).
    async fn open_for(&self, caller: &ConsoleCaller, events: &[StoredEvent]) -> Result<Vec<EventRecord>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let keys = self
                .keys_opening(caller.workspace_id(), &caller.keys, &e.event.details_sealed)
                .await?;
            let mut details = audit::open_details(&keys, e)?;
            if caller.is_support() {
                details = redact_details(details);
            }
            out.push(EventRecord::of(e, details));
        }
        Ok(out)
    }

    /// Events of the caller's workspace after `after_seq`, oldest first, up to [`EXPORT_BATCH`].
    pub async fn export_events(&self, caller: &ConsoleCaller, after_seq: i64) -> Result<Vec<EventRecord>> {
        caller.require_metadata_reader()?;
        let events = self
            .stores
            .audit
            .chain_after(caller.workspace_id(), after_seq, EXPORT_BATCH)
            .await?;
        self.audit_support_read(caller, "audit_log", caller.workspace_id().to_string())
            .await?;
        self.open_for(caller, &events).await
    }

    /// Verifies the hash chain of the caller's workspace (OWNER, ADMIN, SUPPORT; a SUPPORT read is
    /// audited), as `secureflows audit verify` does.
    pub async fn verify_workspace_audit(&self, caller: &ConsoleCaller) -> Result<ChainReport> {
        caller.require_metadata_reader()?;
        self.audit_support_read(caller, "audit_log", caller.workspace_id().to_string())
            .await?;
        self.verify_chain(caller.workspace_id()).await
    }

    /// Every event of a workspace (operator export on the command line), oldest first.
    pub async fn export_all_events(&self, workspace: WorkspaceId) -> Result<Vec<EventRecord>> {
        let keys = self.chain_keys(workspace).await?;
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let batch = self
                .stores
                .audit
                .chain_after(workspace, after, EXPORT_BATCH)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            out.extend(open_events(&keys, &batch)?);
        }
        Ok(out)
    }

    async fn chain_keys(&self, workspace: WorkspaceId) -> Result<Arc<WorkspaceKeys>> {
        if workspace == audit::INSTANCE {
            self.instance_keys().await
        } else {
            self.keys.workspace_keys(workspace, false).await
        }
    }

    /// A page of the caller's workspace's API-access log, newest first, key names opened.
    pub async fn list_api_access(
        &self,
        caller: &ConsoleCaller,
        filter: &AccessFilter,
        limit: u32,
    ) -> Result<Vec<AccessRecordView>> {
        caller.require_metadata_reader()?;
        let workspace = caller.workspace_id();
        let rows = self.stores.access.list_access(workspace, filter, limit).await?;
        self.audit_support_read(caller, "api_access_log", workspace.to_string())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (position, mut entry) in rows {
            let key = match &entry.key_sealed {
                // SUPPORT sees that a key was named, not which, nor who called from where.
                Some(_) if caller.is_support() => Some(REDACTED.to_owned()),
                Some(sealed) => {
                    let keys = self.keys_opening(workspace, &caller.keys, sealed).await?;
                    let plain = keys.open(&access_key_aad(workspace, &entry.request_id), sealed)?;
                    Some(String::from_utf8(plain).map_err(|_| Error::Integrity("access key name"))?)
                }
                None => None,
            };
            if caller.is_support() {
                entry.client_ip = REDACTED.to_owned();
                entry.user_agent = REDACTED.to_owned();
            }
            out.push(AccessRecordView { position, entry, key });
        }
        Ok(out)
    }

    /// Verifies the hash chain of one workspace (or [`audit::INSTANCE`]), or of every chain.
    pub async fn verify_audit(&self, workspace: Option<WorkspaceId>) -> Result<Vec<ChainReport>> {
        let targets = match workspace {
            Some(w) => vec![w],
            None => {
                let mut all = self.stores.audit.chained_workspaces().await?;
                for w in self.stores.workspaces.list_workspaces().await? {
                    if !all.contains(&w.id) {
                        all.push(w.id);
                    }
                }
                all
            }
        };
        let mut reports = Vec::with_capacity(targets.len());
        for w in targets {
            reports.push(self.verify_chain(w).await?);
        }
        Ok(reports)
    }

    async fn verify_chain(&self, workspace: WorkspaceId) -> Result<ChainReport> {
        let head = self.stores.audit.chain_head(workspace).await?;
        let (head_seq, head_hash) = match &head {
            Some((seq, hash)) => (Some(*seq), Some(hex::encode(hash))),
            None => (None, None),
        };
        let keys = match self.chain_keys(workspace).await {
            Ok(keys) => keys,
            Err(Error::NotFound(_)) => {
                // A deleted workspace's events go with its keys; events without keys cannot be
                // checked, which is a fault in itself.
                let left = self.stores.audit.chain_after(workspace, 0, 1).await?;
                let faults = if head.is_some() || !left.is_empty() {
                    vec![ChainFault {
                        seq: head_seq.unwrap_or(0),
                        kind: "unverifiable",
                    }]
                } else {
                    Vec::new()
                };
                return Ok(ChainReport {
                    workspace_id: workspace,
                    events: 0,
                    head_seq,
                    head_hash,
                    keys_available: false,
                    faults,
                });
            }
            Err(e) => return Err(e),
        };
        let mut verifier = ChainVerifier::new(&keys);
        let mut after = 0;
        loop {
            let batch = self
                .stores
                .audit
                .chain_after(workspace, after, EXPORT_BATCH)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for e in &batch {
                verifier.feed(e);
            }
        }
        let events = verifier.checked;
        let mut faults = verifier.finish(head.clone());
        // Every workspace's chain starts with its creation: a live workspace without one lost it.
        if events == 0
            && head.is_none()
            && workspace != audit::INSTANCE
            && self.stores.workspaces.find_workspace(workspace).await?.is_some()
        {
            faults.push(ChainFault {
                seq: 1,
                kind: "missing",
            });
        }
        Ok(ChainReport {
            workspace_id: workspace,
            events,
            head_seq,
            head_hash,
            keys_available: true,
            faults,
        })
    }
}

/// What SUPPORT sees in place of personal data.
pub const REDACTED: &str = "[redacted]";

fn redact_details(d: SealedDetails) -> SealedDetails {
    let redact = |v: Option<serde_json::Value>| v.map(|_| serde_json::Value::from(REDACTED));
    SealedDetails {
        old: redact(d.old),
        new: redact(d.new),
        client_ip: d.client_ip.map(|_| REDACTED.to_owned()),
        user_agent: d.user_agent.map(|_| REDACTED.to_owned()),
        request_id: d.request_id,
    }
}

fn open_events(keys: &WorkspaceKeys, events: &[StoredEvent]) -> Result<Vec<EventRecord>> {
    events
        .iter()
        .map(|e| Ok(EventRecord::of(e, audit::open_details(keys, e)?)))
        .collect()
}

/// Events as JSON Lines: one JSON object per line.
pub fn to_json_lines(records: &[EventRecord]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(Error::internal)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The CSV header row.
pub const CSV_COLUMNS: [&str; 15] = [
    "workspace_id",
    "seq",
    "id",
    "at",
    "actor_kind",
    "actor_id",
    "action",
    "resource_type",
    "resource_id",
    "old",
    "new",
    "client_ip",
    "user_agent",
    "request_id",
    "hash",
];

/// A CSV cell that a spreadsheet will not run as a formula (OWASP "CSV injection").
fn cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// Events as CSV (RFC 4180) with a header row; old and new values as JSON text.
pub fn to_csv(records: &[EventRecord], header: bool) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    if header {
        w.write_record(CSV_COLUMNS).map_err(Error::internal)?;
    }
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    for r in records {
        w.write_record([
            r.workspace_id.to_string(),
            r.seq.to_string(),
            r.id.clone(),
            r.at.clone(),
            r.actor_kind.clone(),
            r.actor_id.clone().unwrap_or_default(),
            cell(&r.action),
            cell(&r.resource_type),
            cell(&r.resource_id),
            cell(&json(&r.old)),
            cell(&json(&r.new)),
            cell(r.client_ip.as_deref().unwrap_or_default()),
            cell(r.user_agent.as_deref().unwrap_or_default()),
            cell(r.request_id.as_deref().unwrap_or_default()),
            r.hash.clone(),
        ])
        .map_err(Error::internal)?;
    }
    w.into_inner().map_err(|e| Error::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_become_formulas() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("Mozilla/5.0"), "Mozilla/5.0");
    }
}
