//! Billing webhooks: Paddle (the operator bills workspaces; one signing secret per instance) and
//! Stripe (a workspace's application bills its end users; a signing secret per application, sealed).
//!
//! The rules, in order: the signature is checked over the raw body before anything is parsed (HMAC-SHA-256,
//! constant time, 5 minutes either way); an event id seen before changes nothing; the tenant and the
//! user come from our own mapping, never from the payload alone — the first verified event whose signed
//! checkout reference checks out links the provider's subscription (and customer) to a workspace or an
//! end user, and later events are matched by the subscription id only, whatever their free-form fields
//! say; an event older than the newest one applied to that subscription changes nothing. Every change
//! is audited with the event id.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secureflows_crypto::webhook::{WebhookScheme, WebhookSignatureError, verify_webhook};
use secureflows_crypto::{Aad, blind_index, constant_time_eq};
use serde_json::Value;

use crate::audit::{self, Actor, ActorKind, NewEvent};
use crate::auth::session::SessionCaller;
use crate::console::ConsoleCaller;
use crate::store::Change;
use crate::tier::{TierAssignment, TierSource};
use crate::{ApplicationId, Error, Plan, Result, Services, Timestamp, UserId, WorkspaceId};

/// How far a webhook's signed timestamp may be from the server's clock, either way.
pub const WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);
/// How long a signed checkout reference links a subscription (checked at the event's own time).
pub const REFERENCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a handled event id is remembered (Stripe retries for 3 days, Paddle for about as long).
pub const EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest event, subscription or customer id taken.
const MAX_ID_LEN: usize = 255;

/// A billing provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Paddle Billing: workspaces' plans.
    Paddle,
    /// Stripe: end users' tiers in one application.
    Stripe,
}

impl Provider {
    /// Stable name (stored).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Paddle => "paddle",
            Provider::Stripe => "stripe",
        }
    }
}

/// Why a webhook was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFailure {
    /// The signature header is missing or malformed, no signature matches, or no secret is set.
    SignatureInvalid,
    /// The signed timestamp is outside the tolerance window (a replay, or a badly wrong clock).
    Stale,
}

/// What a verified webhook did. Every outcome is answered 200, so the provider stops retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A plan or tier was set (or a subscription linked).
    Applied(String),
    /// The event id was handled before.
    Duplicate,
    /// A newer event of the same subscription was applied already.
    Stale,
    /// Nothing to do (an event type we do not act on, or a subscription we cannot link).
    Ignored(&'static str),
}

/// A provider subscription linked to a workspace (Paddle) or an end user (Stripe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingLink {
    /// Provider.
    pub provider: Provider,
    /// The application (Stripe) or the nil id (Paddle).
    pub scope: uuid::Uuid,
    /// The provider's subscription id.
    pub subscription_id: String,
    /// The provider's customer id.
    pub customer_id: String,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The end user (Stripe).
    pub user: Option<UserId>,
    /// The provider's time of the newest event applied.
    pub last_event_at: Timestamp,
    /// Linked.
    pub linked_at: Timestamp,
}

/// What a signed checkout reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceSubject {
    /// A workspace (Paddle checkout).
    Workspace(WorkspaceId),
    /// An end user of one application (Stripe checkout).
    User(WorkspaceId, ApplicationId, UserId),
}

const REFERENCE_PREFIX: &str = "sfr1.";

/// The MAC input of a reference: purpose, subject and expiry, canonically encoded.
fn reference_aad(subject: ReferenceSubject, expires: i64) -> Aad {
    let aad = Aad::new("secureflows checkout reference");
    match subject {
        ReferenceSubject::Workspace(w) => aad.field("workspace").field(w.as_uuid().as_bytes()),
        ReferenceSubject::User(w, a, u) => aad
            .field("user")
            .field(w.as_uuid().as_bytes())
            .field(a.as_uuid().as_bytes())
            .field(u.as_uuid().as_bytes()),
    }
    .field(expires.to_be_bytes())
}

/// The reference's clear part: a kind byte, the ids and the expiry (seconds, big-endian).
fn reference_body(subject: ReferenceSubject, expires: i64) -> Vec<u8> {
    let mut body = Vec::with_capacity(57);
    match subject {
        ReferenceSubject::Workspace(w) => {
            body.push(b'w');
            body.extend_from_slice(w.as_uuid().as_bytes());
        }
        ReferenceSubject::User(w, a, u) => {
            body.push(b'u');
            body.extend_from_slice(w.as_uuid().as_bytes());
            body.extend_from_slice(a.as_uuid().as_bytes());
            body.extend_from_slice(u.as_uuid().as_bytes());
        }
    }
    body.extend_from_slice(&expires.to_be_bytes());
    body
}

fn parse_reference_body(body: &[u8]) -> Option<(ReferenceSubject, i64)> {
    let id = |bytes: &[u8]| uuid::Uuid::from_slice(bytes).ok();
    let (subject, rest) = match body.first()? {
        b'w' if body.len() == 1 + 16 + 8 => {
            (ReferenceSubject::Workspace(id(&body[1..17])?.into()), &body[17..])
        }
        b'u' if body.len() == 1 + 48 + 8 => (
            ReferenceSubject::User(
                id(&body[1..17])?.into(),
                id(&body[17..33])?.into(),
                id(&body[33..49])?.into(),
            ),
            &body[49..],
        ),
        _ => return None,
    };
    Some((subject, i64::from_be_bytes(rest.try_into().ok()?)))
}

/// The event parts both providers share.
#[derive(Debug)]
struct Event<'a> {
    id: &'a str,
    kind: &'a str,
    at: Timestamp,
    object: &'a Value,
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control))
}

fn malformed(what: &str) -> Error {
    Error::Malformed(format!("the event has no valid {what}"))
}

impl Services {
    /// A signed checkout reference for the caller's workspace (OWNER): Paddle's `custom_data`
    /// `secureflows_ref`.
    pub fn workspace_checkout_reference(&self, caller: &ConsoleCaller) -> Result<(String, Timestamp)> {
        if caller.role() != crate::Role::Owner {
            return Err(Error::Forbidden(crate::ForbiddenReason::Role));
        }
        self.sign_reference(ReferenceSubject::Workspace(caller.workspace_id()), &caller.keys)
    }

    /// A signed checkout reference for the calling end user (SESSION JWT): Stripe Checkout's
    /// `client_reference_id` and `subscription_data.metadata.secureflows_ref`.
    pub fn user_checkout_reference(&self, caller: &SessionCaller) -> Result<(String, Timestamp)> {
        if caller.token.role == crate::Role::Anon {
            return Err(Error::Forbidden(crate::ForbiddenReason::Role));
        }
        self.sign_reference(
            ReferenceSubject::User(caller.workspace.id, caller.application.id, caller.token.user),
            &caller.keys,
        )
    }

    fn sign_reference(
        &self,
        subject: ReferenceSubject,
        keys: &crate::keyring::WorkspaceKeys,
    ) -> Result<(String, Timestamp)> {
        let expires = self.clock.now().plus(REFERENCE_TTL);
        let secs = expires.secs();
        let tag = blind_index(keys.index(), &reference_aad(subject, secs));
        let text = format!(
            "{REFERENCE_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(reference_body(subject, secs)),
            URL_SAFE_NO_PAD.encode(tag)
        );
        Ok((text, Timestamp::from_secs(secs)))
    }

    /// The subject of a reference whose MAC checks out under its workspace's key and that had not
    /// expired at `at`.
    async fn verify_reference(&self, text: &str, at: Timestamp) -> Result<Option<ReferenceSubject>> {
        let Some((body, tag)) = text
            .strip_prefix(REFERENCE_PREFIX)
            .and_then(|rest| rest.split_once('.'))
        else {
            return Ok(None);
        };
        let (Ok(body), Ok(tag)) = (URL_SAFE_NO_PAD.decode(body), URL_SAFE_NO_PAD.decode(tag)) else {
            return Ok(None);
        };
        let Some((subject, expires)) = parse_reference_body(&body) else {
            return Ok(None);
        };
        let workspace = match subject {
            ReferenceSubject::Workspace(w) | ReferenceSubject::User(w, ..) => w,
        };
        if workspace == audit::INSTANCE || self.stores.workspaces.find_workspace(workspace).await?.is_none() {
            return Ok(None);
        }
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let expected = blind_index(keys.index(), &reference_aad(subject, expires));
        if !constant_time_eq(&expected, &tag) || at.secs() > expires {
            return Ok(None);
        }
        Ok(Some(subject))
    }

    /// Sets (or replaces) an application's Stripe webhook signing secret (OWNER, ADMIN). Stored sealed;
    /// audited without the secret.
    pub async fn set_stripe_secret(
        &self,
        caller: &ConsoleCaller,
        app: ApplicationId,
        secret: &str,
    ) -> Result<()> {
        caller.require_admin()?;
        self.find_workspace_application(caller.workspace_id(), app)
            .await?;
        if secret.len() < 16
            || secret.len() > 256
            || secret.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::invalid(
                "webhook_secret",
                "must be the endpoint's signing secret (whsec_…), 16 to 256 characters without spaces",
            ));
        }
        let sealed = caller
            .keys
            .seal(&stripe_secret_aad(caller.workspace_id(), app), secret.as_bytes())?;
        self.commit(
            caller.workspace_id(),
            &caller.keys,
            &caller.actor,
            vec![Change::SetBillingSecret {
                application: app,
                sealed,
            }],
            vec![
                NewEvent::new("application.billing_secret.set", "application", app)
                    .values(None, Some(serde_json::json!({"provider": "stripe"}))),
            ],
        )
        .await
    }

    /// Handles a Paddle webhook: `Paddle-Signature` over the raw body with the instance's secret.
    pub async fn paddle_webhook(
        &self,
        signature: &str,
        body: &[u8],
        actor: &Actor,
    ) -> Result<WebhookOutcome> {
        let Some(secret) = self.settings.billing.paddle_secret.as_ref() else {
            return Err(Error::Webhook(WebhookFailure::SignatureInvalid));
        };
        self.check_signature(WebhookScheme::Paddle, signature, body, secret.expose().as_bytes())?;
        let envelope: Value =
            serde_json::from_slice(body).map_err(|_| Error::Malformed("the body is not JSON".into()))?;
        let at = envelope
            .get("occurred_at")
            .and_then(Value::as_str)
            .and_then(Timestamp::parse_rfc3339)
            .ok_or_else(|| malformed("occurred_at"))?;
        let event = Event {
            id: text(&envelope, "event_id").ok_or_else(|| malformed("event_id"))?,
            kind: text(&envelope, "event_type").ok_or_else(|| malformed("event_type"))?,
            at,
            object: envelope.get("data").ok_or_else(|| malformed("data"))?,
        };
        let (subscription, customer, reference) = match event.kind {
            k if k.starts_with("subscription.") => (
                text(event.object, "id"),
                text(event.object, "customer_id"),
                event
                    .object
                    .get("custom_data")
                    .and_then(|c| text(c, "secureflows_ref")),
            ),
            "transaction.completed" | "transaction.paid" => (
                text(event.object, "subscription_id"),
                text(event.object, "customer_id"),
                event
                    .object
                    .get("custom_data")
                    .and_then(|c| text(c, "secureflows_ref")),
            ),
            _ => {
                return self
                    .skip(Provider::Paddle, uuid::Uuid::nil(), &event, "event type not used")
                    .await;
            }
        };
        let Some(subscription) = subscription else {
            return self
                .skip(Provider::Paddle, uuid::Uuid::nil(), &event, "no subscription")
                .await;
        };
        let plan = if event.kind.starts_with("subscription.") {
            Some(self.paddle_plan(event.object)?)
        } else {
            None
        };
        self.apply_billing_event(
            Provider::Paddle,
            uuid::Uuid::nil(),
            &event,
            subscription,
            customer,
            reference,
            BillingChange::Plan(plan.flatten()),
            actor,
        )
        .await
    }

    /// The plan a Paddle subscription object grants: the catalogued plan of its price while it is
    /// active (or trialing, or past due); the configured fallback plan once it is canceled or paused;
    /// `None` (no change) for any other status or an unmapped price.
    fn paddle_plan(&self, object: &Value) -> Result<Option<Plan>> {
        let status = text(object, "status").ok_or_else(|| malformed("status"))?;
        let billing = &self.settings.billing;
        match status {
            "active" | "trialing" | "past_due" => {
                let price = object
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|item| item.get("price").and_then(|p| text(p, "id")))
                    .find_map(|id| billing.paddle_prices.get(id));
                Ok(price.and_then(|name| self.plans.find(name)))
            }
            "canceled" | "paused" => Ok(self.plans.find(&billing.paddle_cancel_plan)),
            _ => Ok(None),
        }
    }

    /// Handles a Stripe webhook for one application: `Stripe-Signature` over the raw body with the
    /// application's secret.
    pub async fn stripe_webhook(
        &self,
        application: ApplicationId,
        signature: &str,
        body: &[u8],
        actor: &Actor,
    ) -> Result<WebhookOutcome> {
        let invalid = || Error::Webhook(WebhookFailure::SignatureInvalid);
        let app = self
            .stores
            .applications
            .find_application(application)
            .await?
            .filter(|a| !a.console)
            .ok_or_else(invalid)?;
        let keys = self
            .keys
            .workspace_keys(app.workspace_id, self.state.trusted())
            .await?;
        let sealed = self
            .stores
            .billing
            .billing_secret(app.workspace_id, application)
            .await?
            .ok_or_else(invalid)?;
        let secret =
            zeroize::Zeroizing::new(keys.open(&stripe_secret_aad(app.workspace_id, application), &sealed)?);
        self.check_signature(WebhookScheme::Stripe, signature, body, &secret)?;
        let envelope: Value =
            serde_json::from_slice(body).map_err(|_| Error::Malformed("the body is not JSON".into()))?;
        let at = envelope
            .get("created")
            .and_then(Value::as_i64)
            .map(Timestamp::from_secs)
            .ok_or_else(|| malformed("created"))?;
        let event = Event {
            id: text(&envelope, "id").ok_or_else(|| malformed("id"))?,
            kind: text(&envelope, "type").ok_or_else(|| malformed("type"))?,
            at,
            object: envelope
                .get("data")
                .and_then(|d| d.get("object"))
                .ok_or_else(|| malformed("data.object"))?,
        };
        let scope = application.as_uuid();
        let metadata_ref = event
            .object
            .get("metadata")
            .and_then(|m| text(m, "secureflows_ref"));
        let (subscription, customer, reference, change) = match event.kind {
            "checkout.session.completed" => (
                text(event.object, "subscription"),
                text(event.object, "customer"),
                text(event.object, "client_reference_id").or(metadata_ref),
                BillingChange::Tier(None),
            ),
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => {
                let tier = if event.kind == "customer.subscription.deleted" {
                    TierChange::Default
                } else {
                    stripe_tier(&app, event.object)?
                };
                (
                    text(event.object, "id"),
                    text(event.object, "customer"),
                    metadata_ref,
                    BillingChange::Tier(Some(tier)),
                )
            }
            _ => {
                return self
                    .skip(Provider::Stripe, scope, &event, "event type not used")
                    .await;
            }
        };
        let Some(subscription) = subscription else {
            return self
                .skip(Provider::Stripe, scope, &event, "no subscription")
                .await;
        };
        self.apply_billing_event(
            Provider::Stripe,
            scope,
            &event,
            subscription,
            customer,
            reference,
            change,
            actor,
        )
        .await
    }

    fn check_signature(&self, scheme: WebhookScheme, header: &str, body: &[u8], secret: &[u8]) -> Result<()> {
        let now = self.clock.now().secs();
        verify_webhook(scheme, header, body, secret, now, WEBHOOK_TOLERANCE)
            .map(|_| ())
            .map_err(|e| {
                Error::Webhook(match e {
                    WebhookSignatureError::Stale => WebhookFailure::Stale,
                    WebhookSignatureError::Malformed | WebhookSignatureError::Invalid => {
                        WebhookFailure::SignatureInvalid
                    }
                })
            })
    }

    /// Records an event that changes nothing, so that a redelivery is a duplicate.
    async fn skip(
        &self,
        provider: Provider,
        scope: uuid::Uuid,
        event: &Event<'_>,
        why: &'static str,
    ) -> Result<WebhookOutcome> {
        self.record_only(provider, scope, event.id, WebhookOutcome::Ignored(why))
            .await
    }

    /// Records a handled event id alone; `outcome` is the answer unless it was recorded before.
    async fn record_only(
        &self,
        provider: Provider,
        scope: uuid::Uuid,
        event_id: &str,
        outcome: WebhookOutcome,
    ) -> Result<WebhookOutcome> {
        let keys = self.instance_keys().await?;
        let recorded = self
            .commit(
                audit::INSTANCE,
                &keys,
                &Actor::system(),
                vec![Change::RecordWebhookEvent {
                    provider: provider.as_str(),
                    scope,
                    event_id: event_id.to_owned(),
                }],
                Vec::new(),
            )
            .await;
        match recorded {
            Ok(()) => Ok(outcome),
            Err(Error::Conflict("duplicate-event")) => Ok(WebhookOutcome::Duplicate),
            Err(e) => Err(e),
        }
    }

    /// Links (on the first event with a valid reference) or finds the subscription, and applies the
    /// change in one transaction with the event id and the audit events.
    #[allow(clippy::too_many_arguments)]
    async fn apply_billing_event(
        &self,
        provider: Provider,
        scope: uuid::Uuid,
        event: &Event<'_>,
        subscription: &str,
        customer: Option<&str>,
        reference: Option<&str>,
        change: BillingChange,
        actor: &Actor,
    ) -> Result<WebhookOutcome> {
        if self
            .stores
            .billing
            .webhook_event_seen(provider.as_str(), scope, event.id)
            .await?
        {
            return Ok(WebhookOutcome::Duplicate);
        }
        let link = self
            .stores
            .billing
            .find_billing_link(provider.as_str(), scope, subscription)
            .await?;
        let mut changes = vec![Change::RecordWebhookEvent {
            provider: provider.as_str(),
            scope,
            event_id: event.id.to_owned(),
        }];
        let mut events = Vec::new();
        let mut linked = false;
        let link = match link {
            Some(link) => link,
            None => {
                let subject = match reference {
                    Some(r) => self.verify_reference(r, event.at).await?,
                    None => None,
                };
                let (workspace, user) = match (provider, subject) {
                    (Provider::Paddle, Some(ReferenceSubject::Workspace(w))) => (w, None),
                    (Provider::Stripe, Some(ReferenceSubject::User(w, a, u))) if a.as_uuid() == scope => {
                        (w, Some(u))
                    }
                    _ => {
                        if reference.is_some() {
                            tracing::warn!(
                                provider = provider.as_str(),
                                "a billing webhook carried a checkout reference that does not check out"
                            );
                        }
                        return self
                            .skip(
                                provider,
                                scope,
                                event,
                                "no linked subscription and no valid checkout reference",
                            )
                            .await;
                    }
                };
                let link = BillingLink {
                    provider,
                    scope,
                    subscription_id: subscription.to_owned(),
                    customer_id: customer.unwrap_or_default().to_owned(),
                    workspace,
                    user,
                    last_event_at: event.at,
                    linked_at: self.clock.now(),
                };
                changes.push(Change::LinkBilling(link.clone()));
                events.push(
                    NewEvent::new("billing.link", "subscription", subscription).values(
                        None,
                        Some(serde_json::json!({
                            "provider": provider.as_str(),
                            "customer": customer,
                            "user": user.map(|u| u.to_string()),
                            "event_id": event.id,
                        })),
                    ),
                );
                linked = true;
                link
            }
        };
        if !linked {
            changes.push(Change::AdvanceBilling {
                provider: provider.as_str(),
                scope,
                subscription_id: subscription.to_owned(),
                event_at: event.at,
            });
        }
        let mut applied = if linked {
            format!("subscription linked ({})", event.kind)
        } else {
            format!("{} handled", event.kind)
        };
        match (change, link.user) {
            (BillingChange::Plan(Some(plan)), None) => {
                let old = self.get_workspace(link.workspace).await?.plan;
                events.push(
                    NewEvent::new("workspace.plan.change", "workspace", link.workspace).values(
                        Some(serde_json::json!({"plan": old.as_str()})),
                        Some(serde_json::json!({
                            "plan": plan.as_str(),
                            "source": provider.as_str(),
                            "event_id": event.id,
                            "subscription": subscription,
                        })),
                    ),
                );
                applied = format!("plan set to {plan}");
                changes.push(Change::SetPlan(plan));
            }
            (BillingChange::Tier(Some(tier)), Some(user)) => {
                let application = ApplicationId::from_uuid(scope);
                let tier = match tier {
                    TierChange::Default => None,
                    TierChange::To(name) => Some(name),
                    TierChange::Keep => {
                        return self
                            .commit_billing(&link, event.id, changes, events, actor, applied)
                            .await;
                    }
                };
                events.push(NewEvent::new("user.tier.change", "user", user).values(
                    None,
                    Some(serde_json::json!({
                        "application": application.to_string(),
                        "tier": tier,
                        "source": provider.as_str(),
                        "event_id": event.id,
                        "subscription": subscription,
                    })),
                ));
                applied = format!("tier set to {}", tier.as_deref().unwrap_or("the default"));
                changes.push(Change::SetUserTier(TierAssignment {
                    application,
                    user,
                    tier,
                    source: TierSource::Stripe,
                    event_at: Some(event.at),
                    updated_at: self.clock.now(),
                }));
            }
            _ => {}
        }
        self.commit_billing(&link, event.id, changes, events, actor, applied)
            .await
    }

    async fn commit_billing(
        &self,
        link: &BillingLink,
        event_id: &str,
        changes: Vec<Change>,
        events: Vec<NewEvent>,
        actor: &Actor,
        applied: String,
    ) -> Result<WebhookOutcome> {
        let keys = self
            .keys
            .workspace_keys(link.workspace, self.state.trusted())
            .await?;
        let system = Actor {
            kind: ActorKind::System,
            id: None,
            ..actor.clone()
        };
        match self.commit(link.workspace, &keys, &system, changes, events).await {
            Ok(()) => Ok(WebhookOutcome::Applied(applied)),
            Err(Error::Conflict("duplicate-event")) => Ok(WebhookOutcome::Duplicate),
            // An older event than the newest applied: remembered, so that a redelivery is a duplicate.
            Err(Error::Conflict("stale-event")) => {
                self.record_only(link.provider, link.scope, event_id, WebhookOutcome::Stale)
                    .await
            }
            // The user or the workspace is gone: nothing left to bill.
            Err(Error::NotFound(_)) => Ok(WebhookOutcome::Ignored(
                "the subscription's user or workspace is gone",
            )),
            Err(e) => Err(e),
        }
    }
}

/// What an event asks for.
enum BillingChange {
    /// A workspace plan (`None`: no change).
    Plan(Option<Plan>),
    /// An end user's tier (`None`: no change).
    Tier(Option<TierChange>),
}

/// An end user's tier after a Stripe subscription event.
enum TierChange {
    /// The tier of the subscription's price.
    To(String),
    /// Back on the default tier (canceled, unpaid, ended).
    Default,
    /// No change (incomplete, or a price no tier lists).
    Keep,
}

/// The tier a Stripe subscription grants: the application's tier listing its price (id or lookup key)
/// while active, trialing or past due; the default tier once canceled, unpaid or ended.
fn stripe_tier(app: &crate::Application, object: &Value) -> Result<TierChange> {
    let status = text(object, "status").ok_or_else(|| malformed("status"))?;
    Ok(match status {
        "active" | "trialing" | "past_due" => {
            let prices: Vec<&str> = object
                .get("items")
                .and_then(|i| i.get("data"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|item| item.get("price"))
                .flat_map(|p| [text(p, "id"), text(p, "lookup_key")])
                .flatten()
                .collect();
            app.tiers
                .iter()
                .find(|t| t.prices.iter().any(|p| prices.contains(&p.as_str())))
                .map_or(TierChange::Keep, |t| TierChange::To(t.name.clone()))
        }
        "canceled" | "unpaid" | "incomplete_expired" | "paused" => TierChange::Default,
        _ => TierChange::Keep,
    })
}

/// The sealed secret's AAD: bound to its workspace and application.
fn stripe_secret_aad(workspace: WorkspaceId, app: ApplicationId) -> Aad {
    Aad::new("billing_secret")
        .field(workspace.as_uuid().as_bytes())
        .field(app.as_uuid().as_bytes())
        .field("stripe")
}

/// The billing settings of the instance (`[billing]`).
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// Paddle's webhook signing secret (`None`: Paddle webhooks are refused).
    pub paddle_secret: Option<Arc<secureflows_crypto::SecretString>>,
    /// Paddle price id → plan name.
    pub paddle_prices: std::collections::BTreeMap<String, String>,
    /// The plan a workspace goes back to when its Paddle subscription is canceled or paused.
    pub paddle_cancel_plan: String,
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings {
            paddle_secret: None,
            paddle_prices: std::collections::BTreeMap::new(),
            paddle_cancel_plan: "free".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_bodies_round_trip_and_odd_ones_are_refused() {
        let w = WorkspaceId::new();
        let (a, u) = (ApplicationId::new(), UserId::new());
        for subject in [ReferenceSubject::Workspace(w), ReferenceSubject::User(w, a, u)] {
            let body = reference_body(subject, 1_800_000_000);
            assert_eq!(parse_reference_body(&body), Some((subject, 1_800_000_000)));
            assert_eq!(parse_reference_body(&body[..body.len() - 1]), None);
        }
        assert_eq!(parse_reference_body(b""), None);
        assert_eq!(parse_reference_body(&[b'x'; 25]), None);
        // A Stripe client_reference_id holds at most 200 characters.
        let longest = REFERENCE_PREFIX.len() + URL_SAFE_NO_PAD.encode([0u8; 57]).len() + 1 + 43;
        assert!(longest <= 200, "{longest}");
    }
}
