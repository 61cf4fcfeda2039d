//! The store contract suite: every store trait method, on SQLite (a fresh temp directory) and on
//! PostgreSQL (a fresh database), including the cross-workspace cases — a wrong `WorkspaceId` must
//! find, change and delete nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::time::Duration;

use secureflows_core::store::*;
use secureflows_core::{
    Application, ApplicationId, AuthorizationCode, AuthorizationRequest, BrowserSession, BrowserSessionId,
    CeremonyPurpose, Error, FamilyId, Invalidation, LoginSession, NewIdentity, PasskeyId, PasskeyRecord,
    Plan, RefreshToken, Role, SessionId, Timestamp, UpstreamTrust, User, UserId, UserStatus,
    WebauthnCeremony, Workspace, WorkspaceId,
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
);

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
    let w = workspace(Plan::Pro);
    s.workspaces.insert_workspace(&w).await.unwrap();
    let app = application(w.id, "https://issuer.example", &format!("aud-{}", w.id), &[]);
    s.applications.insert_application(&app).await.unwrap();
    let u = new_user(w.id, 7);
    s.users.insert_user(&u).await.unwrap();
    (w.id, app, u.user)
}

async fn workspaces(s: &Stores) {
    assert!(!s.workspaces.any_workspace().await.unwrap());
    let w = workspace(Plan::Free);
    s.workspaces.insert_workspace(&w).await.unwrap();
    assert!(s.workspaces.any_workspace().await.unwrap());
    assert_eq!(s.workspaces.find_workspace(w.id).await.unwrap(), Some(w.clone()));
    assert!(s.workspaces.insert_workspace(&w).await.is_err(), "ids are unique");
    assert_eq!(
        s.workspaces.find_workspace(WorkspaceId::new()).await.unwrap(),
        None
    );
    s.workspaces.update_plan(w.id, Plan::Pro, at(5)).await.unwrap();
    let found = s.workspaces.find_workspace(w.id).await.unwrap().unwrap();
    assert_eq!((found.plan, found.updated_at), (Plan::Pro, at(5)));
    assert!(matches!(
        s.workspaces
            .update_plan(WorkspaceId::new(), Plan::Pro, at(5))
            .await,
        Err(Error::NotFound(_))
    ));
    let other = workspace(Plan::Base);
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
    // The workspace is full (3 active).
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
