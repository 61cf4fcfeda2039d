-- Management: console sessions, application secrets, invitations, SUPPORT operators and the
-- tamper-evident audit log (same tables as the SQLite dialect).

-- A confidential application's secret is stored only as its SHA-256; public clients have none.
alter table application add column public boolean not null default false;
alter table application add column secret_hash bytea;

-- Console (management) sessions belong to no application.
alter table login_session alter column application_id drop not null;

-- Invitations. The link's token is stored only as its SHA-256; the e-mail only sealed and hashed.
create table invite (
    workspace_id uuid not null references workspace (workspace_id) on delete cascade,
    invite_id uuid not null,
    email_sealed bytea not null,
    email_index bytea not null,
    role text not null check (role in ('owner', 'admin', 'user')),
    token_hash bytea not null unique,
    invited_by uuid not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    revoked_at timestamptz,
    accepted_at timestamptz,
    primary key (workspace_id, invite_id)
);

-- Instance-level SUPPORT operators, created on the server's command line only. The e-mail is sealed
-- under the instance's own key (key-ring owner: the nil UUID).
create table support_operator (
    support_id uuid primary key,
    email_sealed bytea not null,
    email_index bytea not null unique,
    revision bigint not null,
    created_at timestamptz not null
);

-- The audit log: one hash chain per workspace (the nil UUID chains instance-level events). Each event's
-- hash is an HMAC under the workspace's index key (in the key ring) over its fields and the previous
-- hash. Old/new values, client address and user agent are sealed in details_sealed.
create table audit_event (
    workspace_id uuid not null,
    seq bigint not null,
    event_id uuid not null,
    created_at timestamptz not null,
    actor_kind text not null,
    actor_id uuid,
    action text not null,
    resource_type text not null,
    resource_id text not null,
    details_sealed bytea not null,
    prev_hash bytea not null,
    hash bytea not null,
    primary key (workspace_id, seq)
);
create index audit_event_time on audit_event (workspace_id, created_at);

-- The last event of each chain (detects events deleted from the end).
create table audit_head (
    workspace_id uuid primary key,
    seq bigint not null,
    hash bytea not null
);
