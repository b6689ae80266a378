-- The runs list of one definition without walking every other definition's runs; and
-- two indexes no query reads, which every append paid for.
CREATE INDEX runs_definition_created ON runs (namespace, name, created_at, run_id);
DROP INDEX IF EXISTS runs_created;
DROP INDEX IF EXISTS runs_next_timer;
