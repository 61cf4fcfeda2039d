//! The audit log: who did what to which resource, with old and new values, client address, user agent
//! and time.
//!
//! Append-only to the application (no store method edits or deletes an event, except deleting a whole
//! workspace) and tamper-evident: every event carries a keyed hash (HMAC-SHA-256 under the workspace's
//! index key, which lives in the key ring, not in the data database) over its own fields and the hash of
//! the previous event of its workspace. The last event's sequence number and hash are also kept in a
//! head record. [`verify_chain`] reports an edited, inserted, reordered or deleted event; someone who
//! can rewrite the database cannot forge a hash without the key ring and the master key.
//!
//! Personal data (old/new values, client address, user agent) is sealed under the workspace data key;
//! action, resource and actor ids stay readable for filtering.

use secureflows_crypto::{Aad, blind_index, constant_time_eq};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keyring::WorkspaceKeys;
use crate::{Result, Timestamp, UserId, WorkspaceId};

/// The id under which instance-level events (SUPPORT operators, signing keys) are chained: the nil
/// UUID, which no workspace ever has.
pub const INSTANCE: WorkspaceId = WorkspaceId::NIL;

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A member of the workspace, through a USER JWT.
    User,
    /// An end user, through a SESSION JWT.
    EndUser,
    /// A SUPPORT operator.
    Support,
    /// An operator on the server's command line.
    Operator,
    /// The server itself.
    System,
}

impl ActorKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::EndUser => "end_user",
            ActorKind::Support => "support",
            ActorKind::Operator => "operator",
            ActorKind::System => "system",
        }
    }

    /// Parses the stable name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "user" => ActorKind::User,
            "end_user" => ActorKind::EndUser,
            "support" => ActorKind::Support,
            "operator" => ActorKind::Operator,
            "system" => ActorKind::System,
            _ => return None,
        })
    }
}

/// The actor and the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Kind.
    pub kind: ActorKind,
    /// User or SUPPORT operator id.
    pub id: Option<UserId>,
    /// Client address, when over HTTP.
    pub client_ip: Option<String>,
    /// User agent, neutralised.
    pub user_agent: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
}

impl Actor {
    /// The server itself (background jobs, verified webhooks).
    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            ..Actor::operator()
        }
    }

    /// An operator on the command line.
    pub fn operator() -> Actor {
        Actor {
            kind: ActorKind::Operator,
            id: None,
            client_ip: None,
            user_agent: None,
            request_id: None,
        }
    }
}

/// What one event says, before it is sealed and chained.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Stable action name, e.g. `application.update`.
    pub action: &'static str,
    /// Resource type, e.g. `application`.
    pub resource_type: &'static str,
    /// Resource id.
    pub resource_id: String,
    /// Value before (secrets redacted).
    pub old: Option<serde_json::Value>,
    /// Value after (secrets redacted).
    pub new: Option<serde_json::Value>,
}

impl NewEvent {
    /// An event without old or new values.
    pub fn new(action: &'static str, resource_type: &'static str, resource_id: impl ToString) -> Self {
        NewEvent {
            action,
            resource_type,
            resource_id: resource_id.to_string(),
            old: None,
            new: None,
        }
    }

    /// With old and new values.
    pub fn values(mut self, old: Option<serde_json::Value>, new: Option<serde_json::Value>) -> Self {
        self.old = old;
        self.new = new;
        self
    }
}

/// The sealed part of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SealedDetails {
    /// Old value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<serde_json::Value>,
    /// New value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<serde_json::Value>,
    /// Client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// User agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An event sealed and ready to be chained by the store (which assigns `seq` and the hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Id.
    pub id: Uuid,
    /// When.
    pub at: Timestamp,
    /// Actor kind.
    pub actor_kind: ActorKind,
    /// Actor id.
    pub actor_id: Option<UserId>,
    /// Action.
    pub action: String,
    /// Resource type.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// Sealed [`SealedDetails`].
    pub details_sealed: Vec<u8>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Workspace (or [`INSTANCE`]).
    pub workspace_id: WorkspaceId,
    /// Position in the workspace's chain, from 1.
    pub seq: i64,
    /// The event.
    pub event: PendingEvent,
    /// Hash of the previous event (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// This event's chained hash.
    pub hash: Vec<u8>,
}

/// The hash of the previous event of the first event of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// Computes an event's chained hash.
pub fn link(
    keys: &WorkspaceKeys,
    workspace: WorkspaceId,
    seq: i64,
    prev: &[u8],
    e: &PendingEvent,
) -> [u8; 32] {
    blind_index(
        keys.index(),
        &Aad::new("sf.audit.chain.v1")
            .field(workspace.as_uuid().as_bytes())
            .field(seq.to_be_bytes())
            .field(e.id.as_bytes())
            .field(e.at.millis().to_be_bytes())
            .field(e.actor_kind.as_str())
            .field(e.actor_id.map(|u| u.to_string()).unwrap_or_default())
            .field(&e.action)
            .field(&e.resource_type)
            .field(&e.resource_id)
            .field(&e.details_sealed)
            .field(prev),
    )
}

fn details_aad(workspace: WorkspaceId, id: Uuid) -> Aad {
    Aad::new("sf.audit.details.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(id.as_bytes())
}

/// Seals an event for `workspace`.
pub fn seal_event(
    keys: &WorkspaceKeys,
    workspace: WorkspaceId,
    actor: &Actor,
    event: NewEvent,
    at: Timestamp,
) -> Result<PendingEvent> {
    let id = Uuid::now_v7();
    let details = SealedDetails {
        old: event.old,
        new: event.new,
        client_ip: actor.client_ip.clone(),
        user_agent: actor.user_agent.clone(),
        request_id: actor.request_id.clone(),
    };
    let plain = serde_json::to_vec(&details).map_err(crate::Error::internal)?;
    Ok(PendingEvent {
        id,
        at,
        actor_kind: actor.kind,
        actor_id: actor.id,
        action: event.action.to_owned(),
        resource_type: event.resource_type.to_owned(),
        resource_id: event.resource_id,
        details_sealed: keys.seal(&details_aad(workspace, id), &plain)?,
    })
}

/// Opens an event's sealed details.
pub fn open_details(keys: &WorkspaceKeys, e: &StoredEvent) -> Result<SealedDetails> {
    let plain = keys.open(&details_aad(e.workspace_id, e.event.id), &e.event.details_sealed)?;
    serde_json::from_slice(&plain).map_err(|_| crate::Error::Integrity("audit details"))
}

/// Filters of an audit listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
    /// Actor id.
    pub actor: Option<UserId>,
    /// Exact action, or a prefix ending in `.` (e.g. `user.`).
    pub action: Option<String>,
    /// Resource id.
    pub resource: Option<String>,
    /// Events with a sequence number below this one (the page cursor).
    pub before_seq: Option<i64>,
}

/// What [`verify_chain`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainFault {
    /// Sequence number at which the chain breaks.
    pub seq: i64,
    /// `edited` (an event's fields no longer match its hash), `relinked` (it does not chain to its
    /// predecessor: an event before it was deleted, inserted or replaced), `missing` (a sequence number is
    /// absent), or `truncated` (the chain ends before the recorded head).
    pub kind: &'static str,
}

/// Checks a chain fed in ascending sequence order, in batches, against its recorded head.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    keys: &'k WorkspaceKeys,
    expected_seq: i64,
    prev: Vec<u8>,
    /// Faults found so far.
    pub faults: Vec<ChainFault>,
    /// Events checked.
    pub checked: u64,
}

impl<'k> ChainVerifier<'k> {
    /// A verifier for one workspace's chain.
    pub fn new(keys: &'k WorkspaceKeys) -> Self {
        ChainVerifier {
            keys,
            expected_seq: 1,
            prev: GENESIS.to_vec(),
            faults: Vec::new(),
            checked: 0,
        }
    }

    /// The next event of the chain.
    pub fn feed(&mut self, e: &StoredEvent) {
        if e.seq != self.expected_seq {
            self.faults.push(ChainFault {
                seq: self.expected_seq,
                kind: "missing",
            });
        }
        if !constant_time_eq(&e.prev_hash, &self.prev) {
            self.faults.push(ChainFault {
                seq: e.seq,
                kind: "relinked",
            });
        }
        let computed = link(self.keys, e.workspace_id, e.seq, &e.prev_hash, &e.event);
        if !constant_time_eq(&computed, &e.hash) {
            self.faults.push(ChainFault {
                seq: e.seq,
                kind: "edited",
            });
        }
        self.expected_seq = e.seq + 1;
        self.prev = e.hash.clone();
        self.checked += 1;
    }

    /// Compares the end of the chain with the recorded head and returns every fault.
    pub fn finish(mut self, head: Option<(i64, Vec<u8>)>) -> Vec<ChainFault> {
        let last_seq = self.expected_seq - 1;
        match head {
            Some((head_seq, head_hash))
                if head_seq != last_seq || !constant_time_eq(&head_hash, &self.prev) =>
            {
                self.faults.push(ChainFault {
                    seq: head_seq.max(last_seq),
                    kind: "truncated",
                });
            }
            None if last_seq > 0 => self.faults.push(ChainFault {
                seq: last_seq,
                kind: "relinked",
            }),
            _ => {}
        }
        self.faults
    }
}
