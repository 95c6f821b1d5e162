CREATE FUNCTION api.schema_status() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'migrations', (SELECT coalesce(jsonb_agg(migration_id ORDER BY migration_id), '[]')
                       FROM public._yoyo_migration),
        'code_hash', (SELECT code_hash FROM core.schema_state))
$$;
COMMENT ON FUNCTION api.schema_status() IS
    'GET /readyz: applied migration ids and the hash of the sql/ code last installed.';

CREATE FUNCTION api.pipeline_health() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    -- Counts only: /readyz needs no session, so it names no mailbox.
    SELECT jsonb_build_object(
        'workers_alive', logic.workers_alive(),
        'stuck_jobs', (SELECT count(*) FROM logic.stalled_jobs()),
        'mailboxes', (SELECT coalesce(jsonb_object_agg(health, n), '{}')
                      FROM (SELECT h->>'health' AS health, count(*) AS n
                            FROM core.mailboxes m
                            CROSS JOIN LATERAL logic.mailbox_sync_health(m) AS h
                            GROUP BY 1) per_health))
$$;
COMMENT ON FUNCTION api.pipeline_health() IS
    'GET /readyz: live workers, stuck jobs (dead workers'' jobs not yet recovered) and '
    'mailboxes by sync health, across the installation.';
