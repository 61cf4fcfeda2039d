-- An application says what kind of client it is (RFC 6749 §2.1, RFC 8252): `browser` (public, PKCE, no
-- refresh token), `native` (public, PKCE, refresh tokens, loopback or private-use-scheme redirects) or
-- `server` (confidential, a client secret, refresh tokens). Existing rows get the kind they behaved as:
-- a confidential client is `server`; a public one is `native` when it has redirect URIs and none is
-- https (loopback or private-use schemes only: it got refresh tokens), `browser` otherwise.
alter table application add column kind text not null default 'browser'
    check (kind in ('browser', 'native', 'server'));
-- Row-level security is forced on the owner too: this statement goes through the owner's policy, for
-- this transaction only.
select set_config('secureflows.definer', 'on', true);
update application set kind = case
    when not public then 'server'
    when cardinality(redirect_uris) > 0
         and not exists (select 1 from unnest(redirect_uris) u where u like 'https:%') then 'native'
    else 'browser'
end;
select set_config('secureflows.definer', 'off', true);

-- The amr and acr values by which a trusted upstream issuer asserts a second factor: an application's
-- ID-token exchange signs in a user with a second factor only with one of them.
alter table application add column trust_second_factor_amr text[] not null default '{}';
alter table application add column trust_second_factor_acr text[] not null default '{}';
