-- The console's first run: one-time setup tokens, stored as SHA-256 only, valid 24 hours. Creating
-- the first workspace through one spends them all (no later workspace is made this way).
create table setup_token (
    token_hash blob primary key,
    created_at integer not null,
    expires_at integer not null
) strict;

-- The console's audit-log filters (by resource, actor or exact action) read newest first along an
-- index, so that a filter over a million events costs what its page holds.
create index audit_event_resource on audit_event (workspace_id, resource_id, seq);
create index audit_event_actor on audit_event (workspace_id, actor_id, seq);
create index audit_event_action on audit_event (workspace_id, action, seq);

-- The console's members page lists a workspace's OWNERs and ADMINs among all its users.
create index user_account_role on user_account (workspace_id, role, user_id);

-- A browser's console session in one workspace: the member's USER JWT and refresh token, sealed under
-- the workspace data key and found by the SHA-256 of the session cookie's secret. The browser holds
-- only that secret (an HttpOnly cookie); the tokens never leave the server.
create table console_session (
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    session_hash blob not null,
    user_id blob not null,
    tokens_sealed blob not null,
    created_at integer not null,
    expires_at integer not null,
    primary key (workspace_id, session_hash)
) strict;
create index console_session_expiry on console_session (expires_at);
