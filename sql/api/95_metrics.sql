CREATE FUNCTION api.metrics_snapshot() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    -- Operator-wide numbers for Prometheus (every organisation): counts and ids only.
    SELECT jsonb_build_object(
        'jobs', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'task', task_name, 'status', status, 'count', n)), '[]')
                 FROM (SELECT task_name, status::text, count(*) AS n
                       FROM public.procrastinate_jobs
                       WHERE status IN ('todo', 'doing', 'failed')
                       GROUP BY 1, 2) jobs),
        'dlq_size', (SELECT count(*) FROM public.procrastinate_jobs j
                     WHERE j.status = 'failed'
                       AND NOT EXISTS (SELECT 1 FROM core.job_replays r WHERE r.job_id = j.id)),
        'mailboxes', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                          'mailbox_id', m.id, 'state', m.state,
                          'paused', coalesce(m.ingestion_paused_until > now(), false),
                          'lag_seconds', (h->>'lag_seconds')::double precision,
                          'health', h->>'health',
                          'seconds_since_last_sync', (h->>'seconds_since_last_sync')::bigint)),
                          '[]')
                      FROM core.mailboxes m
                      CROSS JOIN LATERAL logic.mailbox_sync_health(m) AS h),
        'stuck_jobs', (SELECT count(*) FROM logic.stalled_jobs()),
        'workers_alive', logic.workers_alive(),
        'occurrences', (SELECT coalesce(jsonb_object_agg(state, n), '{}')
                        FROM (SELECT state::text, count(*) AS n FROM core.message_occurrences
                              GROUP BY 1) s),
        'stitch_reasons', (SELECT coalesce(jsonb_object_agg(stitch_reason, n), '{}')
                           FROM (SELECT stitch_reason, count(*) AS n FROM core.ticket_messages
                                 GROUP BY 1) s),
        'routing_outcomes', (SELECT coalesce(jsonb_object_agg(type, n), '{}')
                             FROM (SELECT type, count(*) AS n FROM core.ticket_events
                                   WHERE type IN ('routed', 'auto_spam', 'dropped')
                                   GROUP BY 1) s))
$$;
COMMENT ON FUNCTION api.metrics_snapshot() IS
    'GET /metrics: pipeline numbers across all organisations (jobs by task and status, DLQ '
    'size, lag, sync health and seconds since the last successful sync per mailbox, stuck '
    'jobs, live workers, occurrences by state, stitch reasons, routing outcomes).';
