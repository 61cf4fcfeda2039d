-- secureFlows key ring, PostgreSQL dialect: a database of its own (by default the data database's
-- name with `_keyring` appended), so that a dump of the data database never contains key material.
-- Every key here is wrapped (AES-256-GCM) by the master key, which is never stored in any database.

create table workspace_key (
    owner text not null,
    purpose text not null check (purpose in ('data', 'index')),
    version integer not null,
    wrapped bytea not null,
    master_key_id text not null,
    active boolean not null,
    created_at timestamptz not null,
    primary key (owner, purpose, version)
);

create table signing_key (
    kid text primary key,
    alg text not null,
    wrapped bytea not null,
    public_jwk text not null,
    master_key_id text not null,
    created_at timestamptz not null,
    retired_at timestamptz
);

-- Workspaces whose keys were destroyed (crypto-shredding): no key may be stored for them again.
create table destroyed_workspace (
    owner text primary key,
    destroyed_at timestamptz not null
);
