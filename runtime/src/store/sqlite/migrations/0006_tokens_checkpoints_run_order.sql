-- Tables and indexes that builds before this migration created outside the numbered
-- migrations, at every open, with IF NOT EXISTS: written the same way here, so that on a store
-- those builds opened (at version 5, and already holding all of them) this migration changes
-- nothing but the version. Readers do not wait for it (see `Migration::catch_up`).
--
-- The api's token table (`api/src/server/tokens/store.rs` reads and writes it; created here so
-- that one schema version describes the whole file, whichever program created it).
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER);
-- Where each projection rebuilt from the log stopped (`crate::projections`).
CREATE TABLE IF NOT EXISTS projection_checkpoints (projection TEXT PRIMARY KEY, position INTEGER NOT NULL CHECK (position >= 0), updated_at INTEGER NOT NULL);
-- The runs list's keyset pages (`query_runs`): `(created_at, run_id)` and `(updated_at,
-- run_id)`, each read forwards or backwards.
CREATE INDEX IF NOT EXISTS runs_created_id ON runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_updated_id ON runs (updated_at, run_id);
