-- One rule for every e-mail address the store holds: PRECIS UsernameCaseMapped for the local part,
-- UTS 46 for the domain (crates/core/src/email.rs). The look-up hashes are keyed, so only the server,
-- holding the keys, can take them again under the rule: it does so when it next opens the store, for
-- every row still marked email_rule = 1, and records here the accounts whose addresses the rule
-- refuses or makes collide. Such accounts are reported (`secureflows migrate`), never merged.
-- Rows that exist now get rule 1, new rows rule 2.
alter table user_account add column email_rule smallint not null default 1 check (email_rule in (1, 2));
alter table user_account alter column email_rule set default 2;
alter table support_operator add column email_rule smallint not null default 1 check (email_rule in (1, 2));
alter table support_operator alter column email_rule set default 2;

create table email_conflict (
    workspace_id uuid not null,
    user_id uuid not null,
    -- 'collision': another account has the same address under the rule (the older one keeps it);
    -- 'refused': the rule refuses the stored address.
    reason text not null check (reason in ('collision', 'refused')),
    created_at timestamptz not null,
    primary key (workspace_id, user_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
);

-- Row-level security is forced on the owner too: this migration's own statements go through the
-- owner's policy, for this transaction only.
select set_config('secureflows.definer', 'on', true);

-- An address belongs to one account of a workspace. Rows indexed twice before the rule (an upstream
-- ID token could claim a member's address) lose the index here, all but the oldest; the re-indexing
-- above takes every old row again from its sealed address anyway.
update user_account u set email_index = null
where u.email_index is not null
  and exists (
      select 1 from user_account o
      where o.workspace_id = u.workspace_id
        and o.email_index = u.email_index
        and (o.created_at, o.user_id) < (u.created_at, u.user_id));
drop index user_account_email;
create unique index user_account_email on user_account (workspace_id, email_index) where email_index is not null;
select set_config('secureflows.definer', 'off', true);

grant select, insert, update, delete on email_conflict to secureflows_app;
alter table email_conflict enable row level security;
alter table email_conflict force row level security;
create policy tenant on email_conflict to secureflows_app
    using (workspace_id = secureflows_current_workspace())
    with check (workspace_id = secureflows_current_workspace());

-- The workspaces that still have rows to index under the rule (the server's start-up asks once).
create function secureflows_email_rule_pending() returns setof uuid
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    begin
        perform set_config('secureflows.definer', 'on', true);
        return query select distinct workspace_id from user_account where email_rule = 1;
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;
revoke execute on function secureflows_email_rule_pending() from public;
grant execute on function secureflows_email_rule_pending() to secureflows_app;
