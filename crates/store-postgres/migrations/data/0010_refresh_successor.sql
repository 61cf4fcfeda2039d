-- A rotated refresh token keeps its successor pair (access, ID and refresh token), sealed under the
-- workspace data key, for the grace window: every use within it receives that same pair, so holders
-- share one chain, and a use out of step is detected. The sweeper forgets it after the window.
alter table refresh_token add column successor_sealed bytea;
create index refresh_token_successor on refresh_token (rotated_at) where successor_sealed is not null;

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
        perform set_config('secureflows.definer', 'off', true);
        return n;
    end
    $$;
