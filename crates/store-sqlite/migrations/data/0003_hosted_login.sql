-- Hosted login: registered redirect URIs, passwords, sign-in throttling, browser (single sign-on)
-- sessions, pending authorization requests, authorization codes and refresh tokens.
-- Secrets are stored only as hashes: password hashes (PHC strings, Argon2id or imported bcrypt), and
-- SHA-256 of cookies, codes and refresh tokens.

-- The workspace's sign-in policy: password rules (NIST SP 800-63B or the strict Tuff Flips profile)
-- and who must use a second factor.
alter table workspace add column password_policy text not null default 'nist'
    check (password_policy in ('nist', 'strict'));
alter table workspace add column mfa_required text not null default 'off'
    check (mfa_required in ('off', 'admins', 'all'));
-- The hosted login's branding: an accent colour (#rrggbb) and a logo (an https URL).
alter table workspace add column brand_color text;
alter table workspace add column logo_url text;

-- JSON arrays of exact URIs.
alter table application add column redirect_uris text not null default '[]';
alter table application add column post_logout_uris text not null default '[]';
-- Visitors may get anonymous (ANON) sessions, upgraded in place when they sign up.
alter table application add column allow_anonymous integer not null default 0 check (allow_anonymous in (0, 1));

-- Failed sign-ins since the last success, and the end of a temporary lockout.
alter table user_account add column failed_sign_ins integer not null default 0;
alter table user_account add column sign_in_locked_until integer;
alter table user_account add column email_verified integer not null default 0 check (email_verified in (0, 1));

create table password_credential (
    workspace_id blob not null,
    user_id blob not null,
    phc text not null,
    created_at integer not null,
    updated_at integer not null,
    primary key (workspace_id, user_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;

-- A browser signed in to the hosted login (the single sign-on cookie holds a token; its SHA-256 is here).
create table browser_session (
    workspace_id blob not null,
    browser_session_id blob not null,
    user_id blob not null,
    token_hash blob not null unique,
    -- The user's token revision at sign-in: raising it ends this session too.
    revision integer not null,
    auth_time integer not null,
    -- JSON array of RFC 8176 method names.
    amr text not null,
    -- Sealed device description and client address.
    client_sealed blob,
    created_at integer not null,
    last_seen_at integer not null,
    expires_at integer not null,
    ended_at integer,
    primary key (workspace_id, browser_session_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index browser_session_user on browser_session (workspace_id, user_id);

-- An application's login session opened from a browser session ends with it.
alter table login_session add column browser_session_id blob;
create index login_session_browser on login_session (workspace_id, browser_session_id)
    where browser_session_id is not null;

-- A validated authorization request waiting for the user to sign in.
create table login_flow (
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    flow_id blob not null,
    application_id blob not null references application (application_id) on delete cascade,
    -- JSON: redirect_uri, state, nonce, code_challenge, scope.
    request text not null,
    created_at integer not null,
    expires_at integer not null,
    primary key (workspace_id, flow_id)
) strict;
create index login_flow_expiry on login_flow (expires_at);

create table authorization_code (
    workspace_id blob not null,
    code_hash blob not null,
    application_id blob not null references application (application_id) on delete cascade,
    user_id blob not null,
    browser_session_id blob not null,
    request text not null,
    auth_time integer not null,
    amr text not null,
    created_at integer not null,
    expires_at integer not null,
    used_at integer,
    -- The login session the code was exchanged for (ended if the code is replayed).
    login_session_id blob,
    primary key (workspace_id, code_hash),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index authorization_code_expiry on authorization_code (expires_at);

-- Refresh tokens: rotated on every use; every token of a family descends from one code exchange.
create table refresh_token (
    workspace_id blob not null,
    token_hash blob not null,
    family_id blob not null,
    application_id blob not null references application (application_id) on delete cascade,
    user_id blob not null,
    login_session_id blob not null,
    scope text not null,
    auth_time integer not null,
    amr text not null,
    created_at integer not null,
    expires_at integer not null,
    rotated_at integer,
    revoked_at integer,
    primary key (workspace_id, token_hash),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index refresh_token_family on refresh_token (workspace_id, family_id);
create index refresh_token_session on refresh_token (workspace_id, login_session_id);
create index refresh_token_expiry on refresh_token (expires_at);

-- Single-use links (magic sign-in, e-mail verification, password reset) and pending second-factor
-- steps, stored as SHA-256.
-- A magic link remembers the authorization request it was asked for.
create table login_link (
    workspace_id blob not null,
    link_hash blob not null,
    purpose text not null check (purpose in ('magic', 'verify', 'reset', 'mfa', 'upgrade')),
    -- The first factor's methods (a pending second-factor step).
    amr text not null default '[]',
    user_id blob not null,
    flow_id blob,
    created_at integer not null,
    expires_at integer not null,
    used_at integer,
    primary key (workspace_id, link_hash),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index login_link_expiry on login_link (expires_at);

-- Browsers a user has signed in from (a keyed hash of a long-lived device cookie): a sign-in from
-- any other is a "new device" and the user is told by e-mail.
create table known_device (
    workspace_id blob not null,
    user_id blob not null,
    device_hash blob not null,
    first_seen_at integer not null,
    last_seen_at integer not null,
    primary key (workspace_id, user_id, device_hash),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;

-- TOTP (RFC 6238): the secret sealed under the workspace data key; confirmed once the user typed a
-- code; the last step used, so that a code is accepted once.
create table mfa_totp (
    workspace_id blob not null,
    user_id blob not null,
    secret_sealed blob not null,
    created_at integer not null,
    confirmed_at integer,
    last_step integer not null default 0,
    primary key (workspace_id, user_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;

-- Recovery codes, stored as SHA-256, each usable once.
create table recovery_code (
    workspace_id blob not null,
    user_id blob not null,
    code_hash blob not null,
    created_at integer not null,
    used_at integer,
    primary key (workspace_id, user_id, code_hash),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
