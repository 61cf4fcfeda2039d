-- An application says what kind of client it is (RFC 6749 §2.1, RFC 8252): `browser` (public, PKCE, no
-- refresh token), `native` (public, PKCE, refresh tokens, loopback or private-use-scheme redirects) or
-- `server` (confidential, a client secret, refresh tokens). Existing rows get the kind they behaved as:
-- a confidential client is `server`; a public one is `native` when it has redirect URIs and none is
-- https (loopback or private-use schemes only: it got refresh tokens), `browser` otherwise.
alter table application add column kind text not null default 'browser'
    check (kind in ('browser', 'native', 'server'));
update application set kind = case
    when public = 0 then 'server'
    when json_array_length(redirect_uris) > 0
         and not exists (select 1 from json_each(application.redirect_uris) where value like 'https:%') then 'native'
    else 'browser'
end;

-- The amr and acr values by which a trusted upstream issuer asserts a second factor (JSON arrays):
-- an application's ID-token exchange signs in a user with a second factor only with one of them.
alter table application add column trust_second_factor_amr text not null default '[]';
alter table application add column trust_second_factor_acr text not null default '[]';
