-- Distribution (see `super::Lease`): when each run next needs a worker (`wake_at`), who
-- holds it (`owner`, a worker's lease id), the workers' leases, and the correlation id
-- and parent of a run. Runs open before this migration are made runnable, so a worker
-- looks at each once and files it properly. The append function gains the fence check,
-- the new columns and the notices; the old one is dropped so that a binary from before
-- this migration fails loudly instead of writing rows without `wake_at`.
ALTER TABLE runs ADD COLUMN wake_at BIGINT, ADD COLUMN owner TEXT,
    ADD COLUMN correlation_id TEXT, ADD COLUMN parent_run_id TEXT;
UPDATE runs SET wake_at = updated_at WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX runs_claimable ON runs (wake_at) WHERE owner IS NULL AND wake_at IS NOT NULL;
CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_correlation ON runs (correlation_id, created_at)
    WHERE correlation_id IS NOT NULL;
CREATE TABLE workers (
    name        TEXT   PRIMARY KEY,
    generation  BIGINT NOT NULL,
    lease_id    TEXT   NOT NULL UNIQUE,
    lease_until BIGINT NOT NULL,
    started_at  BIGINT NOT NULL
);
DROP FUNCTION cairn_append(bigint, text[], text[], bigint[], text[], text[], bigint[], text[],
    text[], jsonb[], jsonb[], text[], text[], text[], text[], text[], bigint[], bigint[],
    bigint[]);
CREATE FUNCTION cairn_append_v3(
    lock_key bigint,
    s_types text[], s_ids text[], s_heads bigint[],
    f_ids text[], f_leases text[],
    e_types text[], e_ids text[], e_seqs bigint[], e_event_types text[], e_versions text[],
    e_payloads jsonb[], e_metadata jsonb[],
    r_ids text[], r_namespaces text[], r_names text[], r_versions text[], r_statuses text[],
    r_created bigint[], r_updated bigint[], r_timers bigint[], r_wakes bigint[],
    r_owners text[], r_correlations text[], r_parents text[],
    n_ids text[],
    OUT positions bigint[], OUT heads bigint[], OUT lost text[])
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT COALESCE(array_agg(COALESCE((SELECT MAX(e.sequence) FROM events e
                                WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id),
                               0) ORDER BY k.ord), '{}')
      INTO heads
      FROM UNNEST(s_types, s_ids) WITH ORDINALITY AS k(t, id, ord);
    IF heads IS DISTINCT FROM COALESCE(s_heads, '{}') THEN
        RETURN;
    END IF;
    IF COALESCE(cardinality(f_ids), 0) > 0 THEN
        -- Lock the fenced rows first, so that no claim can move them between this check and
        -- the commit (claims skip locked rows).
        PERFORM 1 FROM runs WHERE run_id = ANY(f_ids) ORDER BY run_id FOR UPDATE;
        SELECT array_agg(f.id) INTO lost
 FROM UNNEST(f_ids, f_leases) AS f(id, lease)
WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = f.id AND r.owner = f.lease);
        IF lost IS NOT NULL THEN
   RETURN;
        END IF;
    END IF;
    WITH ins AS (
        INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                   payload, metadata)
        SELECT r.t, r.id, r.seq, r.et, r.ev, r.p, r.m
 FROM UNNEST(e_types, e_ids, e_seqs, e_event_types, e_versions, e_payloads, e_metadata)
      WITH ORDINALITY AS r(t, id, seq, et, ev, p, m, ord)
ORDER BY r.ord
        RETURNING events.position, events.aggregate_type, events.aggregate_id, events.sequence)
    SELECT COALESCE(array_agg(ins.position ORDER BY r.ord), '{}')
      INTO positions
      FROM ins
      JOIN UNNEST(e_types, e_ids, e_seqs) WITH ORDINALITY AS r(t, id, seq, ord)
        ON ins.aggregate_type = r.t AND ins.aggregate_id = r.id AND ins.sequence = r.seq;
    INSERT INTO runs (run_id, namespace, name, version, status, created_at, updated_at,
             next_timer_at, wake_at, owner, correlation_id, parent_run_id)
    SELECT * FROM UNNEST(r_ids, r_namespaces, r_names, r_versions, r_statuses, r_created,
                r_updated, r_timers, r_wakes, r_owners, r_correlations, r_parents)
    ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, name = excluded.name,
        version = excluded.version, status = excluded.status,
        updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at,
        wake_at = excluded.wake_at,
        owner = CASE WHEN excluded.wake_at IS NULL OR excluded.wake_at > excluded.updated_at
            THEN NULL ELSE runs.owner END;
    PERFORM pg_notify('cairn_work', n) FROM UNNEST(n_ids) AS n;
END
$fn$;
