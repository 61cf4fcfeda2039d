-- Tenant isolation enforced by PostgreSQL as well as by the code.
--
-- The server runs as `secureflows_app`: no login of its own, no BYPASSRLS, owns nothing. Every
-- connection of the server's pool switches to it (`SET ROLE`), whatever role logged in, and every
-- tenant transaction again with `SET LOCAL ROLE`. Each transaction names its workspace with
-- `set_config('secureflows.workspace', <id>, true)`; the policies below show and accept only that
-- workspace's rows, so a query that forgets its workspace filter sees nothing of any other workspace.
-- Row-level security is FORCEd, so the owning role is bound by it too.
--
-- The few instance-level operations that must cross workspaces (finding an application by client id,
-- the sweeper, operator listings, the access-log writer) are SECURITY DEFINER functions with narrow
-- results, owned by the migrating role. They turn `secureflows.definer` on for their own statements; a
-- second policy on each table lets the owning role through only then. The server's role cannot use that
-- policy: it is not the owner.
--
-- Instance-level tables (invalidation, used_token, support_operator) hold no workspace's data and have
-- no policy. The audit log is append-only to the server: it may insert and read events, never update
-- or delete them (a deleted workspace's events go through secureflows_forget_audit).

do $$
begin
    -- Roles are cluster-wide: another database of this cluster, or a DBA, may have created it.
    if not exists (select 1 from pg_roles where rolname = 'secureflows_app') then
        create role secureflows_app nologin nobypassrls;
    end if;
exception when duplicate_object or unique_violation then
    null; -- created concurrently by another database's migration
end
$$;

do $$
begin
    -- The owner must be able to SET ROLE to it (a superuser always can).
    if not (select rolsuper from pg_roles where rolname = current_user)
        and not pg_has_role(current_user, 'secureflows_app', 'MEMBER') then
        execute format('grant secureflows_app to %I', current_user);
    end if;
end
$$;

-- Nobody but the owner creates objects in the schema: a function or operator planted there could be
-- picked up by name resolution (PostgreSQL 14 and older let everyone create in `public`). The server
-- refuses to start if its role can still create there.
do $$
begin
    revoke create on schema public from public;
exception when insufficient_privilege then
    raise warning 'cannot revoke CREATE on schema public from PUBLIC; do it as the schema owner';
end
$$;

-- Workspaces that were deleted: their ids can never come back, and only their audit trail may be
-- forgotten. Filled by a trigger; the server's role has no access to it.
create table deleted_workspace (
    workspace_id uuid primary key,
    deleted_at timestamptz not null default now()
);

grant usage on schema public to secureflows_app;
grant select on _sqlx_migrations to secureflows_app;
grant select, insert, update, delete on workspace, application, user_account, user_identity, login_session,
    vault_value, invite, invalidation, used_token, support_operator to secureflows_app;
grant select on api_access to secureflows_app;
grant delete on api_access to secureflows_app;
grant select, insert on audit_event to secureflows_app;
grant select, insert, update on audit_head to secureflows_app;
grant usage, select on all sequences in schema public to secureflows_app;

create function secureflows_current_workspace() returns uuid
    language sql stable
    as $$ select nullif(current_setting('secureflows.workspace', true), '')::uuid $$;
grant execute on function secureflows_current_workspace() to secureflows_app;

-- Every workspace-owned table: row-level security on and forced, and one policy for the server's role.
-- api_access is written only through secureflows_append_access (below), so its policy has no WITH CHECK.
do $$
declare
    t text;
begin
    foreach t in array array['workspace', 'application', 'user_account', 'user_identity', 'login_session',
                             'vault_value', 'invite', 'api_access', 'audit_event', 'audit_head'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        if t = 'api_access' then
            execute format('create policy tenant on %I to secureflows_app
                                using (workspace_id = secureflows_current_workspace())', t);
        else
            execute format('create policy tenant on %I to secureflows_app
                                using (workspace_id = secureflows_current_workspace())
                                with check (workspace_id = secureflows_current_workspace())', t);
        end if;
    end loop;
end
$$;

-- The owning role, inside the SECURITY DEFINER functions below only.
do $$
declare
    t text;
begin
    foreach t in array array['workspace', 'application', 'user_account', 'user_identity', 'login_session',
                             'vault_value', 'invite', 'api_access', 'audit_event', 'audit_head'] loop
        execute format(
            'create policy definer on %I to %I
                 using (current_setting(''secureflows.definer'', true) = ''on'')
                 with check (current_setting(''secureflows.definer'', true) = ''on'')',
            t, current_user);
    end loop;
end
$$;

-- Instance-level operations, each with the narrowest result it needs.

-- Deleting a workspace leaves a tombstone; a tombstoned id cannot be inserted again.
create function secureflows_workspace_deleted() returns trigger
    language plpgsql security definer set search_path = pg_catalog, public, pg_temp
    as $$
    begin
        insert into public.deleted_workspace (workspace_id) values (old.workspace_id)
            on conflict (workspace_id) do nothing;
        return old;
    end
    $$;
create trigger workspace_deleted after delete on workspace
    for each row execute function secureflows_workspace_deleted();
create function secureflows_workspace_reused() returns trigger
    language plpgsql security definer set search_path = pg_catalog, public, pg_temp
    as $$
    begin
        if exists (select 1 from public.deleted_workspace d where d.workspace_id = new.workspace_id) then
            raise exception 'a deleted workspace cannot come back' using errcode = 'unique_violation';
        end if;
        return new;
    end
    $$;
create trigger workspace_reused before insert on workspace
    for each row execute function secureflows_workspace_reused();
revoke execute on function secureflows_workspace_deleted(), secureflows_workspace_reused() from public;

-- Each function turns the flag on for its own statements and off again before it returns; an error
-- aborts the transaction, and the flag (transaction-local) with it.

-- A SESSION JWT's audience and an OAuth client id name an application, not its workspace.
create function secureflows_find_application(p_id uuid) returns setof application
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    begin
        perform set_config('secureflows.definer', 'on', true);
        return query select * from application where application_id = p_id;
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;

-- Upstream ID tokens name an issuer and audience; the applications trusting them may be anywhere.
create function secureflows_find_applications_trusting(p_issuer text, p_audience text) returns setof application
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    begin
        perform set_config('secureflows.definer', 'on', true);
        return query select * from application where trust_issuer = p_issuer and trust_audience = p_audience
            order by application_id limit 16;
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;

-- CORS preflights carry no token: the union of allowed origins, nothing else.
create function secureflows_allowed_origins() returns setof text
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    begin
        perform set_config('secureflows.definer', 'on', true);
        return query select distinct pg_catalog.unnest(allowed_origins) from application;
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;

-- Operator listings.
create function secureflows_list_workspaces() returns setof workspace
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    begin
        perform set_config('secureflows.definer', 'on', true);
        return query select * from workspace order by created_at;
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;
create function secureflows_any_workspace() returns boolean
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    declare
        found boolean;
    begin
        perform set_config('secureflows.definer', 'on', true);
        select exists (select 1 from workspace) into found;
        perform set_config('secureflows.definer', 'off', true);
        return found;
    end
    $$;
create function secureflows_chained_workspaces() returns setof uuid
    language plpgsql stable security definer set search_path = public, pg_temp
    as $$
    begin
        perform set_config('secureflows.definer', 'on', true);
        return query select workspace_id from audit_head
            union select distinct workspace_id from audit_event order by 1;
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;

-- The sweeper: retention across workspaces, in bounded batches.
create function secureflows_purge_sessions(p_before timestamptz) returns bigint
    language plpgsql volatile security definer set search_path = public, pg_temp
    as $$
    declare
        n bigint;
    begin
        perform set_config('secureflows.definer', 'on', true);
        delete from login_session where ctid in (
            select ctid from login_session where coalesce(ended_at, expires_at) < p_before limit 10000);
        get diagnostics n = row_count;
        perform set_config('secureflows.definer', 'off', true);
        return n;
    end
    $$;
create function secureflows_purge_expired_values(p_now timestamptz, p_limit bigint) returns bigint
    language plpgsql volatile security definer set search_path = public, pg_temp
    as $$
    declare
        n bigint;
    begin
        perform set_config('secureflows.definer', 'on', true);
        delete from vault_value where ctid in (
            select ctid from vault_value where expires_at <= p_now limit p_limit);
        get diagnostics n = row_count;
        perform set_config('secureflows.definer', 'off', true);
        return n;
    end
    $$;

-- The access-log writer batches records of many workspaces (and of unidentified callers).
create function secureflows_append_access(
    p_workspace uuid[], p_application uuid[], p_user uuid[], p_method text[], p_route text[],
    p_key bytea[], p_status int4[], p_bytes_in int8[], p_bytes_out int8[], p_client_ip text[],
    p_user_agent text[], p_request_id text[], p_duration_us int8[], p_created_at timestamptz[])
    returns void
    language plpgsql volatile security definer set search_path = public, pg_temp
    as $$
    begin
        -- The multi-argument form below is expanded by the parser to ROWS FROM (pg_catalog.unnest(…), …),
        -- so no function planted elsewhere can be picked.
        perform set_config('secureflows.definer', 'on', true);
        insert into api_access (workspace_id, application_id, user_id, method, route, key_sealed, status,
            bytes_in, bytes_out, client_ip, user_agent, request_id, duration_us, created_at)
        select * from unnest(p_workspace, p_application, p_user, p_method, p_route, p_key, p_status,
            p_bytes_in, p_bytes_out, p_client_ip, p_user_agent, p_request_id, p_duration_us, p_created_at);
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;

-- A deleted workspace's audit trail goes with it, and only then: only for an id that was deleted (its
-- tombstone exists) and is not back; never the instance's own chain.
create function secureflows_forget_audit(p_workspace uuid) returns void
    language plpgsql volatile security definer set search_path = public, pg_temp
    as $$
    begin
        perform set_config('secureflows.definer', 'on', true);
        if p_workspace = '00000000-0000-0000-0000-000000000000'::uuid
            or exists (select 1 from workspace where workspace_id = p_workspace)
            or not exists (select 1 from deleted_workspace where workspace_id = p_workspace) then
            raise exception 'the audit log of an existing workspace cannot be deleted'
                using errcode = 'insufficient_privilege';
        end if;
        delete from audit_event where workspace_id = p_workspace;
        delete from audit_head where workspace_id = p_workspace;
        perform set_config('secureflows.definer', 'off', true);
    end
    $$;

-- The two hottest statements of the Session API, each one round trip: the function names the workspace
-- for its own (implicit, single-statement) transaction and then runs the query under the policies, as
-- the calling role, and put back whatever workspace was set before. Not SECURITY DEFINER: they grant
-- nothing the caller does not have.
create function secureflows_vault_get(p_workspace uuid, p_application uuid, p_user uuid, p_key bytea,
    p_now timestamptz)
    returns table (name_sealed bytea, value_sealed bytea, size bigint, created_at timestamptz,
        updated_at timestamptz, expires_at timestamptz)
    language plpgsql volatile set search_path = public, pg_temp
    as $$
    declare
        previous text := current_setting('secureflows.workspace', true);
    begin
        perform set_config('secureflows.workspace', p_workspace::text, true);
        return query select v.name_sealed, v.value_sealed, v.size, v.created_at, v.updated_at, v.expires_at
            from vault_value v
            where v.workspace_id = p_workspace and v.application_id = p_application and v.user_id = p_user
              and v.key_index = p_key and v.expires_at > p_now;
        perform set_config('secureflows.workspace', coalesce(previous, ''), true);
    end
    $$;
create function secureflows_vault_overwrite(p_workspace uuid, p_application uuid, p_user uuid, p_key bytea,
    p_name bytea, p_value bytea, p_size bigint, p_now timestamptz, p_expires timestamptz)
    returns timestamptz
    language plpgsql volatile set search_path = public, pg_temp
    as $$
    declare
        created timestamptz;
        previous text := current_setting('secureflows.workspace', true);
    begin
        perform set_config('secureflows.workspace', p_workspace::text, true);
        update vault_value v set name_sealed = p_name, value_sealed = p_value, size = p_size,
                updated_at = p_now, expires_at = p_expires
            where v.workspace_id = p_workspace and v.application_id = p_application and v.user_id = p_user
              and v.key_index = p_key and v.expires_at > p_now
            returning v.created_at into created;
        perform set_config('secureflows.workspace', coalesce(previous, ''), true);
        return created;
    end
    $$;
revoke execute on function secureflows_vault_get(uuid, uuid, uuid, bytea, timestamptz),
    secureflows_vault_overwrite(uuid, uuid, uuid, bytea, bytea, bytea, bigint, timestamptz, timestamptz)
    from public;
grant execute on function secureflows_vault_get(uuid, uuid, uuid, bytea, timestamptz),
    secureflows_vault_overwrite(uuid, uuid, uuid, bytea, bytea, bytea, bigint, timestamptz, timestamptz)
    to secureflows_app;

revoke execute on function secureflows_find_application(uuid), secureflows_find_applications_trusting(text, text),
    secureflows_allowed_origins(), secureflows_list_workspaces(), secureflows_any_workspace(),
    secureflows_chained_workspaces(), secureflows_purge_sessions(timestamptz),
    secureflows_purge_expired_values(timestamptz, bigint),
    secureflows_append_access(uuid[], uuid[], uuid[], text[], text[], bytea[], int4[], int8[], int8[], text[],
        text[], text[], int8[], timestamptz[]),
    secureflows_forget_audit(uuid)
    from public;
grant execute on function secureflows_find_application(uuid), secureflows_find_applications_trusting(text, text),
    secureflows_allowed_origins(), secureflows_list_workspaces(), secureflows_any_workspace(),
    secureflows_chained_workspaces(), secureflows_purge_sessions(timestamptz),
    secureflows_purge_expired_values(timestamptz, bigint),
    secureflows_append_access(uuid[], uuid[], uuid[], text[], text[], bytea[], int4[], int8[], int8[], text[],
        text[], text[], int8[], timestamptz[]),
    secureflows_forget_audit(uuid)
    to secureflows_app;
