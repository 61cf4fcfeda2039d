//! A real headless Chromium for tests, driven over WebDriver (ChromeDriver), and the helpers that
//! find, click, fill and read elements patiently (pages navigate under them).

use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::external_tool;

/// A ChromeDriver process and a headless Chromium session; both end on drop/close.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    /// ChromeDriver's URL (for extension commands).
    pub driver_url: String,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Starts ChromeDriver and a headless Chromium session; `None` (and a loud message) when the tools are
/// not set up and not required.
pub async fn browser() -> Option<Browser> {
    let driver_path = external_tool("SECUREFLOWS_TEST_CHROMEDRIVER")?;
    let chromium = external_tool("SECUREFLOWS_TEST_CHROMIUM")?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let driver = tokio::process::Command::new(driver_path)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&url)
        .await
        .unwrap();
    // The extension command below goes to ChromeDriver directly (fantoccini has no WebAuthn commands).
    Some(Browser {
        client,
        driver_url: url,
        _driver: driver,
        _profile: profile,
    })
}

/// Waits for an element; on timeout, fails with where the browser is and what it shows.
pub async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(el) => el,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            panic!("no {css} ({e}) at {url}:\n{source}");
        }
    }
}

/// A page that is still navigating can replace an element between finding and using it ("stale
/// element"): these helpers find it again and retry, for up to about five seconds.
const RETRIES: usize = 50;

/// The text of an element.
pub async fn text(c: &Client, css: &str) -> String {
    for _ in 0..RETRIES {
        if let Ok(text) = element(c, css).await.text().await {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} kept going stale");
}

/// Waits until an element says `expected`.
pub async fn wait_for_text(c: &Client, css: &str, expected: &str) {
    for _ in 0..150 {
        if text(c, css).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{css} never said {expected:?}; it says {:?} at {}",
        text(c, css).await,
        c.current_url().await.unwrap()
    );
}

/// Clicks an element.
pub async fn click(c: &Client, css: &str) {
    for _ in 0..RETRIES {
        if element(c, css).await.click().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} could not be clicked");
}

/// Types into a field, replacing what it held.
pub async fn fill(c: &Client, css: &str, value: &str) {
    for _ in 0..RETRIES {
        let el = element(c, css).await;
        if el.clear().await.is_ok() && el.send_keys(value).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} could not be filled");
}

impl Browser {
    /// Gives the browser a virtual platform authenticator (WebDriver WebAuthn extension): it keeps
    /// discoverable credentials, verifies the user and answers without a person.
    pub async fn add_virtual_authenticator(&self) -> String {
        let session = self.client.session_id().await.unwrap().unwrap();
        let response = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/webauthn/authenticator",
                self.driver_url
            ))
            .json(&serde_json::json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
                "automaticPresenceSimulation": true,
            }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let body: serde_json::Value = response.json().await.unwrap();
        body["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Whether the virtual authenticator answers by itself (a person present). Off, a request waits,
    /// as one from the autofill waits for a person to pick a passkey.
    pub async fn set_presence(&self, authenticator: &str, present: bool) {
        let session = self.client.session_id().await.unwrap().unwrap();
        let response = reqwest::Client::new()
            .post(format!("{}/session/{session}/goog/cdp/execute", self.driver_url))
            .json(&serde_json::json!({
                "cmd": "WebAuthn.setAutomaticPresenceSimulation",
                "params": {"authenticatorId": authenticator, "enabled": present},
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(status.is_success(), "{}", response.text().await.unwrap());
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver_url", &self.driver_url)
            .finish_non_exhaustive()
    }
}

/// Where screenshots go: `$SECUREFLOWS_TEST_OUTPUT/screenshots/{suite}` (scripts/test sets it to the
/// cargo target directory's `test-output`), or `target/test-output` beside the workspace.
fn screenshot_dir(suite: &str) -> std::path::PathBuf {
    let base = std::env::var("SECUREFLOWS_TEST_OUTPUT").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output"),
        std::path::PathBuf::from,
    );
    base.join("screenshots").join(suite)
}

/// Desktop and phone widths of the screenshots.
pub const WIDTHS: [(u32, u32, &str); 2] = [(1280, 900, "desktop"), (390, 844, "phone")];

/// Checks the page the browser shows and records it for a reviewer: an axe-core pass (when
/// `SECUREFLOWS_TEST_AXE` names `axe.min.js`; required with the other outside tools) that fails on any
/// serious or critical violation, at both widths; nothing scrolls sideways at phone width; and a
/// full-width screenshot at 1280 and 390 px saved as `{name}-desktop.png` and `{name}-phone.png`.
pub async fn review_page(c: &Client, suite: &str, name: &str) {
    let axe = external_tool("SECUREFLOWS_TEST_AXE").map(|p| std::fs::read_to_string(p).unwrap());
    let dir = screenshot_dir(suite);
    std::fs::create_dir_all(&dir).unwrap();
    for (width, height, label) in WIDTHS {
        c.set_window_size(width, height).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if label == "phone" {
            let overflow = c
                .execute(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                    vec![],
                )
                .await
                .unwrap();
            if overflow.as_i64().unwrap_or(0) > 1 {
                let wide = c
                    .execute(
                        "const w = document.documentElement.clientWidth;
                         return [...document.querySelectorAll('body *')]
                           .filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('nav, .scroll, pre'))
                           .slice(0, 8)
                           .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);",
                        vec![],
                    )
                    .await
                    .unwrap();
                panic!("{name} scrolls sideways at {width} px ({overflow} px too wide): {wide}");
            }
        }
        if let Some(axe) = &axe {
            let violations = axe_violations(c, axe).await;
            assert!(
                violations.is_empty(),
                "{name} at {width} px has serious accessibility violations: {violations:#?}"
            );
        }
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{label}.png")), png).unwrap();
    }
    c.set_window_size(1280, 900).await.unwrap();
}

/// The serious and critical axe-core violations of the current page: (rule, impact, targets).
async fn axe_violations(c: &Client, axe: &str) -> Vec<serde_json::Value> {
    // Injected as a script of the test (WebDriver), not of the page: the page's CSP does not apply.
    c.execute(&format!("{axe}\nreturn true;"), vec![]).await.unwrap();
    let result = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
               .then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                              targets: v.nodes.map(n => n.target.join(' ')) }))))
               .catch(e => done([{ id: 'axe-error', help: String(e) }]));",
            vec![],
        )
        .await
        .unwrap();
    result.as_array().cloned().unwrap_or_default()
}
