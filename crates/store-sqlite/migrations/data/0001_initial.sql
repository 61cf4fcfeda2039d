-- secureFlows data store, SQLite dialect. Times are UTC milliseconds since the Unix epoch.
-- Nothing personal or secret is stored in the clear: *_sealed columns hold AES-256-GCM ciphertext
-- under the workspace data key, *_index columns hold keyed hashes (HMAC-SHA-256 under the workspace
-- index key). Ids are 16-byte UUIDs. The keys themselves live in the separate key ring, never here,
-- and the API-access log in a file of its own (access.db).

create table workspace (
    workspace_id blob primary key,
    name text not null,
    plan text not null check (plan in ('free', 'base', 'pro')),
    created_at integer not null,
    updated_at integer not null
) strict;

create table application (
    application_id blob primary key,
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    name text not null,
    trust_issuer text,
    trust_audience text,
    -- JSON array of exact origins (scheme://host[:port]).
    allowed_origins text not null default '[]',
    data_ttl_secs integer not null,
    token_ttl_secs integer not null,
    created_at integer not null,
    updated_at integer not null
) strict;
create index application_workspace on application (workspace_id);
create index application_trust on application (trust_issuer, trust_audience);

create table user_account (
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    user_id blob not null,
    role text not null check (role in ('owner', 'admin', 'user', 'anon')),
    -- Token revision: raising it ends every login session of the user.
    revision integer not null,
    status text not null check (status in ('active', 'locked')),
    email_sealed blob,
    email_index blob,
    name_sealed blob,
    created_at integer not null,
    updated_at integer not null,
    primary key (workspace_id, user_id)
) strict;
create index user_account_email on user_account (workspace_id, email_index);

-- Upstream identities, keyed by a keyed hash of (issuer, subject); never linked by e-mail.
create table user_identity (
    workspace_id blob not null,
    identity_index blob not null,
    user_id blob not null,
    identity_sealed blob not null,
    created_at integer not null,
    primary key (workspace_id, identity_index),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;

create table login_session (
    workspace_id blob not null,
    session_id blob not null,
    application_id blob not null references application (application_id) on delete cascade,
    user_id blob not null,
    created_at integer not null,
    expires_at integer not null,
    ended_at integer,
    primary key (workspace_id, session_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index login_session_user on login_session (workspace_id, user_id, expires_at);
create index login_session_active on login_session (workspace_id, expires_at) where ended_at is null;

-- The session vault. key_index is the keyed hash of the key name; the name is only stored sealed.
create table vault_value (
    workspace_id blob not null,
    application_id blob not null references application (application_id) on delete cascade,
    user_id blob not null,
    key_index blob not null,
    name_sealed blob not null,
    value_sealed blob not null,
    size integer not null,
    created_at integer not null,
    updated_at integer not null,
    expires_at integer not null,
    primary key (workspace_id, application_id, user_id, key_index),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
-- No index on expires_at: every write moves a value's expiry, and an index on it would dirty one more
-- random page per write. Expired values are invisible to reads at once; the sweeper finds them with a
-- scan on a reader connection and deletes them in small batches.

-- Hashes of single-use credentials already used (upstream ID tokens), until they expire.
create table used_token (
    token_hash blob primary key,
    expires_at integer not null
) strict;
create index used_token_expiry on used_token (expires_at);

-- Changes that nodes must drop from their caches.
create table invalidation (
    seq integer primary key autoincrement,
    kind text not null,
    subject text not null,
    created_at integer not null
) strict;
create index invalidation_time on invalidation (created_at);
