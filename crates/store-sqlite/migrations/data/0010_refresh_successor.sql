-- A rotated refresh token keeps its successor pair (access, ID and refresh token), sealed under the
-- workspace data key, for the grace window: every use within it receives that same pair, so holders
-- share one chain, and a use out of step is detected. The sweeper forgets it after the window.
alter table refresh_token add column successor_sealed blob;
create index refresh_token_successor on refresh_token (rotated_at) where successor_sealed is not null;
