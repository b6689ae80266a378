-- Distribution (see `super::Lease`): when each run next needs a worker, who holds it,
-- and the workers' leases; plus the correlation id and parent of a run. Runs that were
-- open before this migration are made runnable, so a worker looks at each once and
-- files it properly.
ALTER TABLE runs ADD COLUMN wake_at INTEGER;
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN correlation_id TEXT;
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
UPDATE runs SET wake_at = updated_at WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX runs_claimable ON runs (wake_at) WHERE owner IS NULL AND wake_at IS NOT NULL;
CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_correlation ON runs (correlation_id, created_at)
    WHERE correlation_id IS NOT NULL;
CREATE TABLE workers (
    name        TEXT    PRIMARY KEY,
    generation  INTEGER NOT NULL,
    lease_id    TEXT    NOT NULL UNIQUE,
    lease_until INTEGER NOT NULL,
    started_at  INTEGER NOT NULL
) STRICT;
