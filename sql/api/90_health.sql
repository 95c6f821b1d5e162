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
    WITH counts AS (
        SELECT logic.workers_alive() AS workers_alive,
               (SELECT count(*) FROM logic.stalled_jobs()) AS stuck_jobs,
               (SELECT coalesce(jsonb_object_agg(health, n), '{}')
                FROM (SELECT h->>'health' AS health, count(*) AS n
                      FROM core.mailboxes m
                      CROSS JOIN LATERAL logic.mailbox_sync_health(m) AS h
                      GROUP BY 1) per_health) AS mailboxes
    ), problems AS (
        -- What keeps ingestion from running by itself, in words.
        SELECT coalesce(jsonb_agg(problem ORDER BY ord), '[]') AS problems
        FROM counts c
        CROSS JOIN LATERAL (VALUES
            (1, CASE WHEN c.workers_alive = 0 THEN 'no worker is alive' END),
            (2, CASE WHEN c.stuck_jobs > 0
                     THEN c.stuck_jobs || ' job(s) held by dead workers' END),
            (3, (c.mailboxes->>'stuck') || ' mailbox(es) stuck'),
            (4, (c.mailboxes->>'stalled') || ' mailbox(es) stalled'),
            (5, (c.mailboxes->>'lagging') || ' mailbox(es) lagging')
        ) AS p(ord, problem)
        WHERE problem IS NOT NULL
    )
    SELECT jsonb_build_object(
        'status', CASE WHEN p.problems = '[]' THEN 'ok' ELSE 'degraded' END,
        'problems', p.problems,
        'workers_alive', c.workers_alive,
        'stuck_jobs', c.stuck_jobs,
        'mailboxes', c.mailboxes)
    FROM counts c, problems p
$$;
COMMENT ON FUNCTION api.pipeline_health() IS
    'GET /readyz: status ok or degraded, the problems that make it degraded (no live worker, '
    'stuck jobs, mailboxes stuck, stalled or lagging), live workers, stuck jobs (dead '
    'workers'' jobs not yet recovered) and mailboxes by sync health, across the installation.';
