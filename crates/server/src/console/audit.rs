//! The audit log and the API-access log: filters, keyset paging (newest first, by sequence number or
//! position, so the millionth row costs what the first does), the audit log's export as JSON Lines or
//! CSV (streamed in batches, constant memory) and "verify the chain".

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use secureflows_core::audit::EventFilter;
use secureflows_core::audit_trail::{self, EXPORT_BATCH};
use secureflows_core::console::ConsoleCaller;
use secureflows_core::store::AccessFilter;
use secureflows_core::{ApplicationId, Error, FieldError, Services, Timestamp, UserId};
use serde::Deserialize;

use super::context::{Browser, Console, PlainForm, console, console_form};
use super::views::{Shell, error_lines, when};
use crate::pages::{PageResult, render};
use crate::state::AppState;

const PER_PAGE: u32 = 50;

/// The filter form as entered (shown back as it was).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    application: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    cursor: Option<i64>,
    /// Present on the filter form's post.
    #[serde(default)]
    csrf: String,
}

impl super::context::CsrfForm for Filters {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl Filters {
    /// This filter's query string with another cursor.
    fn query(&self, cursor: i64) -> String {
        let mut q = self.query_without_cursor();
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(&format!("cursor={cursor}"));
        q
    }

    /// This filter's query string, from the first page.
    fn query_without_cursor(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("resource", &self.resource),
            ("route", &self.route),
            ("status", &self.status),
            ("application", &self.application),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }
}

/// A `datetime-local` value (`2026-12-07T16:43`, taken as UTC) as a time.
fn local_time(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let text = if v.len() == 16 {
        format!("{v}:00Z")
    } else {
        format!("{v}Z")
    };
    let parsed = Timestamp::parse_rfc3339(&text);
    if parsed.is_none() {
        errors.push(FieldError::new(field, "must be a date and time"));
    }
    parsed
}

/// A text filter: 1 to 200 characters without control characters.
fn text(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.len() > 200 || v.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "must be at most 200 characters"));
        return None;
    }
    Some(v.to_owned())
}

/// An actor in a page's address: a user id (the filter form turns an e-mail address into one).
fn actor(value: &str, errors: &mut Vec<FieldError>) -> Option<UserId> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let parsed = v.parse().ok();
    if parsed.is_none() {
        errors.push(FieldError::new("actor", "must be an e-mail address or a user id"));
    }
    parsed
}

/// The filter form's actor as an id: an e-mail address is looked up through its blind index (an
/// address without an account becomes an id that matches nothing), so that no address sits in a
/// URL (proxies log those).
async fn actor_id(services: &Services, caller: &ConsoleCaller, value: &str) -> Result<String, Error> {
    let v = value.trim();
    if !v.contains('@') {
        return Ok(v.to_owned());
    }
    let found = services.member_by_email(caller, v).await?;
    Ok(found
        .map_or_else(|| UserId::from_uuid(uuid::Uuid::nil()), |m| m.user.id)
        .to_string())
}

/// `POST …/audit` and `POST …/access` (OWNER, ADMIN): the filter form, answered with the filtered
/// page's address (303).
pub(super) async fn filter(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let path = request.uri().path().to_owned();
    let page = if path.ends_with("/access") {
        "access"
    } else {
        "audit"
    };
    let here = format!("/console/w/{workspace}/{page}");
    let (c, mut f, _): (_, Filters, _) = console_form(&state, &workspace, &here, request).await?;
    f.actor = actor_id(state.services(), &c.caller, &f.actor).await?;
    let query = f.query_without_cursor();
    Ok(crate::pages::see_other(&c.path(&format!("/{page}?{query}"))))
}

fn label(field: &str) -> &'static str {
    match field {
        "actor" => "Actor",
        "action" => "Action",
        "resource" => "Resource id",
        "route" => "Route",
        "status" => "Status",
        "application" => "Application",
        "since" => "From",
        "until" => "Until",
        _ => "Filter",
    }
}

struct EventRow {
    at: String,
    actor: String,
    action: String,
    resource: String,
    client_ip: String,
}

struct Verified {
    intact: bool,
    events: u64,
    head: Option<String>,
    faults: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    shell: Shell,
    f: Filters,
    events: Vec<EventRow>,
    next: Option<String>,
    verified: Option<Verified>,
    errors: Vec<String>,
}

/// `GET …/audit` (OWNER, ADMIN): a page of events, newest first.
pub(super) async fn audit(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(f): Query<Filters>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/audit"),
    )
    .await?;
    audit_page(&state, c, f, None).await
}

async fn audit_page(state: &AppState, c: Console, f: Filters, verified: Option<Verified>) -> PageResult {
    let services = state.services();
    let mut errors = Vec::new();
    let filter = EventFilter {
        since: local_time("since", &f.since, &mut errors),
        until: local_time("until", &f.until, &mut errors),
        actor: actor(&f.actor, &mut errors),
        action: text("action", &f.action, &mut errors),
        resource: text("resource", &f.resource, &mut errors),
        before_seq: f.cursor,
    };
    let (events, status) = if errors.is_empty() {
        (
            services.list_events(&c.caller, &filter, PER_PAGE).await?,
            StatusCode::OK,
        )
    } else {
        (Vec::new(), StatusCode::UNPROCESSABLE_ENTITY)
    };
    let next = (events.len() == PER_PAGE as usize)
        .then(|| {
            events
                .last()
                .map(|e| c.path(&format!("/audit?{}", f.query(e.seq))))
        })
        .flatten();
    let names = ActorNames::of(
        services,
        &c.caller,
        events.iter().filter_map(|e| e.actor_id.clone()),
    )
    .await;
    let rows = events
        .into_iter()
        .map(|e| EventRow {
            at: e
                .at
                .get(..19)
                .map(|t| format!("{} UTC", t.replacen('T', " ", 1)))
                .unwrap_or(e.at.clone()),
            actor: match (&e.actor_id, e.actor_kind.as_str()) {
                (Some(id), "user" | "end_user") => names.name(id),
                (Some(_), kind) | (None, kind) => kind.to_owned(),
            },
            action: e.action,
            resource: format!("{} {}", e.resource_type, e.resource_id),
            client_ip: e.client_ip.unwrap_or_default(),
        })
        .collect();
    Ok(render(
        status,
        &AuditPage {
            shell: c.shell,
            f,
            events: rows,
            next,
            verified,
            errors: error_lines(&errors, label),
        },
    ))
}

/// The e-mail addresses of the users a page names (each looked up once).
struct ActorNames(Vec<(String, String)>);

impl ActorNames {
    async fn of(
        services: &Services,
        caller: &ConsoleCaller,
        ids: impl Iterator<Item = String>,
    ) -> ActorNames {
        let mut names: Vec<(String, String)> = Vec::new();
        for id in ids {
            if names.iter().any(|(known, _)| *known == id) {
                continue;
            }
            let email = match id.parse::<UserId>() {
                Ok(user) => services.get_member(caller, user).await.ok().and_then(|m| m.email),
                Err(_) => None,
            };
            names.push((id.clone(), email.unwrap_or(id)));
        }
        ActorNames(names)
    }

    fn name(&self, id: &str) -> String {
        self.0
            .iter()
            .find(|(known, _)| known == id)
            .map_or_else(|| id.to_owned(), |(_, name)| name.clone())
    }
}

/// `POST …/audit/verify` (OWNER, ADMIN): checks the workspace's hash chain and shows the result.
pub(super) async fn verify(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/audit");
    let (c, _form, _): (_, PlainForm, _) = console_form(&state, &workspace, &here, request).await?;
    let report = state.services().verify_workspace_audit(&c.caller).await?;
    let verified = Verified {
        intact: report.faults.is_empty(),
        events: report.events,
        head: report
            .head_seq
            .zip(report.head_hash.as_deref())
            .map(|(seq, hash)| format!("#{seq} {}", hash.get(..16).unwrap_or(hash))),
        faults: report
            .faults
            .iter()
            .map(|f| format!("event #{}: {}", f.seq, fault_words(f.kind)))
            .collect(),
    };
    audit_page(&state, c, Filters::default(), Some(verified)).await
}

fn fault_words(kind: &str) -> &'static str {
    match kind {
        "edited" => "its fields no longer match its hash (edited)",
        "relinked" => "it does not follow its predecessor (an event before it was removed or replaced)",
        "missing" => "missing",
        "truncated" => "the log ends before its recorded head (cut back)",
        _ => "broken",
    }
}

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    format: Option<String>,
}

/// `GET …/audit/export?format=jsonl|csv` (OWNER, ADMIN): every event, oldest first, as a download,
/// streamed in batches of 10,000.
pub(super) async fn export(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(q): Query<ExportQuery>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/audit"),
    )
    .await?;
    let csv = q.format.as_deref() == Some("csv");
    let services = state.services_arc();
    // The first batch is read here, so that a failure is a page, not a broken download.
    let first = services.export_events(&c.caller, 0).await?;
    let caller = c.caller;
    let stream = futures_util::stream::unfold(Some((first, true)), move |next| {
        let services = services.clone();
        let caller = caller.clone();
        async move {
            let (batch, header) = next?;
            let more = batch.len() == EXPORT_BATCH as usize;
            let body = if csv {
                audit_trail::to_csv(&batch, header)
            } else {
                audit_trail::to_json_lines(&batch)
            };
            let following = match (more, batch.last()) {
                (true, Some(last)) => match services.export_events(&caller, last.seq).await {
                    Ok(b) => Some((b, false)),
                    Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
                },
                _ => None,
            };
            Some((body.map_err(|e| std::io::Error::other(e.to_string())), following))
        }
    });
    let (content_type, name) = if csv {
        ("text/csv; charset=utf-8", "audit-log.csv")
    } else {
        ("application/jsonl", "audit-log.jsonl")
    };
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

struct AccessRow {
    at: String,
    call: String,
    key: Option<String>,
    status: u16,
    application: String,
    user: String,
    duration: String,
}

#[derive(Template)]
#[template(path = "console/access.html")]
struct AccessPage {
    shell: Shell,
    f: Filters,
    applications: Vec<(String, String, bool)>,
    rows: Vec<AccessRow>,
    next: Option<String>,
    errors: Vec<String>,
}

/// `GET …/access` (OWNER, ADMIN): a page of the API-access log, newest first.
pub(super) async fn access(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    Query(f): Query<Filters>,
    browser: Browser,
) -> PageResult {
    let c = console(
        &state,
        &workspace,
        &browser,
        &format!("/console/w/{workspace}/access"),
    )
    .await?;
    let services = state.services();
    let apps = services.workspace_applications(&c.caller).await?;
    let mut errors = Vec::new();
    let application: Option<ApplicationId> = match f.application.trim() {
        "" => None,
        a => match a.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(FieldError::new("application", "is not one of this workspace's"));
                None
            }
        },
    };
    let status = match f.status.trim() {
        "" => None,
        s => match s.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Some(n),
            _ => {
                errors.push(FieldError::new("status", "must be an HTTP status (100 to 599)"));
                None
            }
        },
    };
    let filter = AccessFilter {
        since: local_time("since", &f.since, &mut errors),
        until: local_time("until", &f.until, &mut errors),
        user: actor(&f.actor, &mut errors),
        route: text("route", &f.route, &mut errors),
        status,
        application,
        before: f.cursor,
    };
    let (records, code) = if errors.is_empty() {
        (
            services.list_api_access(&c.caller, &filter, PER_PAGE).await?,
            StatusCode::OK,
        )
    } else {
        (Vec::new(), StatusCode::UNPROCESSABLE_ENTITY)
    };
    let next = (records.len() == PER_PAGE as usize)
        .then(|| {
            records
                .last()
                .map(|r| c.path(&format!("/access?{}", f.query(r.position))))
        })
        .flatten();
    let app_name = |id: Option<ApplicationId>| {
        id.map(|id| {
            apps.iter()
                .find(|a| a.id == id)
                .map_or_else(|| id.to_string(), |a| a.name.clone())
        })
        .unwrap_or_default()
    };
    let names = ActorNames::of(
        services,
        &c.caller,
        records
            .iter()
            .filter_map(|r| r.entry.user_id.map(|u| u.to_string())),
    )
    .await;
    let rows = records
        .into_iter()
        .map(|r| AccessRow {
            at: when(r.entry.at),
            call: format!("{} {}", r.entry.method, r.entry.route),
            key: r.key,
            status: r.entry.status,
            application: app_name(r.entry.application_id),
            user: r
                .entry
                .user_id
                .map(|u| names.name(&u.to_string()))
                .unwrap_or_default(),
            duration: format!("{:.1} ms", r.entry.duration_us as f64 / 1000.0),
        })
        .collect();
    let applications = apps
        .iter()
        .filter(|a| !services.is_own_console_client(a))
        .map(|a| (a.id.to_string(), a.name.clone(), Some(a.id) == application))
        .collect();
    Ok(render(
        code,
        &AccessPage {
            shell: c.shell,
            f,
            applications,
            rows,
            next,
            errors: error_lines(&errors, label),
        },
    ))
}
