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

-- Billing. A provider's subscription belongs to the workspace (Paddle: the operator bills workspaces) or
-- the end user (Stripe: a workspace's application bills its users) that the first verified event with a
-- valid signed checkout reference named; later events are matched by the subscription id only.
-- `scope_id` is the application (Stripe) or the nil id (Paddle). `last_event_at` is the provider's time
-- of the newest event applied: an older one delivered late changes nothing.
create table billing_link (
    provider text not null check (provider in ('paddle', 'stripe')),
    scope_id uuid not null,
    subscription_id text not null,
    customer_id text not null,
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    user_id uuid,
    last_event_at timestamptz not null,
    linked_at timestamptz not null,
    primary key (provider, scope_id, subscription_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
);
create index billing_link_workspace on billing_link (workspace_id);

-- Webhook events already handled (idempotency by the provider's event id), kept 30 days. Instance
-- level: provider event ids only, no workspace's data, no row-level security.
create table billing_event (
    provider text not null,
    scope_id uuid not null,
    event_id text not null,
    received_at timestamptz not null,
    primary key (provider, scope_id, event_id)
);
create index billing_event_received on billing_event (received_at);
grant select, insert, delete on billing_event to secureflows_app;

-- An application's webhook signing secret (Stripe), sealed under the workspace data key.
create table billing_secret (
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    application_id uuid not null references application (application_id) on delete cascade,
    provider text not null check (provider in ('stripe')),
    secret_sealed bytea not null,
    updated_at timestamptz not null,
    primary key (application_id, provider)
);

do $$
declare
    t text;
begin
    foreach t in array array['billing_link', 'billing_secret'] loop
        execute format('grant select, insert, update, delete on %I to secureflows_app', t);
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format(
            'create policy tenant on %I to secureflows_app
                 using (workspace_id = secureflows_current_workspace())
                 with check (workspace_id = secureflows_current_workspace())', t);
        execute format(
            'create policy definer on %I to %I
                 using (current_setting(''secureflows.definer'', true) = ''on'')
                 with check (current_setting(''secureflows.definer'', true) = ''on'')',
            t, current_user);
    end loop;
end
$$;

-- The workspace a provider's subscription is linked to (a webhook names only the provider's ids).
create function secureflows_find_billing_link(p_provider text, p_scope uuid, p_subscription text)
    returns uuid
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    declare
        found uuid;
    begin
        perform set_config('secureflows.definer', 'on', true);
        select workspace_id into found from billing_link
            where provider = p_provider and scope_id = p_scope and subscription_id = p_subscription;
        perform set_config('secureflows.definer', 'off', true);
        return found;
    end
    $$;
revoke execute on function secureflows_find_billing_link(text, uuid, text) from public;
grant execute on function secureflows_find_billing_link(text, uuid, text) to secureflows_app;
