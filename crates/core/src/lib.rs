//! The domain of secureFlows: identifiers, roles, plans, the error type, the store traits every backend
//! implements, and the services that hold the rules (key ring, tokens, upstream sign-in, vault).
//!
//! This crate never imports HTTP, SQL drivers or Redis, and never calls a cryptographic primitive
//! directly: it goes through `secureflows-crypto`'s named operations.

pub mod access;
pub mod audit;
pub mod audit_trail;
pub mod auth;
pub mod authz;
pub mod billing;
pub mod cache;
mod clock;
pub mod console;
pub mod console_session;
pub mod email;
pub mod email_rule;
mod error;
mod ids;
pub mod keyring;
pub mod limits;
pub mod login;
pub mod mail;
pub mod members;
mod model;
pub mod overview;
mod plan;
pub mod rate;
mod role;
mod services;
pub mod setup;
pub mod store;
pub mod tier;
pub mod vault;
pub mod workspace;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use email::EmailAddress;
pub use error::{AuthFailure, Error, FieldError, ForbiddenReason, LimitKind, Quota, Result};
pub use ids::{
    ApplicationId, BrowserSessionId, FamilyId, FlowId, InviteId, PasskeyId, ProviderId, SessionId, UserId,
    WorkspaceId,
};
pub use model::{
    Application, ApplicationKind, AuthorizationCode, AuthorizationRequest, BrowserSession, CeremonyPurpose,
    ConsoleSession, IdentityProvider, Invalidation, Invite, LinkPurpose, LoginFlow, LoginLink, LoginSession,
    NewIdentity, PasskeyRecord, ProviderKind, RefreshToken, SupportOperator, TotpEnrolment, UpstreamTrust,
    User, UserStatus, WebauthnCeremony, Workspace,
};
pub use plan::{Plan, PlanCatalogue, PlanLimits};
pub use role::Role;
pub use services::{DomainSettings, Services};
pub use tier::Tier;
