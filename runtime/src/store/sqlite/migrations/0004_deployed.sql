-- Definitions recorded only to run them (`startRun(source:)`, `cairn start FILE`) are
-- not deployed: `latest`, version lookups and the list ignore them. Every definition
-- recorded before this migration was reachable as deployed, and stays so.
ALTER TABLE definitions ADD COLUMN deployed INTEGER NOT NULL DEFAULT 1;
