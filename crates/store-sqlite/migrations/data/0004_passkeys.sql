-- Passkeys (WebAuthn): the credential sealed under the workspace data key, found by the SHA-256 of its
-- credential id, which is unique in the workspace (one credential, one account).
create table passkey (
    passkey_id blob primary key,
    workspace_id blob not null,
    user_id blob not null,
    credential_hash blob not null,
    sealed blob not null,
    created_at integer not null,
    last_used_at integer,
    unique (workspace_id, credential_hash),
    foreign key (workspace_id, user_id) references user_account (workspace_id, user_id) on delete cascade
) strict;
create index passkey_user on passkey (workspace_id, user_id);

-- WebAuthn ceremonies in progress: the state that pairs a challenge with its answer, sealed, single-use,
-- found by the SHA-256 of the token in the browser's cookie. Pending verification-first sign-ups (the
-- token is in the mailed link) use the same single-use store.
create table webauthn_ceremony (
    ceremony_hash blob primary key,
    workspace_id blob not null references workspace (workspace_id) on delete cascade,
    user_id blob,
    purpose text not null check (purpose in ('register', 'sign_in', 'second_factor', 'sign_up')),
    state_sealed blob not null,
    created_at integer not null,
    expires_at integer not null
) strict;
create index webauthn_ceremony_expiry on webauthn_ceremony (expires_at);
