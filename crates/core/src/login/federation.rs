//! Signing in on the hosted pages with an upstream OpenID Connect provider ("Continue with Google"):
//! the authorization code flow with PKCE (S256), `state` and `nonce`, to the provider's endpoints from
//! its discovery document; the ID token is verified against the provider's JWKS.
//!
//! The request's secrets (state, nonce, PKCE verifier) and the pending authorization request travel in
//! a cookie sealed under the workspace data key, bound to the workspace and good for ten minutes; the
//! callback must carry the same `state`, so a response can only finish the sign-in of the browser that
//! started it.
//!
//! Accounts: an identity (issuer, subject) seen before signs in its user. A new identity whose e-mail
//! address belongs to an existing user is linked to that user only if **the provider asserts that it
//! verified the address** (`email_verified`), **the account's own address is verified** (so that an
//! account opened in someone else's name before they came is not handed their provider identity), and
//! the account is a USER's **without a second factor** (an OWNER's or ADMIN's account, or one with TOTP
//! or a passkey, is never joined through the e-mail claim of a provider that an administrator can add).
//! Otherwise the sign-in is refused, and the member signs in another way. Any other new identity
//! creates a user; an address the provider did not verify is not kept.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secureflows_crypto::{Aad, SecretString};
use serde::{Deserialize, Serialize};

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::callback::{email_index, identity_index, new_identity};
use crate::auth::upstream::{UpstreamIdentity, verify_id_token};
use crate::console::ConsoleCaller;
use crate::email::EmailAddress;
use crate::keyring::WorkspaceKeys;
use crate::login::mfa::FirstFactor;
use crate::login::oidc::pkce_s256;
use crate::login::{SignupMode, workspace_issuer};
use crate::store::Change;
use crate::workspace::validate_issuer;
use crate::{
    Error, FieldError, FlowId, IdentityProvider, ProviderId, ProviderKind, Result, Role, Services,
    UpstreamTrust, User, UserId, UserStatus, WorkspaceId,
};

/// Google's issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// How long a started upstream sign-in may take.
const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// Providers per workspace.
const MAX_PROVIDERS: usize = 10;

/// A provider to add.
#[derive(Debug, Clone)]
pub struct NewProvider {
    /// Kind.
    pub kind: ProviderKind,
    /// Button name (default: "Google", or the issuer's host).
    pub name: Option<String>,
    /// Issuer (required for `oidc`; fixed for `google`).
    pub issuer: Option<String>,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret at the provider (absent: a public client, PKCE only).
    pub client_secret: Option<SecretString>,
}

/// A started upstream sign-in.
#[derive(Debug)]
pub struct UpstreamStart {
    /// Where to send the browser.
    pub authorization_url: String,
    /// The sealed pending request, for the cookie (never logged).
    pub cookie: SecretString,
}

/// Why an upstream sign-in did not finish.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// The browser's request does not match (no or another cookie, another state, expired).
    Expired,
    /// The provider refused or failed (an `error` answer, a bad code, an ID token that does not verify).
    Provider,
    /// The address belongs to an account that this identity may not be joined to automatically: the
    /// provider or the account did not verify the address, or the account is an OWNER's or ADMIN's or
    /// has a second factor.
    ExistingAccount,
    /// Linking from the account page: the provider identity belongs to another member.
    IdentityTaken,
    /// The account is locked or disabled.
    Locked,
    /// Anything else.
    Other(Error),
}

impl From<Error> for UpstreamFailure {
    fn from(e: Error) -> Self {
        UpstreamFailure::Other(e)
    }
}

#[derive(Serialize, Deserialize)]
struct Pending {
    provider: ProviderId,
    state: String,
    nonce: String,
    verifier: String,
    flow: Option<FlowId>,
    expires: i64,
    /// Linking to this signed-in user (from the account page), not signing in.
    #[serde(default)]
    link: Option<UserId>,
}

/// A sign-in with an upstream provider.
#[derive(Debug)]
pub struct UpstreamSignIn {
    /// The user.
    pub user: User,
    /// Signed in, or a second factor still to give.
    pub step: FirstFactor,
    /// The pending authorization request.
    pub flow: Option<FlowId>,
    /// Created by this sign-in.
    pub new_account: bool,
}

/// What the provider's redirect back carries.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamCallback<'a> {
    /// The `sf_upstream` cookie.
    pub cookie: &'a str,
    /// `state`.
    pub state: &'a str,
    /// `code` (absent when the provider answers an error).
    pub code: Option<&'a str>,
    /// `iss` (RFC 9207), if the provider sends it.
    pub iss: Option<&'a str>,
}

/// How an upstream sign-in ended.
#[derive(Debug)]
pub enum UpstreamOutcome {
    /// Signed in (or a second step to give).
    SignedIn(Box<UpstreamSignIn>),
    /// The provider identity is now linked to the signed-in user (or already was).
    Linked {
        /// The provider's name.
        provider: String,
    },
}

fn pending_aad(workspace: WorkspaceId) -> Aad {
    Aad::new("sf.upstream.pending.v1").field(workspace.as_uuid().as_bytes())
}

fn secret_aad(workspace: WorkspaceId, provider: ProviderId) -> Aad {
    Aad::new("sf.upstream.client_secret.v1")
        .field(workspace.as_uuid().as_bytes())
        .field(provider.as_uuid().as_bytes())
}

/// A link that met another link of the same identity (two first sign-ins at once): no link.
fn link_conflict(e: Error) -> UpstreamFailure {
    match e {
        Error::Conflict(_) => UpstreamFailure::ExistingAccount,
        e => UpstreamFailure::Other(e),
    }
}

/// An issuer URL as OpenID Connect Discovery needs it: http(s), a host, no query or fragment. It is
/// kept exactly as given (a trailing slash included): ID tokens must name it exactly.
fn parse_issuer(issuer: &str) -> Option<String> {
    let issuer = issuer.trim();
    (validate_issuer(issuer) && issuer.len() <= 512).then(|| issuer.to_owned())
}

fn printable(text: &str, max: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
}

impl Services {
    /// The redirect URI to register at upstream providers for a workspace.
    pub fn upstream_redirect_uri(&self, workspace: WorkspaceId) -> String {
        format!(
            "{}/upstream/callback",
            workspace_issuer(self.tokens.issuer(), workspace)
        )
    }

    /// The workspace's providers (for the sign-in page).
    pub async fn sign_in_providers(&self, workspace: WorkspaceId) -> Result<Vec<IdentityProvider>> {
        self.stores.providers.identity_providers(workspace).await
    }

    /// The workspace's providers (OWNER, ADMIN).
    pub async fn list_identity_providers(&self, caller: &ConsoleCaller) -> Result<Vec<IdentityProvider>> {
        caller.require_admin()?;
        self.stores
            .providers
            .identity_providers(caller.workspace_id())
            .await
    }

    /// Adds a provider (OWNER, ADMIN); audited without its secret.
    pub async fn add_identity_provider(
        &self,
        caller: &ConsoleCaller,
        new: NewProvider,
    ) -> Result<IdentityProvider> {
        caller.require_admin()?;
        let mut errors = Vec::new();
        let issuer = match (new.kind, new.issuer.as_deref()) {
            (ProviderKind::Google, None) => Some(GOOGLE_ISSUER.to_owned()),
            (ProviderKind::Google, Some(i)) if parse_issuer(i).as_deref() == Some(GOOGLE_ISSUER) => {
                Some(GOOGLE_ISSUER.to_owned())
            }
            (ProviderKind::Google, Some(_)) => {
                errors.push(FieldError::new(
                    "issuer",
                    "Google's issuer is https://accounts.google.com",
                ));
                None
            }
            (ProviderKind::Oidc, Some(i)) => parse_issuer(i).or_else(|| {
                errors.push(FieldError::new(
                    "issuer",
                    "must be the provider's issuer URL (http or https, without query or fragment)",
                ));
                None
            }),
            (ProviderKind::Oidc, None) => {
                errors.push(FieldError::new("issuer", "is required"));
                None
            }
        };
        let client_id = new.client_id.trim().to_owned();
        if !printable(&client_id, 255) {
            errors.push(FieldError::new(
                "client_id",
                "must be 1 to 255 printable characters",
            ));
        }
        if let Some(secret) = &new.client_secret
            && !printable(secret.expose(), 1024)
        {
            errors.push(FieldError::new(
                "client_secret",
                "must be 1 to 1024 printable characters",
            ));
        }
        let name = match new.name.as_deref().map(str::trim) {
            Some(n) if printable(n, 64) => Some(n.to_owned()),
            Some(_) => {
                errors.push(FieldError::new("name", "must be 1 to 64 printable characters"));
                None
            }
            None => match new.kind {
                ProviderKind::Google => Some("Google".to_owned()),
                ProviderKind::Oidc => issuer
                    .as_deref()
                    .and_then(|i| url::Url::parse(i).ok())
                    .and_then(|u| u.host_str().map(str::to_owned)),
            },
        };
        let (Some(issuer), Some(name), true) = (issuer, name, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        let workspace = caller.workspace_id();
        if self.stores.providers.identity_providers(workspace).await?.len() >= MAX_PROVIDERS {
            return Err(Error::invalid(
                "kind",
                "a workspace has at most 10 identity providers",
            ));
        }
        let id = ProviderId::new();
        let client_secret_sealed = new
            .client_secret
            .as_ref()
            .map(|s| {
                caller
                    .keys
                    .seal(&secret_aad(workspace, id), s.expose().as_bytes())
            })
            .transpose()?;
        let provider = IdentityProvider {
            id,
            workspace_id: workspace,
            kind: new.kind,
            name,
            issuer,
            client_id,
            client_secret_sealed,
            created_at: self.clock.now(),
        };
        self.commit(
            workspace,
            &caller.keys,
            &caller.actor,
            vec![Change::InsertIdentityProvider(provider.clone())],
            vec![
                NewEvent::new("identity_provider.create", "identity_provider", id).values(
                    None,
                    Some(serde_json::json!({
                        "kind": provider.kind.as_str(),
                        "name": provider.name,
                        "issuer": provider.issuer,
                        "client_id": provider.client_id,
                        "confidential": provider.client_secret_sealed.is_some(),
                    })),
                ),
            ],
        )
        .await?;
        Ok(provider)
    }

    /// Removes a provider (OWNER, ADMIN). Users who signed in with it keep their accounts.
    pub async fn remove_identity_provider(&self, caller: &ConsoleCaller, id: ProviderId) -> Result<()> {
        caller.require_admin()?;
        let workspace = caller.workspace_id();
        let old = self
            .stores
            .providers
            .identity_providers(workspace)
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or(Error::NotFound("identity provider"))?;
        self.commit(
            workspace,
            &caller.keys,
            &caller.actor,
            vec![Change::DeleteIdentityProvider(id)],
            vec![
                NewEvent::new("identity_provider.delete", "identity_provider", id).values(
                    Some(serde_json::json!({
                        "kind": old.kind.as_str(),
                        "name": old.name,
                        "issuer": old.issuer,
                        "client_id": old.client_id,
                    })),
                    None,
                ),
            ],
        )
        .await
    }

    /// Starts a sign-in with a provider: where to send the browser, and the sealed cookie that the
    /// callback needs. `NotFound` if the workspace has no such provider; `Unavailable` if the provider's
    /// discovery document cannot be read.
    pub async fn start_upstream_login(
        &self,
        workspace: WorkspaceId,
        provider: ProviderId,
        flow: Option<FlowId>,
    ) -> Result<UpstreamStart> {
        self.start_upstream(workspace, provider, flow, None).await
    }

    /// Starts linking a provider identity to a signed-in user (the account page; the caller checked
    /// that the sign-in is recent). The callback must come back to the same browser, still signed in
    /// as this user.
    pub async fn start_upstream_link(&self, user: &User, provider: ProviderId) -> Result<UpstreamStart> {
        self.start_upstream(user.workspace_id, provider, None, Some(user.id))
            .await
    }

    async fn start_upstream(
        &self,
        workspace: WorkspaceId,
        provider: ProviderId,
        flow: Option<FlowId>,
        link: Option<UserId>,
    ) -> Result<UpstreamStart> {
        let (_, keys) = self.login_workspace(workspace).await?;
        let provider = self
            .stores
            .providers
            .identity_providers(workspace)
            .await?
            .into_iter()
            .find(|p| p.id == provider)
            .ok_or(Error::NotFound("identity provider"))?;
        let endpoints = self.upstream.endpoints(&provider.issuer).await?;
        let pending = Pending {
            provider: provider.id,
            state: secureflows_crypto::random_token("")?,
            nonce: secureflows_crypto::random_token("")?,
            verifier: secureflows_crypto::random_token("")?,
            flow,
            expires: self.clock.now().plus(PENDING_TTL).secs(),
            link,
        };
        let mut url = url::Url::parse(&endpoints.authorization_endpoint)
            .map_err(|_| Error::Unavailable("the provider's authorization endpoint"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &self.upstream_redirect_uri(workspace))
            .append_pair("scope", "openid email profile")
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &pkce_s256(&pending.verifier))
            .append_pair("code_challenge_method", "S256");
        let json = serde_json::to_vec(&pending).map_err(|_| Error::internal("encoding a pending sign-in"))?;
        let sealed = keys.seal(&pending_aad(workspace), &json)?;
        Ok(UpstreamStart {
            authorization_url: url.to_string(),
            cookie: SecretString::new(URL_SAFE_NO_PAD.encode(sealed)),
        })
    }

    /// Finishes a sign-in with a provider from its callback (`state` and `code`, or `error`): the user
    /// (found, linked by a verified address, or created), the next step (a second factor if the user
    /// has one), the authorization request it continues, and whether the user is new.
    pub async fn finish_upstream_login(
        &self,
        workspace: WorkspaceId,
        callback: UpstreamCallback<'_>,
        signed_in: Option<&User>,
        client: &Actor,
    ) -> std::result::Result<UpstreamOutcome, UpstreamFailure> {
        let (_, keys) = self.login_workspace(workspace).await?;
        let now = self.clock.now();
        let pending: Pending = URL_SAFE_NO_PAD
            .decode(callback.cookie)
            .ok()
            .and_then(|sealed| keys.open(&pending_aad(workspace), &sealed).ok())
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(UpstreamFailure::Expired)?;
        if pending.expires <= now.secs()
            || !secureflows_crypto::constant_time_eq(pending.state.as_bytes(), callback.state.as_bytes())
        {
            return Err(UpstreamFailure::Expired);
        }
        if let Some(link) = pending.link
            && signed_in.map(|u| u.id) != Some(link)
        {
            return Err(UpstreamFailure::Expired);
        }
        let code = callback.code.ok_or(UpstreamFailure::Provider)?;
        let provider = self
            .stores
            .providers
            .identity_providers(workspace)
            .await?
            .into_iter()
            .find(|p| p.id == pending.provider)
            .ok_or(UpstreamFailure::Expired)?;
        // RFC 9207: a provider that names itself must be the one this sign-in went to (mix-up defence).
        if callback.iss.is_some_and(|i| i != provider.issuer) {
            return Err(UpstreamFailure::Provider);
        }
        let secret = provider
            .client_secret_sealed
            .as_ref()
            .map(|s| keys.open(&secret_aad(workspace, provider.id), s))
            .transpose()?
            .map(|s| String::from_utf8(s).map_err(|_| Error::Integrity("client secret")))
            .transpose()?;
        let endpoints = self.upstream.endpoints(&provider.issuer).await?;
        let redirect_uri = self.upstream_redirect_uri(workspace);
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
            ("client_id", provider.client_id.as_str()),
        ];
        if let Some(secret) = &secret {
            form.push(("client_secret", secret.as_str()));
        }
        let answer = self
            .upstream
            .token_request(&endpoints.token_endpoint, &form)
            .await?;
        let id_token = answer
            .get("id_token")
            .and_then(|t| t.as_str())
            .ok_or(UpstreamFailure::Provider)?;
        let trust = UpstreamTrust {
            issuer: provider.issuer.clone(),
            audience: provider.client_id.clone(),
            ..UpstreamTrust::default()
        };
        let identity = verify_id_token(
            self.upstream.as_ref(),
            id_token,
            &trust,
            self.settings.leeway,
            now,
        )
        .await
        .map_err(|_| UpstreamFailure::Provider)?;
        let nonce_ok = identity
            .nonce
            .as_deref()
            .is_some_and(|n| secureflows_crypto::constant_time_eq(n.as_bytes(), pending.nonce.as_bytes()));
        if !nonce_ok {
            return Err(UpstreamFailure::Provider);
        }
        let mut actor = client.clone();
        actor.kind = ActorKind::EndUser;
        if let (Some(_), Some(user)) = (pending.link, signed_in) {
            self.link_upstream(&keys, user, &provider, &identity, actor)
                .await?;
            return Ok(UpstreamOutcome::Linked {
                provider: provider.name,
            });
        }
        let (user, event) = self.upstream_user(workspace, &keys, &identity).await?;
        if user.status != UserStatus::Active {
            return Err(UpstreamFailure::Locked);
        }
        actor.id = Some(user.id);
        let details =
            serde_json::json!({"method": "upstream", "provider": provider.id, "issuer": provider.issuer});
        let mut events = vec![NewEvent::new(event, "user", user.id).values(None, Some(details.clone()))];
        let mut changes = Vec::new();
        if event == "user.identity_link" {
            changes.push(Change::LinkIdentity(
                user.id,
                new_identity(&keys, workspace, user.id, &identity)?,
            ));
            events.push(NewEvent::new("user.sign_in", "user", user.id).values(None, Some(details)));
        }
        // Two first sign-ins of the same identity at once: one links, the other meets the link.
        self.commit(workspace, &keys, &actor, changes, events)
            .await
            .map_err(link_conflict)?;
        if event == "user.identity_link" {
            self.alert_linked(&keys, &user, &provider).await;
        }
        let step = self
            .after_first_factor(&keys, &user, vec!["fed".to_owned()], pending.flow, &actor)
            .await?;
        Ok(UpstreamOutcome::SignedIn(Box::new(UpstreamSignIn {
            user,
            step,
            flow: pending.flow,
            new_account: event == "user.sign_up",
        })))
    }

    /// Links a provider identity to a signed-in user. `ExistingAccount` if it belongs to another user.
    async fn link_upstream(
        &self,
        keys: &Arc<WorkspaceKeys>,
        user: &User,
        provider: &IdentityProvider,
        identity: &UpstreamIdentity,
        mut actor: Actor,
    ) -> std::result::Result<(), UpstreamFailure> {
        let workspace = user.workspace_id;
        let index = identity_index(keys, identity);
        match self.stores.users.find_user_by_identity(workspace, &index).await? {
            Some(owner) if owner.id == user.id => return Ok(()),
            Some(_) => return Err(UpstreamFailure::IdentityTaken),
            None => {}
        }
        actor.id = Some(user.id);
        self.commit(
            workspace,
            keys,
            &actor,
            vec![Change::LinkIdentity(user.id, new_identity(keys, workspace, user.id, identity)?)],
            vec![NewEvent::new("user.identity_link", "user", user.id).values(
                None,
                Some(serde_json::json!({"method": "account", "provider": provider.id, "issuer": provider.issuer})),
            )],
        )
        .await
        .map_err(link_conflict)?;
        self.alert_linked(keys, user, provider).await;
        Ok(())
    }

    /// Tells the user that a provider identity was linked to their account.
    async fn alert_linked(&self, keys: &WorkspaceKeys, user: &User, provider: &IdentityProvider) {
        let text = format!(
            "You can now also sign in with {}. If this was not you, sign in, change your password and contact \
             the administrators.",
            provider.name
        );
        self.alert(keys, user, "A sign-in method was linked to your account", &text)
            .await;
    }

    /// The user of an upstream identity and the event that records how: a known identity
    /// (`user.sign_in`), a verified address of an existing user (`user.identity_link`, not yet stored),
    /// or a new user (`user.sign_up`).
    async fn upstream_user(
        &self,
        workspace: WorkspaceId,
        keys: &crate::keyring::WorkspaceKeys,
        identity: &UpstreamIdentity,
    ) -> std::result::Result<(User, &'static str), UpstreamFailure> {
        let index = identity_index(keys, identity);
        if let Some(user) = self.stores.users.find_user_by_identity(workspace, &index).await? {
            return Ok((user, "user.sign_in"));
        }
        // SECURITY: an address the provider did not verify never finds an account (it would hand the
        // account to whoever wrote the claim).
        let verified = identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
            .and_then(|e| EmailAddress::parse(e).ok());
        if let Some(email) = verified {
            let by_email = self
                .stores
                .users
                .find_user_by_email(workspace, &email_index(keys, &email))
                .await?;
            if let Some(existing) = by_email {
                // SECURITY: see the module documentation.
                let verified_here = self
                    .stores
                    .passwords
                    .email_verified(workspace, existing.id)
                    .await?;
                let factors = self.mfa_status(&existing).await?;
                let linkable =
                    verified_here && existing.role == Role::User && !factors.totp && factors.passkeys == 0;
                if linkable {
                    return Ok((existing, "user.identity_link"));
                }
                let policy = self.get_workspace(workspace).await?.login_policy;
                if policy.signup != SignupMode::VerifyFirst {
                    return Err(UpstreamFailure::ExistingAccount);
                }
                // A workspace whose sign-up never tells whether an address has an account: this
                // identity becomes a member of its own, without the address, and the address's owner
                // is told how to join the two.
                let mut without_address = identity.clone();
                without_address.email = None;
                without_address.email_verified = false;
                let user = self
                    .find_or_create_user(workspace, keys, &without_address, self.clock.now())
                    .await?;
                self.alert(
                    keys,
                    &existing,
                    "A sign-in with your e-mail address",
                    "Someone signed in with another provider that gave your e-mail address. Your account was \
                     not joined to it: a separate account was made for that sign-in. If it was you, sign in \
                     to your account as usual and link the provider on your account page.",
                )
                .await;
                return Ok((user, "user.sign_up"));
            }
        }
        // An address the provider did not verify is not kept (see `find_or_create_user`).
        let user = self
            .find_or_create_user(workspace, keys, identity, self.clock.now())
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => UpstreamFailure::ExistingAccount,
                e => UpstreamFailure::Other(e),
            })?;
        Ok((user, "user.sign_up"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_plain_http_urls() {
        assert_eq!(
            parse_issuer(" https://login.example.com/tenant/ ").as_deref(),
            Some("https://login.example.com/tenant/")
        );
        for bad in [
            "",
            "login.example.com",
            "ftp://x.example",
            "https://x.example/?a=1",
            "https://x.example/#f",
            "https://user:pw@x.example",
            "javascript:alert(1)",
        ] {
            assert!(parse_issuer(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
