//! The audit log is tamper-evident: an event edited, deleted from the middle or from the end, or moved,
//! directly in the database, is reported by verification; an untouched chain verifies.

use secureflows_core::audit::{ChainFault, INSTANCE};
use secureflows_core::{Plan, Role, WorkspaceId};
use secureflows_testkit::{Backend, TestApp, backend_tests};
use serde_json::json;

use crate::support::{call_ok, raw_execute};

backend_tests!(
    tampering_is_detected,
    exports_are_complete_in_both_formats,
    concurrent_changes_keep_one_owner_and_an_intact_chain,
);

/// A workspace with a few audited changes (events 1..=n).
async fn busy_workspace(app: &TestApp) -> WorkspaceId {
    let ws = app.workspace(Plan::pro()).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    for name in ["One", "Two", "Three"] {
        call_ok(
            app,
            "PATCH",
            "/api/v1/workspaces",
            &owner,
            Some(json!({"name": name})),
            200,
        )
        .await;
    }
    ws
}

async fn faults(app: &TestApp, ws: WorkspaceId) -> Vec<ChainFault> {
    let reports = app.services().verify_audit(Some(ws)).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].keys_available);
    reports[0].faults.clone()
}

fn kinds(faults: &[ChainFault]) -> Vec<(&'static str, i64)> {
    faults.iter().map(|f| (f.kind, f.seq)).collect()
}

async fn tampering_is_detected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let intact = busy_workspace(&app).await;
    let edited = busy_workspace(&app).await;
    let cut_middle = busy_workspace(&app).await;
    let cut_tail = busy_workspace(&app).await;
    let swapped = busy_workspace(&app).await;
    // Events: 1 workspace.create, 2 user.create, 3 token.issue, 4..6 workspace.update.
    for ws in [intact, edited, cut_middle, cut_tail, swapped] {
        assert!(faults(&app, ws).await.is_empty());
    }

    // An edited field (here: which resource the event names).
    raw_execute(
        &app,
        "update audit_event set resource_id = 'someone-else' where workspace_id = ?1 and seq = 4",
        "update audit_event set resource_id = 'someone-else' where workspace_id = $1::uuid and seq = 4",
        &[edited.to_string()],
    )
    .await;
    assert_eq!(kinds(&faults(&app, edited).await), [("edited", 4)]);

    // An event deleted from the middle.
    raw_execute(
        &app,
        "delete from audit_event where workspace_id = ?1 and seq = 5",
        "delete from audit_event where workspace_id = $1::uuid and seq = 5",
        &[cut_middle.to_string()],
    )
    .await;
    assert_eq!(
        kinds(&faults(&app, cut_middle).await),
        [("missing", 5), ("relinked", 6)]
    );

    // The last event deleted: the recorded head no longer matches.
    raw_execute(
        &app,
        "delete from audit_event where workspace_id = ?1 and seq = 6",
        "delete from audit_event where workspace_id = $1::uuid and seq = 6",
        &[cut_tail.to_string()],
    )
    .await;
    assert_eq!(kinds(&faults(&app, cut_tail).await), [("truncated", 6)]);

    // Sealed details moved from one event to another.
    raw_execute(
        &app,
        "update audit_event set details_sealed = (select details_sealed from audit_event where workspace_id = ?1 and seq = 4)
         where workspace_id = ?1 and seq = 5",
        "update audit_event set details_sealed = (select details_sealed from audit_event where workspace_id = $1::uuid and seq = 4)
         where workspace_id = $1::uuid and seq = 5",
        &[swapped.to_string()],
    )
    .await;
    assert_eq!(kinds(&faults(&app, swapped).await), [("edited", 5)]);

    // A whole chain wiped, events and head: a live workspace without a chain is reported too.
    let wiped = busy_workspace(&app).await;
    for table in ["audit_event", "audit_head"] {
        raw_execute(
            &app,
            &format!("delete from {table} where workspace_id = ?1"),
            &format!("delete from {table} where workspace_id = $1::uuid"),
            &[wiped.to_string()],
        )
        .await;
    }
    assert_eq!(kinds(&faults(&app, wiped).await), [("missing", 1)]);

    // The others are unaffected, and a full verification names exactly the broken chains.
    assert!(faults(&app, intact).await.is_empty());
    let all = app.services().verify_audit(None).await.unwrap();
    let broken: Vec<WorkspaceId> = all
        .iter()
        .filter(|r| !r.faults.is_empty())
        .map(|r| r.workspace_id)
        .collect();
    assert_eq!(broken.len(), 5);
    for ws in [edited, cut_middle, cut_tail, swapped, wiped] {
        assert!(broken.contains(&ws));
    }
    assert!(all.iter().any(|r| r.workspace_id == intact && r.events == 6));
    // The instance's own chain exists once SUPPORT operators or deletions were recorded.
    app.support_token(intact, "help@ops.example").await;
    let instance = app.services().verify_audit(Some(INSTANCE)).await.unwrap();
    assert!(instance[0].faults.is_empty() && instance[0].events >= 1);
}

async fn exports_are_complete_in_both_formats(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = busy_workspace(&app).await;
    let owner = app.console_token(ws, "owner@x.example", Role::Owner).await;
    // A user agent that a spreadsheet would run as a formula.
    app.http
        .patch(format!("{}/api/v1/workspaces", app.url))
        .bearer_auth(&owner)
        .header("user-agent", "=HYPERLINK(\"http://evil.example\")")
        .json(&json!({"name": "Four"}))
        .send()
        .await
        .unwrap();
    let jsonl = app
        .http
        .get(format!("{}/api/v1/audit/events/export", app.url))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(jsonl.headers()["content-type"], "application/jsonl");
    let text = jsonl.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "oldest first, complete"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "workspace.update" && l["new"]["name"] == "Four")
    );

    let csv = app
        .http
        .get(format!("{}/api/v1/audit/events/export?format=csv", app.url))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let mut rows = text.lines();
    assert!(
        rows.next()
            .unwrap()
            .starts_with("workspace_id,seq,id,at,actor_kind")
    );
    assert_eq!(rows.count(), seqs.len());
    assert!(text.contains("'=HYPERLINK"), "formula-like cells are neutralised");
    // Paging the export: nothing after the last event.
    let last = seqs.len();
    let after = app
        .http
        .get(format!("{}/api/v1/audit/events/export?after_seq={last}", app.url))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert!(after.headers().get("x-next-after-seq").is_none());
    assert!(after.text().await.unwrap().is_empty());
}

async fn concurrent_changes_keep_one_owner_and_an_intact_chain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.workspace(Plan::pro()).await;
    for round in 0..5 {
        // Two OWNERs demote each other at the same moment: the workspace keeps at least one.
        let one = app.console_token(ws, "one@x.example", Role::Owner).await;
        let two = app.console_token(ws, "two@x.example", Role::Owner).await;
        let (one_id, two_id) = (
            crate::support::jwt_claims(&one)["sub"]
                .as_str()
                .unwrap()
                .to_owned(),
            crate::support::jwt_claims(&two)["sub"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let demote = |token: String, target: String| {
            let app = &app;
            async move {
                crate::support::call(
                    app,
                    "PUT",
                    &format!("/api/v1/users/{target}/role"),
                    &token,
                    Some(json!({"role": "admin"})),
                )
                .await
                .status()
                .as_u16()
            }
        };
        let (a, b) = tokio::join!(
            demote(one.clone(), two_id.clone()),
            demote(two.clone(), one_id.clone())
        );
        assert!(a == 200 || b == 200, "round {round}: {a} {b}");
        let users = app
            .services()
            .stores
            .users
            .list_users(ws, None, 100)
            .await
            .unwrap();
        let owners = users
            .iter()
            .filter(|u| u.role == Role::Owner && u.status == secureflows_core::UserStatus::Active)
            .count();
        assert!(owners >= 1, "round {round}: {a} {b} left no owner");
    }

    // Many changes at once: every one gets its own place in the chain.
    let owner = app.console_token(ws, "boss@x.example", Role::Owner).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, url, owner) = (app.http.clone(), app.url.clone(), owner.clone());
        tasks.push(tokio::spawn(async move {
            let request = if i % 2 == 0 {
                http.patch(format!("{url}/api/v1/workspaces"))
                    .json(&json!({"name": format!("Name {i}")}))
            } else {
                http.post(format!("{url}/api/v1/invites"))
                    .json(&json!({"email": format!("p{i}@x.example"), "role": "user"}))
            };
            request.bearer_auth(owner).send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), 200 | 201));
    }
    let report = &app.services().verify_audit(Some(ws)).await.unwrap()[0];
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    let events = app.services().export_all_events(ws).await.unwrap();
    assert_eq!(events.len() as u64, report.events);
    assert_eq!(
        events.iter().filter(|e| e.action == "workspace.update").count(),
        12
    );
    assert_eq!(events.iter().filter(|e| e.action == "invite.create").count(), 12);
}
