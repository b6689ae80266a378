-- The runs list of one definition (`runs(filter: {namespace, name})`) without walking
-- every other definition's runs (found by the EXPLAIN test); and two indexes no query
-- reads (`runs_created_id` covers `runs_created`; nothing filters on `next_timer_at`),
-- which every append paid for.
CREATE INDEX runs_definition_created ON runs (namespace, name, created_at, run_id);
DROP INDEX IF EXISTS runs_created;
DROP INDEX IF EXISTS runs_next_timer;
