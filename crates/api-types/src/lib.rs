//! Request and response bodies of the secureFlows HTTP APIs, shared by the server, the Rust client and
//! the OpenAPI document. Field names are `snake_case`, except the sign-in response, whose camelCase
//! names (`sessionToken`, `expiresIn`, `tokenType`) are part of the published contract.

pub mod manage;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/auth/callback` with an upstream ID token.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    /// The ID token from an upstream OpenID Connect issuer the application trusts (upstream mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The hosted login's authorization code (code mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The PKCE verifier of the authorization request (code mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<String>,
    /// The redirect URI of the authorization request; checked when sent (code mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// A confidential application's secret (code mode, server-side callers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The application's client id; needed only when several applications trust the same issuer and
    /// audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// A signed-in session's token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CallbackResponse {
    /// The SESSION JWT. Keep it in memory only.
    #[serde(rename = "sessionToken")]
    pub session_token: String,
    /// Seconds until it expires.
    #[serde(rename = "expiresIn")]
    pub expires_in: u64,
    /// Always `Bearer`.
    #[serde(rename = "tokenType")]
    pub token_type: String,
    /// Refresh token (code mode; confidential and native clients only). Rotated on every use at the
    /// issuer's token endpoint.
    #[serde(rename = "refreshToken", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// OpenID Connect ID token (code mode).
    #[serde(rename = "idToken", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// `POST /api/v1/auth/anonymous`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnonymousRequest {
    /// The application's client id (it must allow anonymous sessions).
    #[schema(format = Uuid)]
    pub client_id: String,
}

/// `POST /api/v1/auth/upgrade`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct UpgradeTicket {
    /// Pass to the issuer's `authorize` as `upgrade`.
    pub upgrade: String,
    /// Seconds until it expires.
    #[serde(rename = "expiresIn")]
    pub expires_in: u64,
}

/// One vault value's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ValueMeta {
    /// Key name.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// First written (RFC 3339, UTC).
    pub created_at: String,
    /// Last written.
    pub updated_at: String,
    /// Expires unless written again.
    pub expires_at: String,
}

/// One entry of `GET /api/v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ListedValue {
    /// Key name; `null` when the value is unreadable.
    pub key: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// First written (RFC 3339, UTC).
    pub created_at: String,
    /// Last written.
    pub updated_at: String,
    /// Expires unless written again.
    pub expires_at: String,
    /// Present and `true` when the stored value failed its integrity check (tampered, or sealed under a
    /// key the server no longer holds): its name cannot be shown and reading it answers 500.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

/// `GET /api/v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ValueList {
    /// The caller's keys in this application, sorted by name; unreadable values last.
    pub keys: Vec<ListedValue>,
}

/// `POST /api/v1/limits/consume`: charges a back end's own call to the caller's hourly budget.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    /// Requests to charge (1 to 1000; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub cost: Option<u32>,
}

/// What is left of one hourly budget (the same figures as the `RateLimit` header field).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct BudgetState {
    /// `user-hourly` (the end user's tier in this application) or `workspace-hourly` (the plan's).
    pub policy: String,
    /// Requests per hour.
    pub limit: u32,
    /// Requests that may still be made at once.
    pub remaining: u32,
    /// Seconds until the budget is whole again.
    pub reset: u64,
}

/// The answer to `POST /api/v1/limits/consume`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ConsumeResult {
    /// Requests charged.
    pub charged: u32,
    /// The tier the caller is on in this application (absent when it has no tiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Every budget the call was charged to.
    pub budgets: Vec<BudgetState>,
}

/// A signed checkout reference: pass it to the billing provider's checkout (Stripe:
/// `client_reference_id` and `subscription_data.metadata.secureflows_ref`; Paddle: `custom_data`
/// `secureflows_ref`) so that its webhooks link the subscription to this user or workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CheckoutReference {
    /// The reference (`sfr1.…`, at most 200 characters).
    pub reference: String,
    /// A subscription whose first event occurs after this is not linked by it (RFC 3339).
    pub expires_at: String,
}

/// The answer to a verified billing webhook (always 200, so that the provider stops retrying).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct WebhookResult {
    /// `applied`, `duplicate` (the event id was handled before), `stale` (a newer event of the same
    /// subscription was applied) or `ignored`.
    pub outcome: String,
    /// What was done or why nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An RFC 9457 problem as the server sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Problem {
    /// Stable problem type URI (`urn:secureflows:problem:<slug>`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Explanation.
    #[serde(default)]
    pub detail: Option<String>,
    /// Request path.
    #[serde(default)]
    pub instance: Option<String>,
    /// Request id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Field errors (422).
    #[serde(default)]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// The slug after `urn:secureflows:problem:`.
    pub fn slug(&self) -> &str {
        self.type_.rsplit(':').next().unwrap_or("")
    }
}

/// A field error in a 422 problem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct FieldError {
    /// Field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}
