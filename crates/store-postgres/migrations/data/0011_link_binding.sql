-- E-mailed links and pending sign-in steps end with what should end them: a link that signs in
-- remembers the user's token revision when it was made, and stops working once it moves (password
-- change or reset, sign-out everywhere, lock); a magic link remembers the browser that asked for it
-- (SHA-256 of its browser id), and only that browser continues the link's authorization request.
-- Links made before this migration carry neither: they are refused (they live 15 minutes at most).
alter table login_link add column user_revision bigint;
alter table login_link add column browser_hash bytea;
