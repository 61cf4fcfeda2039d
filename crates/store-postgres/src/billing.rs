//! Billing webhooks' state: handled event ids (instance level), provider subscriptions linked to
//! workspaces and end users, and applications' sealed signing secrets (both under row-level security;
//! a webhook finds its workspace through `secureflows_find_billing_link`).

use async_trait::async_trait;
use secureflows_core::billing::{BillingLink, Provider};
use secureflows_core::store::BillingStore;
use secureflows_core::{ApplicationId, Error, Result, Timestamp, UserId, WorkspaceId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::data::{PgStore, corrupt, from_ts, ts};
use crate::error::SqlResult;

fn link_row(r: &PgRow) -> Result<BillingLink> {
    Ok(BillingLink {
        provider: match r.try_get::<&str, _>("provider").db()? {
            "paddle" => Provider::Paddle,
            "stripe" => Provider::Stripe,
            _ => return Err(corrupt("billing_link.provider")),
        },
        scope: r.try_get("scope_id").db()?,
        subscription_id: r.try_get("subscription_id").db()?,
        customer_id: r.try_get("customer_id").db()?,
        workspace: WorkspaceId::from_uuid(r.try_get("workspace_id").db()?),
        user: r
            .try_get::<Option<uuid::Uuid>, _>("user_id")
            .db()?
            .map(UserId::from_uuid),
        last_event_at: from_ts(r.try_get("last_event_at").db()?),
        linked_at: from_ts(r.try_get("linked_at").db()?),
    })
}

#[async_trait]
impl BillingStore for PgStore {
    async fn webhook_event_seen(&self, provider: &str, scope: uuid::Uuid, event_id: &str) -> Result<bool> {
        sqlx::query_scalar(
            "select exists (select 1 from billing_event where provider = $1 and scope_id = $2 and event_id = $3)",
        )
        .bind(provider)
        .bind(scope)
        .bind(event_id)
        .fetch_one(&self.pool)
        .await
        .db()
    }

    async fn find_billing_link(
        &self,
        provider: &str,
        scope: uuid::Uuid,
        subscription_id: &str,
    ) -> Result<Option<BillingLink>> {
        let workspace: Option<uuid::Uuid> =
            sqlx::query_scalar("select secureflows_find_billing_link($1, $2, $3)")
                .bind(provider)
                .bind(scope)
                .bind(subscription_id)
                .fetch_one(&self.pool)
                .await
                .db()?;
        let Some(workspace) = workspace.map(WorkspaceId::from_uuid) else {
            return Ok(None);
        };
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(
                "select provider, scope_id, subscription_id, customer_id, workspace_id, user_id, last_event_at,
                        linked_at
                 from billing_link where workspace_id = $1 and provider = $2 and scope_id = $3
                   and subscription_id = $4",
            )
            .bind(workspace.as_uuid())
            .bind(provider)
            .bind(scope)
            .bind(subscription_id),
        )
        .await?
        .as_ref()
        .map(link_row)
        .transpose()
    }

    async fn billing_secret(
        &self,
        workspace: WorkspaceId,
        application: ApplicationId,
    ) -> Result<Option<Vec<u8>>> {
        self.tenant_fetch_optional(
            workspace,
            sqlx::query(
                "select secret_sealed from billing_secret
                 where workspace_id = $1 and application_id = $2 and provider = 'stripe'",
            )
            .bind(workspace.as_uuid())
            .bind(application.as_uuid()),
        )
        .await?
        .map(|r| r.try_get("secret_sealed").db())
        .transpose()
    }

    async fn purge_webhook_events(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query("delete from billing_event where received_at < $1")
            .bind(ts(before))
            .execute(&self.pool)
            .await
            .db()?
            .rows_affected())
    }
}

/// Records a handled event; `Conflict("duplicate-event")` if it was handled before.
pub(crate) async fn record_webhook_event(
    c: &mut PgConnection,
    now: Timestamp,
    provider: &str,
    scope: uuid::Uuid,
    event_id: &str,
) -> Result<()> {
    let n = sqlx::query(
        "insert into billing_event (provider, scope_id, event_id, received_at) values ($1, $2, $3, $4)
         on conflict do nothing",
    )
    .bind(provider)
    .bind(scope)
    .bind(event_id)
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?
    .rows_affected();
    if n == 0 {
        return Err(Error::Conflict("duplicate-event"));
    }
    Ok(())
}

/// Links a subscription to `workspace`; `Conflict("duplicate-event")` if it is linked already.
pub(crate) async fn link_billing(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    link: &BillingLink,
) -> Result<()> {
    if link.workspace != workspace {
        return Err(Error::NotFound("workspace"));
    }
    let n = sqlx::query(
        "insert into billing_link (provider, scope_id, subscription_id, customer_id, workspace_id, user_id,
                                   last_event_at, linked_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing",
    )
    .bind(link.provider.as_str())
    .bind(link.scope)
    .bind(&link.subscription_id)
    .bind(&link.customer_id)
    .bind(workspace.as_uuid())
    .bind(link.user.map(|u| u.as_uuid()))
    .bind(ts(link.last_event_at))
    .bind(ts(link.linked_at))
    .execute(&mut *c)
    .await
    .db()?
    .rows_affected();
    if n == 0 {
        return Err(Error::Conflict("duplicate-event"));
    }
    Ok(())
}

/// Moves a linked subscription's newest event time forward; `Conflict("stale-event")` for an older
/// event.
pub(crate) async fn advance_billing(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    provider: &str,
    scope: uuid::Uuid,
    subscription_id: &str,
    event_at: Timestamp,
) -> Result<()> {
    let stored: Option<time::OffsetDateTime> = sqlx::query_scalar(
        "select last_event_at from billing_link
         where workspace_id = $1 and provider = $2 and scope_id = $3 and subscription_id = $4 for update",
    )
    .bind(workspace.as_uuid())
    .bind(provider)
    .bind(scope)
    .bind(subscription_id)
    .fetch_optional(&mut *c)
    .await
    .db()?;
    match stored.map(from_ts) {
        None => Err(Error::NotFound("subscription")),
        Some(at) if at > event_at => Err(Error::Conflict("stale-event")),
        Some(_) => {
            sqlx::query(
                "update billing_link set last_event_at = $5
                 where workspace_id = $1 and provider = $2 and scope_id = $3 and subscription_id = $4",
            )
            .bind(workspace.as_uuid())
            .bind(provider)
            .bind(scope)
            .bind(subscription_id)
            .bind(ts(event_at))
            .execute(&mut *c)
            .await
            .db()?;
            Ok(())
        }
    }
}

/// Sets an application's sealed Stripe secret.
pub(crate) async fn set_billing_secret(
    c: &mut PgConnection,
    workspace: WorkspaceId,
    now: Timestamp,
    application: ApplicationId,
    sealed: &[u8],
) -> Result<()> {
    let known: bool = sqlx::query_scalar(
        "select exists (select 1 from application where workspace_id = $1 and application_id = $2)",
    )
    .bind(workspace.as_uuid())
    .bind(application.as_uuid())
    .fetch_one(&mut *c)
    .await
    .db()?;
    if !known {
        return Err(Error::NotFound("application"));
    }
    sqlx::query(
        "insert into billing_secret (workspace_id, application_id, provider, secret_sealed, updated_at)
         values ($1, $2, 'stripe', $3, $4)
         on conflict (application_id, provider) do update set
             secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
    )
    .bind(workspace.as_uuid())
    .bind(application.as_uuid())
    .bind(sealed)
    .bind(ts(now))
    .execute(&mut *c)
    .await
    .db()?;
    Ok(())
}
