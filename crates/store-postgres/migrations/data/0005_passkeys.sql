-- Passkeys (WebAuthn): the credential sealed under the workspace data key, found by the SHA-256 of its
-- credential id, which is unique in the workspace (one credential, one account).
create table passkey (
    passkey_id uuid primary key,
    workspace_id uuid not null,
    user_id uuid not null,
    credential_hash bytea not null,
    sealed bytea not null,
    created_at timestamptz not null,
    last_used_at timestamptz,
    unique (workspace_id, credential_hash),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
);
create index passkey_user on passkey (workspace_id, user_id);

-- WebAuthn ceremonies in progress: the state that pairs a challenge with its answer, sealed, single-use,
-- found by the SHA-256 of the token in the browser's cookie. Pending verification-first sign-ups (the
-- token is in the mailed link) use the same single-use store.
create table webauthn_ceremony (
    ceremony_hash bytea primary key,
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    user_id uuid,
    purpose text not null check (purpose in ('register', 'sign_in', 'second_factor', 'sign_up')),
    state_sealed bytea not null,
    created_at timestamptz not null,
    expires_at timestamptz not null
);
create index webauthn_ceremony_expiry on webauthn_ceremony (expires_at);

-- Row-level security, exactly as for the other tenant tables (0003, 0004).
grant select, insert, update, delete on passkey, webauthn_ceremony to secureflows_app;

do $$
declare
    t text;
begin
    foreach t in array array['passkey', 'webauthn_ceremony'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy tenant on %I to secureflows_app
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

-- The sweeper also removes expired ceremonies.
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
        delete from browser_session where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from login_link where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        delete from webauthn_ceremony where expires_at < p_before;
        get diagnostics m = row_count;
        n := n + m;
        perform set_config('secureflows.definer', 'off', true);
        return n;
    end
    $$;
revoke execute on function secureflows_purge_login_state(timestamptz) from public;
grant execute on function secureflows_purge_login_state(timestamptz) to secureflows_app;
