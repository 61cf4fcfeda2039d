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

-- Billing. A provider's subscription belongs to the workspace (Paddle: the operator bills workspaces) or
-- the end user (Stripe: a workspace's application bills its users) that the first verified event with a
-- valid signed checkout reference named; later events are matched by the subscription id only.
-- `scope_id` is the application (Stripe) or the nil id (Paddle). `last_event_at` is the provider's time
-- of the newest event applied: an older one delivered late changes nothing.
create table billing_link (
    provider text not null check (provider in ('paddle', 'stripe')),
    scope_id blob not null,
    subscription_id text not null,
    customer_id text not null,
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    user_id blob,
    last_event_at integer not null,
    linked_at integer not null,
    primary key (provider, scope_id, subscription_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index billing_link_workspace on billing_link (workspace_id);

-- Webhook events already handled (idempotency by the provider's event id), kept 30 days.
create table billing_event (
    provider text not null,
    scope_id blob not null,
    event_id text not null,
    received_at integer not null,
    primary key (provider, scope_id, event_id)
) strict;
create index billing_event_received on billing_event (received_at);

-- An application's webhook signing secret (Stripe), sealed under the workspace data key.
create table billing_secret (
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    application_id blob not null references application (application_id) on delete cascade,
    provider text not null check (provider in ('stripe')),
    secret_sealed blob not null,
    updated_at integer not null,
    primary key (application_id, provider)
) strict;
