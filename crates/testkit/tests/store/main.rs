//! The store contract suite: every store trait method, on SQLite (a fresh temp directory) and on
//! PostgreSQL (a fresh database), including the cross-workspace cases — a wrong `WorkspaceId` must
//! find, change and delete nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::Duration;

use secureflows_core::audit::{self, Actor, ActorKind, ChainVerifier, EventFilter, NewEvent};
use secureflows_core::keyring::{KeyService, WorkspaceKeys};
use secureflows_core::login::password::PasswordPolicy;
use secureflows_core::login::{Branding, LoginPolicy, MfaRequirement, SignupMode};
use secureflows_core::store::*;
use secureflows_core::{
    Application, ApplicationId, ApplicationKind, AuthorizationCode, AuthorizationRequest, BrowserSession,
    BrowserSessionId, CeremonyPurpose, ConsoleSession, Error, FamilyId, FlowId, IdentityProvider,
    Invalidation, Invite, InviteId, LinkPurpose, LoginFlow, LoginLink, LoginSession, NewIdentity, PasskeyId,
    PasskeyRecord, Plan, ProviderId, ProviderKind, RefreshToken, Role, SessionId, SupportOperator, Timestamp,
    TotpEnrolment, UpstreamTrust, User, UserId, UserStatus, WebauthnCeremony, Workspace, WorkspaceId,
};
use secureflows_testkit::Backend;

struct Fixture {
    stores: Stores,
    _dir: tempfile::TempDir,
    _backend: Backend,
}

async fn open(backend: Backend) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let stores = match &backend {
        Backend::Sqlite => {
            let path = dir.path().to_owned();
            tokio::task::spawn_blocking(move || {
                secureflows_store_sqlite::open_stores(
                    &path,
                    secureflows_store_sqlite::MigrationMode::Apply,
                    secureflows_store_sqlite::SqliteOptions::default(),
                )
            })
            .await
            .unwrap()
            .unwrap()
            .0
        }
        Backend::Postgres(db) => {
            db.create().await;
            secureflows_store_postgres::open_stores(
                &db.url(),
                &db.keyring_url(),
                secureflows_store_postgres::MigrationMode::Apply,
                secureflows_store_postgres::PoolSettings::default(),
            )
            .await
            .unwrap()
            .0
        }
    };
    Fixture {
        stores,
        _dir: dir,
        _backend: backend,
    }
}

impl Fixture {
    /// The test's data database, past the store traits.
    fn raw(&self) -> Raw {
        match &self._backend {
            Backend::Sqlite => Raw::Sqlite(self._dir.path().join(secureflows_store_sqlite::DATA_FILE)),
            Backend::Postgres(db) => Raw::Postgres(db.url()),
        }
    }
}

/// Direct access to a test's data database as its owner (no row-level security): to leave rows as an
/// older server left them, which no store method does.
enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Raw {
    /// Runs one statement with `$1` bound to `id`; returns the rows it changed.
    async fn execute(&self, sql: &str, id: uuid::Uuid) -> u64 {
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                let n = conn
                    .execute(&sql.replace("$1", "?1"), rusqlite::params![id])
                    .unwrap();
                u64::try_from(n).unwrap()
            }
            Raw::Postgres(url) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql)
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        }
    }
}

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let f = super::open(secureflows_testkit::Backend::Sqlite).await;
                    super::$name(&f.stores).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(backend) = secureflows_testkit::Backend::postgres() {
                        let f = super::open(backend).await;
                        super::$name(&f.stores).await;
                    }
                }
            }
        )*
    };
}

/// Like `store_tests!`, for the few `async fn name(s: &Stores, raw: &Raw)` that must also reach the
/// database past the store traits (or know which backend they run on).
macro_rules! raw_store_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let f = super::open(secureflows_testkit::Backend::Sqlite).await;
                    super::$name(&f.stores, &f.raw()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(backend) = secureflows_testkit::Backend::postgres() {
                        let f = super::open(backend).await;
                        super::$name(&f.stores, &f.raw()).await;
                    }
                }
            }
        )*
    };
}

store_tests!(
    workspaces,
    passkeys_and_ceremonies,
    applications,
    users_and_identities,
    login_sessions_and_limits,
    vault_values,
    access_log,
    invalidations,
    used_tokens,
    keyring,
    readiness,
    sign_in_lockout,
    codes_and_refresh_tokens,
    user_and_value_listings,
    audit_chain,
    audit_event_listings,
    workspace_changes,
    application_changes,
    member_changes,
    account_changes,
    session_changes,
    invites,
    identity_provider_changes,
    support_operators,
    last_owner_rule,
    email_verification_and_sign_in_failures,
    flows_and_browser_sessions,
    totp_and_recovery_codes,
    login_links,
    first_run_setup,
    console_sessions,
    tiers_and_billing,
);

raw_store_tests!(email_rules, support_email_rules, invalidation_wakeups);

const T0: i64 = 1_800_000_000_000;

fn at(offset_secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_secs * 1000)
}

fn workspace(plan: Plan) -> Workspace {
    Workspace {
        id: WorkspaceId::new(),
        name: "W".into(),
        plan,
        login_policy: Default::default(),
        branding: Default::default(),
        created_at: at(0),
        updated_at: at(0),
    }
}

fn application(ws: WorkspaceId, issuer: &str, audience: &str, origins: &[&str]) -> Application {
    Application {
        console: false,
        id: ApplicationId::new(),
        workspace_id: ws,
        name: "App".into(),
        trust: Some(UpstreamTrust {
            issuer: issuer.into(),
            audience: audience.into(),
            second_factor_amr: vec!["mfa".into(), "hwk".into()],
            second_factor_acr: vec!["urn:example:loa:2".into()],
        }),
        allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        data_ttl: Duration::from_secs(86_400),
        token_ttl: Duration::from_secs(900),
        kind: secureflows_core::ApplicationKind::Server,
        secret_hash: None,
        tiers: Vec::new(),
        default_tier: None,
        redirect_uris: vec!["https://app.example/cb".into()],
        post_logout_uris: Vec::new(),
        allow_anonymous: false,
        created_at: at(0),
        updated_at: at(0),
    }
}

fn new_user(ws: WorkspaceId, identity: u8) -> NewUser {
    NewUser {
        user: User {
            id: UserId::new(),
            workspace_id: ws,
            role: Role::User,
            revision: 1,
            status: UserStatus::Active,
            email_sealed: Some(vec![1, 2, 3]),
            email_index: Some(vec![identity; 32]),
            name_sealed: None,
            created_at: at(0),
            updated_at: at(0),
        },
        identity: NewIdentity {
            index: vec![identity; 32],
            sealed: vec![9; 40],
        },
    }
}

fn session(ws: WorkspaceId, app: ApplicationId, user: UserId, expires: i64) -> LoginSession {
    LoginSession {
        id: SessionId::new(),
        workspace_id: ws,
        application_id: Some(app),
        user_id: user,
        browser_session_id: None,
        created_at: at(0),
        expires_at: at(expires),
        ended_at: None,
    }
}

/// A workspace with one application and one user.
async fn tenant(s: &Stores) -> (WorkspaceId, Application, User) {
    let w = workspace(Plan::pro());
    s.workspaces.insert_workspace(&w).await.unwrap();
    let app = application(w.id, "https://issuer.example", &format!("aud-{}", w.id), &[]);
    s.applications.insert_application(&app).await.unwrap();
    let u = new_user(w.id, 7);
    s.users.insert_user(&u).await.unwrap();
    (w.id, app, u.user)
}

async fn workspaces(s: &Stores) {
    assert!(!s.workspaces.any_workspace().await.unwrap());
    let w = workspace(Plan::free());
    s.workspaces.insert_workspace(&w).await.unwrap();
    assert!(s.workspaces.any_workspace().await.unwrap());
    assert_eq!(s.workspaces.find_workspace(w.id).await.unwrap(), Some(w.clone()));
    assert!(s.workspaces.insert_workspace(&w).await.is_err(), "ids are unique");
    assert_eq!(
        s.workspaces.find_workspace(WorkspaceId::new()).await.unwrap(),
        None
    );
    s.workspaces.update_plan(w.id, Plan::pro(), at(5)).await.unwrap();
    let found = s.workspaces.find_workspace(w.id).await.unwrap().unwrap();
    assert_eq!((found.plan, found.updated_at), (Plan::pro(), at(5)));
    assert!(matches!(
        s.workspaces
            .update_plan(WorkspaceId::new(), Plan::pro(), at(5))
            .await,
        Err(Error::NotFound(_))
    ));
    let other = workspace(Plan::base());
    s.workspaces.insert_workspace(&other).await.unwrap();
    assert_eq!(s.workspaces.list_workspaces().await.unwrap().len(), 2);

    // Deleting takes everything the workspace owns, and nothing of another.
    let (ws, app, user) = tenant(s).await;
    let (other_ws, other_app, other_user) = tenant(s).await;
    for (w, a, u) in [(ws, app.id, user.id), (other_ws, other_app.id, other_user.id)] {
        s.sessions
            .insert_session_within_limits(&session(w, a, u, 900), limits(), at(0))
            .await
            .unwrap();
        s.vault.put_value(&write(w, a, u, 1, 0)).await.unwrap();
    }
    s.workspaces.delete_workspace(ws).await.unwrap();
    assert!(matches!(
        s.workspaces.delete_workspace(ws).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(s.workspaces.find_workspace(ws).await.unwrap(), None);
    assert_eq!(s.applications.find_application(app.id).await.unwrap(), None);
    assert_eq!(s.users.find_user(ws, user.id).await.unwrap(), None);
    assert!(
        s.vault
            .list_values(ws, app.id, user.id, at(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.vault
            .list_values(other_ws, other_app.id, other_user.id, at(1))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.users
            .find_user(other_ws, other_user.id)
            .await
            .unwrap()
            .is_some()
    );
}

async fn applications(s: &Stores) {
    let (ws, app, _) = tenant(s).await;
    let (ws2, _, _) = tenant(s).await;
    assert_eq!(
        s.applications.find_application(app.id).await.unwrap(),
        Some(app.clone())
    );
    let with_origins = application(
        ws,
        "https://accounts.example",
        "shared",
        &["https://a.example", "http://localhost:3000"],
    );
    s.applications.insert_application(&with_origins).await.unwrap();
    let same_trust_elsewhere = application(ws2, "https://accounts.example", "shared", &["https://b.example"]);
    s.applications
        .insert_application(&same_trust_elsewhere)
        .await
        .unwrap();
    let trusting = s
        .applications
        .find_applications_trusting("https://accounts.example", "shared")
        .await
        .unwrap();
    assert_eq!(trusting.len(), 2);
    assert!(
        s.applications
            .find_applications_trusting("https://accounts.example", "other")
            .await
            .unwrap()
            .is_empty()
    );
    let listed = s.applications.list_applications(ws).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|a| a.workspace_id == ws));
    let mut origins = s.applications.list_allowed_origins().await.unwrap();
    origins.sort();
    assert_eq!(
        origins,
        ["http://localhost:3000", "https://a.example", "https://b.example"]
    );
    assert_eq!(
        s.applications
            .find_application(with_origins.id)
            .await
            .unwrap()
            .unwrap()
            .allowed_origins,
        with_origins.allowed_origins
    );
}

async fn users_and_identities(s: &Stores) {
    let (ws, _, user) = tenant(s).await;
    let (ws2, _, _) = tenant(s).await;
    let found = s
        .users
        .find_user_by_identity(ws, &[7; 32])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, user.id);
    assert_eq!(found.email_sealed, Some(vec![1, 2, 3]));
    // The same identity index in another workspace is another user.
    assert_ne!(
        s.users
            .find_user_by_identity(ws2, &[7; 32])
            .await
            .unwrap()
            .unwrap()
            .id,
        user.id
    );
    assert_eq!(s.users.find_user_by_identity(ws, &[8; 32]).await.unwrap(), None);
    // A user's identities, with what they were inserted with; none for another user or workspace.
    let listed = s.users.list_identities(ws, user.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].0.index.as_slice(), listed[0].0.sealed.as_slice()),
        (&[7u8; 32][..], &[9u8; 40][..])
    );
    assert!(s.users.list_identities(ws2, user.id).await.unwrap().is_empty());
    assert!(
        s.users
            .list_identities(ws, UserId::new())
            .await
            .unwrap()
            .is_empty()
    );
    // An identity belongs to one user.
    let mut dup = new_user(ws, 7);
    dup.user.email_index = None;
    assert!(matches!(s.users.insert_user(&dup).await, Err(Error::Conflict(_))));
    assert_eq!(
        s.users.find_user(ws, dup.user.id).await.unwrap(),
        None,
        "nothing half-inserted"
    );

    // An address belongs to one user of a workspace; the same index elsewhere is another user's.
    let found = s.users.find_user_by_email(ws, &[7; 32]).await.unwrap().unwrap();
    assert_eq!(found.id, user.id);
    let mut same_address = new_user(ws, 70);
    same_address.user.email_index = Some(vec![7; 32]);
    assert!(matches!(
        s.users.insert_user(&same_address).await,
        Err(Error::Conflict(_))
    ));
    assert_ne!(
        s.users
            .find_user_by_email(ws2, &[7; 32])
            .await
            .unwrap()
            .map(|u| u.id),
        Some(user.id)
    );
    // Indexing under the address rule: a taken index is refused, nothing changes; a conflict is kept.
    let mut other = new_user(ws, 71);
    other.user.email_index = Some(vec![5; 32]);
    s.users.insert_user(&other).await.unwrap();
    assert!(
        !s.users
            .apply_email_rule(ws, other.user.id, Some(&[9, 9]), Some(&[7; 32]), None, at(3))
            .await
            .unwrap()
    );
    assert_eq!(
        s.users
            .find_user(ws, other.user.id)
            .await
            .unwrap()
            .unwrap()
            .email_index,
        Some(vec![5; 32])
    );
    assert!(
        s.users
            .apply_email_rule(
                ws,
                other.user.id,
                Some(&[9, 9]),
                None,
                Some(EmailConflict::Collision),
                at(3)
            )
            .await
            .unwrap()
    );
    let other_now = s.users.find_user(ws, other.user.id).await.unwrap().unwrap();
    assert_eq!(
        (other_now.email_index, other_now.email_sealed),
        (None, Some(vec![9, 9]))
    );
    assert_eq!(
        s.users.email_conflicts(ws).await.unwrap(),
        vec![(other.user.id, EmailConflict::Collision)]
    );
    assert!(s.users.email_conflicts(ws2).await.unwrap().is_empty());
    // New rows are under the rule already.
    assert!(s.users.email_rule_pending(ws).await.unwrap().is_empty());
    assert_eq!(
        s.users.find_user(ws2, user.id).await.unwrap(),
        None,
        "wrong workspace finds nothing"
    );

    assert_eq!(s.users.raise_revision(ws, user.id, at(4)).await.unwrap(), 2);
    assert_eq!(s.users.raise_revision(ws, user.id, at(5)).await.unwrap(), 3);
    assert!(matches!(
        s.users.raise_revision(ws2, user.id, at(5)).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(s.users.find_user(ws, user.id).await.unwrap().unwrap().revision, 3);
}

fn limits() -> SessionLimits {
    SessionLimits {
        per_workspace: 100,
        per_user: 100,
    }
}

async fn login_sessions_and_limits(s: &Stores) {
    let (ws, app, user) = tenant(s).await;
    let (ws2, _, _) = tenant(s).await;
    let second = new_user(ws, 8);
    s.users.insert_user(&second).await.unwrap();
    let lim = SessionLimits {
        per_workspace: 3,
        per_user: 2,
    };

    let a = session(ws, app.id, user.id, 100);
    let b = session(ws, app.id, user.id, 50);
    assert_eq!(
        s.sessions
            .insert_session_within_limits(&a, lim, at(0))
            .await
            .unwrap(),
        SessionAdmission::Admitted
    );
    assert_eq!(
        s.sessions
            .insert_session_within_limits(&b, lim, at(0))
            .await
            .unwrap(),
        SessionAdmission::Admitted
    );
    // The user is full; the earliest of their sessions frees a slot at t+50.
    let c = session(ws, app.id, user.id, 100);
    assert_eq!(
        s.sessions
            .insert_session_within_limits(&c, lim, at(1))
            .await
            .unwrap(),
        SessionAdmission::Full {
            earliest_expiry: at(50)
        }
    );
    assert_eq!(
        s.sessions.find_session(ws, c.id).await.unwrap(),
        None,
        "a refused session is not stored"
    );
    let d = session(ws, app.id, second.user.id, 200);
    assert_eq!(
        s.sessions
            .insert_session_within_limits(&d, lim, at(1))
            .await
            .unwrap(),
        SessionAdmission::Admitted
    );
    // The workspace is full (3 active), and counts them; another counts none.
    assert_eq!(s.sessions.count_sessions(ws, at(1)).await.unwrap(), 3);
    assert_eq!(
        s.sessions.count_sessions(ws, at(50)).await.unwrap(),
        2,
        "b expired"
    );
    assert_eq!(s.sessions.count_sessions(ws2, at(1)).await.unwrap(), 0);
    let e = session(ws, app.id, second.user.id, 200);
    assert!(matches!(
        s.sessions
            .insert_session_within_limits(&e, lim, at(1))
            .await
            .unwrap(),
        SessionAdmission::Full { .. }
    ));
    // Expired sessions stop counting.
    assert_eq!(
        s.sessions
            .insert_session_within_limits(&c, lim, at(60))
            .await
            .unwrap(),
        SessionAdmission::Admitted
    );

    assert_eq!(s.sessions.find_session(ws, a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        s.sessions.find_session(ws2, a.id).await.unwrap(),
        None,
        "wrong workspace finds nothing"
    );
    assert!(!s.sessions.end_session(ws2, a.id, at(61)).await.unwrap());
    assert_eq!(
        s.sessions.find_session(ws, a.id).await.unwrap().unwrap().ended_at,
        None,
        "wrong workspace ends nothing"
    );
    assert!(s.sessions.end_session(ws, a.id, at(61)).await.unwrap());
    assert_eq!(
        s.sessions.count_sessions(ws, at(61)).await.unwrap(),
        2,
        "ended ones stop counting"
    );
    assert!(
        !s.sessions.end_session(ws, a.id, at(62)).await.unwrap(),
        "ending twice"
    );
    assert_eq!(
        s.sessions.find_session(ws, a.id).await.unwrap().unwrap().ended_at,
        Some(at(61))
    );

    // Raising the revision ends every session of the user.
    s.users.raise_revision(ws, user.id, at(70)).await.unwrap();
    assert_eq!(
        s.sessions.find_session(ws, c.id).await.unwrap().unwrap().ended_at,
        Some(at(70))
    );
    assert_eq!(
        s.sessions.find_session(ws, d.id).await.unwrap().unwrap().ended_at,
        None
    );

    // Retention: sessions that ended or expired before the cut-off are deleted.
    assert!(s.sessions.purge_sessions(at(65)).await.unwrap() >= 2);
    assert_eq!(s.sessions.find_session(ws, a.id).await.unwrap(), None);
    assert!(s.sessions.find_session(ws, d.id).await.unwrap().is_some());
}

fn write(ws: WorkspaceId, app: ApplicationId, user: UserId, key: u8, now: i64) -> VaultWrite {
    VaultWrite {
        locator: VaultLocator {
            workspace_id: ws,
            application_id: app,
            user_id: user,
            key_index: [key; 32],
        },
        name_sealed: vec![key; 20],
        value_sealed: vec![key; 100],
        size: 67,
        now: at(now),
        expires_at: at(now + 1000),
        max_keys: 3,
    }
}

async fn vault_values(s: &Stores) {
    let (ws, app, user) = tenant(s).await;
    let (ws2, app2, user2) = tenant(s).await;
    let w1 = write(ws, app.id, user.id, 1, 0);
    assert_eq!(s.vault.put_value(&w1).await.unwrap(), PutOutcome::Created);
    let mut again = write(ws, app.id, user.id, 1, 10);
    again.value_sealed = vec![42; 10];
    assert_eq!(
        s.vault.put_value(&again).await.unwrap(),
        PutOutcome::Replaced { created_at: at(0) }
    );
    let got = s.vault.get_value(&w1.locator, at(11)).await.unwrap().unwrap();
    assert_eq!(
        (got.value_sealed, got.created_at, got.updated_at, got.expires_at),
        (vec![42; 10], at(0), at(10), at(1010))
    );

    // Another workspace, application or user with the same key index sees nothing and changes nothing.
    for (w, a, u) in [
        (ws2, app.id, user.id),
        (ws, app2.id, user.id),
        (ws, app.id, user2.id),
    ] {
        let l = VaultLocator {
            workspace_id: w,
            application_id: a,
            user_id: u,
            key_index: [1; 32],
        };
        assert_eq!(s.vault.get_value(&l, at(11)).await.unwrap(), None);
        assert!(!s.vault.delete_value(&l, at(11)).await.unwrap());
        assert!(s.vault.list_values(w, a, u, at(11)).await.unwrap().is_empty());
    }
    assert!(s.vault.get_value(&w1.locator, at(11)).await.unwrap().is_some());

    // Quota: three live keys at most; overwriting is always allowed; expired keys do not count.
    assert_eq!(
        s.vault
            .put_value(&write(ws, app.id, user.id, 2, 20))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.vault
            .put_value(&write(ws, app.id, user.id, 3, 30))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.vault
            .put_value(&write(ws, app.id, user.id, 4, 40))
            .await
            .unwrap(),
        PutOutcome::QuotaExceeded
    );
    assert_eq!(
        s.vault
            .get_value(&write(ws, app.id, user.id, 4, 40).locator, at(41))
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        s.vault
            .put_value(&write(ws, app.id, user.id, 3, 50))
            .await
            .unwrap(),
        PutOutcome::Replaced { .. }
    ));
    let listed = s.vault.list_values(ws, app.id, user.id, at(60)).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|e| e.value_sealed.is_empty()),
        "listings carry no values"
    );

    // Expiry: invisible at once, purged later, and then a new key.
    assert_eq!(s.vault.get_value(&w1.locator, at(1010)).await.unwrap(), None);
    assert_eq!(
        s.vault
            .list_values(ws, app.id, user.id, at(1025))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !s.vault.delete_value(&w1.locator, at(1011)).await.unwrap(),
        "an expired value counts as absent"
    );
    assert_eq!(
        s.vault
            .put_value(&write(ws, app.id, user.id, 4, 1100))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.vault.purge_expired_values(at(1100), 100).await.unwrap(),
        2,
        "keys 2 and 3 (1 was deleted)"
    );
    let left = s.vault.list_values(ws, app.id, user.id, at(1100)).await.unwrap();
    assert_eq!(left.len(), 1);
    let live = write(ws, app.id, user.id, 4, 1100).locator;
    assert!(s.vault.delete_value(&live, at(1101)).await.unwrap());
    assert_eq!(s.vault.get_value(&live, at(1101)).await.unwrap(), None);
}

async fn access_log(s: &Stores) {
    let (ws, app, user) = tenant(s).await;
    let (ws2, _, _) = tenant(s).await;
    let entry = |w: Option<WorkspaceId>, status: u16| AccessEntry {
        workspace_id: w,
        application_id: Some(app.id),
        user_id: Some(user.id),
        method: "GET".into(),
        route: "/api/v1/sessions".into(),
        key_sealed: Some(vec![1, 2]),
        status,
        bytes_in: 1,
        bytes_out: 2,
        client_ip: "127.0.0.1".into(),
        user_agent: "ua".into(),
        request_id: format!("r-{status}"),
        duration_us: 3,
        at: at(i64::from(status)),
    };
    s.access
        .append_access(&[
            entry(Some(ws), 200),
            entry(Some(ws), 404),
            entry(Some(ws2), 201),
            entry(None, 401),
        ])
        .await
        .unwrap();
    s.access.append_access(&[]).await.unwrap();
    let listed: Vec<_> = s
        .access
        .list_access(ws, &AccessFilter::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        listed.iter().map(|e| e.status).collect::<Vec<_>>(),
        [404, 200],
        "newest first, this workspace only"
    );
    assert_eq!(listed[0], entry(Some(ws), 404));
    assert_eq!(
        s.access
            .list_access(ws, &AccessFilter::default(), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Filters: the application called for, the status, and both at once.
    let count = |f: AccessFilter| async move { s.access.list_access(ws, &f, 10).await.unwrap().len() };
    let of_app = |application| AccessFilter {
        application: Some(application),
        ..AccessFilter::default()
    };
    assert_eq!(count(of_app(app.id)).await, 2);
    assert_eq!(count(of_app(ApplicationId::new())).await, 0);
    let status = AccessFilter {
        status: Some(404),
        ..of_app(app.id)
    };
    assert_eq!(count(status).await, 1);
}

async fn invalidations(s: &Stores) {
    let w = WorkspaceId::new();
    s.coord.publish(Invalidation::Keys(w)).await.unwrap();
    s.coord.publish(Invalidation::SigningKeys).await.unwrap();
    let all = s.coord.invalidations_after(0, 100).await.unwrap();
    let kinds: Vec<_> = all.iter().map(|(_, i)| *i).collect();
    assert_eq!(kinds, [Invalidation::Keys(w), Invalidation::SigningKeys]);
    assert!(all[0].0 < all[1].0, "ordered by sequence");
    let first = s.coord.invalidations_after(0, 1).await.unwrap();
    assert_eq!(first, all[..1], "limited, oldest first");
    let last = all[1].0;
    assert!(s.coord.invalidations_after(last, 100).await.unwrap().is_empty());
    // The look-back window returns recent ones whatever their sequence number.
    assert_eq!(
        s.coord
            .recent_invalidations(Duration::from_secs(10))
            .await
            .unwrap(),
        all
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        s.coord
            .recent_invalidations(Duration::from_millis(5))
            .await
            .unwrap()
            .is_empty()
    );
    // Changes made by store methods are recorded in the same transaction.
    let (ws, _, user) = tenant(s).await;
    s.users.raise_revision(ws, user.id, at(1)).await.unwrap();
    let after = s.coord.invalidations_after(last, 100).await.unwrap();
    assert!(
        after.iter().any(|(_, i)| *i == Invalidation::User(ws, user.id)),
        "{after:?}"
    );
    assert_eq!(
        s.coord
            .prune_invalidations(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        s.coord
            .prune_invalidations(Duration::from_millis(1))
            .await
            .unwrap()
            >= 3
    );
}

async fn used_tokens(s: &Stores) {
    let hash = [5u8; 32];
    assert!(s.used_tokens.mark_used(&hash, at(100)).await.unwrap());
    assert!(!s.used_tokens.mark_used(&hash, at(100)).await.unwrap());
    assert!(s.used_tokens.mark_used(&[6u8; 32], at(300)).await.unwrap());
    assert_eq!(s.used_tokens.purge_used(at(200)).await.unwrap(), 1);
    assert!(
        s.used_tokens.mark_used(&hash, at(400)).await.unwrap(),
        "forgotten after expiry"
    );
    assert!(!s.used_tokens.mark_used(&[6u8; 32], at(300)).await.unwrap());
}

fn key(owner: &str, purpose: secureflows_crypto::KeyPurpose, version: u32, active: bool) -> StoredKey {
    StoredKey {
        owner: owner.into(),
        purpose,
        version,
        wrapped: vec![version as u8; 60],
        master_key_id: "mk-1".into(),
        active,
        created_at: at(0),
    }
}

async fn keyring(s: &Stores) {
    use secureflows_crypto::KeyPurpose::{Data, Index};
    let k = &s.keyring;
    assert!(k.is_empty().await.unwrap());
    k.insert_keys(&[key("ws-a", Data, 1, true), key("ws-a", Index, 1, true)])
        .await
        .unwrap();
    k.insert_keys(&[key("ws-b", Data, 1, true), key("ws-b", Index, 1, true)])
        .await
        .unwrap();
    assert!(!k.is_empty().await.unwrap());
    assert_eq!(k.workspace_keys("ws-a").await.unwrap().len(), 2);
    assert!(k.workspace_keys("ws-c").await.unwrap().is_empty());
    k.add_data_key(&key("ws-a", Data, 2, true)).await.unwrap();
    let keys = k.workspace_keys("ws-a").await.unwrap();
    let active: Vec<_> = keys
        .iter()
        .filter(|k| k.purpose == Data && k.active)
        .map(|k| k.version)
        .collect();
    assert_eq!(active, [2], "exactly one active data key");
    assert!(
        keys.iter()
            .any(|k| k.version == 1 && k.purpose == Data && !k.active)
    );
    assert!(
        k.insert_keys(&[key("ws-a", Data, 2, true)]).await.is_err(),
        "versions are unique"
    );

    k.destroy_workspace_keys("ws-a", at(5)).await.unwrap();
    assert!(k.is_destroyed("ws-a").await.unwrap());
    assert!(!k.is_destroyed("ws-b").await.unwrap());
    assert!(k.workspace_keys("ws-a").await.unwrap().is_empty());
    assert_eq!(k.workspace_keys("ws-b").await.unwrap().len(), 2);
    assert!(matches!(
        k.insert_keys(&[key("ws-a", Data, 9, true)]).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        k.add_data_key(&key("ws-a", Data, 9, true)).await,
        Err(Error::Conflict(_))
    ));
    k.destroy_workspace_keys("ws-a", at(6)).await.unwrap();

    let signing = |kid: &str, t: i64| StoredSigningKey {
        kid: kid.into(),
        alg: "EdDSA".into(),
        wrapped: vec![1; 80],
        public_jwk: "{}".into(),
        master_key_id: "mk-1".into(),
        created_at: at(t),
        retired_at: None,
    };
    k.insert_signing_key(&signing("k1", 0), at(0)).await.unwrap();
    k.insert_signing_key(&signing("k2", 10), at(10)).await.unwrap();
    let listed = k.signing_keys().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.kid.as_str(), s.retired_at))
            .collect::<Vec<_>>(),
        [("k1", Some(at(10))), ("k2", None)]
    );
    assert_eq!(k.delete_signing_keys_retired_before(at(5)).await.unwrap(), 0);
    assert_eq!(k.delete_signing_keys_retired_before(at(11)).await.unwrap(), 1);

    assert_eq!(k.master_key_ids().await.unwrap(), ["mk-1"]);
    let (mut keys, mut signing_keys) = k.all_keys().await.unwrap();
    assert_eq!((keys.len(), signing_keys.len()), (2, 1));
    for key in &mut keys {
        key.wrapped = vec![7; 61];
        key.master_key_id = "mk-2".into();
    }
    for key in &mut signing_keys {
        key.master_key_id = "mk-2".into();
    }
    k.replace_wrapped(&keys, &signing_keys).await.unwrap();
    assert_eq!(k.master_key_ids().await.unwrap(), ["mk-2"]);
    assert!(
        k.workspace_keys("ws-b")
            .await
            .unwrap()
            .iter()
            .all(|key| key.wrapped == vec![7; 61])
    );
}

async fn readiness(s: &Stores) {
    s.health.check_ready().await.unwrap();
    s.keyring.check_ready().await.unwrap();
}

/// Failed attempts are counted before verification, atomically: of 30 parallel attempts on an
/// account allowed 10 failures, exactly 10 proceed; the lock holds until it expires, and another
/// workspace's id changes nothing.
async fn sign_in_lockout(s: &Stores) {
    let (ws, _, user) = tenant(s).await;
    let (other, _, _) = tenant(s).await;
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let login = s.passwords.clone();
        tasks.push(tokio::spawn(async move {
            login.begin_attempt(ws, user.id, 10, at(0)).await.unwrap()
        }));
    }
    let mut proceeded = 0;
    for t in tasks {
        if t.await.unwrap() == AttemptGate::Proceed {
            proceeded += 1;
        }
    }
    assert_eq!(proceeded, 10);
    assert!(
        s.passwords
            .lock_if_exhausted(ws, user.id, 10, at(900))
            .await
            .unwrap()
    );
    assert!(
        !s.passwords
            .lock_if_exhausted(ws, user.id, 10, at(900))
            .await
            .unwrap()
    );
    assert_eq!(
        s.passwords.begin_attempt(ws, user.id, 10, at(100)).await.unwrap(),
        AttemptGate::Locked(at(900))
    );
    // Another workspace's id reaches nothing.
    s.passwords.clear_failures(other, user.id).await.unwrap();
    assert!(matches!(
        s.passwords.begin_attempt(ws, user.id, 10, at(100)).await.unwrap(),
        AttemptGate::Locked(_)
    ));
    // An expired lock starts a fresh count.
    assert_eq!(
        s.passwords.begin_attempt(ws, user.id, 10, at(901)).await.unwrap(),
        AttemptGate::Proceed
    );
    s.passwords.clear_failures(ws, user.id).await.unwrap();
    for _ in 0..10 {
        assert_eq!(
            s.passwords.begin_attempt(ws, user.id, 10, at(902)).await.unwrap(),
            AttemptGate::Proceed
        );
    }
    // Passwords are per workspace.
    s.passwords
        .set_password(ws, user.id, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", at(0))
        .await
        .unwrap();
    assert!(s.passwords.find_password(ws, user.id).await.unwrap().is_some());
    assert!(s.passwords.find_password(other, user.id).await.unwrap().is_none());
}

/// Codes are spent once even when redeemed concurrently; refresh tokens rotate once; revoking a family
/// ends its login session; ending a browser session ends the sessions opened from it.
async fn codes_and_refresh_tokens(s: &Stores) {
    let (ws, app, user) = tenant(s).await;
    let (other, _, _) = tenant(s).await;
    let browser = BrowserSession {
        id: BrowserSessionId::new(),
        workspace_id: ws,
        user_id: user.id,
        token_hash: vec![3; 32],
        revision: 1,
        auth_time: at(0),
        amr: vec!["pwd".into()],
        client_sealed: None,
        created_at: at(0),
        last_seen_at: at(0),
        expires_at: at(3600),
        ended_at: None,
    };
    s.browsers.insert_browser_session(&browser).await.unwrap();
    assert_eq!(
        s.browsers
            .find_browser_session(ws, &[3; 32], at(1))
            .await
            .unwrap(),
        Some(browser.clone())
    );
    assert!(
        s.browsers
            .find_browser_session(other, &[3; 32], at(1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.browsers
            .find_browser_session(ws, &[3; 32], at(3600))
            .await
            .unwrap()
            .is_none()
    );

    let code = AuthorizationCode {
        code_hash: vec![5; 32],
        workspace_id: ws,
        application_id: app.id,
        user_id: user.id,
        browser_session_id: browser.id,
        request: AuthorizationRequest {
            redirect_uri: "https://app.example/cb".into(),
            state: Some("st".into()),
            nonce: None,
            code_challenge: Some("c".repeat(43)),
            scope: "openid".into(),
            force_login: false,
            max_age: Some(300),
            select_account: false,
            create_account: false,
            upgrade_user: None,
        },
        auth_time: at(0),
        amr: vec!["pwd".into()],
        created_at: at(0),
        expires_at: at(60),
    };
    s.grants.insert_code(&code).await.unwrap();
    assert_eq!(
        s.grants.redeem_code(other, &[5; 32], at(1)).await.unwrap(),
        CodeRedemption::Invalid
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let login = s.grants.clone();
        tasks.push(tokio::spawn(async move {
            login.redeem_code(ws, &[5; 32], at(1)).await.unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        match t.await.unwrap() {
            CodeRedemption::Fresh(c) => {
                assert_eq!(c, code);
                fresh += 1;
            }
            CodeRedemption::Replayed(None) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fresh, 1);
    let first = LoginSession {
        browser_session_id: Some(browser.id),
        ..session(ws, app.id, user.id, 3600)
    };
    let limits = SessionLimits {
        per_workspace: 100,
        per_user: 100,
    };
    assert_eq!(
        s.sessions
            .insert_session_within_limits(&first, limits, at(0))
            .await
            .unwrap(),
        SessionAdmission::Admitted
    );
    s.grants
        .attach_code_session(ws, &[5; 32], first.id)
        .await
        .unwrap();
    assert_eq!(
        s.grants.redeem_code(ws, &[5; 32], at(2)).await.unwrap(),
        CodeRedemption::Replayed(Some(first.id))
    );

    let family = FamilyId::new();
    let refresh = RefreshToken {
        token_hash: vec![8; 32],
        workspace_id: ws,
        family_id: family,
        application_id: app.id,
        user_id: user.id,
        login_session_id: first.id,
        scope: "openid".into(),
        auth_time: at(0),
        amr: vec!["pwd".into()],
        created_at: at(0),
        expires_at: at(7200),
        rotated_at: None,
        revoked_at: None,
    };
    s.grants.insert_refresh(&refresh).await.unwrap();
    let sibling = RefreshToken {
        token_hash: vec![9; 32],
        ..refresh.clone()
    };
    s.grants.insert_refresh(&sibling).await.unwrap();
    let successor = |n: u8| RefreshToken {
        token_hash: vec![n; 32],
        created_at: at(1),
        ..refresh.clone()
    };
    assert_eq!(
        s.grants
            .rotate_refresh(other, &[8; 32], &successor(20), b"sealed", at(1))
            .await
            .unwrap(),
        RefreshRotation::NotCurrent,
        "another workspace's token"
    );
    // Concurrent rotations of one token: exactly one wins and stores its successor.
    let mut tasks = Vec::new();
    for n in 0..8u8 {
        let login = s.grants.clone();
        let next = successor(30 + n);
        tasks.push(tokio::spawn(async move {
            (
                n,
                login
                    .rotate_refresh(ws, &[8; 32], &next, &[n], at(1))
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (n, outcome) = t.await.unwrap();
        if outcome == RefreshRotation::Rotated {
            winners.push(n);
        }
    }
    assert_eq!(winners.len(), 1);
    let winner = winners[0];
    let rotated = s.grants.find_refresh(ws, &[8; 32]).await.unwrap().unwrap();
    assert_eq!(rotated.rotated_at, Some(at(1)));
    assert_eq!(
        s.grants.refresh_successor(ws, &[8; 32]).await.unwrap(),
        Some(vec![winner])
    );
    assert_eq!(s.grants.refresh_successor(other, &[8; 32]).await.unwrap(), None);
    assert!(
        s.grants
            .find_refresh(ws, &[30 + winner; 32])
            .await
            .unwrap()
            .is_some()
    );
    for n in (0..8u8).filter(|n| *n != winner) {
        assert!(
            s.grants.find_refresh(ws, &[30 + n; 32]).await.unwrap().is_none(),
            "a loser's successor"
        );
    }
    // The sweeper forgets successors once the grace window is over.
    s.browsers.purge_login_state(at(2)).await.unwrap();
    assert_eq!(s.grants.refresh_successor(ws, &[8; 32]).await.unwrap(), None);
    s.grants.extend_session(ws, first.id, at(7200)).await.unwrap();
    assert_eq!(
        s.sessions
            .find_session(ws, first.id)
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        at(7200)
    );
    s.grants.revoke_family(ws, family, at(5)).await.unwrap();
    assert_eq!(
        s.grants
            .rotate_refresh(ws, &[9; 32], &successor(40), b"sealed", at(6))
            .await
            .unwrap(),
        RefreshRotation::NotCurrent,
        "revoked with its family"
    );
    assert!(
        s.sessions
            .find_session(ws, first.id)
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_some()
    );

    // A browser session ends with the application sessions opened from it.
    let second = LoginSession {
        browser_session_id: Some(browser.id),
        ..session(ws, app.id, user.id, 3600)
    };
    s.sessions
        .insert_session_within_limits(&second, limits, at(0))
        .await
        .unwrap();
    assert!(
        s.browsers
            .end_browser_session(other, browser.id, at(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.browsers
            .end_browser_session(ws, browser.id, at(10))
            .await
            .unwrap(),
        vec![second.id]
    );
    assert!(
        s.browsers
            .find_browser_session(ws, &[3; 32], at(11))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.sessions
            .find_session(ws, second.id)
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_some()
    );
    // Expired state is purged.
    assert!(s.browsers.purge_login_state(at(100_000)).await.unwrap() >= 3);
}

async fn passkeys_and_ceremonies(s: &Stores) {
    let (ws, _, user) = tenant(s).await;
    let (other, _, other_user) = tenant(s).await;
    let passkey = |workspace: WorkspaceId, user: UserId, hash: u8| PasskeyRecord {
        id: PasskeyId::new(),
        workspace_id: workspace,
        user_id: user,
        credential_hash: vec![hash; 32],
        sealed: vec![9; 40],
        created_at: at(0),
        last_used_at: None,
    };
    let first = passkey(ws, user.id, 1);
    assert!(s.factors.insert_passkey(&first).await.unwrap());
    // One credential, one account: the same credential id again in this workspace is refused.
    assert!(!s.factors.insert_passkey(&passkey(ws, user.id, 1)).await.unwrap());
    // Another workspace is another relying-party account space.
    assert!(
        s.factors
            .insert_passkey(&passkey(other, other_user.id, 1))
            .await
            .unwrap()
    );
    let second = passkey(ws, user.id, 2);
    assert!(s.factors.insert_passkey(&second).await.unwrap());
    let listed = s.factors.passkeys(ws, user.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], first);
    // Another workspace's id sees, changes and removes nothing.
    assert!(s.factors.passkeys(other, user.id).await.unwrap().is_empty());
    s.factors
        .update_passkey(other, first.id, &[0; 8], at(5))
        .await
        .unwrap();
    assert!(!s.factors.delete_passkey(other, user.id, first.id).await.unwrap());
    assert!(
        !s.factors
            .delete_passkey(ws, other_user.id, first.id)
            .await
            .unwrap()
    );
    assert_eq!(s.factors.passkeys(ws, user.id).await.unwrap()[0], first);
    s.factors
        .update_passkey(ws, first.id, &[7; 8], at(5))
        .await
        .unwrap();
    let updated = &s.factors.passkeys(ws, user.id).await.unwrap()[0];
    assert_eq!(updated.sealed, vec![7; 8]);
    assert_eq!(updated.last_used_at, Some(at(5)));
    assert!(s.factors.delete_passkey(ws, user.id, second.id).await.unwrap());
    assert_eq!(s.factors.passkeys(ws, user.id).await.unwrap().len(), 1);

    // Ceremonies are taken once, also when eight answers race.
    let ceremony = |hash: u8, purpose: CeremonyPurpose, expires: i64| WebauthnCeremony {
        ceremony_hash: vec![hash; 32],
        workspace_id: ws,
        user_id: Some(user.id),
        purpose,
        state_sealed: vec![4; 64],
        created_at: at(0),
        expires_at: at(expires),
    };
    s.ceremonies
        .insert_ceremony(&ceremony(1, CeremonyPurpose::SignIn, 300))
        .await
        .unwrap();
    let takes = (0..8).map(|_| {
        let login = s.ceremonies.clone();
        async move {
            login
                .take_ceremony(ws, &[1; 32], CeremonyPurpose::SignIn, at(10))
                .await
                .unwrap()
        }
    });
    let taken: Vec<_> = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0], ceremony(1, CeremonyPurpose::SignIn, 300));
    // A ceremony asked for another purpose, or after it expired, is refused and spent.
    s.ceremonies
        .insert_ceremony(&ceremony(2, CeremonyPurpose::Register, 300))
        .await
        .unwrap();
    assert!(
        s.ceremonies
            .take_ceremony(ws, &[2; 32], CeremonyPurpose::SecondFactor, at(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.ceremonies
            .take_ceremony(ws, &[2; 32], CeremonyPurpose::Register, at(10))
            .await
            .unwrap()
            .is_none()
    );
    s.ceremonies
        .insert_ceremony(&ceremony(3, CeremonyPurpose::Register, 300))
        .await
        .unwrap();
    assert!(
        s.ceremonies
            .take_ceremony(ws, &[3; 32], CeremonyPurpose::Register, at(300))
            .await
            .unwrap()
            .is_none()
    );
    // Another workspace cannot take it; the sweeper removes expired ones.
    s.ceremonies
        .insert_ceremony(&ceremony(4, CeremonyPurpose::SignIn, 300))
        .await
        .unwrap();
    assert!(
        s.ceremonies
            .take_ceremony(other, &[4; 32], CeremonyPurpose::SignIn, at(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.browsers.purge_login_state(at(301)).await.unwrap() >= 1);
    assert!(
        s.ceremonies
            .take_ceremony(ws, &[4; 32], CeremonyPurpose::SignIn, at(10))
            .await
            .unwrap()
            .is_none()
    );
}

// ---- Management changes and the audit log ---------------------------------------------------------

/// Management change sets as core's `commit` makes them: each workspace's keys (created on first use,
/// under a master key of this test) chain the events appended with the changes.
struct Manage<'a> {
    s: &'a Stores,
    keys: KeyService,
}

impl<'a> Manage<'a> {
    fn new(s: &'a Stores) -> Self {
        let (master, _) = secureflows_crypto::MasterKey::generate().unwrap();
        Manage {
            s,
            keys: KeyService::new(master, s.keyring.clone(), 100),
        }
    }

    async fn keys(&self, ws: WorkspaceId) -> Arc<WorkspaceKeys> {
        match self.keys.workspace_keys(ws, false).await {
            Err(Error::NotFound(_)) => {
                self.keys.create_workspace_keys(ws, at(0)).await.unwrap();
                self.keys.workspace_keys(ws, false).await.unwrap()
            }
            keys => keys.unwrap(),
        }
    }

    /// Applies `changes` to `ws` at `at(secs)` with `events`, sealed as `actor`'s.
    async fn apply_as(
        &self,
        ws: WorkspaceId,
        actor: &Actor,
        changes: Vec<Change>,
        events: Vec<NewEvent>,
        secs: i64,
    ) -> secureflows_core::Result<()> {
        let keys = self.keys(ws).await;
        let events = events
            .into_iter()
            .map(|e| audit::seal_event(&keys, ws, actor, e, at(secs)).unwrap())
            .collect();
        self.s
            .audit
            .apply(ChangeSet {
                workspace: ws,
                changes,
                events,
                chain: keys,
                now: at(secs),
            })
            .await
    }

    /// Applies `changes` to `ws` at `at(secs)` with one operator's event.
    async fn apply(&self, ws: WorkspaceId, changes: Vec<Change>, secs: i64) -> secureflows_core::Result<()> {
        let event = NewEvent::new("test.change", "workspace", ws);
        self.apply_as(ws, &Actor::operator(), changes, vec![event], secs)
            .await
    }
}

/// The newest invalidation's sequence number (0 if none).
async fn last_invalidation(s: &Stores) -> i64 {
    let all = s.coord.invalidations_after(0, 100_000).await.unwrap();
    all.last().map_or(0, |(seq, _)| *seq)
}

/// The invalidations published after `*after`; moves `*after` past them.
async fn published(s: &Stores, after: &mut i64) -> Vec<Invalidation> {
    let new = s.coord.invalidations_after(*after, 100_000).await.unwrap();
    if let Some((seq, _)) = new.last() {
        *after = *seq;
    }
    new.into_iter().map(|(_, i)| i).collect()
}

fn is_not_found<T: std::fmt::Debug>(result: secureflows_core::Result<T>) -> bool {
    matches!(result, Err(Error::NotFound(_)))
}

const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const PHC2: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI";

/// A member inserted through a change set.
fn member(ws: WorkspaceId, role: Role, email: u8) -> User {
    User {
        role,
        ..new_user(ws, email).user
    }
}

/// Three events in `a` (a set at 10 by the member `user` with two, a set at 20 by an operator with
/// one) and one in `b` (at 30).
async fn record_three_events(m: &Manage<'_>, a: WorkspaceId, b: WorkspaceId, user: UserId) {
    let member_actor = Actor {
        kind: ActorKind::User,
        id: Some(user),
        ..Actor::operator()
    };
    m.apply_as(
        a,
        &member_actor,
        vec![Change::RenameWorkspace("A1".into())],
        vec![
            NewEvent::new("workspace.rename", "workspace", a),
            NewEvent::new("user.role.change", "user", user),
        ],
        10,
    )
    .await
    .unwrap();
    m.apply_as(
        a,
        &Actor::operator(),
        Vec::new(),
        vec![NewEvent::new("user.lock", "user", user)],
        20,
    )
    .await
    .unwrap();
    m.apply(b, Vec::new(), 30).await.unwrap();
}

/// `list_events`: a workspace's events newest first, filtered by time, actor, action (exact, or a
/// prefix ending in `.`) and resource, and paged by sequence number.
async fn audit_event_listings(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, user) = tenant(s).await;
    let (b, _, _) = tenant(s).await;
    record_three_events(&m, a, b, user.id).await;
    let chain = s.audit.chain_after(a, 0, 100).await.unwrap();
    let b_chain = s.audit.chain_after(b, 0, 100).await.unwrap();
    let seqs = |events: Vec<audit::StoredEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let list = |filter: EventFilter, limit: u32| async move {
        seqs(s.audit.list_events(a, &filter, limit).await.unwrap())
    };
    let all = s
        .audit
        .list_events(a, &EventFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(all, chain.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(list(EventFilter::default(), 2).await, [3, 2]);
    let filter = |f: fn(&mut EventFilter)| {
        let mut filter = EventFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(list(filter(|f| f.before_seq = Some(3)), 100).await, [2, 1]);
    assert_eq!(
        list(filter(|f| f.action = Some("user.".into())), 100).await,
        [3, 2]
    );
    assert_eq!(
        list(filter(|f| f.action = Some("user.lock".into())), 100).await,
        [3]
    );
    assert!(
        list(filter(|f| f.action = Some("user".into())), 100)
            .await
            .is_empty(),
        "an action without a dot is exact"
    );
    assert_eq!(list(filter(|f| f.since = Some(at(20))), 100).await, [3]);
    assert_eq!(list(filter(|f| f.until = Some(at(20))), 100).await, [2, 1]);
    let by_actor = EventFilter {
        actor: Some(user.id),
        ..EventFilter::default()
    };
    assert_eq!(list(by_actor, 100).await, [2, 1]);
    let by_resource = EventFilter {
        resource: Some(user.id.to_string()),
        ..EventFilter::default()
    };
    assert_eq!(list(by_resource, 100).await, [3, 2]);
    assert_eq!(
        s.audit
            .list_events(b, &EventFilter::default(), 100)
            .await
            .unwrap(),
        b_chain
    );
}

/// Events are chained per workspace with the set that records them: sequence numbers from 1, each
/// event linked to the one before under the workspace's index key, the head recorded; a failed set
/// appends nothing; concurrent sets are serialised; another workspace's chain is its own and goes with
/// the workspace.
async fn audit_chain(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, user) = tenant(s).await;
    let (b, _, _) = tenant(s).await;
    assert_eq!(s.audit.chain_head(a).await.unwrap(), None);
    assert!(s.audit.chained_workspaces().await.unwrap().is_empty());

    record_three_events(&m, a, b, user.id).await;

    // The chain: in order, linked, each hash the keyed hash of its event and predecessor.
    let keys = m.keys(a).await;
    let chain = s.audit.chain_after(a, 0, 100).await.unwrap();
    assert_eq!(chain.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        chain.iter().map(|e| e.event.action.as_str()).collect::<Vec<_>>(),
        ["workspace.rename", "user.role.change", "user.lock"]
    );
    assert_eq!(chain[0].prev_hash, audit::GENESIS);
    for pair in chain.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let mut verifier = ChainVerifier::new(&keys);
    for e in &chain {
        assert_eq!(e.workspace_id, a);
        assert_eq!(e.hash, audit::link(&keys, a, e.seq, &e.prev_hash, &e.event));
        verifier.feed(e);
    }
    assert!(verifier.faults.is_empty(), "{:?}", verifier.faults);
    assert_eq!(
        (
            chain[0].event.actor_kind,
            chain[0].event.actor_id,
            chain[0].event.at
        ),
        (ActorKind::User, Some(user.id), at(10))
    );
    assert_eq!(
        (chain[2].event.actor_kind, chain[2].event.actor_id),
        (ActorKind::Operator, None)
    );
    assert!(
        audit::open_details(&keys, &chain[1]).is_ok(),
        "details kept as sealed"
    );
    assert_eq!(
        s.audit.chain_head(a).await.unwrap(),
        Some((3, chain[2].hash.clone()))
    );
    assert_eq!(s.audit.chain_after(a, 1, 1).await.unwrap(), chain[1..2]);
    assert!(s.audit.chain_after(a, 3, 100).await.unwrap().is_empty());

    // Another workspace's chain is its own; an unknown workspace has none.
    let b_chain = s.audit.chain_after(b, 0, 100).await.unwrap();
    assert_eq!(b_chain.len(), 1);
    assert_eq!((b_chain[0].seq, b_chain[0].workspace_id), (1, b));
    assert_eq!(b_chain[0].prev_hash, audit::GENESIS);
    assert_eq!(
        s.audit.chain_head(b).await.unwrap(),
        Some((1, b_chain[0].hash.clone()))
    );
    let nobody = WorkspaceId::new();
    assert!(s.audit.chain_after(nobody, 0, 100).await.unwrap().is_empty());
    assert_eq!(s.audit.chain_head(nobody).await.unwrap(), None);
    assert!(
        s.audit
            .list_events(nobody, &EventFilter::default(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let mut chained = s.audit.chained_workspaces().await.unwrap();
    chained.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(chained, expected);

    // A set that fails appends nothing and changes nothing.
    assert!(is_not_found(
        m.apply_as(
            a,
            &Actor::operator(),
            vec![
                Change::RenameWorkspace("A2".into()),
                Change::DeleteUser(UserId::new())
            ],
            vec![NewEvent::new("user.delete", "user", user.id)],
            40,
        )
        .await
    ));
    assert_eq!(
        s.audit.chain_head(a).await.unwrap(),
        Some((3, chain[2].hash.clone()))
    );
    assert_eq!(s.workspaces.find_workspace(a).await.unwrap().unwrap().name, "A1");

    // Concurrent sets of one workspace are serialised: every event gets the next sequence number.
    let cli = Actor::operator();
    let sets = (0..8).map(|n| {
        m.apply_as(
            a,
            &cli,
            Vec::new(),
            vec![NewEvent::new("token.issue", "user", n)],
            45,
        )
    });
    for result in futures_util::future::join_all(sets).await {
        result.unwrap();
    }
    let chain = s.audit.chain_after(a, 0, 100).await.unwrap();
    assert_eq!(
        chain.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    let mut verifier = ChainVerifier::new(&keys);
    for e in &chain {
        verifier.feed(e);
    }
    assert!(verifier.faults.is_empty(), "{:?}", verifier.faults);
    assert_eq!(
        s.audit.chain_head(a).await.unwrap(),
        Some((11, chain[10].hash.clone()))
    );

    // The instance has a chain of its own.
    m.apply(audit::INSTANCE, Vec::new(), 50).await.unwrap();
    assert!(
        s.audit
            .chained_workspaces()
            .await
            .unwrap()
            .contains(&audit::INSTANCE)
    );
    assert_eq!(s.audit.chain_head(audit::INSTANCE).await.unwrap().unwrap().0, 1);

    // A deleted workspace's chain goes with it; the others stay.
    s.workspaces.delete_workspace(b).await.unwrap();
    assert_eq!(s.audit.chain_head(b).await.unwrap(), None);
    assert!(s.audit.chain_after(b, 0, 100).await.unwrap().is_empty());
    let chained = s.audit.chained_workspaces().await.unwrap();
    assert!(!chained.contains(&b) && chained.contains(&a), "{chained:?}");
    assert_eq!(s.audit.chain_after(a, 0, 100).await.unwrap().len(), 11);
}

/// InsertWorkspace, RenameWorkspace, SetPlan, SetLoginPolicy and SetBranding change the set's workspace
/// only, publish its `Workspace` invalidation, and fail the set for a workspace that is not there.
async fn workspace_changes(s: &Stores) {
    let m = Manage::new(s);
    let mut cursor = last_invalidation(s).await;
    let a = workspace(Plan::free());
    m.apply(a.id, vec![Change::InsertWorkspace(a.clone())], 0)
        .await
        .unwrap();
    assert_eq!(s.workspaces.find_workspace(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(published(s, &mut cursor).await, [Invalidation::Workspace(a.id)]);
    let b = workspace(Plan::base());
    s.workspaces.insert_workspace(&b).await.unwrap();
    cursor = last_invalidation(s).await;
    // A workspace other than the set's is not inserted; an id is inserted once.
    let stray = workspace(Plan::free());
    assert!(is_not_found(
        m.apply(a.id, vec![Change::InsertWorkspace(stray.clone())], 0)
            .await
    ));
    assert_eq!(s.workspaces.find_workspace(stray.id).await.unwrap(), None);
    assert!(
        m.apply(a.id, vec![Change::InsertWorkspace(a.clone())], 0)
            .await
            .is_err()
    );
    assert!(is_not_found(
        m.apply(a.id, vec![Change::InsertWorkspace(b.clone())], 0).await
    ));

    let policy = LoginPolicy {
        password: PasswordPolicy::Strict,
        mfa: MfaRequirement::Admins,
        signup: SignupMode::VerifyFirst,
    };
    let branding = Branding {
        color: Some("#2457c5".into()),
        logo_url: Some("https://cdn.example/logo.png".into()),
    };
    m.apply(
        a.id,
        vec![
            Change::RenameWorkspace("Renamed".into()),
            Change::SetPlan(Plan::pro()),
            Change::SetLoginPolicy(policy),
            Change::SetBranding(branding.clone()),
        ],
        5,
    )
    .await
    .unwrap();
    let changed = Workspace {
        name: "Renamed".into(),
        plan: Plan::pro(),
        login_policy: policy,
        branding: branding.clone(),
        updated_at: at(5),
        ..a.clone()
    };
    assert_eq!(
        s.workspaces.find_workspace(a.id).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(s.workspaces.find_workspace(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(
        published(s, &mut cursor).await,
        [Invalidation::Workspace(a.id); 4]
    );
    m.apply(a.id, vec![Change::SetBranding(Branding::default())], 6)
        .await
        .unwrap();
    assert_eq!(
        s.workspaces.find_workspace(a.id).await.unwrap().unwrap().branding,
        Branding::default()
    );
    assert_eq!(published(s, &mut cursor).await, [Invalidation::Workspace(a.id)]);

    // A workspace that is not there fails the set, whatever the change.
    let ghost = WorkspaceId::new();
    for change in [
        Change::RenameWorkspace("Ghost".into()),
        Change::SetPlan(Plan::pro()),
        Change::SetLoginPolicy(policy),
        Change::SetBranding(branding.clone()),
    ] {
        assert!(is_not_found(m.apply(ghost, vec![change], 7).await));
    }
    assert_eq!(s.workspaces.find_workspace(ghost).await.unwrap(), None);
    assert_eq!(s.workspaces.find_workspace(b.id).await.unwrap(), Some(b.clone()));
    assert!(
        published(s, &mut cursor).await.is_empty(),
        "a failed set publishes nothing"
    );

    // A workspace inserted with a sign-in policy and branding keeps both.
    let styled = Workspace {
        login_policy: policy,
        branding: branding.clone(),
        ..workspace(Plan::base())
    };
    m.apply(styled.id, vec![Change::InsertWorkspace(styled.clone())], 0)
        .await
        .unwrap();
    let found = s.workspaces.find_workspace(styled.id).await.unwrap().unwrap();
    assert_eq!(found.login_policy, policy);
    // The branding is stored with the workspace (it once was not: only `SetBranding` wrote it).
    assert_eq!(found.branding, branding);
    assert_eq!(
        (found.name, found.plan, found.created_at),
        (styled.name, styled.plan, styled.created_at)
    );
}

/// InsertApplication, UpdateApplication, SetApplicationSecret and DeleteApplication act on the set's
/// workspace's applications only and publish `Application` invalidations; deleting one takes its vault
/// values and login sessions, and nothing of another workspace.
async fn application_changes(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, user) = tenant(s).await;
    let (b, b_app, b_user) = tenant(s).await;
    let mut cursor = last_invalidation(s).await;
    let app = application(a, "https://idp.example", "new-app", &["https://new.example"]);
    m.apply(a, vec![Change::InsertApplication(app.clone())], 1)
        .await
        .unwrap();
    assert_eq!(
        s.applications.find_application(app.id).await.unwrap(),
        Some(app.clone())
    );
    let stray = application(b, "https://idp.example", "stray", &[]);
    assert!(is_not_found(
        m.apply(a, vec![Change::InsertApplication(stray.clone())], 1)
            .await
    ));
    assert_eq!(s.applications.find_application(stray.id).await.unwrap(), None);

    let updated = Application {
        name: "Renamed".into(),
        trust: None,
        allowed_origins: vec!["https://other.example".into()],
        data_ttl: Duration::from_secs(3600),
        token_ttl: Duration::from_secs(300),
        redirect_uris: vec!["https://app.example/callback".into()],
        post_logout_uris: vec!["https://app.example/bye".into()],
        allow_anonymous: true,
        ..app.clone()
    };
    m.apply(a, vec![Change::UpdateApplication(updated.clone())], 2)
        .await
        .unwrap();
    assert_eq!(
        s.applications.find_application(app.id).await.unwrap(),
        Some(Application {
            updated_at: at(2),
            ..updated.clone()
        })
    );
    m.apply(a, vec![Change::SetApplicationSecret(app.id, vec![7; 32])], 3)
        .await
        .unwrap();
    let found = s.applications.find_application(app.id).await.unwrap().unwrap();
    assert_eq!((found.secret_hash, found.updated_at), (Some(vec![7; 32]), at(3)));
    assert_eq!(
        published(s, &mut cursor).await,
        [Invalidation::Application(app.id); 3],
        "one per change applied, none for a failed set"
    );
    // A public client holds no secret.
    let public = Application {
        kind: ApplicationKind::Browser,
        ..application(a, "https://idp.example", "public", &[])
    };
    s.applications.insert_application(&public).await.unwrap();
    cursor = last_invalidation(s).await;
    assert!(is_not_found(
        m.apply(a, vec![Change::SetApplicationSecret(public.id, vec![7; 32])], 3)
            .await
    ));
    assert_eq!(
        s.applications
            .find_application(public.id)
            .await
            .unwrap()
            .unwrap()
            .secret_hash,
        None
    );

    // Another workspace's application named under this one: not found, untouched.
    let hijack = Application {
        name: "hijacked".into(),
        ..b_app.clone()
    };
    for change in [
        Change::UpdateApplication(hijack),
        Change::SetApplicationSecret(b_app.id, vec![1; 32]),
        Change::DeleteApplication(b_app.id),
    ] {
        assert!(is_not_found(m.apply(a, vec![change], 4).await));
    }
    assert_eq!(
        s.applications.find_application(b_app.id).await.unwrap(),
        Some(b_app.clone())
    );
    assert!(
        published(s, &mut cursor).await.is_empty(),
        "failed sets publish nothing"
    );

    // Deleting takes the application's vault values and login sessions, and nothing of another.
    let sessions = [
        session(a, app.id, user.id, 900),
        session(b, b_app.id, b_user.id, 900),
    ];
    for sess in &sessions {
        s.sessions
            .insert_session_within_limits(sess, limits(), at(0))
            .await
            .unwrap();
    }
    s.vault.put_value(&write(a, app.id, user.id, 1, 0)).await.unwrap();
    s.vault
        .put_value(&write(b, b_app.id, b_user.id, 1, 0))
        .await
        .unwrap();
    m.apply(a, vec![Change::DeleteApplication(app.id)], 5)
        .await
        .unwrap();
    assert_eq!(s.applications.find_application(app.id).await.unwrap(), None);
    assert!(
        s.vault
            .list_values(a, app.id, user.id, at(6))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.sessions.find_session(a, sessions[0].id).await.unwrap(), None);
    assert!(
        s.sessions
            .find_session(b, sessions[1].id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.vault
            .list_values(b, b_app.id, b_user.id, at(6))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        published(s, &mut cursor)
            .await
            .contains(&Invalidation::Application(app.id))
    );
    assert!(is_not_found(
        m.apply(a, vec![Change::DeleteApplication(app.id)], 6).await
    ));
}

/// InsertUser, ExpectRole, SetRole, SetStatus, RaiseRevision and DeleteUser act on the set's
/// workspace's users only; each change of role, status or revision raises the revision, ends the
/// user's login sessions and publishes a `User` invalidation.
async fn member_changes(s: &Stores) {
    let m = Manage::new(s);
    let (a, app, _) = tenant(s).await;
    let (b, _, b_user) = tenant(s).await;
    let mut cursor = last_invalidation(s).await;
    let admin = member(a, Role::Admin, 40);
    m.apply(a, vec![Change::InsertUser(admin.clone())], 1)
        .await
        .unwrap();
    assert_eq!(s.users.find_user(a, admin.id).await.unwrap(), Some(admin.clone()));
    assert_eq!(published(s, &mut cursor).await, [Invalidation::User(a, admin.id)]);
    // One address, one member; a member of another workspace is not inserted here.
    let same_address = member(a, Role::User, 40);
    assert!(matches!(
        m.apply(a, vec![Change::InsertUser(same_address.clone())], 1)
            .await,
        Err(Error::Conflict("member-exists"))
    ));
    assert_eq!(s.users.find_user(a, same_address.id).await.unwrap(), None);
    let stray = member(b, Role::User, 41);
    assert!(is_not_found(
        m.apply(a, vec![Change::InsertUser(stray.clone())], 1).await
    ));
    assert_eq!(s.users.find_user(b, stray.id).await.unwrap(), None);

    // ExpectRole guards the set.
    m.apply(a, vec![Change::ExpectRole(admin.id, Role::Admin)], 2)
        .await
        .unwrap();
    assert!(matches!(
        m.apply(
            a,
            vec![
                Change::RaiseRevision(admin.id),
                Change::ExpectRole(admin.id, Role::User)
            ],
            2
        )
        .await,
        Err(Error::Conflict("role-changed"))
    ));
    assert_eq!(s.users.find_user(a, admin.id).await.unwrap().unwrap().revision, 1);

    // Role, status and revision: each raises the revision and ends the sessions.
    let steps = [
        (
            Change::SetRole(admin.id, Role::User),
            3,
            Role::User,
            UserStatus::Active,
        ),
        (
            Change::SetStatus(admin.id, UserStatus::Locked),
            4,
            Role::User,
            UserStatus::Locked,
        ),
        (
            Change::SetStatus(admin.id, UserStatus::Active),
            5,
            Role::User,
            UserStatus::Active,
        ),
        (Change::RaiseRevision(admin.id), 6, Role::User, UserStatus::Active),
    ];
    for (change, t, role, status) in steps {
        let open = session(a, app.id, admin.id, 900);
        s.sessions
            .insert_session_within_limits(&open, limits(), at(0))
            .await
            .unwrap();
        m.apply(a, vec![change], t).await.unwrap();
        let expected = User {
            role,
            status,
            revision: t - 1,
            updated_at: at(t),
            ..admin.clone()
        };
        assert_eq!(s.users.find_user(a, admin.id).await.unwrap(), Some(expected));
        assert_eq!(
            s.sessions
                .find_session(a, open.id)
                .await
                .unwrap()
                .unwrap()
                .ended_at,
            Some(at(t))
        );
        assert_eq!(published(s, &mut cursor).await, [Invalidation::User(a, admin.id)]);
    }

    // Another workspace's user named under this one: not found, untouched.
    for change in [
        Change::ExpectRole(b_user.id, Role::User),
        Change::SetRole(b_user.id, Role::Admin),
        Change::SetStatus(b_user.id, UserStatus::Locked),
        Change::RaiseRevision(b_user.id),
        Change::DeleteUser(b_user.id),
    ] {
        assert!(is_not_found(m.apply(a, vec![change], 7).await));
    }
    assert_eq!(
        s.users.find_user(b, b_user.id).await.unwrap(),
        Some(b_user.clone())
    );
    assert!(published(s, &mut cursor).await.is_empty());

    // Deleting takes the user's identities, sessions and vault values.
    let doomed = new_user(a, 42);
    s.users.insert_user(&doomed).await.unwrap();
    let open = session(a, app.id, doomed.user.id, 900);
    s.sessions
        .insert_session_within_limits(&open, limits(), at(0))
        .await
        .unwrap();
    s.vault
        .put_value(&write(a, app.id, doomed.user.id, 1, 0))
        .await
        .unwrap();
    m.apply(a, vec![Change::DeleteUser(doomed.user.id)], 8)
        .await
        .unwrap();
    assert_eq!(s.users.find_user(a, doomed.user.id).await.unwrap(), None);
    assert_eq!(s.users.find_user_by_identity(a, &[42; 32]).await.unwrap(), None);
    assert_eq!(s.sessions.find_session(a, open.id).await.unwrap(), None);
    assert!(
        s.vault
            .list_user_values(a, doomed.user.id, at(9))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        published(s, &mut cursor).await,
        [Invalidation::User(a, doomed.user.id)]
    );
    assert!(is_not_found(
        m.apply(a, vec![Change::DeleteUser(doomed.user.id)], 9).await
    ));
}

/// SetPassword, LinkIdentity and UpgradeUser change the set's workspace's users only.
async fn account_changes(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, user) = tenant(s).await;
    let (b, _, b_user) = tenant(s).await;
    let mut cursor = last_invalidation(s).await;

    m.apply(a, vec![Change::SetPassword(user.id, PHC.into())], 1)
        .await
        .unwrap();
    assert_eq!(
        s.passwords.find_password(a, user.id).await.unwrap().as_deref(),
        Some(PHC)
    );
    m.apply(a, vec![Change::SetPassword(user.id, PHC2.into())], 2)
        .await
        .unwrap();
    assert_eq!(
        s.passwords.find_password(a, user.id).await.unwrap().as_deref(),
        Some(PHC2)
    );
    assert!(is_not_found(
        m.apply(a, vec![Change::SetPassword(b_user.id, PHC.into())], 2)
            .await
    ));
    assert_eq!(s.passwords.find_password(b, b_user.id).await.unwrap(), None);
    assert_eq!(s.passwords.find_password(a, b_user.id).await.unwrap(), None);

    // Another identity signs the same user in; an identity belongs to one user.
    let identity = |n: u8| NewIdentity {
        index: vec![n; 32],
        sealed: vec![n; 40],
    };
    m.apply(a, vec![Change::LinkIdentity(user.id, identity(50))], 3)
        .await
        .unwrap();
    let linked: Vec<Vec<u8>> = s
        .users
        .list_identities(a, user.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(i, _)| i.index)
        .collect();
    assert_eq!(linked, [vec![7; 32], vec![50; 32]], "oldest first");
    for index in [[50; 32], [7; 32]] {
        assert_eq!(
            s.users
                .find_user_by_identity(a, &index)
                .await
                .unwrap()
                .map(|u| u.id),
            Some(user.id)
        );
    }
    let second = new_user(a, 8);
    s.users.insert_user(&second).await.unwrap();
    assert!(
        m.apply(a, vec![Change::LinkIdentity(second.user.id, identity(50))], 3)
            .await
            .is_err()
    );
    assert_eq!(
        s.users
            .find_user_by_identity(a, &[50; 32])
            .await
            .unwrap()
            .map(|u| u.id),
        Some(user.id)
    );
    assert!(is_not_found(
        m.apply(a, vec![Change::LinkIdentity(b_user.id, identity(51))], 3)
            .await
    ));
    assert_eq!(s.users.find_user_by_identity(a, &[51; 32]).await.unwrap(), None);
    assert_eq!(s.users.find_user_by_identity(b, &[51; 32]).await.unwrap(), None);
    assert!(
        published(s, &mut cursor).await.is_empty(),
        "nothing cached changed"
    );

    // An anonymous user becomes a user with an address; the revision moves.
    let anon = |ws: WorkspaceId, n: u8| {
        let mut new = new_user(ws, n);
        new.user.role = Role::Anon;
        new.user.email_sealed = None;
        new.user.email_index = None;
        new
    };
    let guest = anon(a, 60);
    s.users.insert_user(&guest).await.unwrap();
    let upgrade = |user: UserId, n: u8| Change::UpgradeUser {
        user,
        email_sealed: vec![n; 10],
        email_index: vec![n; 32],
    };
    m.apply(a, vec![upgrade(guest.user.id, 61)], 4).await.unwrap();
    assert_eq!(
        s.users.find_user(a, guest.user.id).await.unwrap(),
        Some(User {
            role: Role::User,
            revision: 2,
            email_sealed: Some(vec![61; 10]),
            email_index: Some(vec![61; 32]),
            updated_at: at(4),
            ..guest.user.clone()
        })
    );
    assert_eq!(
        published(s, &mut cursor).await,
        [Invalidation::User(a, guest.user.id)]
    );
    assert!(
        is_not_found(m.apply(a, vec![upgrade(guest.user.id, 62)], 5).await),
        "no longer anonymous"
    );
    assert!(is_not_found(m.apply(a, vec![upgrade(user.id, 62)], 5).await));
    // A taken address is refused.
    let other_guest = anon(a, 63);
    s.users.insert_user(&other_guest).await.unwrap();
    assert!(matches!(
        m.apply(a, vec![upgrade(other_guest.user.id, 61)], 5).await,
        Err(Error::Conflict("member-exists"))
    ));
    assert_eq!(
        s.users.find_user(a, other_guest.user.id).await.unwrap(),
        Some(other_guest.user.clone())
    );
    // Another workspace's guest is not upgraded from here.
    let b_guest = anon(b, 64);
    s.users.insert_user(&b_guest).await.unwrap();
    assert!(is_not_found(
        m.apply(a, vec![upgrade(b_guest.user.id, 65)], 5).await
    ));
    assert_eq!(
        s.users.find_user(b, b_guest.user.id).await.unwrap(),
        Some(b_guest.user.clone())
    );
    assert!(published(s, &mut cursor).await.is_empty());
}

/// InsertSession and EndSession: a console session is inserted in the set's workspace; ending one ends
/// its refresh tokens and publishes a `Session` invalidation; another workspace's session is neither
/// inserted nor ended from here.
async fn session_changes(s: &Stores) {
    let m = Manage::new(s);
    let (a, app, user) = tenant(s).await;
    let (b, b_app, b_user) = tenant(s).await;
    let mut cursor = last_invalidation(s).await;
    let console = LoginSession {
        application_id: None,
        ..session(a, app.id, user.id, 900)
    };
    let app_session = session(a, app.id, user.id, 900);
    m.apply(
        a,
        vec![
            Change::InsertSession(console.clone()),
            Change::InsertSession(app_session.clone()),
        ],
        1,
    )
    .await
    .unwrap();
    assert_eq!(
        s.sessions.find_session(a, console.id).await.unwrap(),
        Some(console.clone())
    );
    assert_eq!(
        published(s, &mut cursor).await,
        [
            Invalidation::Session(a, console.id),
            Invalidation::Session(a, app_session.id)
        ]
    );
    let stray = session(b, b_app.id, b_user.id, 900);
    assert!(is_not_found(
        m.apply(a, vec![Change::InsertSession(stray.clone())], 1).await
    ));
    assert_eq!(s.sessions.find_session(b, stray.id).await.unwrap(), None);
    let foreign_user = session(a, app.id, b_user.id, 900);
    assert!(
        m.apply(a, vec![Change::InsertSession(foreign_user.clone())], 1)
            .await
            .is_err(),
        "a session of another workspace's user"
    );
    assert_eq!(s.sessions.find_session(a, foreign_user.id).await.unwrap(), None);

    let refresh = RefreshToken {
        token_hash: vec![8; 32],
        workspace_id: a,
        family_id: FamilyId::new(),
        application_id: app.id,
        user_id: user.id,
        login_session_id: app_session.id,
        scope: "openid".into(),
        auth_time: at(0),
        amr: vec!["pwd".into()],
        created_at: at(0),
        expires_at: at(7200),
        rotated_at: None,
        revoked_at: None,
    };
    s.grants.insert_refresh(&refresh).await.unwrap();
    m.apply(a, vec![Change::EndSession(app_session.id)], 2)
        .await
        .unwrap();
    assert_eq!(
        s.sessions
            .find_session(a, app_session.id)
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        Some(at(2))
    );
    assert_eq!(
        s.grants
            .find_refresh(a, &[8; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(at(2))
    );
    assert!(
        published(s, &mut cursor)
            .await
            .contains(&Invalidation::Session(a, app_session.id))
    );
    assert_eq!(
        s.sessions
            .find_session(a, console.id)
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        None
    );

    // Another workspace's session is not ended from here.
    let b_session = session(b, b_app.id, b_user.id, 900);
    s.sessions
        .insert_session_within_limits(&b_session, limits(), at(0))
        .await
        .unwrap();
    let _ = m.apply(a, vec![Change::EndSession(b_session.id)], 3).await;
    assert_eq!(
        s.sessions.find_session(b, b_session.id).await.unwrap(),
        Some(b_session.clone())
    );
}

fn invite(ws: WorkspaceId, by: UserId, n: u8, expires: i64) -> Invite {
    Invite {
        id: InviteId::new(),
        workspace_id: ws,
        email_sealed: vec![n; 12],
        email_index: vec![n; 32],
        role: Role::Admin,
        token_hash: vec![n; 32],
        invited_by: by,
        created_at: at(0),
        expires_at: at(expires),
        revoked_at: None,
        accepted_at: None,
    }
}

/// InsertInvite, RevokeInvite and AcceptInvite, and the invitation look-ups: by id, by token, listed
/// in pages; a pending invitation is revoked or accepted once, an expired one not at all; another
/// workspace's invitation is neither found nor changed from here.
async fn invites(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, inviter) = tenant(s).await;
    let (b, _, b_inviter) = tenant(s).await;
    let mut mine = vec![
        invite(a, inviter.id, 1, 3600),
        invite(a, inviter.id, 2, 3600),
        invite(a, inviter.id, 3, 10),
    ];
    m.apply(a, mine.iter().cloned().map(Change::InsertInvite).collect(), 0)
        .await
        .unwrap();
    let theirs = invite(b, b_inviter.id, 4, 3600);
    m.apply(b, vec![Change::InsertInvite(theirs.clone())], 0)
        .await
        .unwrap();
    let (first, second, expiring) = (mine[0].clone(), mine[1].clone(), mine[2].clone());

    assert_eq!(
        s.invites.find_invite(a, first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.invites.find_invite(b, first.id).await.unwrap(), None);
    assert_eq!(
        s.invites.find_invite_by_token(a, &[1; 32]).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.invites.find_invite_by_token(b, &[1; 32]).await.unwrap(), None);
    assert_eq!(s.invites.find_invite_by_token(a, &[9; 32]).await.unwrap(), None);
    mine.sort_by_key(|i| i.id);
    assert_eq!(s.invites.list_invites(a, None, 10).await.unwrap(), mine);
    assert_eq!(s.invites.list_invites(a, None, 2).await.unwrap(), mine[..2]);
    assert_eq!(
        s.invites.list_invites(a, Some(mine[1].id), 2).await.unwrap(),
        mine[2..]
    );
    assert_eq!(
        s.invites.list_invites(b, None, 10).await.unwrap(),
        std::slice::from_ref(&theirs)
    );
    assert!(
        s.invites
            .list_invites(WorkspaceId::new(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Inserted only under its own workspace; a token is used once.
    let stray = invite(b, b_inviter.id, 5, 3600);
    assert!(is_not_found(
        m.apply(a, vec![Change::InsertInvite(stray.clone())], 0).await
    ));
    assert_eq!(s.invites.find_invite(b, stray.id).await.unwrap(), None);
    assert!(
        m.apply(a, vec![Change::InsertInvite(invite(a, inviter.id, 1, 3600))], 0)
            .await
            .is_err()
    );

    // Revoked once; a revoked invitation is not accepted.
    m.apply(a, vec![Change::RevokeInvite(second.id)], 5)
        .await
        .unwrap();
    assert_eq!(
        s.invites.find_invite(a, second.id).await.unwrap(),
        Some(Invite {
            revoked_at: Some(at(5)),
            ..second.clone()
        })
    );
    assert!(is_not_found(
        m.apply(a, vec![Change::RevokeInvite(second.id)], 6).await
    ));
    assert!(is_not_found(
        m.apply(a, vec![Change::AcceptInvite(second.id)], 6).await
    ));
    // Accepted once; an accepted invitation is not revoked.
    m.apply(a, vec![Change::AcceptInvite(first.id)], 6).await.unwrap();
    assert_eq!(
        s.invites.find_invite(a, first.id).await.unwrap(),
        Some(Invite {
            accepted_at: Some(at(6)),
            ..first.clone()
        })
    );
    assert!(is_not_found(
        m.apply(a, vec![Change::AcceptInvite(first.id)], 7).await
    ));
    assert!(is_not_found(
        m.apply(a, vec![Change::RevokeInvite(first.id)], 7).await
    ));
    // An expired invitation is not accepted.
    assert!(is_not_found(
        m.apply(a, vec![Change::AcceptInvite(expiring.id)], 10).await
    ));
    assert_eq!(
        s.invites.find_invite(a, expiring.id).await.unwrap(),
        Some(expiring)
    );
    // Another workspace's invitation is not revoked or accepted from here.
    for change in [Change::RevokeInvite(theirs.id), Change::AcceptInvite(theirs.id)] {
        assert!(is_not_found(m.apply(a, vec![change], 8).await));
    }
    assert_eq!(s.invites.find_invite(b, theirs.id).await.unwrap(), Some(theirs));
}

/// InsertIdentityProvider and DeleteIdentityProvider, and `identity_providers` (oldest first): each
/// workspace sees and removes its own only.
async fn identity_provider_changes(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, _) = tenant(s).await;
    let (b, _, _) = tenant(s).await;
    let provider = |ws: WorkspaceId, kind: ProviderKind, secret: Option<Vec<u8>>, t: i64| IdentityProvider {
        id: ProviderId::new(),
        workspace_id: ws,
        kind,
        name: format!("{kind:?}"),
        issuer: "https://accounts.example".into(),
        client_id: "client-1".into(),
        client_secret_sealed: secret,
        created_at: at(t),
    };
    assert!(s.providers.identity_providers(a).await.unwrap().is_empty());
    let google = provider(a, ProviderKind::Google, Some(vec![5; 40]), 1);
    let oidc = provider(a, ProviderKind::Oidc, None, 2);
    let theirs = provider(b, ProviderKind::Oidc, None, 0);
    m.apply(
        a,
        vec![
            Change::InsertIdentityProvider(oidc.clone()),
            Change::InsertIdentityProvider(google.clone()),
        ],
        3,
    )
    .await
    .unwrap();
    m.apply(b, vec![Change::InsertIdentityProvider(theirs.clone())], 3)
        .await
        .unwrap();
    assert_eq!(
        s.providers.identity_providers(a).await.unwrap(),
        [google.clone(), oidc.clone()]
    );
    assert_eq!(
        s.providers.identity_providers(b).await.unwrap(),
        std::slice::from_ref(&theirs)
    );

    let stray = provider(b, ProviderKind::Google, None, 4);
    assert!(is_not_found(
        m.apply(a, vec![Change::InsertIdentityProvider(stray)], 4).await
    ));
    assert!(is_not_found(
        m.apply(a, vec![Change::DeleteIdentityProvider(theirs.id)], 4)
            .await
    ));
    assert_eq!(s.providers.identity_providers(b).await.unwrap(), [theirs]);

    m.apply(a, vec![Change::DeleteIdentityProvider(google.id)], 5)
        .await
        .unwrap();
    assert_eq!(s.providers.identity_providers(a).await.unwrap(), [oidc]);
    assert!(is_not_found(
        m.apply(a, vec![Change::DeleteIdentityProvider(google.id)], 6)
            .await
    ));
}

fn operator(n: u8) -> SupportOperator {
    SupportOperator {
        id: UserId::new(),
        email_sealed: vec![n; 12],
        email_index: vec![n; 32],
        revision: 1,
        created_at: at(0),
    }
}

/// InsertSupport and DeleteSupport (instance-level sets, chained in the instance's log), and the
/// SUPPORT look-ups; removing an operator publishes a `Support` invalidation.
async fn support_operators(s: &Stores) {
    let m = Manage::new(s);
    assert!(s.support.list_support().await.unwrap().is_empty());
    let (first, second) = (operator(1), operator(2));
    m.apply(
        audit::INSTANCE,
        vec![
            Change::InsertSupport(first.clone()),
            Change::InsertSupport(second.clone()),
        ],
        1,
    )
    .await
    .unwrap();
    assert_eq!(
        s.support.find_support(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.support.find_support(UserId::new()).await.unwrap(), None);
    assert_eq!(
        s.support.find_support_by_email(&[2; 32]).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(s.support.find_support_by_email(&[9; 32]).await.unwrap(), None);
    let mut both = vec![first.clone(), second.clone()];
    both.sort_by_key(|o| o.id);
    assert_eq!(s.support.list_support().await.unwrap(), both);
    // One operator per address.
    let same_address = SupportOperator {
        id: UserId::new(),
        ..operator(1)
    };
    assert!(
        m.apply(audit::INSTANCE, vec![Change::InsertSupport(same_address)], 2)
            .await
            .is_err()
    );
    assert_eq!(s.support.list_support().await.unwrap().len(), 2);

    let mut cursor = last_invalidation(s).await;
    m.apply(audit::INSTANCE, vec![Change::DeleteSupport(first.id)], 3)
        .await
        .unwrap();
    assert_eq!(s.support.find_support(first.id).await.unwrap(), None);
    assert_eq!(s.support.find_support_by_email(&[1; 32]).await.unwrap(), None);
    assert_eq!(s.support.list_support().await.unwrap(), [second]);
    assert_eq!(published(s, &mut cursor).await, [Invalidation::Support(first.id)]);
    assert!(is_not_found(
        m.apply(audit::INSTANCE, vec![Change::DeleteSupport(first.id)], 4)
            .await
    ));
    // Two sets went through, one event each.
    assert_eq!(s.audit.chain_head(audit::INSTANCE).await.unwrap().unwrap().0, 2);
}

/// A set that leaves the workspace without an active OWNER (demoting, locking or deleting the last
/// one) is refused with `Conflict("last-owner")` and changes nothing; an OWNER of another workspace
/// or a locked OWNER does not count; the check looks at the end of the set.
async fn last_owner_rule(s: &Stores) {
    let m = Manage::new(s);
    let (a, app, user) = tenant(s).await;
    let (b, _, _) = tenant(s).await;
    let owner = member(a, Role::Owner, 30);
    let locked_owner = User {
        status: UserStatus::Locked,
        ..member(a, Role::Owner, 31)
    };
    m.apply(
        a,
        vec![
            Change::InsertUser(owner.clone()),
            Change::InsertUser(locked_owner.clone()),
        ],
        1,
    )
    .await
    .unwrap();
    m.apply(b, vec![Change::InsertUser(member(b, Role::Owner, 32))], 1)
        .await
        .unwrap();
    let open = session(a, app.id, owner.id, 900);
    s.sessions
        .insert_session_within_limits(&open, limits(), at(0))
        .await
        .unwrap();
    let head = s.audit.chain_head(a).await.unwrap();
    let mut cursor = last_invalidation(s).await;

    for change in [
        Change::SetRole(owner.id, Role::Admin),
        Change::SetRole(owner.id, Role::User),
        Change::SetStatus(owner.id, UserStatus::Locked),
        Change::DeleteUser(owner.id),
    ] {
        assert!(matches!(
            m.apply(a, vec![Change::RenameWorkspace("gone".into()), change], 5)
                .await,
            Err(Error::Conflict("last-owner"))
        ));
    }
    assert_eq!(s.users.find_user(a, owner.id).await.unwrap(), Some(owner.clone()));
    assert_eq!(
        s.sessions.find_session(a, open.id).await.unwrap(),
        Some(open.clone())
    );
    assert_eq!(s.workspaces.find_workspace(a).await.unwrap().unwrap().name, "W");
    assert_eq!(s.audit.chain_head(a).await.unwrap(), head);
    assert!(published(s, &mut cursor).await.is_empty());

    // Handing over in one set is allowed, in either order.
    m.apply(
        a,
        vec![
            Change::SetRole(owner.id, Role::Admin),
            Change::SetRole(user.id, Role::Owner),
        ],
        6,
    )
    .await
    .unwrap();
    assert_eq!(
        s.users.find_user(a, owner.id).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert_eq!(
        s.users.find_user(a, user.id).await.unwrap().unwrap().role,
        Role::Owner
    );
    // The new OWNER is now the last one.
    assert!(matches!(
        m.apply(a, vec![Change::DeleteUser(user.id)], 7).await,
        Err(Error::Conflict("last-owner"))
    ));
    // Unlocking the locked OWNER makes another active one; then the first may go.
    m.apply(
        a,
        vec![
            Change::SetStatus(locked_owner.id, UserStatus::Active),
            Change::DeleteUser(user.id),
        ],
        8,
    )
    .await
    .unwrap();
    assert_eq!(s.users.find_user(a, user.id).await.unwrap(), None);

    // Two OWNERs demoting each other at once: the sets are serialised, so one of them stays OWNER.
    m.apply(a, vec![Change::SetRole(owner.id, Role::Owner)], 9)
        .await
        .unwrap();
    let demotions =
        [owner.id, locked_owner.id].map(|id| m.apply(a, vec![Change::SetRole(id, Role::Admin)], 10));
    let outcomes = futures_util::future::join_all(demotions).await;
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|r| matches!(r, Err(Error::Conflict("last-owner"))))
    );
    let owners = s
        .users
        .list_users(a, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.role == Role::Owner && u.status == UserStatus::Active)
        .count();
    assert_eq!(owners, 1);
}

/// E-mail verification and the sign-in failure count, per workspace; EndSignInLockout ends a lockout
/// of the set's workspace's user only, without moving the revision.
async fn email_verification_and_sign_in_failures(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, user) = tenant(s).await;
    let (b, _, b_user) = tenant(s).await;
    assert!(!s.passwords.email_verified(a, user.id).await.unwrap());
    s.passwords.set_email_verified(b, user.id).await.unwrap();
    assert!(!s.passwords.email_verified(a, user.id).await.unwrap());
    s.passwords.set_email_verified(a, user.id).await.unwrap();
    assert!(s.passwords.email_verified(a, user.id).await.unwrap());
    assert!(!s.passwords.email_verified(b, user.id).await.unwrap());
    assert!(!s.passwords.email_verified(b, b_user.id).await.unwrap());

    assert_eq!(s.passwords.sign_in_failures(a, user.id).await.unwrap(), (0, None));
    assert!(is_not_found(s.passwords.sign_in_failures(b, user.id).await));
    for _ in 0..3 {
        s.passwords.begin_attempt(a, user.id, 3, at(0)).await.unwrap();
    }
    assert_eq!(s.passwords.sign_in_failures(a, user.id).await.unwrap(), (3, None));
    assert!(
        s.passwords
            .lock_if_exhausted(a, user.id, 3, at(900))
            .await
            .unwrap()
    );
    assert_eq!(
        s.passwords.sign_in_failures(a, user.id).await.unwrap(),
        (3, Some(at(900)))
    );
    assert_eq!(
        s.passwords.sign_in_failures(b, b_user.id).await.unwrap(),
        (0, None)
    );

    assert!(is_not_found(
        m.apply(b, vec![Change::EndSignInLockout(user.id)], 1).await
    ));
    assert_eq!(
        s.passwords.sign_in_failures(a, user.id).await.unwrap(),
        (3, Some(at(900)))
    );
    m.apply(a, vec![Change::EndSignInLockout(user.id)], 1)
        .await
        .unwrap();
    assert_eq!(s.passwords.sign_in_failures(a, user.id).await.unwrap(), (0, None));
    assert_eq!(s.users.find_user(a, user.id).await.unwrap(), Some(user.clone()));
    assert_eq!(
        s.passwords.begin_attempt(a, user.id, 3, at(2)).await.unwrap(),
        AttemptGate::Proceed
    );
    // Unlocking a locked user ends the sign-in lockout too.
    for _ in 0..2 {
        s.passwords.begin_attempt(a, user.id, 3, at(2)).await.unwrap();
    }
    s.passwords
        .lock_if_exhausted(a, user.id, 3, at(900))
        .await
        .unwrap();
    m.apply(a, vec![Change::SetStatus(user.id, UserStatus::Locked)], 3)
        .await
        .unwrap();
    assert_eq!(
        s.passwords.sign_in_failures(a, user.id).await.unwrap(),
        (3, Some(at(900))),
        "locking keeps the count"
    );
    m.apply(a, vec![Change::SetStatus(user.id, UserStatus::Active)], 4)
        .await
        .unwrap();
    assert_eq!(s.passwords.sign_in_failures(a, user.id).await.unwrap(), (0, None));
}

/// `list_users` pages a workspace's users in id order; `list_user_values` lists a user's unexpired
/// values in every application, without the values; another workspace's id lists nothing.
async fn user_and_value_listings(s: &Stores) {
    let (a, app, first) = tenant(s).await;
    let (b, b_app, b_user) = tenant(s).await;
    let mut users = vec![first.clone()];
    for n in 20..24 {
        let new = new_user(a, n);
        s.users.insert_user(&new).await.unwrap();
        users.push(new.user);
    }
    users.sort_by_key(|u| u.id);
    assert_eq!(s.users.list_users(a, None, 100).await.unwrap(), users);
    assert_eq!(s.users.list_users(a, None, 2).await.unwrap(), users[..2]);
    assert_eq!(
        s.users.list_users(a, Some(users[1].id), 2).await.unwrap(),
        users[2..4]
    );
    assert_eq!(
        s.users.list_users(a, Some(users[3].id), 2).await.unwrap(),
        users[4..]
    );
    assert!(
        s.users
            .list_users(a, Some(users[4].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.users.list_users(b, None, 100).await.unwrap(),
        std::slice::from_ref(&b_user)
    );
    // OWNERs and ADMINs among the users, oldest first, only this workspace's, at most `limit`.
    assert!(s.users.list_admins(a, 10).await.unwrap().is_empty());
    let mut admins = Vec::new();
    for (n, role) in [(30, Role::Owner), (31, Role::Admin), (32, Role::Owner)] {
        let mut new = new_user(a, n);
        new.user.role = role;
        s.users.insert_user(&new).await.unwrap();
        admins.push(new.user);
    }
    let mut in_b = new_user(b, 33);
    in_b.user.role = Role::Owner;
    s.users.insert_user(&in_b).await.unwrap();
    admins.sort_by_key(|u| u.id);
    assert_eq!(s.users.list_admins(a, 10).await.unwrap(), admins);
    assert_eq!(s.users.list_admins(a, 2).await.unwrap(), admins[..2]);
    assert_eq!(s.users.list_admins(b, 10).await.unwrap(), [in_b.user.clone()]);
    assert!(
        s.users
            .list_users(WorkspaceId::new(), None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let second_app = application(a, "https://issuer.example", "second", &[]);
    s.applications.insert_application(&second_app).await.unwrap();
    let other = users.iter().find(|u| u.id != first.id).unwrap();
    for w in [
        write(a, app.id, first.id, 1, 0),
        write(a, second_app.id, first.id, 2, 0),
        write(a, app.id, first.id, 3, -500),
        write(a, app.id, other.id, 4, 0),
        write(b, b_app.id, b_user.id, 5, 0),
    ] {
        s.vault.put_value(&w).await.unwrap();
    }
    let listed = |ws: WorkspaceId, user: UserId, t: i64| async move {
        let mut listed = s.vault.list_user_values(ws, user, at(t)).await.unwrap();
        listed.sort_by(|x, y| x.1.key_index.cmp(&y.1.key_index));
        listed
    };
    let entry = |key: u8, now: i64| VaultEntry {
        key_index: vec![key; 32],
        name_sealed: vec![key; 20],
        value_sealed: Vec::new(),
        size: 67,
        created_at: at(now),
        updated_at: at(now),
        expires_at: at(now + 1000),
    };
    assert_eq!(
        listed(a, first.id, 1).await,
        [
            (app.id, entry(1, 0)),
            (second_app.id, entry(2, 0)),
            (app.id, entry(3, -500))
        ]
    );
    assert_eq!(
        listed(a, first.id, 500).await,
        [(app.id, entry(1, 0)), (second_app.id, entry(2, 0))],
        "expired values are left out"
    );
    assert!(listed(b, first.id, 1).await.is_empty());
    assert!(listed(a, b_user.id, 1).await.is_empty());
    assert_eq!(listed(b, b_user.id, 1).await, [(b_app.id, entry(5, 0))]);
}

// ---- Hosted login state ---------------------------------------------------------------------------

fn request() -> AuthorizationRequest {
    AuthorizationRequest {
        redirect_uri: "https://app.example/cb".into(),
        state: Some("st".into()),
        nonce: Some("n".into()),
        code_challenge: Some("c".repeat(43)),
        scope: "openid email".into(),
        force_login: false,
        max_age: None,
        select_account: true,
        create_account: false,
        upgrade_user: Some(UserId::new()),
    }
}

fn browser(ws: WorkspaceId, user: UserId, hash: u8, created: i64, expires: i64) -> BrowserSession {
    BrowserSession {
        id: BrowserSessionId::new(),
        workspace_id: ws,
        user_id: user,
        token_hash: vec![hash; 32],
        revision: 1,
        auth_time: at(created),
        amr: vec!["pwd".into()],
        client_sealed: Some(vec![hash; 16]),
        created_at: at(created),
        last_seen_at: at(created),
        expires_at: at(expires),
        ended_at: None,
    }
}

/// Pending authorization requests until they expire or complete; a user's active browser sessions,
/// touched and given more sign-in methods; the browsers a user signed in from. Another workspace's id
/// finds, changes and deletes nothing.
async fn flows_and_browser_sessions(s: &Stores) {
    let (a, app, user) = tenant(s).await;
    let (b, _, b_user) = tenant(s).await;
    let flow = LoginFlow {
        id: FlowId::new(),
        workspace_id: a,
        application_id: app.id,
        request: request(),
        created_at: at(0),
        expires_at: at(1800),
    };
    s.browsers.insert_flow(&flow).await.unwrap();
    assert_eq!(
        s.browsers.find_flow(a, flow.id, at(1)).await.unwrap(),
        Some(flow.clone())
    );
    assert_eq!(s.browsers.find_flow(b, flow.id, at(1)).await.unwrap(), None);
    assert_eq!(
        s.browsers.find_flow(a, flow.id, at(1800)).await.unwrap(),
        None,
        "expired"
    );
    s.browsers.delete_flow(b, flow.id).await.unwrap();
    assert!(s.browsers.find_flow(a, flow.id, at(1)).await.unwrap().is_some());
    s.browsers.delete_flow(a, flow.id).await.unwrap();
    assert_eq!(s.browsers.find_flow(a, flow.id, at(1)).await.unwrap(), None);

    // A user's active browser sessions, oldest first.
    let first = browser(a, user.id, 1, 0, 3600);
    let second = browser(a, user.id, 2, 10, 3600);
    let short = browser(a, user.id, 3, 20, 100);
    let theirs = browser(b, b_user.id, 4, 0, 3600);
    for session in [&second, &short, &first, &theirs] {
        s.browsers.insert_browser_session(session).await.unwrap();
    }
    assert_eq!(
        s.browsers
            .list_browser_sessions(a, user.id, at(30))
            .await
            .unwrap(),
        [first.clone(), second.clone(), short.clone()]
    );
    assert_eq!(
        s.browsers
            .list_browser_sessions(a, user.id, at(100))
            .await
            .unwrap(),
        [first.clone(), second.clone()]
    );
    assert!(
        s.browsers
            .list_browser_sessions(b, user.id, at(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.browsers
            .list_browser_sessions(a, b_user.id, at(30))
            .await
            .unwrap()
            .is_empty()
    );
    s.browsers
        .end_browser_session(a, second.id, at(40))
        .await
        .unwrap();
    assert_eq!(
        s.browsers
            .list_browser_sessions(a, user.id, at(41))
            .await
            .unwrap(),
        [first.clone(), short.clone()],
        "an ended session is left out"
    );

    // Touched, and given a second factor, in its own workspace only.
    s.browsers
        .touch_browser_session(a, first.id, at(50))
        .await
        .unwrap();
    s.browsers
        .touch_browser_session(b, first.id, at(60))
        .await
        .unwrap();
    let amr = vec!["pwd".to_owned(), "otp".to_owned()];
    s.browsers
        .set_browser_session_amr(a, first.id, &amr)
        .await
        .unwrap();
    s.browsers
        .set_browser_session_amr(b, first.id, &["hwk".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        s.browsers
            .find_browser_session(a, &[1; 32], at(61))
            .await
            .unwrap(),
        Some(BrowserSession {
            last_seen_at: at(50),
            amr: amr.clone(),
            ..first.clone()
        })
    );
    assert_eq!(
        s.browsers
            .list_browser_sessions(b, b_user.id, at(61))
            .await
            .unwrap(),
        [theirs]
    );

    // Known browsers: new once per user.
    assert!(
        s.browsers
            .remember_device(a, user.id, &[7; 32], at(1))
            .await
            .unwrap()
    );
    assert!(
        !s.browsers
            .remember_device(a, user.id, &[7; 32], at(2))
            .await
            .unwrap()
    );
    assert!(
        s.browsers
            .remember_device(a, user.id, &[8; 32], at(3))
            .await
            .unwrap()
    );
    assert!(
        s.browsers
            .remember_device(b, b_user.id, &[7; 32], at(4))
            .await
            .unwrap(),
        "another user's browser"
    );
    assert!(!matches!(
        s.browsers.remember_device(b, user.id, &[9; 32], at(5)).await,
        Ok(true)
    ));
    assert!(
        s.browsers
            .remember_device(a, user.id, &[9; 32], at(6))
            .await
            .unwrap(),
        "a call under another workspace recorded nothing"
    );
}

/// TOTP: one enrolment per user, replaced only while unconfirmed and older than the pending window;
/// each step accepted once, above the last; removed with or without the recovery codes. Recovery codes:
/// replaced as a set, each spent once. Another workspace's id finds, changes and spends nothing.
async fn totp_and_recovery_codes(s: &Stores) {
    let (a, _, user) = tenant(s).await;
    let (b, _, b_user) = tenant(s).await;
    let f = &s.factors;
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), None);
    assert!(f.begin_totp(a, user.id, &[1; 16], at(-600), at(0)).await.unwrap());
    let pending = TotpEnrolment {
        secret_sealed: vec![1; 16],
        created_at: at(0),
        confirmed_at: None,
        last_step: 0,
    };
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), Some(pending.clone()));
    // A pending enrolment made at or after `pending_since` is left alone (its QR code is being scanned).
    assert!(!f.begin_totp(a, user.id, &[2; 16], at(0), at(100)).await.unwrap());
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), Some(pending));
    // An older one is replaced.
    assert!(f.begin_totp(a, user.id, &[3; 16], at(1), at(700)).await.unwrap());
    let replaced = TotpEnrolment {
        secret_sealed: vec![3; 16],
        created_at: at(700),
        confirmed_at: None,
        last_step: 0,
    };
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), Some(replaced.clone()));
    // Another workspace's id sees, replaces and confirms nothing.
    assert_eq!(f.find_totp(b, user.id).await.unwrap(), None);
    assert!(!matches!(
        f.begin_totp(b, user.id, &[4; 16], at(10_000), at(10_000)).await,
        Ok(true)
    ));
    assert!(!f.use_totp_step(b, user.id, 5, at(701)).await.unwrap());
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), Some(replaced.clone()));

    // Steps: accepted once, only above the last; the first confirms the enrolment.
    assert!(f.use_totp_step(a, user.id, 100, at(710)).await.unwrap());
    assert!(!f.use_totp_step(a, user.id, 100, at(711)).await.unwrap());
    assert!(!f.use_totp_step(a, user.id, 99, at(711)).await.unwrap());
    assert!(f.use_totp_step(a, user.id, 101, at(720)).await.unwrap());
    let confirmed = TotpEnrolment {
        confirmed_at: Some(at(710)),
        last_step: 101,
        ..replaced
    };
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), Some(confirmed.clone()));
    let uses = (0..8).map(|_| {
        let factors = s.factors.clone();
        async move { factors.use_totp_step(a, user.id, 200, at(730)).await.unwrap() }
    });
    let accepted = futures_util::future::join_all(uses).await;
    assert_eq!(accepted.iter().filter(|ok| **ok).count(), 1, "one of eight races");
    // A confirmed enrolment is never replaced.
    assert!(
        !f.begin_totp(a, user.id, &[5; 16], at(10_000), at(10_000))
            .await
            .unwrap()
    );
    assert_eq!(
        f.find_totp(a, user.id).await.unwrap().unwrap().secret_sealed,
        vec![3; 16]
    );

    // Recovery codes.
    let codes = |ns: &[u8]| ns.iter().map(|n| vec![*n; 32]).collect::<Vec<_>>();
    f.replace_recovery_codes(a, user.id, &codes(&[1, 2, 3]), at(0))
        .await
        .unwrap();
    assert_eq!(f.recovery_codes_left(a, user.id).await.unwrap(), 3);
    assert!(f.use_recovery_code(a, user.id, &[1; 32], at(1)).await.unwrap());
    assert!(!f.use_recovery_code(a, user.id, &[1; 32], at(2)).await.unwrap());
    assert!(!f.use_recovery_code(a, user.id, &[9; 32], at(2)).await.unwrap());
    assert!(!f.use_recovery_code(b, user.id, &[2; 32], at(2)).await.unwrap());
    assert!(!f.use_recovery_code(a, b_user.id, &[2; 32], at(2)).await.unwrap());
    assert_eq!(f.recovery_codes_left(a, user.id).await.unwrap(), 2);
    assert_eq!(f.recovery_codes_left(b, user.id).await.unwrap(), 0);
    let _ = f.replace_recovery_codes(b, user.id, &codes(&[5]), at(3)).await;
    assert_eq!(f.recovery_codes_left(a, user.id).await.unwrap(), 2);
    assert_eq!(f.recovery_codes_left(b, user.id).await.unwrap(), 0);
    f.replace_recovery_codes(a, user.id, &codes(&[4]), at(4))
        .await
        .unwrap();
    assert_eq!(f.recovery_codes_left(a, user.id).await.unwrap(), 1);
    assert!(
        !f.use_recovery_code(a, user.id, &[2; 32], at(5)).await.unwrap(),
        "replaced"
    );
    assert!(!f.use_recovery_code(a, user.id, &[5; 32], at(5)).await.unwrap());

    // Removal: another workspace's id removes nothing; the codes stay when another factor remains.
    assert!(f.begin_totp(b, b_user.id, &[6; 16], at(0), at(0)).await.unwrap());
    f.delete_totp(b, user.id, false).await.unwrap();
    assert!(f.find_totp(a, user.id).await.unwrap().is_some());
    assert_eq!(f.recovery_codes_left(a, user.id).await.unwrap(), 1);
    f.delete_totp(a, user.id, true).await.unwrap();
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), None);
    assert_eq!(f.recovery_codes_left(a, user.id).await.unwrap(), 1);
    assert!(f.begin_totp(a, user.id, &[7; 16], at(0), at(0)).await.unwrap());
    f.delete_totp(a, user.id, false).await.unwrap();
    assert_eq!(f.find_totp(a, user.id).await.unwrap(), None);
    assert_eq!(f.recovery_codes_left(a, user.id).await.unwrap(), 0);
    assert!(
        f.find_totp(b, b_user.id).await.unwrap().is_some(),
        "the other workspace's own"
    );
}

fn link(ws: WorkspaceId, user: UserId, n: u8, purpose: LinkPurpose, expires: i64) -> LoginLink {
    LoginLink {
        link_hash: vec![n; 32],
        workspace_id: ws,
        purpose,
        user_id: user,
        flow_id: Some(FlowId::new()),
        amr: vec!["pwd".into()],
        revision: Some(1),
        browser: Some(vec![n; 32]),
        created_at: at(0),
        expires_at: at(expires),
    }
}

/// E-mailed links and pending steps: found without spending, spent once (of eight racing uses one),
/// only for their purpose and before they expire; a newer link ends the user's older ones of its
/// purpose; EndLinks ends the sign-in links and steps of one user of the set's workspace.
async fn login_links(s: &Stores) {
    let m = Manage::new(s);
    let (a, _, user) = tenant(s).await;
    let (b, _, b_user) = tenant(s).await;
    let c = &s.ceremonies;
    let usable = |ws: WorkspaceId, n: u8, purpose: LinkPurpose| async move {
        c.find_link(ws, &[n; 32], purpose, at(1)).await.unwrap().is_some()
    };
    let magic = link(a, user.id, 1, LinkPurpose::Magic, 900);
    c.insert_link(&magic).await.unwrap();
    assert_eq!(
        c.find_link(a, &[1; 32], LinkPurpose::Magic, at(1)).await.unwrap(),
        Some(magic.clone())
    );
    assert!(usable(a, 1, LinkPurpose::Magic).await, "finding does not spend");
    assert!(!usable(a, 1, LinkPurpose::Reset).await);
    assert!(!usable(b, 1, LinkPurpose::Magic).await);
    assert_eq!(
        c.find_link(a, &[1; 32], LinkPurpose::Magic, at(900))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        c.use_link(b, &[1; 32], LinkPurpose::Magic, at(1)).await.unwrap(),
        None
    );
    assert_eq!(
        c.use_link(a, &[1; 32], LinkPurpose::Reset, at(1)).await.unwrap(),
        None
    );
    assert_eq!(
        c.use_link(a, &[1; 32], LinkPurpose::Magic, at(900))
            .await
            .unwrap(),
        None
    );
    let uses = (0..8).map(|_| {
        let ceremonies = s.ceremonies.clone();
        async move {
            ceremonies
                .use_link(a, &[1; 32], LinkPurpose::Magic, at(2))
                .await
                .unwrap()
        }
    });
    let spent: Vec<_> = futures_util::future::join_all(uses)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(spent, [magic]);
    assert!(!usable(a, 1, LinkPurpose::Magic).await);

    // A newer link ends the user's unused links of its purpose, and nothing else.
    for l in [
        link(a, user.id, 3, LinkPurpose::Reset, 900),
        link(a, user.id, 4, LinkPurpose::Magic, 900),
        link(b, b_user.id, 5, LinkPurpose::Reset, 900),
    ] {
        c.insert_link(&l).await.unwrap();
    }
    let other = new_user(a, 8);
    s.users.insert_user(&other).await.unwrap();
    c.insert_link(&link(a, other.user.id, 6, LinkPurpose::Reset, 900))
        .await
        .unwrap();
    let newer = link(a, user.id, 7, LinkPurpose::Reset, 900);
    c.replace_links(&newer, at(1)).await.unwrap();
    assert!(!usable(a, 3, LinkPurpose::Reset).await);
    assert_eq!(
        c.use_link(a, &[7; 32], LinkPurpose::Reset, at(1)).await.unwrap(),
        Some(newer)
    );
    assert!(usable(a, 4, LinkPurpose::Magic).await);
    assert!(usable(a, 6, LinkPurpose::Reset).await);
    assert!(usable(b, 5, LinkPurpose::Reset).await);

    // EndLinks: the user's magic and reset links and pending steps; not verification or upgrade links.
    for (n, purpose) in [
        (10, LinkPurpose::Magic),
        (11, LinkPurpose::Reset),
        (12, LinkPurpose::Mfa),
        (13, LinkPurpose::Verify),
        (14, LinkPurpose::Upgrade),
    ] {
        c.insert_link(&link(a, user.id, n, purpose, 900)).await.unwrap();
    }
    let b_magic = link(b, b_user.id, 15, LinkPurpose::Magic, 900);
    c.insert_link(&b_magic).await.unwrap();
    let _ = m.apply(a, vec![Change::EndLinks(b_user.id)], 1).await;
    assert!(
        usable(b, 15, LinkPurpose::Magic).await,
        "another workspace's user"
    );
    m.apply(a, vec![Change::EndLinks(user.id)], 1).await.unwrap();
    for (n, purpose, left) in [
        (4, LinkPurpose::Magic, false),
        (10, LinkPurpose::Magic, false),
        (11, LinkPurpose::Reset, false),
        (12, LinkPurpose::Mfa, false),
        (13, LinkPurpose::Verify, true),
        (14, LinkPurpose::Upgrade, true),
        (6, LinkPurpose::Reset, true),
    ] {
        assert_eq!(usable(a, n, purpose).await, left, "link {n} ({purpose:?})");
    }
    // The sweeper removes expired links.
    assert!(s.browsers.purge_login_state(at(100_000)).await.unwrap() >= 10);
    assert_eq!(
        c.find_link(a, &[13; 32], LinkPurpose::Verify, at(1))
            .await
            .unwrap(),
        None
    );
}

/// The address rule's bookkeeping: users an older server left (`email_rule = 1`, which no store method
/// writes) are listed per workspace until indexed; a taken index is refused with nothing changed; a
/// conflict is recorded.
async fn email_rules(s: &Stores, raw: &Raw) {
    let (a, _, user) = tenant(s).await;
    let (b, _, b_user) = tenant(s).await;
    let (c, _, _) = tenant(s).await;
    assert!(s.users.email_rule_workspaces().await.unwrap().is_empty());
    assert!(s.support.support_email_rule_pending().await.unwrap().is_empty());
    let second = new_user(a, 8);
    s.users.insert_user(&second).await.unwrap();
    s.passwords
        .set_password(a, second.user.id, PHC, at(0))
        .await
        .unwrap();
    s.passwords.set_email_verified(a, user.id).await.unwrap();
    for id in [user.id, second.user.id, b_user.id] {
        let n = raw
            .execute(
                "update user_account set email_rule = 1, email_index = null where user_id = $1",
                id.as_uuid(),
            )
            .await;
        assert_eq!(n, 1);
    }

    let mut workspaces = s.users.email_rule_workspaces().await.unwrap();
    workspaces.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(workspaces, expected);
    let pending = |ws: WorkspaceId| async move {
        let mut rows: Vec<_> = s
            .users
            .email_rule_pending(ws)
            .await
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.user,
                    p.email_sealed,
                    p.email_verified,
                    p.has_password,
                    p.has_identity,
                )
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        rows
    };
    let mut expected = vec![
        (user.id, Some(vec![1, 2, 3]), true, false, true),
        (second.user.id, Some(vec![1, 2, 3]), false, true, true),
    ];
    expected.sort_by_key(|r| r.0);
    assert_eq!(pending(a).await, expected);
    assert!(pending(c).await.is_empty());

    // Indexed under the rule, with the canonical address sealed.
    assert!(
        s.users
            .apply_email_rule(a, user.id, Some(&[4, 4]), Some(&[44; 32]), None, at(5))
            .await
            .unwrap()
    );
    let found = s.users.find_user(a, user.id).await.unwrap().unwrap();
    assert_eq!(
        (found.email_sealed, found.email_index),
        (Some(vec![4, 4]), Some(vec![44; 32]))
    );
    assert_eq!(
        pending(a).await.iter().map(|r| r.0).collect::<Vec<_>>(),
        [second.user.id]
    );
    // A taken index: refused, nothing changed, still pending.
    assert!(
        !s.users
            .apply_email_rule(a, second.user.id, Some(&[5]), Some(&[44; 32]), None, at(6))
            .await
            .unwrap()
    );
    assert_eq!(pending(a).await.len(), 1);
    assert_eq!(
        s.users
            .find_user(a, second.user.id)
            .await
            .unwrap()
            .unwrap()
            .email_sealed,
        Some(vec![1, 2, 3])
    );
    // Left unindexed with the conflict recorded.
    assert!(
        s.users
            .apply_email_rule(a, second.user.id, None, None, Some(EmailConflict::Refused), at(7))
            .await
            .unwrap()
    );
    assert!(pending(a).await.is_empty());
    assert_eq!(
        s.users.email_conflicts(a).await.unwrap(),
        [(second.user.id, EmailConflict::Refused)]
    );
    assert_eq!(s.users.email_rule_workspaces().await.unwrap(), [b]);
    // Another workspace's id indexes nothing.
    let _ = s
        .users
        .apply_email_rule(c, b_user.id, Some(&[6]), Some(&[66; 32]), None, at(8))
        .await;
    assert_eq!(pending(b).await.len(), 1);
    assert_eq!(s.users.find_user_by_email(b, &[66; 32]).await.unwrap(), None);
    assert!(
        s.users
            .apply_email_rule(b, b_user.id, None, Some(&[66; 32]), None, at(9))
            .await
            .unwrap()
    );
    assert!(s.users.email_rule_workspaces().await.unwrap().is_empty());
}

/// The address rule for SUPPORT operators: an operator an older server left (`email_rule = 1`) is
/// listed until its address is indexed and sealed again under the rule; the others are left alone.
async fn support_email_rules(s: &Stores, raw: &Raw) {
    let m = Manage::new(s);
    let (first, other) = (operator(1), operator(2));
    m.apply(
        audit::INSTANCE,
        vec![
            Change::InsertSupport(first.clone()),
            Change::InsertSupport(other.clone()),
        ],
        10,
    )
    .await
    .unwrap();
    assert!(s.support.support_email_rule_pending().await.unwrap().is_empty());
    let marked = raw
        .execute(
            "update support_operator set email_rule = 1 where support_id = $1",
            first.id.as_uuid(),
        )
        .await;
    assert_eq!(marked, 1);
    assert_eq!(
        s.support.support_email_rule_pending().await.unwrap(),
        [(first.id, first.email_sealed.clone())]
    );
    s.support
        .apply_support_email_rule(first.id, &[5; 9], &[55; 32])
        .await
        .unwrap();
    assert!(s.support.support_email_rule_pending().await.unwrap().is_empty());
    let indexed = SupportOperator {
        email_sealed: vec![5; 9],
        email_index: vec![55; 32],
        ..first.clone()
    };
    assert_eq!(
        s.support.find_support(first.id).await.unwrap(),
        Some(indexed.clone())
    );
    assert_eq!(
        s.support.find_support_by_email(&[55; 32]).await.unwrap(),
        Some(indexed)
    );
    assert_eq!(s.support.find_support(other.id).await.unwrap(), Some(other));
}

/// PostgreSQL wakes the coordinator when anything is published (LISTEN/NOTIFY); SQLite, a single node,
/// has nothing to push.
async fn invalidation_wakeups(s: &Stores, raw: &Raw) {
    match (raw, s.coord.wakeups()) {
        (Raw::Sqlite(_), wakeups) => assert!(wakeups.is_none()),
        (Raw::Postgres(_), Some(wakeups)) => {
            let wait = || tokio::time::timeout(Duration::from_secs(10), wakeups.notified());
            // The listener fires once it listens, then on every notice.
            wait().await.expect("the listener starts");
            s.coord.publish(Invalidation::SigningKeys).await.unwrap();
            wait().await.expect("woken by a publication");
        }
        (Raw::Postgres(_), None) => panic!("PostgreSQL pushes wake-ups"),
    }
}

/// Applied migrations are never renamed, and the two dialects' numbering drifted before 0009
/// (`0003_hosted_login` in SQLite is `0004` in PostgreSQL). From 0009 on, every data migration has
/// the same number and name on both backends.
#[test]
fn data_migrations_match_across_backends_from_0009() {
    let names = |backend: &str| -> std::collections::BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(backend)
            .join("migrations/data");
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.as_str() >= "0009")
            .collect()
    };
    let sqlite = names("store-sqlite");
    let postgres = names("store-postgres");
    assert!(sqlite.contains("0009_email_rule.sql"), "{sqlite:?}");
    assert_eq!(
        sqlite, postgres,
        "from 0009 on, both backends have the same migrations"
    );
    for name in &sqlite {
        let number = name.split('_').next().unwrap();
        assert!(
            number.len() == 4 && number.bytes().all(|b| b.is_ascii_digit()),
            "{name}"
        );
    }
}

/// The first run: setup tokens are usable until they expire; the first workspace spends them all in
/// its own transaction; a second claim, a claim once a workspace exists, an unknown or expired token
/// fail and roll their whole change set back; concurrent claims of several tokens make one workspace.
async fn first_run_setup(s: &Stores) {
    let m = Manage::new(s);
    assert_eq!(s.workspaces.sole_workspace().await.unwrap(), None);
    let (t1, t2, old) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    s.workspaces
        .insert_setup_token(&t1, at(0), at(100))
        .await
        .unwrap();
    s.workspaces
        .insert_setup_token(&t2, at(0), at(100))
        .await
        .unwrap();
    s.workspaces
        .insert_setup_token(&old, at(0), at(10))
        .await
        .unwrap();
    assert!(
        s.workspaces
            .insert_setup_token(&t1, at(0), at(100))
            .await
            .is_err(),
        "a token is stored once"
    );
    assert!(s.workspaces.setup_token_usable(&t1, at(5)).await.unwrap());
    assert!(
        !s.workspaces.setup_token_usable(&old, at(10)).await.unwrap(),
        "expired"
    );
    assert!(
        !s.workspaces.setup_token_usable(&[9u8; 32], at(5)).await.unwrap(),
        "unknown"
    );

    // An expired or unknown token creates nothing.
    for token in [old, [9u8; 32]] {
        let w = workspace(Plan::pro());
        let claim = m
            .apply(
                w.id,
                vec![
                    Change::InsertWorkspace(w.clone()),
                    Change::ClaimSetup(token.to_vec()),
                ],
                20,
            )
            .await;
        assert!(matches!(claim, Err(Error::Conflict("setup-token"))), "{claim:?}");
        assert_eq!(
            s.workspaces.find_workspace(w.id).await.unwrap(),
            None,
            "rolled back"
        );
    }
    assert!(s.workspaces.setup_token_usable(&t1, at(20)).await.unwrap());

    // Several first runs at once, with both tokens: exactly one workspace.
    let mut runs = Vec::new();
    for i in 0..8 {
        let token = if i % 2 == 0 { t1 } else { t2 };
        let w = workspace(Plan::pro());
        let s = s.clone();
        runs.push(tokio::spawn(async move {
            let m = Manage::new(&s);
            m.apply(
                w.id,
                vec![
                    Change::InsertWorkspace(w.clone()),
                    Change::ClaimSetup(token.to_vec()),
                ],
                30,
            )
            .await
            .map(|()| w.id)
        }));
    }
    let mut made = Vec::new();
    for run in runs {
        match run.await.unwrap() {
            Ok(id) => made.push(id),
            Err(Error::Conflict("setup-token" | "setup-done")) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(made.len(), 1, "one first run wins");
    assert_eq!(s.workspaces.list_workspaces().await.unwrap().len(), 1);
    assert_eq!(s.workspaces.sole_workspace().await.unwrap(), Some(made[0]));
    for token in [t1, t2] {
        assert!(
            !s.workspaces.setup_token_usable(&token, at(31)).await.unwrap(),
            "all spent"
        );
    }

    // With a workspace, a fresh token still creates no second one (and its set is rolled back).
    let t3 = [4u8; 32];
    s.workspaces
        .insert_setup_token(&t3, at(40), at(100))
        .await
        .unwrap();
    let w = workspace(Plan::pro());
    let claim = m
        .apply(
            w.id,
            vec![
                Change::InsertWorkspace(w.clone()),
                Change::ClaimSetup(t3.to_vec()),
            ],
            41,
        )
        .await;
    assert!(matches!(claim, Err(Error::Conflict("setup-done"))), "{claim:?}");
    assert_eq!(s.workspaces.find_workspace(w.id).await.unwrap(), None);
    assert!(
        s.workspaces.setup_token_usable(&t3, at(41)).await.unwrap(),
        "the refused claim spent nothing"
    );

    // Two workspaces: none is the sole one. The sweeper forgets expired tokens.
    s.workspaces
        .insert_workspace(&workspace(Plan::free()))
        .await
        .unwrap();
    assert_eq!(s.workspaces.sole_workspace().await.unwrap(), None);
    s.browsers.purge_login_state(at(101)).await.unwrap();
    assert!(
        !s.workspaces.setup_token_usable(&t3, at(41)).await.unwrap(),
        "purged"
    );
}

/// Console sessions: stored and replaced by workspace and hash, found only unexpired and only in
/// their own workspace, deleted once, purged when expired, gone with their workspace.
async fn console_sessions(s: &Stores) {
    let (a, _, user) = tenant(s).await;
    let (b, _, _) = tenant(s).await;
    let session = ConsoleSession {
        workspace_id: a,
        session_hash: vec![5; 32],
        user_id: user.id,
        tokens_sealed: vec![1, 2, 3],
        created_at: at(0),
        expires_at: at(100),
    };
    s.browsers.put_console_session(&session).await.unwrap();
    assert_eq!(
        s.browsers.find_console_session(a, &[5; 32], at(1)).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        s.browsers
            .find_console_session(a, &[5; 32], at(100))
            .await
            .unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        s.browsers.find_console_session(b, &[5; 32], at(1)).await.unwrap(),
        None,
        "other workspace"
    );
    assert_eq!(
        s.browsers.find_console_session(a, &[6; 32], at(1)).await.unwrap(),
        None,
        "other hash"
    );

    // Refreshed tokens replace the stored ones; the start stays.
    let refreshed = ConsoleSession {
        tokens_sealed: vec![4, 5, 6],
        created_at: at(50),
        ..session.clone()
    };
    s.browsers.put_console_session(&refreshed).await.unwrap();
    let found = s
        .browsers
        .find_console_session(a, &[5; 32], at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.tokens_sealed, found.created_at), (vec![4, 5, 6], at(0)));

    // The same hash in another workspace is another session.
    let in_b = ConsoleSession {
        workspace_id: b,
        ..session.clone()
    };
    s.browsers.put_console_session(&in_b).await.unwrap();
    assert!(!s.browsers.delete_console_session(b, &[6; 32]).await.unwrap());
    assert!(s.browsers.delete_console_session(b, &[5; 32]).await.unwrap());
    assert!(
        !s.browsers.delete_console_session(b, &[5; 32]).await.unwrap(),
        "once"
    );
    assert!(
        s.browsers
            .find_console_session(a, &[5; 32], at(1))
            .await
            .unwrap()
            .is_some(),
        "a's stays"
    );

    // Expired sessions are purged; a deleted workspace takes its sessions along.
    let short = ConsoleSession {
        session_hash: vec![7; 32],
        expires_at: at(10),
        ..session.clone()
    };
    s.browsers.put_console_session(&short).await.unwrap();
    s.browsers.purge_login_state(at(11)).await.unwrap();
    assert!(
        !s.browsers.delete_console_session(a, &[7; 32]).await.unwrap(),
        "purged"
    );
    assert!(
        s.browsers
            .find_console_session(a, &[5; 32], at(1))
            .await
            .unwrap()
            .is_some()
    );
    s.workspaces.delete_workspace(a).await.unwrap();
    assert!(
        !s.browsers.delete_console_session(a, &[5; 32]).await.unwrap(),
        "gone with the workspace"
    );
}

/// The suite keeps its promise: every method of every store trait and every variant of `Change` is
/// called in it (read from `core/src/store.rs`, so a new method or variant without a contract test
/// fails here).
#[test]
fn the_suite_calls_every_store_method_and_every_change() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let traits = std::fs::read_to_string(root.join("core/src/store.rs")).unwrap();
    let suite = std::fs::read_to_string(root.join("testkit/tests/store/main.rs")).unwrap();
    let mut methods = Vec::new();
    let mut in_trait = false;
    for line in traits.lines() {
        if line.starts_with("pub trait ") && line.contains("Send + Sync") {
            in_trait = true;
        } else if line == "}" {
            in_trait = false;
        } else if in_trait
            && let Some(rest) = line
                .trim_start()
                .strip_prefix("async fn ")
                .or(line.trim_start().strip_prefix("fn "))
        {
            methods.push(rest.split(['(', '<']).next().unwrap().to_owned());
        }
    }
    assert!(methods.len() > 100, "found {} methods", methods.len());
    let missing: Vec<&String> = methods
        .iter()
        .filter(|m| !suite.contains(&format!(".{m}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "store methods the suite never calls: {missing:?}"
    );

    let start = traits.find("pub enum Change {").unwrap();
    let end = start + traits[start..].find("\n}\n").unwrap();
    let variants: Vec<&str> = traits[start..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(|l| l.split(['(', ' ', ',']).next().unwrap())
        .collect();
    assert!(variants.len() >= 26, "found {variants:?}");
    let missing: Vec<&&str> = variants
        .iter()
        .filter(|v| !suite.contains(&format!("Change::{v}")))
        .collect();
    assert!(missing.is_empty(), "changes the suite never applies: {missing:?}");
}

/// End-user tiers and billing state: a tier put, read and moved only by a newer event; handled event
/// ids; subscription links found across workspaces and advanced only forwards; sealed secrets; all
/// refused for another workspace's application or user.
async fn tiers_and_billing(s: &Stores) {
    use secureflows_core::billing::{BillingLink, Provider};
    use secureflows_core::tier::{TierAssignment, TierSource};

    let m = Manage::new(s);
    let (a, app, alice) = tenant(s).await;
    let (b, other_app, bob) = tenant(s).await;
    m.keys(a).await;
    m.keys(b).await;
    let assignment = |tier: &str, event_at: Option<i64>| TierAssignment {
        application: app.id,
        user: alice.id,
        tier: Some(tier.to_owned()),
        source: if event_at.is_some() {
            TierSource::Stripe
        } else {
            TierSource::Api
        },
        event_at: event_at.map(at),
        updated_at: at(1),
    };
    assert_eq!(s.users.user_tiers(a, alice.id).await.unwrap(), []);
    m.apply(a, vec![Change::SetUserTier(assignment("solo", None))], 1)
        .await
        .unwrap();
    m.apply(a, vec![Change::SetUserTier(assignment("pro", Some(50)))], 2)
        .await
        .unwrap();
    // An older provider event changes nothing; a newer one does; an API change always does.
    let stale = m
        .apply(a, vec![Change::SetUserTier(assignment("free", Some(40)))], 3)
        .await;
    assert!(matches!(stale, Err(Error::Conflict("stale-event"))), "{stale:?}");
    let tiers = s.users.user_tiers(a, alice.id).await.unwrap();
    assert_eq!(
        (tiers[0].tier.as_deref(), tiers[0].event_at),
        (Some("pro"), Some(at(50)))
    );
    assert_eq!(
        (tiers[0].source, tiers[0].updated_at),
        (TierSource::Stripe, at(2))
    );
    m.apply(a, vec![Change::SetUserTier(assignment("team", Some(60)))], 4)
        .await
        .unwrap();
    m.apply(a, vec![Change::SetUserTier(assignment("solo", None))], 5)
        .await
        .unwrap();
    let tiers = s.users.user_tiers(a, alice.id).await.unwrap();
    assert_eq!(
        (tiers[0].tier.as_deref(), tiers[0].event_at),
        (Some("solo"), Some(at(60)))
    );
    // Another workspace's user or application, or a user the workspace does not have: not found.
    for (ws, application, user) in [
        (b, app.id, alice.id),
        (a, other_app.id, alice.id),
        (a, app.id, bob.id),
    ] {
        let change = Change::SetUserTier(TierAssignment {
            application,
            user,
            ..assignment("pro", None)
        });
        assert!(is_not_found(m.apply(ws, vec![change], 6).await));
    }
    assert_eq!(s.users.user_tiers(b, bob.id).await.unwrap(), []);
    assert_eq!(s.users.user_tiers(b, alice.id).await.unwrap(), []);

    // Handled events: recorded once per provider and scope; duplicates conflict and roll back the set.
    let record = |scope: uuid::Uuid, id: &str| Change::RecordWebhookEvent {
        provider: "stripe",
        scope,
        event_id: id.to_owned(),
    };
    let scope = app.id.as_uuid();
    assert!(
        !s.billing
            .webhook_event_seen("stripe", scope, "evt_1")
            .await
            .unwrap()
    );
    m.apply(a, vec![record(scope, "evt_1")], 10).await.unwrap();
    assert!(
        s.billing
            .webhook_event_seen("stripe", scope, "evt_1")
            .await
            .unwrap()
    );
    assert!(
        !s.billing
            .webhook_event_seen("paddle", scope, "evt_1")
            .await
            .unwrap()
    );
    assert!(
        !s.billing
            .webhook_event_seen("stripe", other_app.id.as_uuid(), "evt_1")
            .await
            .unwrap()
    );
    let again = m
        .apply(
            a,
            vec![record(uuid::Uuid::nil(), "evt_2"), record(scope, "evt_1")],
            11,
        )
        .await;
    assert!(
        matches!(again, Err(Error::Conflict("duplicate-event"))),
        "{again:?}"
    );
    assert!(
        !s.billing
            .webhook_event_seen("stripe", uuid::Uuid::nil(), "evt_2")
            .await
            .unwrap()
    );

    // Links: found by the provider's ids from anywhere, advanced only forwards, not another's.
    let link = BillingLink {
        provider: Provider::Stripe,
        scope,
        subscription_id: "sub_1".into(),
        customer_id: "cus_1".into(),
        workspace: a,
        user: Some(alice.id),
        last_event_at: at(100),
        linked_at: at(12),
    };
    assert_eq!(
        s.billing
            .find_billing_link("stripe", scope, "sub_1")
            .await
            .unwrap(),
        None
    );
    m.apply(a, vec![Change::LinkBilling(link.clone())], 12)
        .await
        .unwrap();
    assert_eq!(
        s.billing
            .find_billing_link("stripe", scope, "sub_1")
            .await
            .unwrap(),
        Some(link.clone())
    );
    let twice = m.apply(a, vec![Change::LinkBilling(link.clone())], 13).await;
    assert!(
        matches!(twice, Err(Error::Conflict("duplicate-event"))),
        "{twice:?}"
    );
    assert!(is_not_found(
        m.apply(b, vec![Change::LinkBilling(link.clone())], 13).await
    ));
    let advance = |secs: i64| Change::AdvanceBilling {
        provider: "stripe",
        scope,
        subscription_id: "sub_1".into(),
        event_at: at(secs),
    };
    m.apply(a, vec![advance(150)], 14).await.unwrap();
    m.apply(a, vec![advance(150)], 15).await.unwrap();
    let older = m.apply(a, vec![advance(120)], 16).await;
    assert!(matches!(older, Err(Error::Conflict("stale-event"))), "{older:?}");
    assert!(is_not_found(m.apply(b, vec![advance(200)], 17).await));
    let found = s
        .billing
        .find_billing_link("stripe", scope, "sub_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.last_event_at, at(150));
    // A Paddle link has no user.
    let paddle = BillingLink {
        provider: Provider::Paddle,
        scope: uuid::Uuid::nil(),
        subscription_id: "sub_p".into(),
        customer_id: "ctm_1".into(),
        workspace: b,
        user: None,
        ..link.clone()
    };
    m.apply(b, vec![Change::LinkBilling(paddle.clone())], 18)
        .await
        .unwrap();
    assert_eq!(
        s.billing
            .find_billing_link("paddle", uuid::Uuid::nil(), "sub_p")
            .await
            .unwrap(),
        Some(paddle)
    );

    // Sealed secrets: per application, replaced in place, never another workspace's.
    assert_eq!(s.billing.billing_secret(a, app.id).await.unwrap(), None);
    let secret = |bytes: &[u8]| Change::SetBillingSecret {
        application: app.id,
        sealed: bytes.to_vec(),
    };
    m.apply(a, vec![secret(b"sealed-1")], 20).await.unwrap();
    m.apply(a, vec![secret(b"sealed-2")], 21).await.unwrap();
    assert_eq!(
        s.billing.billing_secret(a, app.id).await.unwrap(),
        Some(b"sealed-2".to_vec())
    );
    assert_eq!(s.billing.billing_secret(b, app.id).await.unwrap(), None);
    assert!(is_not_found(m.apply(b, vec![secret(b"x")], 22).await));

    // Deleting the application takes its subscription links with it.
    m.apply(a, vec![Change::DeleteApplication(app.id)], 23)
        .await
        .unwrap();
    assert_eq!(
        s.billing
            .find_billing_link("stripe", scope, "sub_1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.billing.billing_secret(a, app.id).await.unwrap(), None);

    // Old handled-event records are purged.
    assert_eq!(s.billing.purge_webhook_events(at(11)).await.unwrap(), 1);
    assert!(
        !s.billing
            .webhook_event_seen("stripe", scope, "evt_1")
            .await
            .unwrap()
    );
    assert_eq!(s.billing.purge_webhook_events(at(11)).await.unwrap(), 0);
}
