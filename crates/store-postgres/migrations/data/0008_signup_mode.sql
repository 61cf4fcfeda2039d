-- How a workspace's hosted sign-up works: at once, or only from a link mailed to the address.
alter table workspace add column signup_mode text not null default 'immediate'
    check (signup_mode in ('immediate', 'verify_first'));
