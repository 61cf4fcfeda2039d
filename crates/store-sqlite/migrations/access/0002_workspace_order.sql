-- The console pages a workspace's API-access log newest first by position: an index in that order,
-- so that a page far back costs what the first one does, whatever other workspaces write.
create index api_access_workspace_position on api_access (workspace_id, api_access_id);
