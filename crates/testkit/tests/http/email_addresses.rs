//! E-mail addresses: one rule everywhere (PRECIS `UsernameCaseMapped` for the local part, UTS 46 for the
//! domain), one account per address, and addresses an upstream provider did not verify never reach an
//! account. Addresses stored before the rule are indexed again under it when the server opens the store,
//! and accounts that collide are reported, never merged.

use std::sync::Arc;

use secureflows_core::store::EmailConflict;
use secureflows_core::{Application, Plan, UserId, WorkspaceId};
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};
use serde_json::json;

use crate::hosted_email::{app_with_mail, latest_link, sign_in};
use crate::hosted_login::{
    PASSWORD, authorize_url, browser, client_app, csrf_of, location, pkce, query_param, sign_up_through_flow,
};
use crate::support::{assert_problem, jwt_claims};

backend_tests!(
    unverified_upstream_addresses_never_reach_an_account,
    addresses_that_render_alike_are_one_account,
    addresses_stored_before_the_rule_are_indexed_again_and_collisions_reported,
);

/// Exchanges a code at the seed's callback; returns the session token's claims.
async fn exchange(app: &TestApp, code: &str, verifier: &str) -> serde_json::Value {
    let r = app
        .http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    jwt_claims(body["sessionToken"].as_str().unwrap())
}

/// The user a signed-in browser is: a single sign-on round trip through `authorize`.
async fn signed_in_user(app: &TestApp, b: &reqwest::Client, ws: WorkspaceId, client: &Application) -> String {
    let (verifier, challenge) = pkce();
    let r = b
        .get(authorize_url(app, ws, client, &challenge, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let code = query_param(&location(&r), "code").expect("a code: the browser is signed in");
    exchange(app, &code, &verifier).await["sub"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn id_token_exchange(
    app: &TestApp,
    trusting: &Application,
    subject: &str,
    email: &str,
    verified: serde_json::Value,
) -> reqwest::Response {
    use secureflows_core::Clock;
    let mut claims = app.issuer.claims(subject, "web", app.clock.now().secs());
    claims["email"] = json!(email);
    claims["email_verified"] = verified;
    app.http
        .post(format!("{}/api/v1/auth/callback", app.url))
        .json(&json!({"id_token": app.issuer.sign(&claims), "client_id": trusting.id}))
        .send()
        .await
        .unwrap()
}

async fn unverified_upstream_addresses_never_reach_an_account(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, None).await;
    let ws = app.workspace(Plan::pro()).await;
    let (client, _) = client_app(&app, ws, true).await;
    let trusting = app.application(ws, "web").await;

    // The victim signs up with a password.
    let (verifier, challenge) = pkce();
    let code = sign_up_through_flow(&app, &browser(), ws, &client, &challenge, "victim@example.com").await;
    let victim = exchange(&app, &code, &verifier).await["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    smtp.wait_for(1).await;

    // An upstream ID token claims the victim's address without having verified it (as a boolean and as
    // the string some issuers send, in another spelling of the address): each is a member of its own,
    // with no address at all.
    for (subject, verified) in [
        ("mallory-1", json!(false)),
        ("mallory-2", json!("false")),
        ("mallory-3", json!(null)),
    ] {
        let r = id_token_exchange(&app, &trusting, subject, "VICTIM@Example.com", verified).await;
        assert_eq!(r.status(), 200, "{subject}");
        let body: serde_json::Value = r.json().await.unwrap();
        let token = body["sessionToken"].as_str().unwrap().to_owned();
        assert_ne!(jwt_claims(&token)["sub"].as_str().unwrap(), victim, "{subject}");
        let info: serde_json::Value = app
            .http
            .get(format!("{}/w/{ws}/userinfo", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(info.get("email").is_none(), "{subject}: {info}");
        assert!(info.get("email_verified").is_none(), "{subject}: {info}");
    }
    // A verified claim of a member's address is not linked by an application's exchange either.
    let r = id_token_exchange(&app, &trusting, "mallory-4", "victim@example.com", json!(true)).await;
    assert_problem(r, 409, "account-exists").await;

    // The address finds the victim, and only the victim.
    let keys = app.services().keys.workspace_keys(ws, false).await.unwrap();
    let index = secureflows_core::auth::callback::email_index(
        &keys,
        &secureflows_core::EmailAddress::parse("victim@example.com").unwrap(),
    );
    let found = app
        .services()
        .stores
        .users
        .find_user_by_email(ws, &index)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id.to_string(), victim);

    // The victim's password signs in to the victim's account.
    let b = browser();
    assert_eq!(sign_in(&app, &b, ws, "victim@example.com", PASSWORD).await, 200);
    assert_eq!(signed_in_user(&app, &b, ws, &client).await, victim);

    // A password reset asked for the address resets the victim's account.
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/forgot", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/forgot", app.url))
        .form(&[("csrf", csrf_of(&page).as_str()), ("email", "Victim@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Mail so far: the verification link, the new-browser notice, the reset link.
    let link = latest_link(&smtp, 3, "/reset?token=sfl_").await;
    let html = b.get(&link).send().await.unwrap().text().await.unwrap();
    let r = b
        .post(format!("{}/w/{ws}/reset", app.url))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("token", query_param(&link, "token").unwrap().as_str()),
            ("password", "an entirely fresh passphrase of 2026"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(signed_in_user(&app, &b, ws, &client).await, victim);
    app.stop().await;
}

async fn sign_up_status(app: &TestApp, ws: WorkspaceId, email: &str) -> u16 {
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/signup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    b.post(format!("{}/w/{ws}/signup", app.url))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn addresses_that_render_alike_are_one_account(backend: Backend) {
    // Every spelling of an address shares its throttle: lift it to try them all.
    let options = TestOptions {
        configure: Arc::new(|c| c.login.attempts_per_minute = 1000),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    assert_eq!(sign_up_status(&app, ws, "ada@example.com").await, 200);
    assert_eq!(sign_up_status(&app, ws, "jos\u{00E9}@example.com").await, 200);
    assert_eq!(sign_up_status(&app, ws, "kim@example.com").await, 200);
    // Other spellings of the same addresses are the same accounts.
    for taken in [
        "ADA@Example.COM",
        "\u{FF21}\u{FF24}\u{FF21}@example.com", // fullwidth ADA
        "ada\u{FF20}example.com",               // fullwidth at sign
        "ada@\u{FF45}xample\u{FF0E}com",        // fullwidth e and full stop in the domain
        "jose\u{0301}@example.com",             // NFD
        "\u{FF4B}im@example.com",               // fullwidth k
    ] {
        assert_eq!(sign_up_status(&app, ws, taken).await, 409, "{taken:?}");
    }
    // What the rule refuses is refused, not stored.
    for refused in [
        "a\u{200B}da@example.com", // zero-width space
        "ad\u{200D}a@example.com", // zero-width joiner
        "ada@example.com.",        // trailing dot
        "ada@exam\u{200B}ple.com",
        "ada@example",
        "a\u{202E}da@example.com",
        "\u{212A}im@example.com", // the Kelvin sign: a compatibility character PRECIS disallows
    ] {
        assert_eq!(sign_up_status(&app, ws, refused).await, 422, "{refused:?}");
    }
    // Any spelling signs in to the one account; a refused spelling is just a failed sign-in.
    for spelling in [
        "\u{FF41}\u{FF44}\u{FF41}@example.com",
        "jose\u{0301}@EXAMPLE.com",
        "KIM@example.com",
    ] {
        assert_eq!(
            sign_in(&app, &browser(), ws, spelling, PASSWORD).await,
            200,
            "{spelling:?}"
        );
    }
    assert_eq!(
        sign_in(&app, &browser(), ws, "a\u{200B}da@example.com", PASSWORD).await,
        401
    );
    let users = crate::support::raw_count(
        &app,
        "select count(*) from user_account where email_index is not null",
        "select count(*) from user_account where email_index is not null",
    )
    .await;
    assert_eq!(users, 3);
    app.stop().await;
}

/// Seals `text` as a user's stored address, bypassing the rule (what a server before it stored).
async fn seal_as_stored(app: &TestApp, ws: WorkspaceId, user: UserId, text: &str) -> Vec<u8> {
    let keys = app.services().keys.workspace_keys(ws, false).await.unwrap();
    let aad = secureflows_crypto::Aad::new("sf.user.email.v1")
        .field(ws.as_uuid().as_bytes())
        .field(user.as_uuid().as_bytes());
    keys.seal(&aad, text.as_bytes()).unwrap()
}

/// Rewrites a user's row as a server before the address rule left it.
async fn as_before_the_rule(app: &TestApp, ws: WorkspaceId, user: UserId, stored: &str) {
    let sealed = seal_as_stored(app, ws, user, stored).await;
    match &app.raw {
        secureflows_server::RawStore::Sqlite(_) => {
            let conn = rusqlite::Connection::open(app.data_dir.join("secureflows.db")).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            conn.execute(
                "update user_account set email_sealed = ?3, email_index = null, email_rule = 1
                 where workspace_id = ?1 and user_id = ?2",
                rusqlite::params![ws.as_uuid(), user.as_uuid(), sealed],
            )
            .unwrap();
        }
        secureflows_server::RawStore::Postgres(_) => {
            sqlx::query(
                "update user_account set email_sealed = $3, email_index = null, email_rule = 1
                 where workspace_id = $1 and user_id = $2",
            )
            .bind(ws.as_uuid())
            .bind(user.as_uuid())
            .bind(sealed)
            .execute(&app.owner_pool().await)
            .await
            .unwrap();
        }
    }
}

async fn addresses_stored_before_the_rule_are_indexed_again_and_collisions_reported(backend: Backend) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let options = TestOptions {
        data_dir: Some(dir.clone()),
        master_key: Some({
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .encode(secureflows_crypto::random_bytes::<32>().unwrap())
        }),
        configure: Arc::new(|_| {}),
    };
    let app = TestApp::spawn_with(backend.clone(), options.clone()).await;
    let ws = app.workspace(Plan::pro()).await;
    let mut users = Vec::new();
    for email in [
        "one@example.com",
        "two@example.com",
        "three@example.com",
        "four@example.com",
    ] {
        let (user, _) = app
            .services()
            .sign_up(
                ws,
                secureflows_core::login::hosted::SignUp {
                    email: email.into(),
                    password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                    name: None,
                },
                None,
                &secureflows_core::audit::Actor::operator(),
            )
            .await
            .unwrap();
        users.push(user.id);
        // Oldest first: creation times must differ.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // What an older server stored: the same address in two spellings, one the rule refuses, and one in
    // a spelling the rule makes canonical.
    as_before_the_rule(&app, ws, users[0], "Ada@Example.com").await;
    as_before_the_rule(&app, ws, users[1], "\u{FF41}da@example.com").await;
    as_before_the_rule(&app, ws, users[2], "ze\u{200B}ro@example.com").await;
    as_before_the_rule(&app, ws, users[3], "Four@EXAMPLE.com").await;
    app.stop().await;

    // The next start indexes them under the rule.
    let app = TestApp::spawn_with(backend, options).await;
    let mut conflicts = app.services().email_conflicts().await.unwrap();
    conflicts.sort_by_key(|(_, u, _)| u.to_string());
    let mut expected = vec![
        (ws, users[1], EmailConflict::Collision),
        (ws, users[2], EmailConflict::Refused),
    ];
    expected.sort_by_key(|(_, u, _)| u.to_string());
    assert_eq!(conflicts, expected);
    // The older account keeps the address, in its canonical form; the canonical spelling signs in.
    assert_eq!(
        sign_in(&app, &browser(), ws, "ada@example.com", PASSWORD).await,
        200
    );
    assert_eq!(
        sign_in(&app, &browser(), ws, "four@example.com", PASSWORD).await,
        200
    );
    let keys = app.services().keys.workspace_keys(ws, false).await.unwrap();
    let first = app
        .services()
        .stores
        .users
        .find_user(ws, users[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.services().user_email(&keys, &first).as_deref(),
        Some("ada@example.com")
    );
    // The colliding and the refused accounts keep their rows, unindexed.
    for user in [users[1], users[2]] {
        let row = app
            .services()
            .stores
            .users
            .find_user(ws, user)
            .await
            .unwrap()
            .unwrap();
        assert!(row.email_index.is_none());
        assert!(row.email_sealed.is_some());
    }
    let pending = crate::support::raw_count(
        &app,
        "select count(*) from user_account where email_rule = 1",
        "select count(*) from user_account where email_rule = 1",
    )
    .await;
    assert_eq!(pending, 0);
    app.stop().await;
}
