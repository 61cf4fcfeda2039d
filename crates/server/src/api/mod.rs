//! The HTTP routers: the Session API (SESSION JWT), the management API (USER JWT), the public
//! well-known documents and health, and the OpenAPI description of all of them.
//!
//! Routes are registered through `utoipa-axum`, so a route and its OpenAPI entry are one declaration:
//! the served description (`/api/v1/openapi.json`) cannot list a route that does not exist or miss one
//! that does. Each router has its own middleware; the envelope wraps them all.

pub mod manage;
pub mod session;
pub mod webhooks;
pub mod wellknown;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::manage::{applications, audit, identity_providers, invites, tiers, users, workspaces};
use crate::middleware;
use crate::problem::Problem;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "secureFlows",
        description = "Identity and encrypted session vault. The Session API takes a SESSION JWT; the \
                       management API takes a USER JWT. Errors are RFC 9457 problems \
                       (`application/problem+json`) with a stable `type`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerSchemes),
    tags(
        (name = "session", description = "Session API (SESSION JWT)"),
        (name = "workspaces", description = "Management: the caller's workspace (USER JWT)"),
        (name = "applications", description = "Management: applications (USER JWT)"),
        (name = "users", description = "Management: members, roles, audited vault reads (USER JWT)"),
        (name = "invites", description = "Management: invitations (USER JWT)"),
        (name = "identity-providers", description = "Management: upstream sign-in providers of the hosted login (USER JWT)"),
        (name = "audit", description = "Management: audit and API-access logs (USER JWT)"),
        (name = "billing", description = "Billing webhooks (signed by Paddle or Stripe; no token)"),
        (name = "operations", description = "Health and public keys"),
    )
)]
struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            let mut scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build();
            scheme.description = Some(what.to_owned());
            SecurityScheme::Http(scheme)
        };
        components.add_security_scheme("session", bearer("SESSION JWT (typ sf-session+jwt)"));
        components.add_security_scheme("console", bearer("USER JWT (typ sf-user+jwt)"));
    }
}

/// The OpenAPI description and the routers it describes.
fn routers() -> (
    OpenApiRouter<AppState>,
    OpenApiRouter<AppState>,
    OpenApiRouter<AppState>,
) {
    let session_api = OpenApiRouter::new()
        .routes(routes!(session::callback))
        .routes(routes!(session::logout, session::browser_logout))
        .routes(routes!(session::anonymous))
        .routes(routes!(session::upgrade))
        .routes(routes!(session::list_values))
        .routes(routes!(session::set_value))
        .routes(routes!(session::get_value))
        .routes(routes!(session::delete_value))
        .routes(routes!(session::revoke_sessions))
        .routes(routes!(session::consume))
        .routes(routes!(session::checkout_reference));
    let management = OpenApiRouter::new()
        .routes(routes!(
            workspaces::get_workspace,
            workspaces::update_workspace,
            workspaces::create_workspace
        ))
        .routes(routes!(
            applications::create_application,
            applications::list_applications
        ))
        .routes(routes!(
            applications::get_application,
            applications::update_application,
            applications::delete_application
        ))
        .routes(routes!(applications::rotate_secret))
        .routes(routes!(tiers::get_user_tier, tiers::set_user_tier))
        .routes(routes!(tiers::set_stripe_secret))
        .routes(routes!(workspaces::checkout_reference))
        .routes(routes!(users::list_users))
        .routes(routes!(users::me))
        .routes(routes!(users::get_user, users::delete_user))
        .routes(routes!(users::change_role))
        .routes(routes!(users::lock_user))
        .routes(routes!(users::unlock_user))
        .routes(routes!(users::revoke_user))
        .routes(routes!(users::list_user_values))
        .routes(routes!(users::get_user_value))
        .routes(routes!(invites::create_invite, invites::list_invites))
        .routes(routes!(invites::revoke_invite))
        .routes(routes!(
            identity_providers::create_identity_provider,
            identity_providers::list_identity_providers
        ))
        .routes(routes!(identity_providers::delete_identity_provider))
        .routes(routes!(audit::list_events))
        .routes(routes!(audit::export_events))
        .routes(routes!(audit::list_api_access));
    let public = OpenApiRouter::new()
        .routes(routes!(wellknown::healthz))
        .routes(routes!(wellknown::readyz))
        .routes(routes!(wellknown::jwks))
        .routes(routes!(webhooks::paddle))
        .routes(routes!(webhooks::stripe));
    (session_api, management, public)
}

/// The OpenAPI 3.1 description of every route, generated from the handlers' declarations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (session_api, management, public) = routers();
    let mut doc = ApiDoc::openapi();
    doc.merge(session_api.into_openapi());
    doc.merge(management.into_openapi());
    doc.merge(public.into_openapi());
    doc.paths.paths.insert(
        "/api/v1/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .tag("operations")
                .summary(Some("This description"))
                .response(
                    "200",
                    utoipa::openapi::ResponseBuilder::new()
                        .description("OpenAPI 3.1 description")
                        .content(
                            "application/json",
                            utoipa::openapi::content::ContentBuilder::new()
                                .schema(Some(utoipa::openapi::schema::Object::new()))
                                .build(),
                        ),
                )
                .build(),
        ),
    );
    doc
}

/// The query parameters each operation declares in the OpenAPI description, by method and route
/// template. An operation that declares none takes none.
#[derive(Debug, Default)]
struct DeclaredQueries(HashMap<(Method, String), HashSet<String>>);

impl DeclaredQueries {
    fn of(doc: &utoipa::openapi::OpenApi) -> DeclaredQueries {
        use utoipa::openapi::path::{Operation, ParameterIn};
        let mut map = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let operations: [(Method, &Option<Operation>); 5] = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let names = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|p| match p {
                        utoipa::openapi::RefOr::T(p) if p.parameter_in == ParameterIn::Query => {
                            Some(p.name.clone())
                        }
                        _ => None,
                    })
                    .collect();
                map.insert((method, path.clone()), names);
            }
        }
        DeclaredQueries(map)
    }
}

/// Refuses (400) a query parameter the operation does not declare, on every API route, so that
/// `?foo=bar` means the same everywhere: the list endpoints' own query types refuse unknown
/// parameters, and this covers the operations that take none.
async fn declared_query_only(
    State(declared): State<Arc<DeclaredQueries>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(query) = request.uri().query().filter(|q| !q.is_empty()) {
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let allowed = declared.0.get(&(request.method().clone(), route));
        let unknown = url::form_urlencoded::parse(query.as_bytes())
            .map(|(name, _)| name.into_owned())
            .find(|name| !allowed.is_some_and(|a| a.contains(name)));
        if let Some(name) = unknown {
            let detail = if allowed.is_none_or(HashSet::is_empty) {
                "this operation takes no query parameters".to_owned()
            } else {
                format!(
                    "unknown query parameter `{}`",
                    secureflows_core::access::neutralize(&name, 64)
                )
            };
            return Problem::malformed(detail).into_response();
        }
    }
    next.run(request).await
}

/// The JSON APIs: the Session API, the management API and the public documents, each with its own
/// middleware (`routes::router` composes them with the pages).
pub fn router(state: AppState) -> Router<AppState> {
    let (session_api, management, public) = routers();
    let (session_api, _) = session_api.split_for_parts();
    let (management, _) = management.split_for_parts();
    let (public, _) = public.split_for_parts();
    let description = openapi();
    let declared = Arc::new(DeclaredQueries::of(&description));
    let document: Arc<String> = Arc::new(description.to_json().unwrap_or_else(|_| "{}".to_owned()));

    let session_api = session_api
        .route_layer(from_fn_with_state(declared.clone(), declared_query_only))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::budget::rate_headers))
        .layer(from_fn_with_state(state, middleware::session_api));
    let management = management
        .route_layer(from_fn_with_state(declared.clone(), declared_query_only))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::budget::rate_headers));
    let public = public
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { openapi_response(&document) }
            }),
        )
        .route_layer(from_fn_with_state(declared, declared_query_only))
        .method_not_allowed_fallback(method_not_allowed);

    Router::new().merge(session_api).merge(management).merge(public)
}

fn openapi_response(document: &str) -> Response {
    let mut response = document.to_owned().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn method_not_allowed() -> Response {
    Problem::method_not_allowed().into_response()
}
