-- Management: console sessions, application secrets, invitations, SUPPORT operators and the
-- tamper-evident audit log.

-- A confidential application's secret is stored only as its SHA-256; public clients have none.
alter table application add column public integer not null default 0 check (public in (0, 1));
alter table application add column secret_hash blob;

-- Console (management) sessions belong to no application: rebuild login_session with a nullable
-- application_id (SQLite cannot drop a NOT NULL constraint in place). Nothing references this table.
create table login_session_rebuilt (
    workspace_id blob not null,
    session_id blob not null,
    application_id blob references application (application_id) on delete cascade,
    user_id blob not null,
    created_at integer not null,
    expires_at integer not null,
    ended_at integer,
    primary key (workspace_id, session_id),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
insert into login_session_rebuilt
    select workspace_id, session_id, application_id, user_id, created_at, expires_at, ended_at
    from login_session;
drop table login_session;
alter table login_session_rebuilt rename to login_session;
create index login_session_user on login_session (workspace_id, user_id, expires_at);
create index login_session_active on login_session (workspace_id, expires_at) where ended_at is null;

-- Invitations. The link's token is stored only as its SHA-256; the e-mail only sealed and hashed.
create table invite (
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    invite_id blob not null,
    email_sealed blob not null,
    email_index blob not null,
    role text not null check (role in ('owner', 'admin', 'user')),
    token_hash blob not null unique,
    invited_by blob not null,
    created_at integer not null,
    expires_at integer not null,
    revoked_at integer,
    accepted_at integer,
    primary key (workspace_id, invite_id)
) strict;

-- Instance-level SUPPORT operators, created on the server's command line only. The e-mail is sealed
-- under the instance's own key (key-ring owner: the nil UUID).
create table support_operator (
    support_id blob primary key,
    email_sealed blob not null,
    email_index blob not null unique,
    revision integer not null,
    created_at integer not null
) strict;

-- The audit log: one hash chain per workspace (the nil UUID chains instance-level events). Each event's
-- hash is an HMAC under the workspace's index key (in the key ring) over its fields and the previous
-- hash. Old/new values, client address and user agent are sealed in details_sealed.
create table audit_event (
    workspace_id blob not null,
    seq integer not null,
    event_id blob not null,
    created_at integer not null,
    actor_kind text not null,
    actor_id blob,
    action text not null,
    resource_type text not null,
    resource_id text not null,
    details_sealed blob not null,
    prev_hash blob not null,
    hash blob not null,
    primary key (workspace_id, seq)
) strict;
create index audit_event_time on audit_event (workspace_id, created_at);

-- The last event of each chain (detects events deleted from the end).
create table audit_head (
    workspace_id blob primary key,
    seq integer not null,
    hash blob not null
) strict;
