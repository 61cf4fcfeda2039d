-- secureFlows key ring, SQLite dialect: a file of its own (keyring.db), so that backups of the data
-- never contain key material. Every key here is wrapped (AES-256-GCM) by the master key, which is
-- never stored in any database.

create table workspace_key (
    owner text not null,
    purpose text not null check (purpose in ('data', 'index')),
    version integer not null,
    wrapped blob not null,
    master_key_id text not null,
    active integer not null,
    created_at integer not null,
    primary key (owner, purpose, version)
) strict;

create table signing_key (
    kid text primary key,
    alg text not null,
    wrapped blob not null,
    public_jwk text not null,
    master_key_id text not null,
    created_at integer not null,
    retired_at integer
) strict;

-- Workspaces whose keys were destroyed (crypto-shredding): no key may be stored for them again.
create table destroyed_workspace (
    owner text primary key,
    destroyed_at integer not null
) strict;
