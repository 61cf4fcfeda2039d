-- Upstream OpenID Connect providers of a workspace's hosted login ("Continue with ..."): the client
-- secret sealed under the workspace data key.
create table identity_provider (
    provider_id uuid primary key,
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    kind text not null check (kind in ('google', 'oidc')),
    name text not null,
    issuer text not null,
    client_id text not null,
    client_secret_sealed bytea,
    created_at timestamptz not null
);
create index identity_provider_workspace on identity_provider (workspace_id, created_at);

grant select, insert, update, delete on identity_provider to secureflows_app;
alter table identity_provider enable row level security;
alter table identity_provider force row level security;
create policy tenant on identity_provider to secureflows_app
    using (workspace_id = secureflows_current_workspace())
    with check (workspace_id = secureflows_current_workspace());
do $$
begin
    execute format(
        'create policy definer on identity_provider to %I
             using (current_setting(''secureflows.definer'', true) = ''on'')
             with check (current_setting(''secureflows.definer'', true) = ''on'')',
        current_user);
end
$$;
