-- Plans as data: a workspace's plan is any name of the configuration's plan catalogue, so the database
-- no longer lists the plans. SQLite cannot drop a constraint: the table is rebuilt (foreign keys are
-- off while a migration runs and checked before it commits; no other table's rows change).
create table workspace_rebuilt (
    workspace_id blob primary key,
    name text not null,
    plan text not null check (length(plan) between 1 and 32),
    created_at integer not null,
    updated_at integer not null,
    password_policy text not null default 'nist' check (password_policy in ('nist', 'strict')),
    mfa_required text not null default 'off' check (mfa_required in ('off', 'admins', 'all')),
    brand_color text,
    logo_url text,
    signup_mode text not null default 'immediate' check (signup_mode in ('immediate', 'verify_first'))
) strict;
insert into workspace_rebuilt (workspace_id, name, plan, created_at, updated_at, password_policy,
                               mfa_required, brand_color, logo_url, signup_mode)
    select workspace_id, name, plan, created_at, updated_at, password_policy, mfa_required, brand_color,
           logo_url, signup_mode
    from workspace;
drop table workspace;
alter table workspace_rebuilt rename to workspace;

-- An application's end-user tiers (a JSON array of {name, requests_per_hour?, features}) and the tier a
-- new end user starts on.
alter table application add column tiers text not null default '[]';
alter table application add column default_tier text;

-- The tier an end user is on in one application (no row: the default tier; a null tier: back on the
-- default tier). `source` says who set it; `event_at` is the billing provider's event time, so that
-- an older event delivered late never overrides a newer one.
create table end_user_tier (
    workspace_id blob not null,
    application_id blob not null references application (application_id) on delete cascade,
    user_id blob not null,
    tier text,
    source text not null check (source in ('api', 'console', 'stripe')),
    event_at integer,
    updated_at integer not null,
    primary key (application_id, user_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index end_user_tier_user on end_user_tier (workspace_id, user_id);
