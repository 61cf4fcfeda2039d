//! The console benchmark (`scripts/bench --console`): a server in process on SQLite and on
//! PostgreSQL, its first run done through the setup link, then 100,000 users and 1,000,000 audit
//! events seeded through the stores in bulk (sealed and chained exactly as the services write them),
//! then each console page requested in turn by a signed-in browser (cookies, no JavaScript), printing
//! p50 and p99 per page. Outside CI: seeding takes minutes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use secureflows_core::audit::{self, Actor, ActorKind, NewEvent};
use secureflows_core::auth::callback::{email_index, seal_email};
use secureflows_core::email::EmailAddress;
use secureflows_core::store::{Change, ChangeSet};
use secureflows_core::{Role, User, UserId, UserStatus, WorkspaceId};
use secureflows_testkit::{Backend, TestApp};

/// What the console benchmark seeds and how often it asks for each page.
#[derive(Debug, Clone)]
pub struct ConsoleBench {
    pub users: u32,
    pub events: u32,
    pub requests: u32,
    pub pg_url: String,
}

/// Runs the console benchmark on each backend named in `backends`.
pub async fn run(bench: &ConsoleBench, backends: &str) -> anyhow::Result<()> {
    println!(
        "console benchmark: {} users, {} audit events, {} requests per page, {} CPUs",
        bench.users,
        bench.events,
        bench.requests,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for name in backends.split(',').map(str::trim) {
        let backend = match name {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::postgres_at(&bench.pg_url),
            other => bail!("unknown backend {other}"),
        };
        one_backend(bench, name, backend)
            .await
            .with_context(|| name.to_string())?;
    }
    Ok(())
}

async fn one_backend(bench: &ConsoleBench, name: &str, backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()?;
    let ws = first_run(&app, &browser).await?;
    let started = Instant::now();
    let sample = seed(&app, ws, bench).await?;
    if let Backend::Postgres(_) = &app.backend {
        // A bulk load leaves the planner without statistics until autovacuum's next analyze; a
        // database that grew to this size has them. Measure the settled state.
        let pool = app.owner_pool().await;
        sqlx::query("analyze").execute(&pool).await?;
    }
    println!(
        "\n{name}: seeded {} users and {} events in {:.0} s",
        bench.users,
        bench.events,
        started.elapsed().as_secs_f64()
    );
    let home = format!("{}/console/w/{ws}", app.url);
    let deep_user = sample.middle_user;
    let pages = [
        ("overview", home.clone()),
        ("applications", format!("{home}/applications")),
        ("members", format!("{home}/members")),
        ("users, first page", format!("{home}/users")),
        (
            "users, a page in the middle",
            format!("{home}/users?after={deep_user}"),
        ),
        (
            "a user, with vault keys",
            format!("{home}/users/{deep_user}?vault=1"),
        ),
        ("a user", format!("{home}/users/{deep_user}")),
        ("audit log, newest", format!("{home}/audit")),
        (
            "audit log, a page in the middle",
            format!("{home}/audit?cursor={}", sample.middle_seq),
        ),
        ("audit log, by action", format!("{home}/audit?action=user.lock")),
        ("audit log, by actor", format!("{home}/audit?actor={deep_user}")),
        (
            "audit log, by resource",
            format!("{home}/audit?resource={deep_user}"),
        ),
        ("API access", format!("{home}/access")),
        ("settings", format!("{home}/settings")),
        ("plan and usage", format!("{home}/plan")),
        ("keys", format!("{home}/keys")),
    ];
    println!(
        "{:<36} {:>10} {:>10} {:>10}",
        "page", "p50 ms", "p99 ms", "max ms"
    );
    let mut worst: f64 = 0.0;
    for (label, url) in pages {
        let mut times = Vec::with_capacity(bench.requests as usize);
        for _ in 0..bench.requests {
            let t = Instant::now();
            let r = browser.get(&url).send().await?;
            let status = r.status();
            let landed = r.url().clone();
            let body = r.text().await?;
            times.push(t.elapsed());
            // The page itself, signed in: not a redirect to a sign-in, not an error page.
            if !status.is_success()
                || !url.starts_with(landed.as_str().split('?').next().unwrap_or_default())
                || !body.contains("Signed in as owner@bench.example")
            {
                bail!("{label}: {status} at {landed} for {url}");
            }
        }
        times.sort();
        let at = |q: f64| {
            let i = ((times.len() as f64 - 1.0) * q).round() as usize;
            times[i].as_secs_f64() * 1000.0
        };
        let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
        worst = worst.max(p99);
        println!("{label:<36} {p50:>10.1} {p99:>10.1} {max:>10.1}");
    }
    // The search is a form post (no address in a URL), answered with the user's page.
    let users_page = browser.get(format!("{home}/users")).send().await?.text().await?;
    let csrf = field(&users_page, "csrf").context("no CSRF field on the users page")?;
    let mut times = Vec::with_capacity(bench.requests as usize);
    for _ in 0..bench.requests {
        let t = Instant::now();
        let r = browser
            .post(format!("{home}/users"))
            .form(&[("csrf", csrf.as_str()), ("email", sample.middle_email.as_str())])
            .send()
            .await?;
        let landed = r.url().path().to_owned();
        let _ = r.bytes().await?;
        times.push(t.elapsed());
        if !landed.ends_with(&format!("/users/{deep_user}")) {
            bail!("the search landed at {landed}");
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    worst = worst.max(p99);
    println!(
        "{:<36} {p50:>10.1} {p99:>10.1} {max:>10.1}",
        "search by e-mail, then the user"
    );
    println!("{name}: slowest page p99 {worst:.1} ms (aim: under 200 ms)");
    app.stop().await;
    Ok(())
}

/// The first run through the setup link, as a browser does it; returns the workspace.
async fn first_run(app: &TestApp, browser: &reqwest::Client) -> anyhow::Result<WorkspaceId> {
    let link = std::fs::read_to_string(app.data_dir.join("setup-link"))?
        .trim()
        .to_owned();
    let html = browser.get(&link).send().await?.text().await?;
    let csrf = field(&html, "csrf").context("no CSRF field on the setup page")?;
    let token = link.split("token=").nth(1).context("no token in the link")?;
    let r = browser
        .post(format!("{}/console/setup", app.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", token),
            ("workspace_name", "Bench"),
            ("email", "owner@bench.example"),
            ("password", "correct horse battery staple"),
        ])
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("the first run answered {}", r.status());
    }
    let ws = app
        .services()
        .stores
        .workspaces
        .sole_workspace()
        .await?
        .context("the first run made no workspace")?;
    // The sign-in ends on a page that continues into the console (a same-site navigation).
    let overview = browser.get(format!("{}/console/w/{ws}", app.url)).send().await?;
    if !overview.text().await?.contains("Signed in as") {
        bail!("the first run did not sign in to the console");
    }
    Ok(ws)
}

fn field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker)? + marker.len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// What the page list needs from the seed.
struct Sample {
    middle_user: UserId,
    middle_email: String,
    middle_seq: i64,
}

/// Users (sealed e-mail and its blind index, as sign-up writes them) and audit events (sealed and
/// chained, ten per user: sign-ins and a few administrators' changes), in transactions of a few
/// thousand.
async fn seed(app: &TestApp, ws: WorkspaceId, bench: &ConsoleBench) -> anyhow::Result<Sample> {
    let services = app.services();
    let keys = services.keys.workspace_keys(ws, false).await?;
    let now = services.clock.now();
    let owner_actor = Actor {
        kind: ActorKind::User,
        id: None,
        client_ip: Some("192.0.2.10".into()),
        user_agent: Some("bench".into()),
        request_id: None,
    };
    let mut users = Vec::with_capacity(bench.users as usize);
    let batch = 2_000usize;
    for chunk_start in (0..bench.users).step_by(batch) {
        let mut changes = Vec::with_capacity(batch);
        for i in chunk_start..(chunk_start + batch as u32).min(bench.users) {
            let id = UserId::new();
            let email = EmailAddress::parse(&format!("user{i}@bench.example"))?;
            let user = User {
                id,
                workspace_id: ws,
                role: Role::User,
                revision: 1,
                status: UserStatus::Active,
                email_sealed: Some(seal_email(&keys, ws, id, &email)?),
                email_index: Some(email_index(&keys, &email).to_vec()),
                name_sealed: None,
                created_at: now,
                updated_at: now,
            };
            changes.push(Change::InsertUser(user));
            users.push(id);
        }
        let events = vec![audit::seal_event(
            &keys,
            ws,
            &owner_actor,
            NewEvent::new("bench.seed", "workspace", ws),
            now,
        )?];
        services
            .stores
            .audit
            .apply(ChangeSet {
                workspace: ws,
                changes,
                events,
                chain: Arc::clone(&keys),
                now,
            })
            .await?;
    }
    let mut written = 0u32;
    let mut middle_seq = 0i64;
    let actions = [
        "user.sign_in",
        "user.sign_in",
        "user.sign_in_failed",
        "user.sign_in",
        "user.lock",
    ];
    while written < bench.events {
        let n = 5_000.min(bench.events - written);
        let mut events = Vec::with_capacity(n as usize);
        for k in 0..n {
            let i = (written + k) as usize;
            let user = users[i % users.len().max(1)];
            let action = actions[i % actions.len()];
            let actor = Actor {
                kind: ActorKind::EndUser,
                id: Some(user),
                ..owner_actor.clone()
            };
            let event = NewEvent::new(action, "user", user)
                .values(None, Some(serde_json::json!({"method": "password"})));
            events.push(audit::seal_event(
                &keys,
                ws,
                &actor,
                event,
                now.plus(Duration::from_millis(i as u64)),
            )?);
        }
        services
            .stores
            .audit
            .apply(ChangeSet {
                workspace: ws,
                changes: Vec::new(),
                events,
                chain: Arc::clone(&keys),
                now,
            })
            .await?;
        written += n;
        if written >= bench.events / 2 && middle_seq == 0 {
            middle_seq = services
                .stores
                .audit
                .chain_head(ws)
                .await?
                .map_or(0, |(seq, _)| seq);
        }
    }
    let middle = users.len() / 2;
    Ok(Sample {
        middle_user: users[middle],
        middle_email: format!("user{middle}@bench.example"),
        middle_seq,
    })
}
