//! The OpenID Connect provider: authorization requests, codes, the token endpoint (code exchange with
//! PKCE, refresh with rotation and reuse detection), revocation (RFC 7009), introspection (RFC 7662),
//! user info and ID tokens.

use secureflows_crypto::{SecretString, constant_time_eq};

use crate::audit::{Actor, ActorKind, NewEvent};
use crate::auth::token::{IssuedToken, TokenKind};
use crate::keyring::WorkspaceKeys;
use crate::login::oauth::OAuthError;
use crate::login::{credential_workspace, new_credential, workspace_issuer};
use crate::store::{CodeRedemption, RefreshRotation};
use crate::{
    Application, ApplicationId, AuthorizationCode, AuthorizationRequest, BrowserSession, Error, FamilyId,
    FlowId, LoginFlow, LoginSession, RefreshToken, Result, Services, SessionId, Timestamp, User, UserStatus,
    WorkspaceId,
};

const CODE_PREFIX: &str = "sfc_";
const REFRESH_PREFIX: &str = "sfr_";
/// Scopes we grant; others are ignored (OpenID Connect Core §3.1.2.1).
const SCOPES: [&str; 4] = ["openid", "email", "profile", "offline_access"];

/// The query of an authorization request, as received.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeParams {
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `response_type`.
    pub response_type: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `code_challenge`.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`.
    pub code_challenge_method: Option<String>,
    /// `prompt`.
    pub prompt: Option<String>,
    /// `max_age`.
    pub max_age: Option<String>,
    /// `response_mode`.
    pub response_mode: Option<String>,
    /// `request` / `request_uri` (not supported).
    pub request_object: bool,
    /// `upgrade`: an anonymous visitor's upgrade ticket (a sign-up in this flow becomes their account).
    pub upgrade: Option<String>,
}

impl AuthorizeParams {
    /// The parameters of an authorization request's query string. A repeated parameter makes the
    /// request unusable (RFC 6749 §3.1): `Err` with the reason, for the log.
    pub fn from_query(raw: Option<&str>) -> std::result::Result<AuthorizeParams, &'static str> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        if pairs.iter().any(|(k, _)| !seen.insert(k.as_str())) {
            return Err("a parameter is repeated");
        }
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Ok(AuthorizeParams {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            response_type: get("response_type"),
            scope: get("scope"),
            state: get("state"),
            nonce: get("nonce"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            prompt: get("prompt"),
            max_age: get("max_age"),
            response_mode: get("response_mode"),
            request_object: get("request").is_some() || get("request_uri").is_some(),
            upgrade: get("upgrade"),
        })
    }
}

/// What the authorization endpoint does with a request: decided here, carried out by the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    /// Back to the client: a code, or an error through its verified redirect URI.
    Redirect(String),
    /// The request cannot be answered with a redirect (unknown client or redirect URI, malformed):
    /// the person gets a page; the reason is for the log.
    Unusable(&'static str),
    /// The browser signs in for this flow.
    SignIn(FlowId),
    /// The browser signs up for this flow (`prompt=create`, an anonymous visitor's upgrade).
    SignUp(FlowId),
    /// The browser is signed in, but must give the second factor its user has (or must have) now.
    StepUp(FlowId),
}

/// The browser an authorization request arrives in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Browser<'a> {
    /// Its single sign-on session, if its sign-in meets the user's factors and the workspace's policy.
    pub signed_in: Option<&'a BrowserSession>,
    /// Its session, if its sign-in no longer does (it steps up before it is used).
    pub needs_step_up: Option<&'a BrowserSession>,
}

/// Why an authorization request was refused.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show an error page, never redirect.
    NoRedirect(&'static str),
    /// Tell the client through its (verified) redirect URI.
    Redirect {
        /// The registered redirect URI.
        redirect_uri: String,
        /// The client's state.
        state: Option<String>,
        /// The error.
        error: OAuthError,
    },
}

/// A validated authorization request and its client.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// The client.
    pub application: Application,
    /// The request.
    pub request: AuthorizationRequest,
    /// `prompt=none`.
    pub no_prompt: bool,
}

/// A token request's parameters (RFC 6749 §4.1.3, §6), as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenRequest<'a> {
    /// `grant_type`.
    pub grant_type: Option<&'a str>,
    /// `code`.
    pub code: Option<&'a str>,
    /// `redirect_uri`.
    pub redirect_uri: Option<&'a str>,
    /// `code_verifier`.
    pub code_verifier: Option<&'a str>,
    /// `refresh_token`.
    pub refresh_token: Option<&'a str>,
}

/// How a client authenticated at the token, revocation or introspection endpoint.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    /// `client_id` (from HTTP Basic or the form).
    pub client_id: Option<String>,
    /// `client_secret` (confidential clients).
    pub client_secret: Option<SecretString>,
}

/// Who exchanges a code.
#[derive(Debug, Clone, Copy)]
pub enum CodeClient<'a> {
    /// A client authenticated at the token endpoint.
    Authenticated(&'a Application),
    /// `POST /api/v1/auth/callback`: the client the code was issued to, authenticated with its secret if
    /// it is confidential; `client_id`, when sent, must name it.
    FromCode {
        /// `client_id`, if sent.
        client_id: Option<ApplicationId>,
        /// The client secret (confidential clients).
        secret: Option<&'a SecretString>,
    },
}

/// What the token endpoint returns. `Debug` hides the tokens.
#[derive(Clone)]
pub struct TokenGrant {
    /// The SESSION JWT (the OAuth access token).
    pub access_token: IssuedToken,
    /// ID token, when `openid` was granted.
    pub id_token: Option<String>,
    /// Refresh token, for confidential and native clients.
    pub refresh_token: Option<String>,
    /// Granted scopes.
    pub scope: String,
    /// The login session.
    pub session: SessionId,
    /// The user.
    pub user: crate::UserId,
    /// The client.
    pub application: ApplicationId,
    /// The workspace.
    pub workspace: WorkspaceId,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("session", &self.session)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The answer of introspection (RFC 7662).
pub type Introspection = serde_json::Value;

fn bounded(value: Option<String>, max: usize) -> std::result::Result<Option<String>, ()> {
    match value {
        Some(v) if v.len() > max || v.chars().any(char::is_control) => Err(()),
        other => Ok(other),
    }
}

/// `BASE64URL(SHA-256(verifier))` (RFC 7636 §4.6).
pub(crate) fn pkce_s256(verifier: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secureflows_crypto::sha256(verifier.as_bytes()))
}

fn valid_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Appends query parameters to a registered redirect URI (keeping its own query).
pub fn redirect_to(base: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return base.to_owned();
    }
    match url::Url::parse(base) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => base.to_owned(),
    }
}

impl Services {
    /// The workspace's issuer URL.
    pub fn issuer_of(&self, workspace: WorkspaceId) -> String {
        workspace_issuer(self.tokens.issuer(), workspace)
    }

    /// Validates an authorization request (OpenID Connect Core §3.1.2.2). The client and the exact
    /// redirect URI are checked first; until both are, errors never redirect.
    pub async fn validate_authorize(
        &self,
        workspace: WorkspaceId,
        p: AuthorizeParams,
    ) -> std::result::Result<ValidRequest, AuthorizeError> {
        let client_id = p
            .client_id
            .as_deref()
            .and_then(|c| c.parse::<ApplicationId>().ok())
            .ok_or(AuthorizeError::NoRedirect("unknown client_id"))?;
        let application = self
            .stores
            .applications
            .find_application(client_id)
            .await
            .map_err(|_| AuthorizeError::NoRedirect("the server could not look up the client"))?
            .filter(|a| a.workspace_id == workspace)
            .ok_or(AuthorizeError::NoRedirect("unknown client_id"))?;
        let redirect_uri = p
            .redirect_uri
            .filter(|r| application.redirect_uris.iter().any(|u| u == r))
            .ok_or(AuthorizeError::NoRedirect(
                "redirect_uri is missing or not registered for this client",
            ))?;
        let fail = |state: Option<String>, error: OAuthError| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state,
            error,
        };
        let state = bounded(p.state, 2048).map_err(|()| {
            fail(
                None,
                OAuthError::invalid_request("state is too long or has control characters"),
            )
        })?;
        if p.request_object {
            return Err(fail(
                state,
                OAuthError::invalid_request("request objects are not supported"),
            ));
        }
        if p.response_mode.as_deref().is_some_and(|m| m != "query") {
            return Err(fail(
                state,
                OAuthError::invalid_request("response_mode must be query"),
            ));
        }
        if p.response_type.as_deref() != Some("code") {
            return Err(fail(state, OAuthError::unsupported_response_type()));
        }
        let nonce = bounded(p.nonce, 512)
            .map_err(|()| fail(state.clone(), OAuthError::invalid_request("nonce is too long")))?;
        let requested = p.scope.unwrap_or_else(|| "openid".to_owned());
        let mut scope: Vec<&str> = SCOPES
            .iter()
            .copied()
            .filter(|s| requested.split(' ').any(|r| r == *s))
            .collect();
        if scope.is_empty() {
            scope.push("openid");
        }
        let code_challenge = match (p.code_challenge, p.code_challenge_method.as_deref()) {
            (None, None) => None,
            (Some(c), Some("S256")) if valid_pkce_value(&c) => Some(c),
            (Some(_), None | Some("plain")) | (None, Some(_)) => {
                return Err(fail(
                    state,
                    OAuthError::invalid_request("PKCE must use code_challenge_method=S256"),
                ));
            }
            _ => return Err(fail(state, OAuthError::invalid_request("invalid code_challenge"))),
        };
        if application.is_public() && code_challenge.is_none() {
            return Err(fail(
                state,
                OAuthError::invalid_request("public clients must use PKCE (code_challenge with S256)"),
            ));
        }
        let upgrade_user = match p.upgrade.as_deref() {
            None => None,
            Some(ticket) => match self.upgrade_target(workspace, ticket).await {
                Ok(Some(user)) => Some(user),
                Ok(None) => {
                    return Err(fail(
                        state,
                        OAuthError::invalid_request("the upgrade ticket is invalid or expired"),
                    ));
                }
                Err(_) => return Err(fail(state, OAuthError::server_error())),
            },
        };
        let prompts: Vec<&str> = p
            .prompt
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        let no_prompt = prompts.contains(&"none");
        if no_prompt && prompts.len() > 1 {
            return Err(fail(
                state,
                OAuthError::invalid_request("prompt=none cannot be combined"),
            ));
        }
        // OpenID Connect Core §3.1.2.1 and OpenID Connect Prompt Create 1.0. `consent` needs no page:
        // applications are registered by the workspace itself, so there is no third party to consent
        // to.
        if prompts
            .iter()
            .any(|p| !matches!(*p, "none" | "login" | "consent" | "select_account" | "create"))
        {
            return Err(fail(
                state,
                OAuthError::invalid_request(
                    "unsupported prompt value (none, login, consent, select_account or create)",
                ),
            ));
        }
        let max_age = match p.max_age.as_deref() {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(secs) if secs <= 10 * 365 * 24 * 3600 => Some(secs),
                _ => {
                    return Err(fail(
                        state,
                        OAuthError::invalid_request("max_age must be a number of seconds"),
                    ));
                }
            },
        };
        Ok(ValidRequest {
            application,
            request: AuthorizationRequest {
                redirect_uri,
                state,
                nonce,
                code_challenge,
                scope: scope.join(" "),
                force_login: prompts.contains(&"login") || upgrade_user.is_some(),
                max_age,
                select_account: prompts.contains(&"select_account"),
                create_account: prompts.contains(&"create"),
                upgrade_user,
            },
            no_prompt,
        })
    }

    /// Decides what becomes of an authorization request (OpenID Connect Core §3.1.2) arriving in
    /// `browser`: a signed-in browser goes straight back with a code unless the request asks for a
    /// fresh sign-in (`prompt=login`, a `max_age` its sign-in is older than) or for the account to be
    /// chosen or created; `prompt=none` never shows a page.
    pub async fn authorize(
        &self,
        workspace: WorkspaceId,
        query: Option<&str>,
        browser: Browser<'_>,
    ) -> Result<AuthorizeOutcome> {
        let params = match AuthorizeParams::from_query(query) {
            Ok(p) => p,
            Err(reason) => return Ok(AuthorizeOutcome::Unusable(reason)),
        };
        let valid = match self.validate_authorize(workspace, params).await {
            Ok(v) => v,
            Err(AuthorizeError::NoRedirect(reason)) => return Ok(AuthorizeOutcome::Unusable(reason)),
            Err(AuthorizeError::Redirect {
                redirect_uri,
                state,
                error,
            }) => {
                let url = self.error_redirect(workspace, &redirect_uri, state.as_deref(), &error);
                return Ok(AuthorizeOutcome::Redirect(url));
            }
        };
        let request = &valid.request;
        let asks_the_user = request.select_account || request.create_account;
        let usable = |s: &BrowserSession| !asks_the_user && self.session_satisfies(request, s);
        let refuse = |error: OAuthError| {
            let url = self.error_redirect(workspace, &request.redirect_uri, request.state.as_deref(), &error);
            Ok(AuthorizeOutcome::Redirect(url))
        };
        if let Some(browser) = browser.signed_in.filter(|s| usable(s)) {
            let url = self
                .complete_authorization(&valid.application, request, browser)
                .await?;
            return Ok(AuthorizeOutcome::Redirect(url));
        }
        let step_up = browser.needs_step_up.is_some_and(usable);
        match (step_up, valid.no_prompt) {
            (true, true) => return refuse(OAuthError::interaction_required()),
            (false, true) => return refuse(OAuthError::login_required()),
            _ => {}
        }
        let flow = self.start_flow(&valid).await?.id;
        Ok(if step_up {
            AuthorizeOutcome::StepUp(flow)
        } else if request.upgrade_user.is_some() || request.create_account {
            AuthorizeOutcome::SignUp(flow)
        } else {
            AuthorizeOutcome::SignIn(flow)
        })
    }

    /// The URL that tells a client of an error through its (verified) redirect URI, with `state` and
    /// `iss` (RFC 9207).
    pub fn error_redirect(
        &self,
        workspace: WorkspaceId,
        redirect_uri: &str,
        state: Option<&str>,
        error: &OAuthError,
    ) -> String {
        let issuer = self.issuer_of(workspace);
        let mut params = vec![("error", error.code()), ("error_description", error.description)];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", &issuer));
        redirect_to(redirect_uri, &params)
    }

    /// Whether a single sign-on session may complete `request` without the user signing in again:
    /// neither `prompt=login` nor a `max_age` the session's sign-in is older than (OpenID Connect Core
    /// §3.1.2.1).
    pub fn session_satisfies(&self, request: &AuthorizationRequest, session: &BrowserSession) -> bool {
        if request.force_login {
            return false;
        }
        request.max_age.is_none_or(|max| {
            max > 0 && self.clock.now().since(session.auth_time) <= std::time::Duration::from_secs(max)
        })
    }

    /// Keeps a validated request while the user signs in.
    pub async fn start_flow(&self, valid: &ValidRequest) -> Result<LoginFlow> {
        let now = self.clock.now();
        let flow = LoginFlow {
            id: FlowId::new(),
            workspace_id: valid.application.workspace_id,
            application_id: valid.application.id,
            request: valid.request.clone(),
            created_at: now,
            expires_at: now.plus(self.settings.login.flow_ttl),
        };
        self.stores.browsers.insert_flow(&flow).await?;
        Ok(flow)
    }

    /// A pending request and its client.
    pub async fn find_flow(
        &self,
        workspace: WorkspaceId,
        id: FlowId,
    ) -> Result<Option<(LoginFlow, Application)>> {
        let Some(flow) = self
            .stores
            .browsers
            .find_flow(workspace, id, self.clock.now())
            .await?
        else {
            return Ok(None);
        };
        let app = self
            .stores
            .applications
            .find_application(flow.application_id)
            .await?
            .filter(|a| a.workspace_id == workspace);
        Ok(app.map(|a| (flow, a)))
    }

    /// Removes a completed flow. A failure is logged and otherwise harmless: the flow expires.
    pub async fn forget_flow(&self, workspace: WorkspaceId, id: FlowId) {
        if let Err(e) = self.stores.browsers.delete_flow(workspace, id).await {
            tracing::warn!(error = %e, "removing a completed flow failed");
        }
    }

    /// Issues a code for a signed-in browser and returns the URL to send it to (with `code`, `state`
    /// and `iss`, RFC 9207).
    pub async fn complete_authorization(
        &self,
        application: &Application,
        request: &AuthorizationRequest,
        browser: &BrowserSession,
    ) -> Result<String> {
        let now = self.clock.now();
        let code = new_credential(CODE_PREFIX, browser.workspace_id)?;
        self.stores
            .grants
            .insert_code(&AuthorizationCode {
                code_hash: secureflows_crypto::sha256(code.as_bytes()).to_vec(),
                workspace_id: browser.workspace_id,
                application_id: application.id,
                user_id: browser.user_id,
                browser_session_id: browser.id,
                request: request.clone(),
                auth_time: browser.auth_time,
                amr: browser.amr.clone(),
                created_at: now,
                expires_at: now.plus(self.settings.login.code_ttl),
            })
            .await?;
        let issuer = self.issuer_of(browser.workspace_id);
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        params.push(("iss", &issuer));
        Ok(redirect_to(&request.redirect_uri, &params))
    }

    /// Answers a token request of an authenticated client: a code exchange or a refresh.
    pub async fn token(
        &self,
        app: &Application,
        request: TokenRequest<'_>,
        actor: &Actor,
    ) -> std::result::Result<TokenGrant, OAuthError> {
        match request.grant_type {
            Some("authorization_code") => {
                let code = request
                    .code
                    .ok_or(OAuthError::invalid_request("code is required"))?;
                // RFC 6749 §4.1.3: the redirect URI of the authorization request must be repeated.
                if request.redirect_uri.is_none() {
                    return Err(OAuthError::invalid_request("redirect_uri is required"));
                }
                let client = CodeClient::Authenticated(app);
                self.exchange_code(client, code, request.code_verifier, request.redirect_uri, actor)
                    .await
            }
            Some("refresh_token") => {
                let token = request
                    .refresh_token
                    .ok_or(OAuthError::invalid_request("refresh_token is required"))?;
                self.refresh(app, token, actor).await
            }
            _ => Err(OAuthError::unsupported_grant_type()),
        }
    }

    /// Authenticates the client at the token endpoint. Confidential clients must present their secret;
    /// public clients must not.
    pub async fn authenticate_client(
        &self,
        workspace: Option<WorkspaceId>,
        credentials: &ClientCredentials,
    ) -> std::result::Result<Application, OAuthError> {
        let id = credentials
            .client_id
            .as_deref()
            .and_then(|c| c.parse::<ApplicationId>().ok())
            .ok_or_else(OAuthError::invalid_client)?;
        let app = self
            .stores
            .applications
            .find_application(id)
            .await?
            .filter(|a| workspace.is_none_or(|w| a.workspace_id == w))
            .ok_or_else(OAuthError::invalid_client)?;
        match (&app.secret_hash, &credentials.client_secret) {
            (None, None) if app.is_public() => Ok(app),
            (Some(hash), Some(secret)) if !app.is_public() => {
                let presented = secureflows_crypto::sha256(secret.expose().as_bytes());
                if constant_time_eq(&presented, hash) {
                    Ok(app)
                } else {
                    Err(OAuthError::invalid_client())
                }
            }
            _ => Err(OAuthError::invalid_client()),
        }
    }

    /// The authorization-code grant (RFC 6749 §4.1.3, RFC 7636). A replayed code ends the session it
    /// was exchanged for (RFC 6749 §4.1.2).
    pub async fn exchange_code(
        &self,
        client: CodeClient<'_>,
        code: &str,
        verifier: Option<&str>,
        redirect_uri: Option<&str>,
        actor: &Actor,
    ) -> std::result::Result<TokenGrant, OAuthError> {
        let invalid = || OAuthError::invalid_grant("the code is invalid, expired or already used");
        let workspace = credential_workspace(CODE_PREFIX, code).ok_or_else(invalid)?;
        if let CodeClient::Authenticated(app) = client
            && workspace != app.workspace_id
        {
            return Err(invalid());
        }
        let hash = secureflows_crypto::sha256(code.as_bytes());
        let now = self.clock.now();
        let code_row = match self.stores.grants.redeem_code(workspace, &hash, now).await? {
            CodeRedemption::Fresh(c) => c,
            CodeRedemption::Replayed(session) => {
                if let Some(session) = session {
                    self.end_app_session(workspace, session, now).await?;
                }
                return Err(invalid());
            }
            CodeRedemption::Invalid => return Err(invalid()),
        };
        let at_token_endpoint = matches!(client, CodeClient::Authenticated(_));
        let client = match client {
            CodeClient::Authenticated(app) => app.clone(),
            CodeClient::FromCode { client_id, secret } => {
                if client_id.is_some_and(|c| c != code_row.application_id) {
                    return Err(invalid());
                }
                let credentials = ClientCredentials {
                    client_id: Some(code_row.application_id.to_string()),
                    client_secret: secret.cloned(),
                };
                self.authenticate_client(Some(workspace), &credentials).await?
            }
        };
        let client = &client;
        if code_row.application_id != client.id {
            return Err(invalid());
        }
        if client.console && !at_token_endpoint {
            // The seed's callback answers a `sessionToken`; a console client's token is a USER JWT.
            return Err(OAuthError::unauthorized_client(
                "a console client exchanges its code at the token endpoint",
            ));
        }
        if redirect_uri.is_some_and(|r| r != code_row.request.redirect_uri) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&code_row.request.code_challenge, verifier) {
            (Some(challenge), Some(v))
                if valid_pkce_value(v) && constant_time_eq(pkce_s256(v).as_bytes(), challenge.as_bytes()) => {
            }
            (None, None) => {}
            _ => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ));
            }
        }
        let user = self.active_user(workspace, code_row.user_id).await?;
        // Browser applications get no refresh token: they renew with a top-level `prompt=none`.
        let refresh = client.kind.gets_refresh_tokens();
        let grant = self
            .grant_tokens(
                client,
                &user,
                GrantBasis {
                    browser: Some(code_row.browser_session_id),
                    scope: code_row.request.scope.clone(),
                    nonce: code_row.request.nonce.clone(),
                    auth_time: code_row.auth_time,
                    amr: code_row.amr.clone(),
                    family: refresh.then(FamilyId::new),
                },
                now,
                actor,
            )
            .await?;
        self.stores
            .grants
            .attach_code_session(workspace, &hash, grant.session)
            .await?;
        Ok(grant)
    }

    /// The refresh-token grant with rotation (RFC 9700 §4.14.2). A current token is rotated: its
    /// successor pair (access, ID and refresh token) is issued and kept sealed with it. Used again
    /// within the grace window (two tabs refreshing at once), it receives that same pair, so every
    /// holder shares one chain; used again later — out of step — it revokes its whole family and ends
    /// the login session.
    pub async fn refresh(
        &self,
        client: &Application,
        token: &str,
        actor: &Actor,
    ) -> std::result::Result<TokenGrant, OAuthError> {
        let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let workspace = credential_workspace(REFRESH_PREFIX, token).ok_or_else(invalid)?;
        if workspace != client.workspace_id {
            return Err(invalid());
        }
        let hash = secureflows_crypto::sha256(token.as_bytes());
        let now = self.clock.now();
        let current = self
            .stores
            .grants
            .find_refresh(workspace, &hash)
            .await?
            .filter(|t| t.revoked_at.is_none() && t.expires_at > now)
            .ok_or_else(invalid)?;
        if current.rotated_at.is_some() {
            return self.refresh_again(client, &current, now, actor).await;
        }
        if current.application_id != client.id {
            return Err(invalid());
        }
        let session = self
            .stores
            .sessions
            .find_session(workspace, current.login_session_id)
            .await?
            .filter(|s| s.ended_at.is_none())
            .ok_or_else(invalid)?;
        let user = self.active_user(workspace, current.user_id).await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let basis = GrantBasis {
            browser: session.browser_session_id,
            scope: current.scope.clone(),
            nonce: None,
            auth_time: current.auth_time,
            amr: current.amr.clone(),
            family: Some(current.family_id),
        };
        let tier = self.tier_of(client, user.id).await?;
        let access_token = self.access_token(client, &user, session.id, now, tier.as_ref())?;
        let refresh_token = new_credential(REFRESH_PREFIX, workspace)?;
        let refresh_expiry = now.plus(self.settings.login.refresh_ttl);
        let successor = RefreshToken {
            token_hash: secureflows_crypto::sha256(refresh_token.as_bytes()).to_vec(),
            workspace_id: workspace,
            family_id: current.family_id,
            application_id: client.id,
            user_id: user.id,
            login_session_id: session.id,
            scope: current.scope.clone(),
            auth_time: current.auth_time,
            amr: current.amr.clone(),
            created_at: now,
            expires_at: refresh_expiry,
            rotated_at: None,
            revoked_at: None,
        };
        let id_token = if current.scope.split(' ').any(|s| s == "openid") {
            Some(
                self.id_token(client, &user, &keys, &basis, session.id, &access_token, now)
                    .await?,
            )
        } else {
            None
        };
        let grant = TokenGrant {
            access_token,
            id_token,
            refresh_token: Some(refresh_token),
            scope: current.scope.clone(),
            session: session.id,
            user: user.id,
            application: client.id,
            workspace,
        };
        let sealed = seal_successor(&keys, &current, &grant)?;
        match self
            .stores
            .grants
            .rotate_refresh(workspace, &hash, &successor, &sealed, now)
            .await?
        {
            RefreshRotation::Rotated => {}
            // Another request rotated it a moment ago: this one is a use within the grace window (or
            // the token was revoked meanwhile).
            RefreshRotation::NotCurrent => {
                let again = self
                    .stores
                    .grants
                    .find_refresh(workspace, &hash)
                    .await?
                    .filter(|t| t.revoked_at.is_none())
                    .ok_or_else(invalid)?;
                return self.refresh_again(client, &again, now, actor).await;
            }
        }
        self.stores
            .grants
            .extend_session(
                workspace,
                session.id,
                refresh_expiry.max(grant.access_token.expires_at),
            )
            .await?;
        self.record_grant(client, &user, &keys, &grant, true, actor)
            .await?;
        Ok(grant)
    }

    /// A rotated refresh token presented again: within the grace window, by its own client, it receives
    /// the successor pair of its rotation; otherwise it is out of step — taken as stolen — and revokes
    /// its family.
    async fn refresh_again(
        &self,
        client: &Application,
        used: &RefreshToken,
        now: Timestamp,
        actor: &Actor,
    ) -> std::result::Result<TokenGrant, OAuthError> {
        let workspace = used.workspace_id;
        let within_grace = used
            .rotated_at
            .is_some_and(|at| now.since(at) <= self.settings.login.refresh_grace);
        if within_grace && used.application_id == client.id {
            let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
            let sealed = self
                .stores
                .grants
                .refresh_successor(workspace, &used.token_hash)
                .await?;
            if let Some(grant) = sealed.and_then(|s| open_successor(&keys, used, &s)) {
                return Ok(grant);
            }
        }
        // SECURITY: RFC 9700 §4.14.2: a refresh token used out of step was stolen, or its owner's copy
        // was: end the whole family and its login session.
        self.stores
            .grants
            .revoke_family(workspace, used.family_id, now)
            .await?;
        self.state
            .apply(crate::Invalidation::Session(workspace, used.login_session_id));
        self.audit_reuse(used, actor).await?;
        Err(OAuthError::invalid_grant(
            "the refresh token is invalid, expired or revoked",
        ))
    }

    async fn audit_reuse(&self, token: &RefreshToken, actor: &Actor) -> Result<()> {
        let keys = self
            .keys
            .workspace_keys(token.workspace_id, self.state.trusted())
            .await?;
        let mut actor = actor.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(token.user_id);
        self.record(
            token.workspace_id,
            &keys,
            &actor,
            vec![
                NewEvent::new("token.refresh_reuse", "user", token.user_id).values(
                    None,
                    Some(serde_json::json!({
                        "application_id": token.application_id,
                        "session": token.login_session_id,
                        "family_revoked": true,
                    })),
                ),
            ],
        )
        .await
    }

    async fn active_user(
        &self,
        workspace: WorkspaceId,
        user: crate::UserId,
    ) -> std::result::Result<User, OAuthError> {
        self.stores
            .users
            .find_user(workspace, user)
            .await?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(|| OAuthError::invalid_grant("the account cannot sign in"))
    }

    async fn end_app_session(
        &self,
        workspace: WorkspaceId,
        session: SessionId,
        now: Timestamp,
    ) -> Result<()> {
        // The store ends the session's refresh tokens with it.
        self.stores.sessions.end_session(workspace, session, now).await?;
        self.state.apply(crate::Invalidation::Session(workspace, session));
        Ok(())
    }

    /// The tokens of a code exchange: a new login session (within the plan's limits), its access
    /// token, a refresh token for clients that get one, and an ID token for `openid`.
    async fn grant_tokens(
        &self,
        app: &Application,
        user: &User,
        basis: GrantBasis,
        now: Timestamp,
        actor: &Actor,
    ) -> std::result::Result<TokenGrant, OAuthError> {
        let workspace = user.workspace_id;
        let ws = self
            .stores
            .workspaces
            .find_workspace(workspace)
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("the workspace no longer exists"))?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let refresh_expiry = basis.family.map(|_| now.plus(self.settings.login.refresh_ttl));
        let expires_at = refresh_expiry
            .unwrap_or(now.plus(app.token_ttl))
            .max(now.plus(app.token_ttl));
        let session = LoginSession {
            id: SessionId::new(),
            workspace_id: workspace,
            application_id: Some(app.id),
            user_id: user.id,
            browser_session_id: basis.browser,
            created_at: now,
            expires_at,
            ended_at: None,
        };
        self.open_app_session(&ws.plan, &session, now).await?;
        let session_id = session.id;
        let tier = self.tier_of(app, user.id).await?;
        let access_token = self.access_token(app, user, session_id, now, tier.as_ref())?;
        let refresh_token = match (basis.family, refresh_expiry) {
            (Some(family), Some(expires_at)) => {
                let token = new_credential(REFRESH_PREFIX, workspace)?;
                self.stores
                    .grants
                    .insert_refresh(&RefreshToken {
                        token_hash: secureflows_crypto::sha256(token.as_bytes()).to_vec(),
                        workspace_id: workspace,
                        family_id: family,
                        application_id: app.id,
                        user_id: user.id,
                        login_session_id: session_id,
                        scope: basis.scope.clone(),
                        auth_time: basis.auth_time,
                        amr: basis.amr.clone(),
                        created_at: now,
                        expires_at,
                        rotated_at: None,
                        revoked_at: None,
                    })
                    .await?;
                Some(token)
            }
            _ => None,
        };
        let id_token = if basis.scope.split(' ').any(|s| s == "openid") {
            Some(
                self.id_token(app, user, &keys, &basis, session_id, &access_token, now)
                    .await?,
            )
        } else {
            None
        };
        let grant = TokenGrant {
            access_token,
            id_token,
            refresh_token,
            scope: basis.scope,
            session: session_id,
            user: user.id,
            application: app.id,
            workspace,
        };
        self.record_grant(app, user, &keys, &grant, false, actor).await?;
        Ok(grant)
    }

    /// The access token of a login session: a SESSION JWT, or for a console client's users a USER JWT
    /// for the management API (with their own role).
    fn access_token(
        &self,
        app: &Application,
        user: &User,
        session: SessionId,
        now: Timestamp,
        tier: Option<&crate::Tier>,
    ) -> Result<IssuedToken> {
        let (kind, audience) = if app.console {
            (
                TokenKind::User,
                crate::auth::token::console_audience(user.workspace_id),
            )
        } else {
            (TokenKind::Session, app.id.to_string())
        };
        self.tokens.issue(
            kind,
            audience,
            user.workspace_id,
            user.id,
            session,
            user.role,
            user.revision,
            app.token_ttl,
            now,
            tier.filter(|_| !app.console).map(|t| t.name.as_str()),
        )
    }

    /// Audits a grant (`token.issue` for a code exchange, `token.refresh` for a rotation).
    async fn record_grant(
        &self,
        app: &Application,
        user: &User,
        keys: &std::sync::Arc<WorkspaceKeys>,
        grant: &TokenGrant,
        refresh: bool,
        actor: &Actor,
    ) -> Result<()> {
        let mut actor = actor.clone();
        actor.kind = ActorKind::EndUser;
        actor.id = Some(user.id);
        self.record(
            user.workspace_id,
            keys,
            &actor,
            vec![
                NewEvent::new(
                    if refresh { "token.refresh" } else { "token.issue" },
                    "user",
                    user.id,
                )
                .values(
                    None,
                    Some(serde_json::json!({
                        "kind": if app.console { "user" } else { "session" },
                        "application_id": app.id,
                        "session": grant.session,
                        "expires_at": grant.access_token.expires_at.rfc3339(),
                        "refresh_token": grant.refresh_token.is_some(),
                    })),
                ),
            ],
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn id_token(
        &self,
        app: &Application,
        user: &User,
        keys: &WorkspaceKeys,
        basis: &GrantBasis,
        session: SessionId,
        access: &IssuedToken,
        now: Timestamp,
    ) -> Result<String> {
        let mut claims = serde_json::json!({
            "iss": self.issuer_of(user.workspace_id),
            "sub": user.id.to_string(),
            "aud": app.id.to_string(),
            "azp": app.id.to_string(),
            "iat": now.secs(),
            "exp": access.expires_at.secs(),
            "auth_time": basis.auth_time.secs(),
            "amr": basis.amr,
            "sid": session.to_string(),
            "at_hash": at_hash(&access.token),
        });
        if let Some(nonce) = &basis.nonce {
            claims["nonce"] = nonce.clone().into();
        }
        self.profile_claims(&basis.scope, user, keys, &mut claims).await?;
        self.tokens.sign_id_token(&claims)
    }

    async fn profile_claims(
        &self,
        scope: &str,
        user: &User,
        keys: &WorkspaceKeys,
        claims: &mut serde_json::Value,
    ) -> Result<()> {
        if scope.split(' ').any(|s| s == "email")
            && let Some(email) = self.user_email(keys, user)
        {
            claims["email"] = email.into();
            claims["email_verified"] = self
                .stores
                .passwords
                .email_verified(user.workspace_id, user.id)
                .await?
                .into();
        }
        if scope.split(' ').any(|s| s == "profile")
            && let Some(name) = self.user_name(keys, user)
        {
            claims["name"] = name.into();
        }
        Ok(())
    }

    /// `userinfo` for a verified SESSION JWT's user (the caller checked the token).
    pub async fn userinfo(&self, workspace: WorkspaceId, user: crate::UserId) -> Result<serde_json::Value> {
        let user = self
            .stores
            .users
            .find_user(workspace, user)
            .await?
            .ok_or_else(Error::invalid_token)?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let mut claims = serde_json::json!({"sub": user.id.to_string()});
        self.profile_claims("email profile", &user, &keys, &mut claims)
            .await?;
        Ok(claims)
    }

    /// Token revocation (RFC 7009): a refresh token revokes its family and ends its login session; an
    /// access token ends its login session. Unknown tokens and other clients' tokens are ignored
    /// (the answer is 200 either way).
    pub async fn revoke_token(
        &self,
        client: &Application,
        token: &str,
    ) -> std::result::Result<(), OAuthError> {
        let now = self.clock.now();
        if let Some(workspace) = credential_workspace(REFRESH_PREFIX, token) {
            if workspace != client.workspace_id {
                return Ok(());
            }
            let hash = secureflows_crypto::sha256(token.as_bytes());
            if let Some(t) = self.stores.grants.find_refresh(workspace, &hash).await?
                && t.application_id == client.id
            {
                self.stores
                    .grants
                    .revoke_family(workspace, t.family_id, now)
                    .await?;
                self.state
                    .apply(crate::Invalidation::Session(workspace, t.login_session_id));
            }
            return Ok(());
        }
        if let Ok(verified) = self.tokens.verify(token, TokenKind::Session).await
            && verified.application == Some(client.id)
        {
            self.end_app_session(verified.workspace, verified.session, now)
                .await?;
        }
        // A console client's USER JWT: its session names the client.
        if client.console
            && let Ok(verified) = self.tokens.verify(token, TokenKind::User).await
            && verified.workspace == client.workspace_id
            && self
                .stores
                .sessions
                .find_session(verified.workspace, verified.session)
                .await?
                .is_some_and(|s| s.application_id == Some(client.id))
        {
            self.end_app_session(verified.workspace, verified.session, now)
                .await?;
        }
        Ok(())
    }

    /// Token introspection (RFC 7662), for confidential clients, about their own tokens.
    pub async fn introspect(
        &self,
        client: &Application,
        token: &str,
    ) -> std::result::Result<Introspection, OAuthError> {
        let inactive = serde_json::json!({"active": false});
        if client.is_public() {
            return Err(OAuthError::unauthorized_client(
                "introspection is for confidential clients",
            ));
        }
        let now = self.clock.now();
        if let Some(workspace) = credential_workspace(REFRESH_PREFIX, token) {
            if workspace != client.workspace_id {
                return Ok(inactive);
            }
            let hash = secureflows_crypto::sha256(token.as_bytes());
            let Some(t) = self.stores.grants.find_refresh(workspace, &hash).await? else {
                return Ok(inactive);
            };
            if t.application_id != client.id
                || t.revoked_at.is_some()
                || t.rotated_at.is_some()
                || t.expires_at <= now
            {
                return Ok(inactive);
            }
            return Ok(serde_json::json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": client.id.to_string(),
                "sub": t.user_id.to_string(),
                "scope": t.scope,
                "iat": t.created_at.secs(),
                "exp": t.expires_at.secs(),
                "iss": self.issuer_of(workspace),
                "sid": t.login_session_id.to_string(),
            }));
        }
        let Ok(caller) = self.authenticate_session(token).await else {
            return Ok(inactive);
        };
        let verified = &caller.token;
        if caller.application.id != client.id {
            return Ok(inactive);
        }
        Ok(serde_json::json!({
            "active": true,
            "token_type": "Bearer",
            "client_id": client.id.to_string(),
            "sub": verified.user.to_string(),
            "exp": verified.expires_at.secs(),
            "nbf": verified.not_before.secs(),
            "iss": self.issuer_of(verified.workspace),
            "sid": verified.session.to_string(),
            "role": verified.role.as_str(),
        }))
    }
}

/// What a grant is based on.
struct GrantBasis {
    browser: Option<crate::BrowserSessionId>,
    scope: String,
    nonce: Option<String>,
    auth_time: Timestamp,
    amr: Vec<String>,
    /// Refresh-token family (none: no refresh token).
    family: Option<FamilyId>,
}

/// A rotation's successor pair, as kept (sealed) with the rotated refresh token.
#[derive(serde::Serialize, serde::Deserialize)]
struct Successor {
    access_token: String,
    access_expires_in_ms: u64,
    access_expires_at_ms: i64,
    id_token: Option<String>,
    refresh_token: String,
}

fn successor_aad(rotated: &RefreshToken) -> secureflows_crypto::Aad {
    secureflows_crypto::Aad::new("sf.refresh.successor.v1")
        .field(rotated.workspace_id.as_uuid().as_bytes())
        .field(&rotated.token_hash)
}

fn seal_successor(keys: &WorkspaceKeys, rotated: &RefreshToken, grant: &TokenGrant) -> Result<Vec<u8>> {
    let successor = Successor {
        access_token: grant.access_token.token.clone(),
        access_expires_in_ms: u64::try_from(grant.access_token.expires_in.as_millis()).unwrap_or(u64::MAX),
        access_expires_at_ms: grant.access_token.expires_at.millis(),
        id_token: grant.id_token.clone(),
        refresh_token: grant.refresh_token.clone().unwrap_or_default(),
    };
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec(&successor).map_err(|_| Error::internal("encoding a refresh successor"))?,
    );
    keys.seal(&successor_aad(rotated), &json)
}

/// The successor pair of a rotation, for a use within the grace window. `None` if it does not open.
fn open_successor(keys: &WorkspaceKeys, rotated: &RefreshToken, sealed: &[u8]) -> Option<TokenGrant> {
    let json = zeroize::Zeroizing::new(keys.open(&successor_aad(rotated), sealed).ok()?);
    let s: Successor = serde_json::from_slice(&json).ok()?;
    Some(TokenGrant {
        access_token: IssuedToken {
            token: s.access_token,
            expires_in: std::time::Duration::from_millis(s.access_expires_in_ms),
            expires_at: Timestamp::from_millis(s.access_expires_at_ms),
        },
        id_token: s.id_token,
        refresh_token: Some(s.refresh_token),
        scope: rotated.scope.clone(),
        session: rotated.login_session_id,
        user: rotated.user_id,
        application: rotated.application_id,
        workspace: rotated.workspace_id,
    })
}

/// `at_hash` (OpenID Connect Core §3.1.3.6): left half of the access token's SHA-256, base64url. Our
/// RS256 and EdDSA keys both hash with SHA-256 for this purpose.
fn at_hash(access_token: &str) -> String {
    use base64::Engine as _;
    let digest = secureflows_crypto::sha256(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_an_independent_implementation() {
        // Python: base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=")
        assert_eq!(
            pkce_s256("dBjftJeZ4CQP-mJ0ztR3X2ZAZhJ_bp6nZ3KmKVXG3YZ"),
            "tp8zV5UTutsEFj98c65wWD1JYniRIIdy2DpdHHET_Hc"
        );
        assert!(!valid_pkce_value("short"));
    }

    #[test]
    fn native_redirects() {
        use crate::workspace::is_native_redirect;
        assert!(is_native_redirect("com.example.app:/cb"));
        assert!(is_native_redirect("http://127.0.0.1:8765/cb"));
        assert!(!is_native_redirect("https://app.example.com/cb"));
    }

    #[test]
    fn redirects_keep_their_query() {
        assert_eq!(
            redirect_to("https://a.example/cb?x=1", &[("code", "c d"), ("state", "s")]),
            "https://a.example/cb?x=1&code=c+d&state=s"
        );
        assert_eq!(redirect_to("https://a.example/", &[]), "https://a.example/");
    }
}
