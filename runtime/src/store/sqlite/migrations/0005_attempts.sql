-- Claims of a run since it last changed (see `super::Claim::attempts`), so that a run
-- that kills every worker claiming it is faulted instead of claimed for ever;
-- `attempt_mark` is the run's `updated_at` at the last claim.
ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN attempt_mark INTEGER;
