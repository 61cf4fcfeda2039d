-- One rule for every e-mail address the store holds: PRECIS UsernameCaseMapped for the local part,
-- UTS 46 for the domain (crates/core/src/email.rs). The look-up hashes are keyed, so only the server,
-- holding the keys, can take them again under the rule: it does so when it next opens the store, for
-- every row still marked email_rule = 1, and records here the accounts whose addresses the rule
-- refuses or makes collide. Such accounts are reported (`secureflows migrate`), never merged.
alter table user_account add column email_rule integer not null default 2 check (email_rule in (1, 2));
update user_account set email_rule = 1;
alter table support_operator add column email_rule integer not null default 2 check (email_rule in (1, 2));
update support_operator set email_rule = 1;

create table email_conflict (
    workspace_id blob not null,
    user_id blob not null,
    -- 'collision': another account has the same address under the rule (the older one keeps it);
    -- 'refused': the rule refuses the stored address.
    reason text not null check (reason in ('collision', 'refused')),
    created_at integer not null,
    primary key (workspace_id, user_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;

-- An address belongs to one account of a workspace. Rows indexed twice before the rule (an upstream
-- ID token could claim a member's address) lose the index here, all but the oldest; the re-indexing
-- above takes every old row again from its sealed address anyway.
update user_account set email_index = null
where email_index is not null
  and exists (
      select 1 from user_account o
      where o.workspace_id = user_account.workspace_id
        and o.email_index = user_account.email_index
        and (o.created_at < user_account.created_at
             or (o.created_at = user_account.created_at and o.user_id < user_account.user_id)));
drop index user_account_email;
create unique index user_account_email on user_account (workspace_id, email_index) where email_index is not null;
