//! Enumeration by time (SECURITY.md check 21): a failed sign-in, a password-reset request and a magic-link
//! request take the same time whether or not the address has an account. Requests of the two kinds are
//! interleaved in pairs sent at once, so that whatever else the machine does weighs on both alike; the
//! medians must differ by less than 3 % of the median sign-in latency, and a Mann–Whitney U test must
//! not tell the two samples apart (p > 0.01).

use std::sync::Arc;
use std::time::{Duration, Instant};

use secureflows_core::{Plan, WorkspaceId};
use secureflows_testkit::{Backend, SmtpSink, TestApp, TestOptions, backend_tests};

use crate::hosted_login::{PASSWORD, browser, csrf_of};

backend_tests!(unknown_and_known_addresses_take_the_same_time);

const PAIRS: usize = 24;

/// Posts a form to `action` with the CSRF token of a fresh load of `page`: status and how long the post
/// took.
async fn timed_post(
    app: &TestApp,
    ws: WorkspaceId,
    page: &str,
    action: &str,
    fields: Vec<(&'static str, String)>,
) -> (u16, Duration) {
    let b = browser();
    let html = b
        .get(format!("{}/w/{ws}/{page}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut form = vec![("csrf", csrf_of(&html))];
    form.extend(fields);
    let started = Instant::now();
    let r = b
        .post(format!("{}/w/{ws}/{action}", app.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), started.elapsed())
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// The two-sided p-value of the Mann–Whitney U test (normal approximation with tie correction).
fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|x| (*x, true))
        .chain(b.iter().map(|x| (*x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum_a, mut ties, mut i) = (0.0, 0.0, 0);
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum_a += all[i..=j].iter().filter(|(_, from_a)| *from_a).count() as f64 * rank;
        i = j + 1;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let nn = n1 + n2;
    let sigma = (n1 * n2 / 12.0 * ((nn + 1.0) - ties / (nn * (nn - 1.0)))).sqrt();
    let z = ((u - n1 * n2 / 2.0) / sigma).abs();
    2.0 * (1.0 - normal_cdf(z))
}

fn normal_cdf(z: f64) -> f64 {
    // Abramowitz and Stegun 7.1.26.
    let t = 1.0 / (1.0 + 0.327_591_1 * z / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    1.0 - 0.5 * poly * (-(z * z) / 2.0).exp()
}

/// Runs `PAIRS` pairs (known, unknown) at once each; returns the two samples in milliseconds.
async fn pairs<F, Fut>(run: F) -> (Vec<f64>, Vec<f64>)
where
    F: Fn(bool, usize) -> Fut,
    Fut: std::future::Future<Output = (u16, Duration)>,
{
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..PAIRS {
        // Which of the two goes first alternates, so that the order weighs on neither.
        let ((sk, dk), (su, du)) = if i % 2 == 0 {
            tokio::join!(run(true, i), run(false, i))
        } else {
            let (u, k) = tokio::join!(run(false, i), run(true, i));
            (k, u)
        };
        assert_eq!(
            sk, su,
            "the same status whether the address has an account or not"
        );
        known.push(dk.as_secs_f64() * 1000.0);
        unknown.push(du.as_secs_f64() * 1000.0);
    }
    (known, unknown)
}

fn assert_alike(what: &str, mut known: Vec<f64>, mut unknown: Vec<f64>, sign_in_median_ms: f64) {
    let p = mann_whitney_p(&known, &unknown);
    let (mk, mu) = (median(&mut known), median(&mut unknown));
    let allowed = 0.03 * sign_in_median_ms;
    assert!(
        (mk - mu).abs() < allowed,
        "{what}: median {mk:.1} ms for known addresses, {mu:.1} ms for unknown ones (allowed difference {allowed:.1} ms)"
    );
    assert!(
        p > 0.01,
        "{what}: the samples differ (Mann–Whitney p = {p:.4}): {known:?} vs {unknown:?}"
    );
}

async fn unknown_and_known_addresses_take_the_same_time(backend: Backend) {
    let smtp = SmtpSink::start().await;
    let port = smtp.port;
    let options = TestOptions {
        configure: Arc::new(move |c| {
            c.login.attempts_per_minute = 100_000;
            c.login.max_failures = 100_000;
            c.smtp.host = Some("127.0.0.1".into());
            c.smtp.port = port;
            c.smtp.tls = "none".into();
        }),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let ws = app.workspace(Plan::pro()).await;
    for i in 0..PAIRS {
        app.services()
            .sign_up(
                ws,
                secureflows_core::login::hosted::SignUp {
                    email: format!("known{i}@example.com"),
                    password: secureflows_crypto::SecretString::new(PASSWORD.into()),
                    name: None,
                },
                None,
                &secureflows_core::audit::Actor::operator(),
            )
            .await
            .unwrap();
    }
    let address = |known: bool, i: usize| {
        if known {
            format!("known{i}@example.com")
        } else {
            format!("nobody{i}@example.com")
        }
    };

    // Failed sign-ins: a wrong password for an account, and an address without one.
    let (known, unknown) = pairs(|k, i| {
        let (app, email) = (&app, address(k, i));
        async move {
            timed_post(
                app,
                ws,
                "login",
                "login",
                vec![("email", email), ("password", "not the password 1".into())],
            )
            .await
        }
    })
    .await;
    let sign_in_median = median(&mut known.iter().chain(&unknown).copied().collect::<Vec<_>>());
    assert_alike("sign-in", known, unknown, sign_in_median);

    // Password-reset and magic-link requests.
    for (page, action) in [("forgot", "forgot"), ("login", "magic")] {
        let (known, unknown) = pairs(|k, i| {
            let (app, email) = (&app, address(k, i));
            async move { timed_post(app, ws, page, action, vec![("email", email)]).await }
        })
        .await;
        assert_alike(action, known, unknown, sign_in_median);
    }
    // And the mail went out, after the answers, to existing accounts only.
    let mails = smtp.wait_for(2 * PAIRS).await;
    assert!(
        mails
            .iter()
            .all(|m| m.to.iter().all(|to| to.starts_with("known")))
    );
    app.stop().await;
}
