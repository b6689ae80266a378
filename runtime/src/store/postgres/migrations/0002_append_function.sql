-- The whole append in one call, so it costs one round trip: lock, check the stream heads
-- the caller planned against, insert, upsert. Being VOLATILE PL/pgSQL, every statement
-- takes a fresh snapshot, so the heads read after the lock see every earlier holder's
-- commit (a single plain SQL statement would read them from a snapshot taken before it
-- waited for the lock). On a mismatch nothing is written and the real heads go back to
-- the caller, which plans again. Positions come back in the order of the event arrays,
-- matched by (aggregate_type, aggregate_id, sequence) rather than by RETURNING's order.
CREATE OR REPLACE FUNCTION cairn_append(
    lock_key bigint,
    s_types text[], s_ids text[], s_heads bigint[],
    e_types text[], e_ids text[], e_seqs bigint[], e_event_types text[], e_versions text[],
    e_payloads jsonb[], e_metadata jsonb[],
    r_ids text[], r_namespaces text[], r_names text[], r_versions text[], r_statuses text[],
    r_created bigint[], r_updated bigint[], r_timers bigint[],
    OUT positions bigint[], OUT heads bigint[])
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
             next_timer_at)
    SELECT * FROM UNNEST(r_ids, r_namespaces, r_names, r_versions, r_statuses, r_created,
                r_updated, r_timers)
    ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, name = excluded.name,
        version = excluded.version, status = excluded.status,
        updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at;
END
$fn$;
