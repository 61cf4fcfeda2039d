-- secureFlows data store, PostgreSQL dialect (same tables as the SQLite dialect).
-- Nothing personal or secret is stored in the clear: *_sealed columns hold AES-256-GCM ciphertext
-- under the workspace data key, *_index columns hold keyed hashes (HMAC-SHA-256 under the workspace
-- index key). The keys themselves live in the separate key-ring database, never here.

create table workspace (
    workspace_id uuid primary key,
    name text not null,
    plan text not null check (plan in ('free', 'base', 'pro')),
    created_at timestamptz not null,
    updated_at timestamptz not null
);

create table application (
    application_id uuid primary key,
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    name text not null,
    trust_issuer text,
    trust_audience text,
    allowed_origins text[] not null default '{}',
    data_ttl_secs bigint not null,
    token_ttl_secs bigint not null,
    created_at timestamptz not null,
    updated_at timestamptz not null
);
create index application_workspace on application (workspace_id);
create index application_trust on application (trust_issuer, trust_audience);

create table user_account (
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    user_id uuid not null,
    role text not null check (role in ('owner', 'admin', 'user', 'anon')),
    -- Token revision: raising it ends every login session of the user.
    revision bigint not null,
    status text not null check (status in ('active', 'locked')),
    email_sealed bytea,
    email_index bytea,
    name_sealed bytea,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    primary key (workspace_id, user_id)
);
create index user_account_email on user_account (workspace_id, email_index);

-- Upstream identities, keyed by a keyed hash of (issuer, subject); never linked by e-mail.
create table user_identity (
    workspace_id uuid not null,
    identity_index bytea not null,
    user_id uuid not null,
    identity_sealed bytea not null,
    created_at timestamptz not null,
    primary key (workspace_id, identity_index),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
);

create table login_session (
    workspace_id uuid not null,
    session_id uuid not null,
    application_id uuid not null references application (application_id) on delete cascade,
    user_id uuid not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    ended_at timestamptz,
    primary key (workspace_id, session_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
);
create index login_session_user on login_session (workspace_id, user_id, expires_at);
create index login_session_active on login_session (workspace_id, expires_at) where ended_at is null;

-- The session vault. key_index is the keyed hash of the key name; the name is only stored sealed.
create table vault_value (
    workspace_id uuid not null,
    application_id uuid not null references application (application_id) on delete cascade,
    user_id uuid not null,
    key_index bytea not null,
    name_sealed bytea not null,
    value_sealed bytea not null,
    size bigint not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    expires_at timestamptz not null,
    primary key (workspace_id, application_id, user_id, key_index),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) with (fillfactor = 80);
-- No index on expires_at and room on every page: a write moves only unindexed columns, so PostgreSQL
-- can update the row in place (HOT) without touching an index. The sweeper finds expired values with
-- a sequential scan.

-- The API-access log. Key names are sealed; rows of a deleted workspace are deleted with it.
create table api_access (
    api_access_id bigserial primary key,
    workspace_id uuid,
    application_id uuid,
    user_id uuid,
    method text not null,
    route text not null,
    key_sealed bytea,
    status integer not null,
    bytes_in bigint not null,
    bytes_out bigint not null,
    client_ip text not null,
    user_agent text not null,
    request_id text not null,
    duration_us bigint not null,
    created_at timestamptz not null
);
create index api_access_workspace on api_access (workspace_id, created_at);

-- Hashes of single-use credentials already used (upstream ID tokens), until they expire.
create table used_token (
    token_hash bytea primary key,
    expires_at timestamptz not null
);
create index used_token_expiry on used_token (expires_at);

-- Changes that nodes must drop from their caches; each insert is also announced by NOTIFY.
create table invalidation (
    seq bigserial primary key,
    kind text not null,
    subject text not null,
    -- The insert's own time, not its transaction's start: closer to when the change commits.
    created_at timestamptz not null default clock_timestamp()
);
create index invalidation_time on invalidation (created_at);
