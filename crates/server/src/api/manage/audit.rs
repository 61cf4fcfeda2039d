//! `/api/v1/audit`: the audit log (with JSON Lines and CSV export) and the API-access log.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secureflows_api_types as dto;
use secureflows_api_types::manage as m;
use secureflows_core::audit::EventFilter;
use secureflows_core::audit_trail::{self, EXPORT_BATCH, EventRecord};
use secureflows_core::store::AccessFilter;
use secureflows_core::{Error, UserId};
use serde::Deserialize;

use super::{decode_cursor, next_cursor, page_limit, parse_time};
use crate::extract::{ConsoleAuth, Query};
use crate::problem::ApiResult;
use crate::state::AppState;

fn event_dto(r: EventRecord) -> m::AuditEvent {
    m::AuditEvent {
        seq: r.seq,
        id: r.id,
        at: r.at,
        actor: m::AuditActor {
            kind: r.actor_kind,
            id: r.actor_id,
        },
        action: r.action,
        resource: m::AuditResource {
            type_: r.resource_type,
            id: r.resource_id,
        },
        old: r.old,
        new: r.new,
        client_ip: r.client_ip,
        user_agent: r.user_agent,
        request_id: r.request_id,
        hash: r.hash,
    }
}

fn parse_actor(actor: Option<&str>) -> Result<Option<UserId>, Error> {
    actor
        .map(|a| {
            a.parse()
                .map_err(|_| Error::invalid("actor", "must be a user id"))
        })
        .transpose()
}

/// Query of `GET /audit/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Events before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Events by this user or SUPPORT operator.
    #[param(format = Uuid)]
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (e.g. `user.`).
    #[param(min_length = 1, max_length = 200)]
    pub action: Option<String>,
    /// Events on this resource id.
    #[param(min_length = 1, max_length = 200)]
    pub resource: Option<String>,
}

fn check_text(field: &str, value: &Option<String>) -> Result<(), Error> {
    match value {
        Some(v) if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) => {
            Err(Error::invalid(field, "must be 1 to 200 characters"))
        }
        _ => Ok(()),
    }
}

/// The workspace's audit events, newest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit",
    security(("console" = [])),
    params(EventQuery),
    responses(
        (status = 200, description = "A page of events (OWNER, ADMIN, SUPPORT)", body = m::AuditEventList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_events(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Query(q): Query<EventQuery>,
) -> ApiResult<axum::Json<m::AuditEventList>> {
    caller.require_metadata_reader()?;
    let limit = page_limit(q.limit)?;
    check_text("action", &q.action)?;
    check_text("resource", &q.resource)?;
    let filter = EventFilter {
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        actor: parse_actor(q.actor.as_deref())?,
        action: q.action,
        resource: q.resource,
        before_seq: q
            .cursor
            .as_deref()
            .map(|c| decode_cursor::<i64>("seq", c))
            .transpose()?,
    };
    let events = state.services().list_events(&caller, &filter, limit).await?;
    let next = next_cursor(&events, limit, "seq", |e| e.seq.to_string());
    Ok(axum::Json(m::AuditEventList {
        items: events.into_iter().map(event_dto).collect(),
        next_cursor: next,
    }))
}

/// Query of `GET /audit/events/export`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl` (JSON Lines, default) or `csv`.
    #[param(pattern = "^(jsonl|csv)$")]
    pub format: Option<String>,
    /// Events after this sequence number (the `X-Next-After-Seq` of the previous response); default 0.
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
}

/// The workspace's audit events, oldest first, as JSON Lines or CSV, up to 10,000 per request; when
/// more follow, `X-Next-After-Seq` gives the `after_seq` of the next request.
#[utoipa::path(get, path = "/api/v1/audit/events/export", tag = "audit",
    security(("console" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "Events (OWNER, ADMIN, SUPPORT)", content(
            (String = "application/jsonl"),
            (String = "text/csv"),
        )),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_events(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    caller.require_metadata_reader()?;
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return Err(Error::invalid("format", "must be jsonl or csv").into()),
    };
    let after = q.after_seq.unwrap_or(0);
    if after < 0 {
        return Err(Error::invalid("after_seq", "must not be negative").into());
    }
    let events = state.services().export_events(&caller, after).await?;
    export_response(&events, csv)
}

/// A batch of exported events as a download; a full batch names where the next one starts
/// (`X-Next-After-Seq`).
fn export_response(events: &[audit_trail::EventRecord], csv: bool) -> ApiResult<Response> {
    let next = (events.len() == EXPORT_BATCH as usize)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    let (body, content_type) = if csv {
        (audit_trail::to_csv(events, true)?, "text/csv; charset=utf-8")
    } else {
        (audit_trail::to_json_lines(events)?, "application/jsonl")
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    if let Some(seq) = next {
        h.insert("x-next-after-seq", HeaderValue::from(seq));
    }
    Ok(response)
}

/// Query of `GET /audit/api-access`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccessQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Records at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Records before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Records of this user.
    #[param(format = Uuid)]
    pub actor: Option<String>,
    /// Exact route template, e.g. `/api/v1/sessions/get/{key}`.
    #[param(min_length = 1, max_length = 200)]
    pub route: Option<String>,
    /// Exact response status.
    #[param(minimum = 100, maximum = 599)]
    pub status: Option<u16>,
    /// Records of calls for this application (its client id).
    #[param(format = Uuid)]
    pub application: Option<String>,
}

/// The workspace's API-access log, newest first.
#[utoipa::path(get, path = "/api/v1/audit/api-access", tag = "audit",
    security(("console" = [])),
    params(AccessQuery),
    responses(
        (status = 200, description = "A page of records (OWNER, ADMIN, SUPPORT)", body = m::ApiAccessList),
        (status = "4XX", description = "Problem", body = dto::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_api_access(
    State(state): State<AppState>,
    ConsoleAuth(caller): ConsoleAuth,
    Query(q): Query<AccessQuery>,
) -> ApiResult<axum::Json<m::ApiAccessList>> {
    caller.require_metadata_reader()?;
    let limit = page_limit(q.limit)?;
    let filter = q.filter()?;
    let rows = state.services().list_api_access(&caller, &filter, limit).await?;
    let next = next_cursor(&rows, limit, "access", |r| r.position.to_string());
    Ok(axum::Json(m::ApiAccessList {
        items: rows.into_iter().map(access_dto).collect(),
        next_cursor: next,
    }))
}

impl AccessQuery {
    /// The filter this query asks for, its values checked.
    fn filter(self) -> ApiResult<AccessFilter> {
        check_text("route", &self.route)?;
        if self.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return Err(Error::invalid("status", "must be an HTTP status (100 to 599)").into());
        }
        Ok(AccessFilter {
            since: parse_time("since", self.since.as_deref())?,
            until: parse_time("until", self.until.as_deref())?,
            user: parse_actor(self.actor.as_deref())?,
            route: self.route,
            status: self.status,
            application: self
                .application
                .as_deref()
                .map(|a| {
                    a.parse()
                        .map_err(|_| Error::invalid("application", "must be a client id"))
                })
                .transpose()?,
            before: self
                .cursor
                .as_deref()
                .map(|c| decode_cursor::<i64>("access", c))
                .transpose()?,
        })
    }
}

/// A record of the API-access log, as the API shows it.
fn access_dto(r: secureflows_core::audit_trail::AccessRecordView) -> m::ApiAccess {
    m::ApiAccess {
        at: r.entry.at.rfc3339(),
        method: r.entry.method,
        route: r.entry.route,
        key: r.key,
        status: r.entry.status,
        application_id: r.entry.application_id.map(|a| a.to_string()),
        user_id: r.entry.user_id.map(|u| u.to_string()),
        bytes_in: r.entry.bytes_in,
        bytes_out: r.entry.bytes_out,
        client_ip: r.entry.client_ip,
        user_agent: r.entry.user_agent,
        request_id: r.entry.request_id,
        duration_us: r.entry.duration_us,
    }
}
