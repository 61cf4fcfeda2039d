//! Tiers and billing in the console: an application's end-user tiers and its Stripe webhook secret
//! (on the application's page), a user's tier in each application (on the user's page), and a Paddle
//! checkout reference for the workspace (on the plan page). Each calls the service the management API
//! calls.

use std::collections::HashMap;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use secureflows_core::tier::TierSource;
use secureflows_core::{Application, ApplicationId, Error, Tier, UserId};

use super::context::{console_form, path_id};
use super::views::error_lines;
use crate::pages::{PageResult, see_other};
use crate::state::AppState;

/// Blank rows the tier table offers for new tiers.
const BLANK_ROWS: usize = 2;

/// One row of the tier table, as shown or as entered.
#[derive(Debug, Clone, Default)]
pub(super) struct TierFields {
    pub name: String,
    pub requests: String,
    pub features: String,
    pub prices: String,
}

impl TierFields {
    fn of(t: &Tier) -> TierFields {
        TierFields {
            name: t.name.clone(),
            requests: t.requests_per_hour.map(|n| n.to_string()).unwrap_or_default(),
            features: t.features.join(", "),
            prices: t.prices.join(", "),
        }
    }
}

/// The tier table of an application's page.
#[derive(Debug, Clone, Default)]
pub(super) struct TierTable {
    pub rows: Vec<TierFields>,
    pub default_tier: String,
    pub errors: Vec<String>,
    /// A Stripe webhook secret is set.
    pub stripe_configured: bool,
    /// Where Stripe sends this application's events.
    pub webhook_url: String,
}

impl TierTable {
    /// The stored tiers with blank rows to add more.
    pub(super) fn of(app: &Application, stripe_configured: bool, base: &str) -> TierTable {
        let mut rows: Vec<TierFields> = app.tiers.iter().map(TierFields::of).collect();
        let blanks = BLANK_ROWS.min(secureflows_core::tier::MAX_TIERS.saturating_sub(rows.len()));
        rows.extend(std::iter::repeat_n(TierFields::default(), blanks));
        TierTable {
            rows,
            default_tier: app.default_tier.clone().unwrap_or_default(),
            errors: Vec::new(),
            stripe_configured,
            webhook_url: format!("{base}/api/v1/webhooks/stripe/{}", app.id),
        }
    }
}

// The tier table as posted: `tier_<i>_name`, `tier_<i>_requests`, `tier_<i>_features`,
// `tier_<i>_prices`, with `default_tier`; or `preset=tuff-flips`.
crate::pages::csrf_form!(TiersForm {
    #[serde(default)]
    default_tier: String,
    preset: Option<String>,
    #[serde(flatten)]
    rows: HashMap<String, String>,
});

impl TiersForm {
    /// The rows as entered, in order (`tier_0` …), blank ones included.
    fn entered(&self) -> Vec<TierFields> {
        let field = |i: usize, what: &str| {
            self.rows
                .get(&format!("tier_{i}_{what}"))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        (0..secureflows_core::tier::MAX_TIERS + BLANK_ROWS)
            .take_while(|i| self.rows.contains_key(&format!("tier_{i}_name")))
            .map(|i| TierFields {
                name: field(i, "name"),
                requests: field(i, "requests"),
                features: field(i, "features"),
                prices: field(i, "prices"),
            })
            .collect()
    }

    /// The tiers the non-blank rows describe; a budget that is not a number is an `Invalid` error.
    fn tiers(&self) -> Result<(Vec<Tier>, Option<String>), Error> {
        if self.preset.as_deref() == Some("tuff-flips") {
            let (tiers, default) = secureflows_core::tier::tuff_flips();
            return Ok((tiers, Some(default)));
        }
        let list = |text: &str| -> Vec<String> {
            text.split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut tiers = Vec::new();
        for (i, row) in self.entered().into_iter().enumerate() {
            if row.name.is_empty()
                && row.requests.is_empty()
                && row.features.is_empty()
                && row.prices.is_empty()
            {
                continue;
            }
            let requests_per_hour = if row.requests.is_empty() {
                None
            } else {
                Some(
                    row.requests
                        .replace([',', '_', ' '], "")
                        .parse::<u32>()
                        .map_err(|_| {
                            Error::invalid(
                                &format!("tiers[{i}].requests_per_hour"),
                                "a whole number of requests per hour (empty: no limit)",
                            )
                        })?,
                )
            };
            tiers.push(Tier {
                name: row.name,
                requests_per_hour,
                features: list(&row.features),
                prices: list(&row.prices),
            });
        }
        let default = Some(self.default_tier.trim().to_owned()).filter(|d| !d.is_empty());
        Ok((tiers, default))
    }
}

fn tier_label(field: &str) -> &'static str {
    match field {
        f if f.ends_with(".name") => "Tier name",
        f if f.ends_with(".requests_per_hour") => "Requests per hour",
        f if f.ends_with(".features") => "Features",
        f if f.ends_with(".prices") => "Stripe prices",
        "default_tier" => "Default tier",
        "webhook_secret" => "Signing secret",
        _ => "Tiers",
    }
}

/// `POST …/applications/{id}/tiers` (OWNER, ADMIN): replaces the application's tiers.
pub(super) async fn save_tiers(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}");
    let (mut c, form, _): (_, TiersForm, _) = console_form(&state, &workspace, &here, request).await?;
    let id: ApplicationId = path_id(&id)?;
    let services = state.services();
    let stored = services.workspace_application(&c.caller, id).await?;
    let saved = match form.tiers() {
        Ok((tiers, default)) => {
            let patch = secureflows_core::workspace::ApplicationPatch {
                tiers: Some(tiers),
                default_tier: Some(default),
                ..Default::default()
            };
            services.update_application(&c.caller, id, patch).await
        }
        Err(e) => Err(e),
    };
    match saved {
        Ok(app) => {
            c.shell.notice = Some("Tiers saved. They apply from each user's next request.".into());
            super::applications::app_page(&state, c, &app, None, None, None, StatusCode::OK).await
        }
        Err(Error::Invalid(errors)) => {
            let entered = Some((form.entered(), form.default_tier.clone()));
            refused(&state, c, &stored, entered, &errors).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The application's page again, 422, with the tier section's errors (and the tier table as entered).
async fn refused(
    state: &AppState,
    c: super::context::Console,
    stored: &Application,
    entered: Option<(Vec<TierFields>, String)>,
    errors: &[secureflows_core::FieldError],
) -> PageResult {
    let mut table = TierTable::of(stored, false, "");
    if let Some((rows, default_tier)) = entered {
        table.rows = rows;
        table.default_tier = default_tier;
    }
    table.errors = error_lines(errors, tier_label);
    super::applications::app_page(
        state,
        c,
        stored,
        None,
        None,
        Some(table),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

crate::pages::csrf_form!(StripeForm {
    #[serde(default)]
    webhook_secret: String,
});

/// `POST …/applications/{id}/stripe` (OWNER, ADMIN): sets the Stripe webhook signing secret.
pub(super) async fn save_stripe(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/applications/{id}");
    let (mut c, form, _): (_, StripeForm, _) = console_form(&state, &workspace, &here, request).await?;
    let id: ApplicationId = path_id(&id)?;
    let services = state.services();
    let stored = services.workspace_application(&c.caller, id).await?;
    match services
        .set_stripe_secret(&c.caller, id, form.webhook_secret.trim())
        .await
    {
        Ok(()) => {
            c.shell.notice =
                Some("The Stripe signing secret is saved (sealed; it is not shown again).".into());
            super::applications::app_page(&state, c, &stored, None, None, None, StatusCode::OK).await
        }
        Err(Error::Invalid(errors)) => refused(&state, c, &stored, None, &errors).await,
        Err(e) => Err(e.into()),
    }
}

crate::pages::csrf_form!(UserTierForm {
    #[serde(default)]
    application: String,
    #[serde(default)]
    tier: String,
});

/// `POST …/users/{id}/tier` (OWNER, ADMIN): puts the user on a tier of one application (empty: the
/// default tier).
pub(super) async fn set_user_tier(
    State(state): State<AppState>,
    Path((workspace, id)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/users/{id}");
    let (c, form, _): (_, UserTierForm, _) = console_form(&state, &workspace, &here, request).await?;
    let user: UserId = path_id(&id)?;
    let application: ApplicationId = path_id(&form.application)?;
    let tier = Some(form.tier.trim()).filter(|t| !t.is_empty());
    state
        .services()
        .set_user_tier(&c.caller, application, user, tier, TierSource::Console)
        .await?;
    Ok(see_other(&c.path(&format!("/users/{user}?tier=saved#tiers"))))
}

/// `POST …/plan/reference` (OWNER): a signed reference for the workspace's Paddle checkout.
pub(super) async fn checkout_reference(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    request: Request,
) -> PageResult {
    let here = format!("/console/w/{workspace}/plan");
    let (c, _form, _): (_, super::context::PlainForm, _) =
        console_form(&state, &workspace, &here, request).await?;
    let (reference, expires) = state.services().workspace_checkout_reference(&c.caller)?;
    super::plan::plan_page(&state, c, Some((reference, super::views::when(expires)))).await
}
