//! Taking the addresses stored before the address rule ([`crate::email`]) under it: a one-time
//! upgrade that runs whenever the store is opened with the keys (serve, migrate and the other commands)
//! until no row is left.
//!
//! Each address is opened, put in its canonical form, sealed again and indexed under the rule, oldest
//! account first. Nothing is merged: an account whose address the rule refuses, or whose canonical
//! address an older account of the workspace already has, keeps its sealed address but loses its
//! index (it cannot be found by address until an administrator sorts it out), and is recorded as an
//! [`EmailConflict`] that `secureflows migrate` reports. An address that only an upstream provider
//! claimed without verifying it (an account with no password, an upstream identity and an unverified
//! address) is not indexed at all.

use crate::audit;
use crate::auth::callback::{email_index, open_email, seal_email};
use crate::email::EmailAddress;
use crate::store::EmailConflict;
use crate::{Error, Result, Services, UserId, WorkspaceId};

/// What indexing under the address rule did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailRuleReport {
    /// Accounts (and SUPPORT operators) indexed under the rule by this run.
    pub indexed: u64,
    /// Accounts left unindexed by this run, and why.
    pub conflicts: Vec<(WorkspaceId, UserId, EmailConflict)>,
}

impl Services {
    /// Indexes every address stored before the address rule under it (see the module documentation).
    pub async fn apply_email_rule(&self) -> Result<EmailRuleReport> {
        let mut report = EmailRuleReport::default();
        for workspace in self.stores.users.email_rule_workspaces().await? {
            let keys = match self.keys.workspace_keys(workspace, false).await {
                Ok(keys) => keys,
                // A deleted workspace's rows restored without its keys: nothing can be read.
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let now = self.clock.now();
            for row in self.stores.users.email_rule_pending(workspace).await? {
                let stored = match row
                    .email_sealed
                    .as_deref()
                    .map(|s| open_email(&keys, workspace, row.user, s))
                {
                    None => None,
                    Some(Ok(address)) => Some(address),
                    // A tampered row: left unindexed and reported, never a reason not to start.
                    Some(Err(Error::Integrity(what))) => {
                        tracing::error!(target: "security", user = %row.user, what, "a sealed e-mail address failed authentication");
                        Some(String::new())
                    }
                    Some(Err(e)) => return Err(e),
                };
                let claimed_only = !row.email_verified && !row.has_password && row.has_identity;
                let users = &self.stores.users;
                let applied = match stored.as_deref().map(EmailAddress::parse) {
                    None => {
                        users
                            .apply_email_rule(workspace, row.user, None, None, None, now)
                            .await?
                    }
                    Some(Err(_)) => {
                        let conflict = Some(EmailConflict::Refused);
                        users
                            .apply_email_rule(workspace, row.user, None, None, conflict, now)
                            .await?;
                        report
                            .conflicts
                            .push((workspace, row.user, EmailConflict::Refused));
                        true
                    }
                    Some(Ok(address)) => {
                        let sealed = seal_email(&keys, workspace, row.user, &address)?;
                        let index = (!claimed_only).then(|| email_index(&keys, &address));
                        let applied = users
                            .apply_email_rule(
                                workspace,
                                row.user,
                                Some(&sealed),
                                index.as_ref().map(|i| &i[..]),
                                None,
                                now,
                            )
                            .await?;
                        if !applied {
                            let conflict = Some(EmailConflict::Collision);
                            users
                                .apply_email_rule(workspace, row.user, Some(&sealed), None, conflict, now)
                                .await?;
                            report
                                .conflicts
                                .push((workspace, row.user, EmailConflict::Collision));
                        }
                        true
                    }
                };
                if applied {
                    report.indexed += 1;
                }
            }
        }
        let pending_support = self.stores.support.support_email_rule_pending().await?;
        if !pending_support.is_empty() {
            let keys = self.instance_keys().await?;
            for (id, sealed) in pending_support {
                let stored = open_email(&keys, audit::INSTANCE, id, &sealed)?;
                match EmailAddress::parse(&stored) {
                    Ok(address) => {
                        let sealed = seal_email(&keys, audit::INSTANCE, id, &address)?;
                        let index = email_index(&keys, &address);
                        self.stores
                            .support
                            .apply_support_email_rule(id, &sealed, &index)
                            .await?;
                        report.indexed += 1;
                    }
                    Err(_) => {
                        tracing::warn!(support = %id, "a SUPPORT operator's address is refused by the address rule; delete and create it again");
                    }
                }
            }
        }
        if !report.conflicts.is_empty() {
            tracing::warn!(
                accounts = report.conflicts.len(),
                "accounts whose e-mail addresses collide under the address rule or are refused by it were left \
                 unindexed (not merged); `secureflows migrate` lists them"
            );
        }
        Ok(report)
    }

    /// Every account left unindexed by the address rule, by workspace (operators; `secureflows
    /// migrate` prints them).
    pub async fn email_conflicts(&self) -> Result<Vec<(WorkspaceId, UserId, EmailConflict)>> {
        let mut all = Vec::new();
        for workspace in self.stores.workspaces.list_workspaces().await? {
            for (user, conflict) in self.stores.users.email_conflicts(workspace.id).await? {
                all.push((workspace.id, user, conflict));
            }
        }
        Ok(all)
    }
}
