-- The console's first run: one-time setup tokens, stored as SHA-256 only, valid 24 hours. Creating
-- the first workspace through one spends them all (no later workspace is made this way). Instance
-- level: no workspace's data, no row-level security.
create table setup_token (
    token_hash bytea primary key,
    created_at timestamptz not null,
    expires_at timestamptz not null
);
grant select, insert, update, delete on setup_token to secureflows_app;

-- The console's audit-log filters (by resource, actor or exact action) read newest first along an
-- index, so that a filter over a million events costs what its page holds.
create index audit_event_resource on audit_event (workspace_id, resource_id, seq);
create index audit_event_actor on audit_event (workspace_id, actor_id, seq);
create index audit_event_action on audit_event (workspace_id, action, seq);
-- The API-access log, newest first by position within a workspace.
create index api_access_workspace_position on api_access (workspace_id, api_access_id);

-- The console's members page lists a workspace's OWNERs and ADMINs among all its users.
create index user_account_role on user_account (workspace_id, role, user_id);

-- A browser's console session in one workspace: the member's USER JWT and refresh token, sealed under
-- the workspace data key and found by the SHA-256 of the session cookie's secret. The browser holds
-- only that secret (an HttpOnly cookie); the tokens never leave the server.
create table console_session (
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    session_hash bytea not null,
    user_id uuid not null,
    tokens_sealed bytea not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    primary key (workspace_id, session_hash)
);
create index console_session_expiry on console_session (expires_at);
grant select, insert, update, delete on console_session to secureflows_app;
alter table console_session enable row level security;
alter table console_session force row level security;
create policy tenant on console_session to secureflows_app
    using (workspace_id = secureflows_current_workspace())
    with check (workspace_id = secureflows_current_workspace());
do $$
begin
    execute format(
        'create policy definer on console_session to %I
             using (current_setting(''secureflows.definer'', true) = ''on'')
             with check (current_setting(''secureflows.definer'', true) = ''on'')',
        current_user);
end
$$;

-- Spends the setup token `p_hash` inside the transaction that creates the first workspace: 'ok', or
-- 'unusable' (unknown, used or expired), or 'done' (another workspace exists). An advisory lock
-- serialises concurrent first runs, so that exactly one of them creates a workspace.
create function secureflows_claim_setup(p_hash bytea, p_now timestamptz) returns text
    language plpgsql volatile security definer set search_path = public, pg_temp
    as $$
    declare
        n bigint;
        workspaces bigint;
    begin
        perform pg_advisory_xact_lock(hashtext('secureflows.setup'));
        perform set_config('secureflows.definer', 'on', true);
        delete from setup_token where token_hash = p_hash and expires_at > p_now;
        get diagnostics n = row_count;
        select count(*) into workspaces from workspace;
        if n = 1 and workspaces <= 1 then
            delete from setup_token;
        end if;
        perform set_config('secureflows.definer', 'off', true);
        if n = 0 then
            return 'unusable';
        elsif workspaces > 1 then
            return 'done';
        end if;
        return 'ok';
    end
    $$;
revoke execute on function secureflows_claim_setup(bytea, timestamptz) from public;
grant execute on function secureflows_claim_setup(bytea, timestamptz) to secureflows_app;

-- The workspace, when the instance has exactly one (the console opens it without asking).
create function secureflows_sole_workspace() returns uuid
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    declare
        ids uuid[];
    begin
        perform set_config('secureflows.definer', 'on', true);
        select array_agg(workspace_id) into ids from (select workspace_id from workspace limit 2) w;
        perform set_config('secureflows.definer', 'off', true);
        if coalesce(array_length(ids, 1), 0) = 1 then
            return ids[1];
        end if;
        return null;
    end
    $$;
revoke execute on function secureflows_sole_workspace() from public;
grant execute on function secureflows_sole_workspace() to secureflows_app;

create or replace function secureflows_purge_login_state(p_before timestamptz) returns bigint
    language plpgsql volatile security definer set search_path = public, pg_temp
    as $$
    declare
        n bigint := 0;
        m bigint;
    begin
        perform set_config('secureflows.definer', 'on', true);
        delete from login_flow where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from authorization_code where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from refresh_token where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        update refresh_token set successor_sealed = null
            where successor_sealed is not null and rotated_at < p_before;
        delete from browser_session where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from login_link where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from webauthn_ceremony where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from console_session where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from setup_token where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        perform set_config('secureflows.definer', 'off', true);
        return n;
    end
    $$;
