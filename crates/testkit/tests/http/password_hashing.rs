//! Password hashing is bounded (SECURITY.md check 66): a burst of sign-ins hashes a few at a time, so
//! memory stays flat; past the queue's time-out the answer is 503 with `Retry-After`, never a 500.

use std::sync::Arc;

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{PASSWORD, browser, csrf_of};

backend_tests!(a_burst_of_sign_ins_hashes_a_few_at_a_time);

/// This process's resident set and its peak so far, in KiB (nextest runs each test in a process of its
/// own).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn a_burst_of_sign_ins_hashes_a_few_at_a_time(backend: Backend) {
    let options = TestOptions {
        configure: Arc::new(|c| {
            c.login.attempts_per_minute = 100_000;
            c.login.hash_concurrency = 2;
            c.login.hash_queue_secs = 1;
        }),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    app.services()
        .sign_up(
            ws,
            secureflows_core::login::hosted::SignUp {
                email: "steady@example.com".into(),
                password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                name: None,
            },
            None,
            &secureflows_core::audit::Actor::operator(),
        )
        .await
        .unwrap();
    // A small burst warms up the hashing threads and their memory; a burst ten times as large must
    // not need more.
    let (before, _) = memory_kib();
    let (refused_small, _) = burst(&app, ws, 20).await;
    let (_, warm) = memory_kib();
    let (refused, busy) = burst(&app, ws, 200).await;
    let (_, peak) = memory_kib();
    // Unbounded, 200 Argon2id hashes at once would hold 200 × 19 MiB (3.7 GiB measured); bounded, the
    // growth is the allocator's and the queued requests' (under 150 MiB on an idle machine, up to about
    // 170 MiB while other tests load both cores), far from it.
    let warm_mib = warm.saturating_sub(before) / 1024;
    let grown_mib = peak.saturating_sub(warm) / 1024;
    assert!(
        grown_mib < 400,
        "the larger burst grew the peak by {grown_mib} MiB (warm-up {warm_mib} MiB)"
    );
    assert!(warm_mib < 600, "the warm-up took {warm_mib} MiB");
    assert!(refused_small > 0 && refused > 0, "attempts were verified");
    assert!(
        busy > 0,
        "a queue of 200 past a one-second wait answers 503 with Retry-After"
    );
    // Afterwards the service is itself again.
    let b = browser();
    let page = b
        .get(format!("{}/w/{ws}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{}/w/{ws}/login", app.url))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("email", "steady@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// `n` sign-ins with distinct unknown addresses at once (each browser fetched its form first, so the
/// burst is only the sign-ins): how many were refused (401) and how many were busy (503 with
/// `Retry-After`). Anything else fails the test.
async fn burst(app: &TestApp, ws: secureflows_core::WorkspaceId, n: usize) -> (usize, usize) {
    let mut posts = Vec::new();
    for i in 0..n {
        let b = browser();
        let page = b
            .get(format!("{}/w/{ws}/login", app.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        posts.push((b, csrf_of(&page), format!("visitor{n}-{i}@example.com")));
    }
    let tasks: Vec<_> = posts
        .into_iter()
        .map(|(b, csrf, email)| {
            let url = app.url.clone();
            tokio::spawn(async move {
                let r = b
                    .post(format!("{url}/w/{ws}/login"))
                    .form(&[
                        ("csrf", csrf.as_str()),
                        ("email", email.as_str()),
                        ("password", "some password 123"),
                    ])
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.headers().get("retry-after").is_some())
            })
        })
        .collect();
    let (mut refused, mut busy) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (401, _) => refused += 1,
            (503, true) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (refused, busy)
}
