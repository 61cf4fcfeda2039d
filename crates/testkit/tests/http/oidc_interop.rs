//! A third-party OpenID Connect client (authlib, from PyPI) against a workspace's issuer: discovery,
//! code + PKCE, ID token validation against our JWKS, user info, refresh, introspection, revocation.

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, backend_tests, external_tool};

backend_tests!(authlib_completes_the_code_flow);

async fn authlib_completes_the_code_flow(backend: Backend) {
    let Some(python) = external_tool("SECUREFLOWS_TEST_PYTHON") else {
        return;
    };
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    let redirect = "http://127.0.0.1:9/callback";
    let (client, secret) = app
        .services()
        .create_application(
            ws,
            secureflows_core::workspace::NewApplication {
                name: "authlib".into(),
                redirect_uris: vec![redirect.into()],
                ..Default::default()
            },
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/authlib_client.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("{}/w/{ws}", app.url))
        .arg(client.id.to_string())
        .arg(secret.unwrap().expose())
        .arg(redirect)
        .arg("interop@example.com")
        .arg("a third-party passphrase 42")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "authlib client failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.trim(), "ok");
    app.stop().await;
}
