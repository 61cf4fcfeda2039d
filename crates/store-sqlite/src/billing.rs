//! Billing webhooks' state: handled event ids, provider subscriptions linked to workspaces and end
//! users, and applications' sealed signing secrets.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use secureflows_core::billing::{BillingLink, Provider};
use secureflows_core::store::BillingStore;
use secureflows_core::{ApplicationId, Error, Result, Timestamp, WorkspaceId};

use crate::data::{SqliteStore, bad_column};
use crate::error::SqlResult;

fn provider(text: &str) -> Option<Provider> {
    match text {
        "paddle" => Some(Provider::Paddle),
        "stripe" => Some(Provider::Stripe),
        _ => None,
    }
}

fn link_row(r: &Row<'_>) -> rusqlite::Result<BillingLink> {
    Ok(BillingLink {
        provider: provider(&r.get::<_, String>(0)?).ok_or_else(|| bad_column("provider"))?,
        scope: r.get(1)?,
        subscription_id: r.get(2)?,
        customer_id: r.get(3)?,
        workspace: r.get::<_, uuid::Uuid>(4)?.into(),
        user: r.get::<_, Option<uuid::Uuid>>(5)?.map(Into::into),
        last_event_at: Timestamp::from_millis(r.get(6)?),
        linked_at: Timestamp::from_millis(r.get(7)?),
    })
}

#[async_trait]
impl BillingStore for SqliteStore {
    async fn webhook_event_seen(&self, provider: &str, scope: uuid::Uuid, event_id: &str) -> Result<bool> {
        self.db.read(|c| {
            c.prepare_cached(
                "select exists (select 1 from billing_event where provider = ?1 and scope_id = ?2 and event_id = ?3)",
            )
            .db()?
            .query_row(params![provider, scope, event_id], |r| r.get(0))
            .db()
        })
    }

    async fn find_billing_link(
        &self,
        provider: &str,
        scope: uuid::Uuid,
        subscription_id: &str,
    ) -> Result<Option<BillingLink>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select provider, scope_id, subscription_id, customer_id, workspace_id, user_id, last_event_at,
                        linked_at
                 from billing_link where provider = ?1 and scope_id = ?2 and subscription_id = ?3",
            )
            .db()?
            .query_row(params![provider, scope, subscription_id], link_row)
            .optional()
            .db()
        })
    }

    async fn billing_secret(
        &self,
        workspace: WorkspaceId,
        application: ApplicationId,
    ) -> Result<Option<Vec<u8>>> {
        self.db.read(|c| {
            c.prepare_cached(
                "select secret_sealed from billing_secret
                 where workspace_id = ?1 and application_id = ?2 and provider = 'stripe'",
            )
            .db()?
            .query_row(params![workspace.as_uuid(), application.as_uuid()], |r| r.get(0))
            .optional()
            .db()
        })
    }

    async fn purge_webhook_events(&self, before: Timestamp) -> Result<u64> {
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "delete from billing_event where received_at < ?1",
                        params![before.millis()],
                    )
                    .db()?;
                Ok(n as u64)
            })
            .await
    }
}

/// Records a handled event; `Conflict("duplicate-event")` if it was handled before.
pub(crate) fn record_webhook_event(
    c: &Connection,
    now: Timestamp,
    provider: &str,
    scope: uuid::Uuid,
    event_id: &str,
) -> Result<()> {
    let n = c
        .execute(
            "insert into billing_event (provider, scope_id, event_id, received_at) values (?1, ?2, ?3, ?4)
             on conflict do nothing",
            params![provider, scope, event_id, now.millis()],
        )
        .db()?;
    if n == 0 {
        return Err(Error::Conflict("duplicate-event"));
    }
    Ok(())
}

/// Links a subscription to `workspace`; `Conflict("duplicate-event")` if it is linked already.
pub(crate) fn link_billing(c: &Connection, workspace: WorkspaceId, link: &BillingLink) -> Result<()> {
    if link.workspace != workspace {
        return Err(Error::NotFound("workspace"));
    }
    let n = c
        .execute(
            "insert into billing_link (provider, scope_id, subscription_id, customer_id, workspace_id, user_id,
                                       last_event_at, linked_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) on conflict do nothing",
            params![
                link.provider.as_str(),
                link.scope,
                link.subscription_id,
                link.customer_id,
                workspace.as_uuid(),
                link.user.map(|u| u.as_uuid()),
                link.last_event_at.millis(),
                link.linked_at.millis()
            ],
        )
        .db()?;
    if n == 0 {
        return Err(Error::Conflict("duplicate-event"));
    }
    Ok(())
}

/// Moves a linked subscription's newest event time forward; `Conflict("stale-event")` for an older
/// event.
pub(crate) fn advance_billing(
    c: &Connection,
    workspace: WorkspaceId,
    provider: &str,
    scope: uuid::Uuid,
    subscription_id: &str,
    event_at: Timestamp,
) -> Result<()> {
    let stored: Option<i64> = c
        .query_row(
            "select last_event_at from billing_link
             where workspace_id = ?1 and provider = ?2 and scope_id = ?3 and subscription_id = ?4",
            params![workspace.as_uuid(), provider, scope, subscription_id],
            |r| r.get(0),
        )
        .optional()
        .db()?;
    match stored {
        None => Err(Error::NotFound("subscription")),
        Some(at) if at > event_at.millis() => Err(Error::Conflict("stale-event")),
        Some(_) => {
            c.execute(
                "update billing_link set last_event_at = ?5
                 where workspace_id = ?1 and provider = ?2 and scope_id = ?3 and subscription_id = ?4",
                params![
                    workspace.as_uuid(),
                    provider,
                    scope,
                    subscription_id,
                    event_at.millis()
                ],
            )
            .db()?;
            Ok(())
        }
    }
}

/// Sets an application's sealed Stripe secret.
pub(crate) fn set_billing_secret(
    c: &Connection,
    workspace: WorkspaceId,
    now: Timestamp,
    application: ApplicationId,
    sealed: &[u8],
) -> Result<()> {
    let known: bool = c
        .query_row(
            "select exists (select 1 from application where workspace_id = ?1 and application_id = ?2)",
            params![workspace.as_uuid(), application.as_uuid()],
            |r| r.get(0),
        )
        .db()?;
    if !known {
        return Err(Error::NotFound("application"));
    }
    c.execute(
        "insert into billing_secret (workspace_id, application_id, provider, secret_sealed, updated_at)
         values (?1, ?2, 'stripe', ?3, ?4)
         on conflict (application_id, provider) do update set
             secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
        params![workspace.as_uuid(), application.as_uuid(), sealed, now.millis()],
    )
    .db()?;
    Ok(())
}
