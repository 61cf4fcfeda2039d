//! `prompt` and `max_age` (OpenID Connect Core §3.1.2.1; Prompt Create 1.0) with a single sign-on
//! session: `login` and an exceeded `max_age` (`0` included) sign in again and the ID token carries the
//! new `auth_time`; `none` answers `login_required` then; `select_account` offers the signed-in account
//! or another; `create` starts at the sign-up page; `consent` needs no page; anything else is
//! `invalid_request`.

use std::time::Duration;

use secureflows_core::{Application, Clock, Plan, WorkspaceId};
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{
    PASSWORD, authorize_url, browser, client_app, csrf_of, location, pkce, query_param, sign_up_through_flow,
};
use crate::support::jwt_claims;

backend_tests!(prompt_and_max_age_are_honoured_with_single_sign_on);

/// The token endpoint's answer for a code (public client, PKCE).
async fn tokens(
    app: &TestApp,
    ws: WorkspaceId,
    client: &Application,
    code: &str,
    verifier: &str,
) -> serde_json::Value {
    let r = app
        .http
        .post(format!("{}/w/{ws}/token", app.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "https://app.example/cb"),
            ("code_verifier", verifier),
            ("client_id", &client.id.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn prompt_and_max_age_are_honoured_with_single_sign_on(backend: Backend) {
    let options = TestOptions {
        configure: std::sync::Arc::new(|c| c.login.attempts_per_minute = 100),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    let b = browser();
    let (_, challenge) = pkce();
    sign_up_through_flow(&app, &b, ws, &client, &challenge, "pia@example.com").await;
    let signed_up_at = app.clock.now().secs();
    let authorize = |extra: &str| {
        let (b, app, client) = (&b, &app, &client);
        let extra = extra.to_owned();
        async move {
            let (verifier, challenge) = pkce();
            let r = b
                .get(authorize_url(app, ws, client, &challenge, &extra))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303, "{extra}");
            (location(&r), verifier)
        }
    };
    let is_code = |to: &str| to.starts_with("https://app.example/cb?code=");
    let login = format!("/w/{ws}/login?flow=");

    // Single sign-on, and what does not change it.
    for extra in ["", "&prompt=consent", "&max_age=600"] {
        let (to, _) = authorize(extra).await;
        assert!(is_code(&to), "{extra}: {to}");
    }
    app.advance(Duration::from_secs(120));
    // A sign-in older than max_age (or max_age=0, or prompt=login): the user signs in again.
    for extra in ["&max_age=60", "&max_age=0", "&prompt=login"] {
        let (to, _) = authorize(extra).await;
        assert!(to.starts_with(&login), "{extra}: {to}");
        // The sign-in page of that request does not complete it from the session either.
        let page = b.get(format!("{}{to}", app.url)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{extra}");
        assert!(page.text().await.unwrap().contains("id=\"sign-in\""));
    }
    for extra in ["&prompt=none&max_age=60", "&prompt=none&max_age=0"] {
        let (to, _) = authorize(extra).await;
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("login_required"),
            "{extra}"
        );
    }
    // Signing in again: a new auth_time in the ID token.
    let (to, verifier) = authorize("&max_age=60").await;
    let flow = query_param(&format!("{}{to}", app.url), "flow").unwrap();
    let html = b
        .get(format!("{}{to}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("flow", &flow),
            ("email", "pia@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let back = location(&r);
    assert!(is_code(&back), "{back}");
    let grant = tokens(&app, ws, &client, &query_param(&back, "code").unwrap(), &verifier).await;
    let claims = jwt_claims(grant["id_token"].as_str().unwrap());
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert!(
        auth_time >= signed_up_at + 120,
        "auth_time {auth_time} is the new sign-in"
    );

    // select_account: the signed-in account, or another.
    let (to, verifier) = authorize("&prompt=select_account").await;
    assert!(to.starts_with(&login), "{to}");
    let html = b
        .get(format!("{}{to}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Continue as pia@example.com"), "{html}");
    assert!(html.contains("id=\"sign-in\""));
    let flow = query_param(&format!("{}{to}", app.url), "flow").unwrap();
    let r = b
        .post(format!("{}/w/{ws}/login/continue", app.url))
        .form(&[("csrf", csrf_of(&html).as_str()), ("flow", &flow)])
        .send()
        .await
        .unwrap();
    let back = location(&r);
    assert!(is_code(&back), "{back}");
    tokens(&app, ws, &client, &query_param(&back, "code").unwrap(), &verifier).await;

    // create: the sign-up page. Unknown prompt values and a malformed max_age: invalid_request.
    let (to, _) = authorize("&prompt=create").await;
    assert!(to.starts_with(&format!("/w/{ws}/signup?flow=")), "{to}");
    for extra in ["&prompt=bogus", "&max_age=-1", "&max_age=soon"] {
        let (to, _) = authorize(extra).await;
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request"),
            "{extra}"
        );
    }
    app.stop().await;
}
