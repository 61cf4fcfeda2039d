//! PostgreSQL row-level security: the server's role sees and changes only the workspace its transaction
//! names, even with a query that forgets its workspace filter; the audit log is append-only to it.

use secureflows_core::{Plan, Role, WorkspaceId};
use secureflows_server::RawStore;
use secureflows_testkit::{Backend, TestApp};
use serde_json::json;
use sqlx::{PgPool, Row};

use crate::support::call_ok;

/// Every table that belongs to a workspace.
const TENANT_TABLES: [&str; 10] = [
    "workspace",
    "application",
    "user_account",
    "user_identity",
    "login_session",
    "vault_value",
    "invite",
    "api_access",
    "audit_event",
    "audit_head",
];

/// A workspace with a row in every tenant table.
async fn populated(app: &TestApp, name: &str) -> WorkspaceId {
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, &format!("{name}-web")).await;
    let session = app.sign_in(&application, &format!("{name}-user")).await;
    session.set("k", "text/plain", "v").await.unwrap();
    let owner = app
        .console_token(ws, &format!("owner@{name}.example"), Role::Owner)
        .await;
    call_ok(
        app,
        "POST",
        "/api/v1/invites",
        &owner,
        Some(json!({"email": format!("i@{name}.example"), "role": "user"})),
        201,
    )
    .await;
    ws
}

fn app_pool(app: &TestApp) -> PgPool {
    match &app.raw {
        RawStore::Postgres(store) => store.pool().clone(),
        RawStore::Sqlite(_) => unreachable!(),
    }
}

async fn in_workspace(
    pool: &PgPool,
    ws: WorkspaceId,
    sql: &str,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('secureflows.workspace', $1, true)")
        .bind(ws.to_string())
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(sql).fetch_all(&mut *tx).await;
    tx.rollback().await?;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfiltered_queries_see_only_the_current_workspace() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let app = TestApp::spawn(backend).await;
    let a = populated(&app, "a").await;
    let b = populated(&app, "b").await;
    app.flush_access_log().await;
    let pool = app_pool(&app);

    // The server's role: not the owner, no BYPASSRLS.
    let row = sqlx::query(
        "select current_user::text as role, r.rolsuper, r.rolbypassrls,
                exists (select 1 from pg_tables where schemaname = 'public' and tableowner = current_user) as owns
         from pg_roles r where r.rolname = current_user",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("role"), "secureflows_app");
    assert!(
        !row.get::<bool, _>("rolsuper") && !row.get::<bool, _>("rolbypassrls") && !row.get::<bool, _>("owns")
    );

    let owner = app.owner_pool().await;
    for table in TENANT_TABLES {
        // The owner sees both workspaces: there is something to hide.
        let all: i64 = sqlx::query_scalar(&format!(
            "select count(distinct workspace_id) from {table} where workspace_id in ($1::uuid, $2::uuid)"
        ))
        .bind(a.to_string())
        .bind(b.to_string())
        .fetch_one(&owner)
        .await
        .unwrap();
        assert_eq!(all, 2, "{table} holds rows of both workspaces");

        // No workspace named: nothing at all.
        let none: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(none, 0, "{table} without a workspace");

        // A deliberately unfiltered SELECT inside workspace A's transaction: only A's rows.
        let rows = in_workspace(
            &pool,
            a,
            &format!("select distinct workspace_id::text as w from {table}"),
        )
        .await
        .unwrap();
        let seen: Vec<String> = rows.iter().map(|r| r.get("w")).collect();
        assert_eq!(seen, vec![a.to_string()], "{table} in workspace A");
    }

    // Writes across the line are refused or touch nothing.
    let err = in_workspace(
        &pool,
        a,
        &format!("insert into workspace (workspace_id, name, plan, created_at, updated_at) values ('{}', 'x', 'free', now(), now())", WorkspaceId::new()),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    let changed = in_workspace(&pool, a, &format!("with u as (update vault_value set size = 0 where workspace_id = '{b}' returning 1) select count(*)::int8 as n from u"))
        .await
        .unwrap();
    assert_eq!(changed[0].get::<i64, _>("n"), 0);
    let moved = in_workspace(&pool, a, &format!("update application set workspace_id = '{b}'")).await;
    assert!(moved.is_err(), "rows cannot be moved into another workspace");

    // The audit log is append-only to the server.
    for sql in ["update audit_event set action = 'x'", "delete from audit_event"] {
        let err = in_workspace(&pool, a, sql).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
    }
    let err = in_workspace(&pool, a, &format!("select secureflows_forget_audit('{a}')"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be deleted"), "{err}");
    // Nor by deleting the workspace, forgetting its trail and putting it back: a deleted id never returns.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("select set_config('secureflows.workspace', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("delete from workspace")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(&format!("select secureflows_forget_audit('{a}')"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query(&format!(
        "insert into workspace (workspace_id, name, plan, created_at, updated_at) values ('{a}', 'back', 'free', now(), now())"
    ))
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot come back"), "{err}");
    tx.rollback().await.unwrap();
    // And nothing can be planted in the schema for the owner's functions to pick up.
    let err = sqlx::query(
        "create function public.unnest(text[]) returns setof text language sql as 'select null::text'",
    )
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_role_that_is_only_a_member_can_serve_and_cannot_escape() {
    use secureflows_core::store::UserStore;
    use secureflows_store_postgres::{MigrationMode, PgStore, PoolSettings};

    let Some(backend) = Backend::postgres() else {
        return;
    };
    let app = TestApp::spawn(backend).await;
    let a = populated(&app, "a").await;
    populated(&app, "b").await;
    let Backend::Postgres(db) = &app.backend else {
        unreachable!()
    };
    let role = format!("sf_login_{}", uuid::Uuid::new_v4().simple());
    let owner = app.owner_pool().await;
    sqlx::query(&format!("create role {role} login in role secureflows_app"))
        .execute(&owner)
        .await
        .unwrap();
    let mut url = url::Url::parse(&db.url()).unwrap();
    url.set_username(&role).unwrap();

    let outcome = async move {
        // Migrations are current, so starting needs no schema privilege.
        let store = PgStore::connect(url.as_str(), MigrationMode::Apply, PoolSettings::default())
            .await
            .unwrap();
        let users = store.list_users(a, None, 10).await.unwrap();
        assert!(!users.is_empty() && users.iter().all(|u| u.workspace_id == a));
        // Even a connection that drops back to the login role stays under the policies: they apply to
        // every member of secureflows_app.
        let mut conn = store.pool().acquire().await.unwrap();
        sqlx::query("reset role").execute(&mut *conn).await.unwrap();
        for table in TENANT_TABLES {
            let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(n, 0, "{table} as the login role");
        }
        drop(conn);
        store.pool().close().await;
    };
    // Clean up the cluster-wide role even when an assertion failed.
    let result = tokio::spawn(outcome).await;
    sqlx::query(&format!("drop role if exists {role}"))
        .execute(&owner)
        .await
        .unwrap();
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_policies_bind_a_non_superuser_owner_outside_the_definer_functions() {
    use secureflows_core::store::{ApplicationStore, WorkspaceStore};
    use secureflows_store_postgres::{MigrationMode, PgStore, PoolSettings};

    let Some(Backend::Postgres(db)) = Backend::postgres() else {
        return;
    };
    // A database owned by an ordinary role (CREATEROLE, not superuser, not BYPASSRLS), migrated by it.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (owner_role, database) = (format!("sf_owner_{suffix}"), format!("sf_owned_{suffix}"));
    let admin = PgPool::connect(&db.url().replace(&format!("/{}", db_name(&db.url())), "/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("create role {owner_role} login createrole nobypassrls"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("create database {database} owner {owner_role}"))
        .execute(&admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&db.url()).unwrap();
    url.set_username(&owner_role).unwrap();
    url.set_path(&format!("/{database}"));
    let owner_url = url.to_string();

    let outcome = async move {
        let store = PgStore::connect(&owner_url, MigrationMode::Apply, PoolSettings::default())
            .await
            .expect("a non-superuser owner migrates and serves");
        let now = secureflows_core::Timestamp::from_millis(1_700_000_000_000);
        let ws = secureflows_core::Workspace {
            id: WorkspaceId::new(),
            name: "W".into(),
            plan: Plan::free(),
            login_policy: Default::default(),
            branding: Default::default(),
            created_at: now,
            updated_at: now,
        };
        store.insert_workspace(&ws).await.unwrap();
        // The definer functions still cross workspaces for what they must do.
        assert!(store.any_workspace().await.unwrap());
        assert_eq!(store.list_workspaces().await.unwrap().len(), 1);
        assert!(store.list_allowed_origins().await.unwrap().is_empty());
        store.pool().close().await;

        // The owner's own connection, outside those functions: FORCE binds it too.
        let owner = PgPool::connect(&owner_url).await.unwrap();
        let seen: i64 = sqlx::query_scalar("select count(*) from workspace")
            .fetch_one(&owner)
            .await
            .unwrap();
        assert_eq!(seen, 0, "forced row-level security applies to the owner");
        let forced: i64 = sqlx::query_scalar(
            "select count(*) from pg_class where relname = any($1) and relrowsecurity and relforcerowsecurity",
        )
        .bind(TENANT_TABLES.to_vec())
        .fetch_one(&owner)
        .await
        .unwrap();
        assert_eq!(forced, TENANT_TABLES.len() as i64);
        // Setting the definer flag by hand does not help the server's role.
        let mut tx = owner.begin().await.unwrap();
        sqlx::query("set local role secureflows_app")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("set local secureflows.definer = 'on'")
            .execute(&mut *tx)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("select count(*) from workspace")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0);
        tx.rollback().await.unwrap();
        owner.close().await;
    };
    let result = tokio::spawn(outcome).await;
    let _ = sqlx::query(&format!("drop database if exists {database} with (force)"))
        .execute(&admin)
        .await;
    let _ = sqlx::query(&format!(
        "drop database if exists {database}_keyring with (force)"
    ))
    .execute(&admin)
    .await;
    let _ = sqlx::query(&format!("drop owned by {owner_role}"))
        .execute(&admin)
        .await;
    let _ = sqlx::query(&format!("drop role if exists {owner_role}"))
        .execute(&admin)
        .await;
    result.unwrap();
}

fn db_name(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned()
}
