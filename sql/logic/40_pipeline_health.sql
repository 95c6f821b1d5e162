-- Pipeline health: when a worker is presumed dead, which jobs it left stuck, and whether a
-- mailbox syncs as it should. One definition each, read by the worker's recovery
-- (sql/worker/recovery.sql), the ops views, GET /metrics and GET /readyz, so that nothing
-- stops silently: whatever recovery has not yet repaired is visible.

CREATE FUNCTION logic.stalled_worker_seconds() RETURNS double precision
    LANGUAGE sql IMMUTABLE AS 'SELECT 15.0';
COMMENT ON FUNCTION logic.stalled_worker_seconds() IS
    'Heartbeat silence (seconds) after which a worker is presumed dead and its jobs recovered '
    '(workers beat every 2 s: worker/app.py HEARTBEAT_SECONDS).';

CREATE FUNCTION logic.sync_poll_seconds() RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT 60';
COMMENT ON FUNCTION logic.sync_poll_seconds() IS
    'How often the periodic task mailbox_sync_due queues a sync of every mailbox (its cron in '
    'worker/tasks.py runs every minute).';

CREATE FUNCTION logic.worker_silent_since(p_last_heartbeat timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    -- No worker can beat while the database is down: after a restart every worker gets the
    -- full stalled limit from the server's start before it counts as silent, or an outage
    -- longer than the limit would make every live worker look dead.
    SELECT greatest(p_last_heartbeat, pg_postmaster_start_time())
$$;
COMMENT ON FUNCTION logic.worker_silent_since(timestamptz) IS
    'Since when a worker with this last heartbeat counts as silent: its heartbeat, or the '
    'database server''s start if later.';

CREATE FUNCTION logic.stalled_jobs(
    p_stalled_seconds double precision DEFAULT logic.stalled_worker_seconds(),
    p_dead_worker_ids bigint[] DEFAULT '{}'
) RETURNS TABLE (job_id bigint, task_name text, queue_name text, lock text,
                 queueing_lock text, args jsonb, attempts integer, worker_id bigint,
                 heartbeat_age_seconds double precision)
    LANGUAGE sql STABLE AS $$
    SELECT j.id, j.task_name::text, j.queue_name::text, j.lock, j.queueing_lock, j.args,
           j.attempts, j.worker_id,
           extract(epoch FROM now() - w.last_heartbeat)::double precision
    FROM public.procrastinate_jobs j
    LEFT JOIN public.procrastinate_workers w ON w.id = j.worker_id
    WHERE j.status = 'doing'
      -- No worker row: it was pruned or unregistered while the job ran.
      AND (w.id IS NULL
           OR j.worker_id = ANY (p_dead_worker_ids)
           OR logic.worker_silent_since(w.last_heartbeat)
              < now() - make_interval(secs => p_stalled_seconds))
$$;
COMMENT ON FUNCTION logic.stalled_jobs(double precision, bigint[]) IS
    'Running jobs whose worker is silent for p_stalled_seconds, gone, or named dead: stuck '
    'until worker.recover_stalled_jobs() gives them back (a lock they hold blocks its '
    'mailbox''s sync meanwhile).';

CREATE FUNCTION logic.workers_alive() RETURNS integer
    LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM public.procrastinate_workers
    WHERE logic.worker_silent_since(last_heartbeat)
          >= now() - make_interval(secs => logic.stalled_worker_seconds())
$$;
COMMENT ON FUNCTION logic.workers_alive() IS
    'Worker processes whose heartbeat is recent enough to count them alive.';

CREATE FUNCTION logic.mailbox_sync_health(m core.mailboxes) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    -- The first problem that applies, most urgent first: blocked (an admin or Gmail must
    -- act), stuck (a dead worker's job holds the mailbox), stalled (no successful sync for
    -- 5 poll intervals), lagging (mail waits more than 15 minutes to be routed).
    WITH facts AS (
        SELECT logic.sync_blocked_reason(m) AS blocked,
               floor(extract(epoch FROM now() - coalesce(m.last_sync_success_at,
                                                         m.backfill_started_at, m.created_at))
                     )::bigint AS silent,
               logic.mailbox_lag_seconds(m) AS lag,
               stuck.n AS stuck_jobs, stuck.example
        FROM (
            SELECT count(*) AS n,
                   min(format('job %s (%s) of worker %s, silent %s s', s.job_id, s.task_name,
                              coalesce(s.worker_id::text, '(gone)'),
                              coalesce(floor(s.heartbeat_age_seconds)::text, '?'))) AS example
            FROM logic.stalled_jobs() s
            WHERE s.args->>'mailbox_id' = m.id::text
        ) stuck
    )
    SELECT jsonb_build_object(
        'health', health, 'reason', reason,
        'seconds_since_last_sync', silent, 'stuck_jobs', stuck_jobs,
        -- The facts it was decided from, so that readers need not work them out again.
        'blocked_reason', blocked, 'lag_seconds', lag)
    FROM facts
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN blocked IS NOT NULL THEN 'blocked'
            WHEN stuck_jobs > 0 THEN 'stuck'
            WHEN m.history_id IS NULL AND m.backfill_state <> 'running' THEN 'idle'
            WHEN silent > 5 * logic.sync_poll_seconds() THEN 'stalled'
            WHEN lag > 15 * logic.sync_poll_seconds() THEN 'lagging'
            ELSE 'ok' END AS health
    ) h
    CROSS JOIN LATERAL (
        SELECT CASE h.health
            WHEN 'blocked' THEN blocked || coalesce(': ' || m.pause_reason, '')
                                || coalesce('; last error: ' || m.last_error, '')
            WHEN 'stuck' THEN stuck_jobs || ' job(s) held by dead workers, e.g. ' || example
            WHEN 'idle' THEN 'no backfill has run yet: queue one'
            WHEN 'stalled' THEN 'no successful sync for ' || silent || ' s'
                                || coalesce('; last error: ' || m.last_error, '')
            WHEN 'lagging' THEN 'the newest unrouted message has waited ' || floor(lag)
                                || ' s'
        END AS reason
    ) r
$$;
COMMENT ON FUNCTION logic.mailbox_sync_health(core.mailboxes) IS
    'Is the mailbox syncing as it should? {health: ok | blocked | stuck | idle | stalled | '
    'lagging, reason, seconds_since_last_sync, stuck_jobs, blocked_reason '
    '(logic.sync_blocked_reason), lag_seconds (logic.mailbox_lag_seconds)}.';
