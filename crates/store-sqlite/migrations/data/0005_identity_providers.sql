-- Upstream OpenID Connect providers of a workspace's hosted login ("Continue with ..."): the client
-- secret sealed under the workspace data key.
create table identity_provider (
    provider_id blob primary key,
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    kind text not null check (kind in ('google', 'oidc')),
    name text not null,
    issuer text not null,
    client_id text not null,
    client_secret_sealed blob,
    created_at integer not null
) strict;
create index identity_provider_workspace on identity_provider (workspace_id, created_at);
