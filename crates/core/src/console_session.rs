//! The web console's sign-in. The console is a client of each workspace's hosted login (its own
//! console client, registered at the first run or on first use): a browser signs in there with
//! authorization code + PKCE, and the console exchanges the code in process for the member's USER JWT
//! and refresh token. Those stay on the server, sealed under the workspace data key in a console
//! session; the browser holds only a random secret in an HttpOnly cookie, whose SHA-256 finds the
//! session. Every console request authenticates the USER JWT exactly as the management API does
//! (`authenticate_console`), so a role change, a lock, a sign-out everywhere or revoking the session
//! ends the console session at its next request; an expired token is refreshed with the rotating
//! refresh token (concurrent refreshes share one chain).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::audit::{Actor, ActorKind};
use crate::auth::token::TokenKind;
use crate::console::ConsoleCaller;
use crate::login::oidc::{TokenGrant, TokenRequest, pkce_s256};
use crate::setup::{CONSOLE_CLIENT_NAME, CONSOLE_PATH};
use crate::{
    Application, AuthFailure, ConsoleSession, Error, ForbiddenReason, Result, Role, Services, WorkspaceId,
};
use secureflows_crypto::{Aad, SecretString};

/// The longest a console session lasts, however often its tokens are refreshed.
pub const CONSOLE_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// How long a started sign-in may take in the hosted login.
pub const CONSOLE_SIGN_IN_TTL: Duration = Duration::from_secs(15 * 60);

/// A sign-in to start: where to send the browser, and the pending state for its cookie.
#[derive(Debug)]
pub struct ConsoleSignIn {
    /// The hosted login's authorization endpoint with the request.
    pub authorize_url: String,
    /// The pending sign-in (state, PKCE verifier, where to return), for a short-lived cookie of the
    /// browser that started it (never logged).
    pub pending: SecretString,
}

/// A finished sign-in.
#[derive(Debug)]
pub struct ConsoleSignedIn {
    /// The workspace signed in to.
    pub workspace: WorkspaceId,
    /// The session cookie's secret (never logged).
    pub secret: SecretString,
    /// The console page to continue on.
    pub return_to: String,
}

#[derive(Serialize, Deserialize)]
struct SealedTokens {
    access: String,
    refresh: Option<String>,
}

impl Services {
    /// The workspace's own console client; registered (audited, as the system) if the workspace has
    /// none for this server's public URL yet.
    pub async fn console_client(&self, workspace: WorkspaceId) -> Result<Application> {
        let apps = self.stores.applications.list_applications(workspace).await?;
        if let Some(app) = apps
            .into_iter()
            .filter(|a| self.is_own_console_client(a))
            .min_by_key(|a| a.created_at)
        {
            return Ok(app);
        }
        let wanted = self.console_client_settings();
        let system = Actor {
            kind: ActorKind::System,
            ..Actor::operator()
        };
        let (app, _secret) = self.create_application(workspace, wanted, &system).await?;
        Ok(app)
    }

    /// Whether `app` is the console's own client (registered by the server, not by the workspace).
    pub fn is_own_console_client(&self, app: &Application) -> bool {
        app.console
            && app.name == CONSOLE_CLIENT_NAME
            && app.redirect_uris == self.console_client_settings().redirect_uris
    }

    /// Starts a console sign-in to `workspace` through its hosted login, to continue on `return_to`
    /// (a console path; anything else continues on the workspace's overview).
    pub async fn start_console_sign_in(
        &self,
        workspace: WorkspaceId,
        return_to: &str,
    ) -> Result<ConsoleSignIn> {
        self.get_workspace(workspace).await?;
        let app = self.console_client(workspace).await?;
        // The state names its workspace (36 characters), so that the callback finds the browser's
        // pending sign-in of that workspace among several.
        let state = format!("{workspace}{}", secureflows_crypto::random_token("")?);
        let verifier = secureflows_crypto::random_token("")?;
        let return_to = console_path(workspace, return_to);
        let redirect = app.redirect_uris.first().cloned().unwrap_or_default();
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &app.id.to_string())
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", "openid")
            .append_pair("state", &state)
            .append_pair("code_challenge", &pkce_s256(&verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        let pending = format!(
            "{workspace}.{state}.{verifier}.{}",
            URL_SAFE_NO_PAD.encode(return_to.as_bytes())
        );
        Ok(ConsoleSignIn {
            authorize_url: format!("{}/authorize?{query}", self.issuer_of(workspace)),
            pending: SecretString::new(pending),
        })
    }

    /// Finishes a console sign-in on the callback: the browser's pending state must match, the code is
    /// exchanged in process, and only an OWNER or ADMIN gets a console session (a USER's new session
    /// is ended at once: `Forbidden(Role)`). `Unauthenticated(InvalidToken)` for a callback that is
    /// not this browser's, or a code that is not good.
    pub async fn finish_console_sign_in(
        &self,
        pending: &str,
        code: &str,
        state: &str,
        actor: &Actor,
    ) -> Result<ConsoleSignedIn> {
        let refused = || Error::Unauthenticated(AuthFailure::InvalidToken);
        let mut parts = pending.split('.');
        let (Some(workspace), Some(expected), Some(verifier), Some(return_to), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(refused());
        };
        let workspace: WorkspaceId = workspace.parse().map_err(|_| refused())?;
        if !secureflows_crypto::constant_time_eq(expected.as_bytes(), state.as_bytes()) {
            return Err(refused());
        }
        let return_to = URL_SAFE_NO_PAD
            .decode(return_to)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(refused)?;
        let app = self.console_client(workspace).await?;
        let redirect = app.redirect_uris.first().cloned().unwrap_or_default();
        let request = TokenRequest {
            grant_type: Some("authorization_code"),
            code: Some(code),
            redirect_uri: Some(&redirect),
            code_verifier: Some(verifier),
            refresh_token: None,
        };
        let grant = self.token(&app, request, actor).await.map_err(|_| refused())?;
        let caller = self
            .authenticate_console(&grant.access_token.token, actor.clone())
            .await?;
        if !matches!(caller.role(), Role::Owner | Role::Admin) {
            // The console is for those who run the workspace: a USER's session ends here.
            let _ = self.revoke_token(&app, &grant.access_token.token).await;
            return Err(Error::Forbidden(ForbiddenReason::Role));
        }
        let secret = secureflows_crypto::random_token("")?;
        let now = self.clock.now();
        let session = ConsoleSession {
            workspace_id: workspace,
            session_hash: secureflows_crypto::sha256(secret.as_bytes()).to_vec(),
            user_id: caller.token.user,
            tokens_sealed: Vec::new(),
            created_at: now,
            expires_at: now.plus(CONSOLE_SESSION_TTL),
        };
        self.store_console_tokens(session, &caller, &grant).await?;
        Ok(ConsoleSignedIn {
            workspace,
            secret: SecretString::new(secret),
            return_to: console_path(workspace, &return_to),
        })
    }

    /// The console caller of a browser's session in `workspace`, authenticated as the management API
    /// authenticates a USER JWT (refreshed first if it expired). `Unauthenticated` when there is no
    /// session or it ended (the session is forgotten then); `Forbidden(Role)` when the member is no
    /// longer an OWNER or ADMIN.
    pub async fn console_caller(
        &self,
        workspace: WorkspaceId,
        secret: &str,
        actor: Actor,
    ) -> Result<ConsoleCaller> {
        let gone = || Error::Unauthenticated(AuthFailure::SessionRevoked);
        let hash = secureflows_crypto::sha256(secret.as_bytes());
        let now = self.clock.now();
        let session = self
            .stores
            .browsers
            .find_console_session(workspace, &hash, now)
            .await?
            .ok_or_else(gone)?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let tokens: SealedTokens = keys
            .open(&tokens_aad(&session), &session.tokens_sealed)
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or_else(gone)?;
        let caller = match self.authenticate_console(&tokens.access, actor.clone()).await {
            Err(Error::Expired) => self.refresh_console_session(session, tokens, actor).await,
            other => other,
        };
        let caller = match caller {
            Ok(caller) => caller,
            Err(e @ Error::Unauthenticated(_)) => {
                self.stores
                    .browsers
                    .delete_console_session(workspace, &hash)
                    .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !matches!(caller.role(), Role::Owner | Role::Admin) {
            return Err(Error::Forbidden(ForbiddenReason::Role));
        }
        Ok(caller)
    }

    /// Signs a browser out of a workspace's console: the session is forgotten, its login session
    /// (with its refresh tokens) ended, and the hosted-login browser session it was signed in from
    /// ended too, so that the next sign-in asks for the password again. Nothing when there is no such
    /// session.
    pub async fn end_console_session(
        &self,
        workspace: WorkspaceId,
        secret: &str,
        actor: &Actor,
    ) -> Result<()> {
        let hash = secureflows_crypto::sha256(secret.as_bytes());
        let now = self.clock.now();
        let Some(session) = self
            .stores
            .browsers
            .find_console_session(workspace, &hash, now)
            .await?
        else {
            return Ok(());
        };
        self.stores
            .browsers
            .delete_console_session(workspace, &hash)
            .await?;
        let keys = self.keys.workspace_keys(workspace, self.state.trusted()).await?;
        let Some(tokens) = keys
            .open(&tokens_aad(&session), &session.tokens_sealed)
            .ok()
            .and_then(|plain| serde_json::from_slice::<SealedTokens>(&plain).ok())
        else {
            return Ok(());
        };
        // The browser session the sign-in came from (its login session names it).
        let browser = match self.tokens.verify(&tokens.access, TokenKind::User).await {
            Ok(token) => self
                .stores
                .sessions
                .find_session(workspace, token.session)
                .await?
                .and_then(|s| s.browser_session_id),
            Err(_) => None,
        };
        let app = self.console_client(workspace).await?;
        if let Some(refresh) = &tokens.refresh {
            let _ = self.revoke_token(&app, refresh).await;
        }
        let _ = self.revoke_token(&app, &tokens.access).await;
        if let Some(id) = browser
            && let Some(found) = self
                .stores
                .browsers
                .list_browser_sessions(workspace, session.user_id, now)
                .await?
                .into_iter()
                .find(|b| b.id == id)
        {
            self.end_browser_session(&found, actor).await?;
        }
        Ok(())
    }

    /// The CSRF token of the console's forms for a browser's CSRF cookie, bound to what the form acts
    /// within (the console session's secret, or the setup token), keyed with the instance's index key:
    /// a cookie planted in a browser is worth nothing without the session it is bound to.
    pub async fn console_csrf(&self, cookie: &str, binding: &str) -> Result<String> {
        let keys = self.instance_keys().await?;
        let mac = secureflows_crypto::blind_index(
            keys.index(),
            &Aad::new("sf.console.csrf.v1").field(cookie).field(binding),
        );
        Ok(URL_SAFE_NO_PAD.encode(mac))
    }

    async fn refresh_console_session(
        &self,
        session: ConsoleSession,
        tokens: SealedTokens,
        actor: Actor,
    ) -> Result<ConsoleCaller> {
        let gone = Error::Unauthenticated(AuthFailure::SessionRevoked);
        let Some(refresh) = tokens.refresh else {
            return Err(gone);
        };
        let app = self.console_client(session.workspace_id).await?;
        let grant = self.refresh(&app, &refresh, &actor).await.map_err(|_| gone)?;
        let caller = self
            .authenticate_console(&grant.access_token.token, actor)
            .await?;
        self.store_console_tokens(session, &caller, &grant).await?;
        Ok(caller)
    }

    async fn store_console_tokens(
        &self,
        mut session: ConsoleSession,
        caller: &ConsoleCaller,
        grant: &TokenGrant,
    ) -> Result<()> {
        let tokens = SealedTokens {
            access: grant.access_token.token.clone(),
            refresh: grant.refresh_token.clone(),
        };
        let plain = serde_json::to_vec(&tokens).map_err(Error::internal)?;
        session.tokens_sealed = caller.keys.seal(&tokens_aad(&session), &plain)?;
        self.stores.browsers.put_console_session(&session).await
    }
}

/// The workspace a console sign-in's `state` names (its first 36 characters).
pub fn state_workspace(state: &str) -> Option<WorkspaceId> {
    state.get(..36)?.parse().ok()
}

/// A console path to continue on: `return_to` if it is one of this workspace's console pages,
/// otherwise the workspace's overview.
pub fn console_path(workspace: WorkspaceId, return_to: &str) -> String {
    let home = format!("{CONSOLE_PATH}/w/{workspace}");
    let fits = return_to == home
        || (return_to.starts_with(&format!("{home}/"))
            && !return_to.contains("//")
            && !return_to.contains('\\')
            && return_to.len() <= 2048
            && return_to.bytes().all(|b| b.is_ascii_graphic()));
    if fits { return_to.to_owned() } else { home }
}

/// The sealed tokens are bound to their workspace and session.
fn tokens_aad(session: &ConsoleSession) -> Aad {
    Aad::new("sf.console.session.v1")
        .field(session.workspace_id.as_uuid().as_bytes())
        .field(&session.session_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_pages_of_the_workspace_are_returned_to() {
        let ws = WorkspaceId::new();
        let home = format!("/console/w/{ws}");
        assert_eq!(
            console_path(ws, &format!("{home}/applications")),
            format!("{home}/applications")
        );
        assert_eq!(console_path(ws, &home), home);
        for bad in [
            "https://evil.example/".to_owned(),
            "//evil.example".to_owned(),
            format!("{home}//evil.example"),
            format!("{home}/\\evil"),
            format!("/console/w/{}/x", WorkspaceId::new()),
            format!("{home}x"),
            "/w/x/account".to_owned(),
        ] {
            assert_eq!(console_path(ws, &bad), home, "{bad}");
        }
    }
}
