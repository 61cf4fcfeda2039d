-- Plans as data: a workspace's plan is any name of the configuration's plan catalogue, so the database
-- no longer lists the plans.
alter table workspace drop constraint if exists workspace_plan_check;
alter table workspace add constraint workspace_plan_name check (plan ~ '^[a-z][a-z0-9_-]{0,31}$');

-- An application's end-user tiers (a JSON array of {name, requests_per_hour?, features}) and the tier a
-- new end user starts on.
alter table application add column tiers text not null default '[]' check (tiers::jsonb is not null);
alter table application add column default_tier text;

-- The tier an end user is on in one application (no row: the default tier; a null tier: back on the
-- default tier). `source` says who set it; `event_at` is the billing provider's event time, so that
-- an older event delivered late never overrides a newer one.
create table end_user_tier (
    workspace_id uuid not null,
    application_id uuid not null references application (application_id) on delete cascade,
    user_id uuid not null,
    tier text,
    source text not null check (source in ('api', 'console', 'stripe')),
    event_at timestamptz,
    updated_at timestamptz not null,
    primary key (application_id, user_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
);
create index end_user_tier_user on end_user_tier (workspace_id, user_id);
grant select, insert, update, delete on end_user_tier to secureflows_app;
alter table end_user_tier enable row level security;
alter table end_user_tier force row level security;
create policy tenant on end_user_tier to secureflows_app
    using (workspace_id = secureflows_current_workspace())
    with check (workspace_id = secureflows_current_workspace());
do $$
begin
    execute format(
        'create policy definer on end_user_tier to %I
             using (current_setting(''secureflows.definer'', true) = ''on'')
             with check (current_setting(''secureflows.definer'', true) = ''on'')',
        current_user);
end
$$;
