-- secureFlows API-access log, SQLite dialect: a file of its own (access.db), so that its steady stream
-- of appends neither competes with nor invalidates the page caches of the data database's readers.
-- Ids are 16-byte UUIDs; key names are sealed under the workspace data key.

create table api_access (
    api_access_id integer primary key autoincrement,
    workspace_id blob,
    application_id blob,
    user_id blob,
    method text not null,
    route text not null,
    key_sealed blob,
    status integer not null,
    bytes_in integer not null,
    bytes_out integer not null,
    client_ip text not null,
    user_agent text not null,
    request_id text not null,
    duration_us integer not null,
    created_at integer not null
) strict;
create index api_access_workspace on api_access (workspace_id, created_at);

