-- A console client: an application whose code exchanges give USER JWTs for the management API (the
-- console signs in through the hosted login) instead of SESSION JWTs.
alter table application add column console boolean not null default false;
