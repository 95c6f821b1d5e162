-- Recovery of jobs whose worker died (SIGKILL, OOM, lost host, a database outage that
-- ended its process or its session). procrastinate marks a job `doing` when a worker takes
-- it; only that worker moves it on. A dead worker's jobs (logic.stalled_jobs()) stay
-- `doing` for ever, and with them the procrastinate lock they hold (`mailbox:<id>` for
-- sync steps), so they must be given back: set-based, idempotent, and never failing
-- whatever other copies exist.

-- A job whose worker died this many times is not retried again: it goes to the DLQ with the
-- reason (a message that kills its worker must not kill every worker in turn).
CREATE FUNCTION worker.max_lost_runs() RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT 5';
COMMENT ON FUNCTION worker.max_lost_runs() IS
    'Runs of one job lost with their worker after which it fails (DLQ) instead of retrying.';

CREATE FUNCTION worker.recover_stalled_jobs_once(
    p_stalled_seconds double precision, p_dead_worker_ids bigint[], p_live_worker_ids bigint[]
) RETURNS jsonb
    LANGUAGE sql AS $$
    -- SKIP LOCKED and the status test make concurrent recoveries split the work instead of
    -- racing: each stalled job is decided once, by whoever locks it first.
    WITH stalled AS (
        SELECT j.id, j.task_name, j.queue_name, j.queueing_lock, j.attempts, j.worker_id,
               j.args
        FROM public.procrastinate_jobs j
        WHERE j.id IN (SELECT s.job_id FROM logic.stalled_jobs(p_stalled_seconds,
                                                                p_dead_worker_ids) s)
          AND j.status = 'doing'
          -- The caller's own worker is alive, whatever its heartbeat says.
          AND (j.worker_id IS NULL OR j.worker_id <> ALL (p_live_worker_ids))
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    ), decided AS (
        SELECT s.*,
               (SELECT count(*) FROM core.job_failures f
                WHERE f.job_id = s.id AND f.error_class = 'WorkerLost') + 1 AS lost_runs,
               -- procrastinate's queueing lock is unique among waiting jobs only: a copy may
               -- have been queued while this one ran (periodic sync, an operator's request).
               -- That copy does the same work from the same checkpoint, so this one ends.
               (SELECT t.id FROM public.procrastinate_jobs t
                WHERE s.queueing_lock IS NOT NULL AND t.queueing_lock = s.queueing_lock
                  AND t.status = 'todo') AS twin_id,
               row_number() OVER (PARTITION BY s.queueing_lock ORDER BY s.id) AS lock_rank
        FROM stalled s
    ), actions AS (
        SELECT d.*,
               CASE WHEN d.twin_id IS NOT NULL
                         OR (d.queueing_lock IS NOT NULL AND d.lock_rank > 1) THEN 'superseded'
                    WHEN d.lost_runs >= worker.max_lost_runs() THEN 'failed'
                    ELSE 'retried' END AS action
        FROM decided d
    ), moved AS (
        UPDATE public.procrastinate_jobs j
        SET status = CASE a.action WHEN 'retried' THEN 'todo'
                                   WHEN 'failed' THEN 'failed'
                                   ELSE 'aborted' END::procrastinate_job_status,
            attempts = j.attempts + 1,
            scheduled_at = CASE WHEN a.action = 'retried' THEN NULL ELSE j.scheduled_at END,
            worker_id = NULL
        FROM actions a
        WHERE j.id = a.id AND j.status = 'doing'
        RETURNING a.*
    ), logged AS (
        -- Every lost run is a failed attempt of its job: visible in core.job_failures, the
        -- DLQ (when it gives up) and the mailbox's failures_24h.
        INSERT INTO core.job_failures (job_id, task_name, queue_name, attempt, error_class,
                                       error_message, organization_id, mailbox_id, worker)
        SELECT m.id, m.task_name, m.queue_name, m.attempts + 1, 'WorkerLost',
               format('worker %s stopped while running this job (lost run %s); %s',
                      coalesce(m.worker_id::text, '(gone)'), m.lost_runs,
                      CASE m.action
                          WHEN 'retried' THEN 'queued again'
                          WHEN 'failed' THEN 'gave up after ' || m.lost_runs || ' lost runs'
                          ELSE 'superseded by waiting job ' || coalesce(m.twin_id::text,
                                                                        'of the same lock')
                      END),
               mb.organization_id, mb.id, coalesce(m.worker_id::text, '')
        FROM moved m
        LEFT JOIN core.mailboxes mb ON mb.id::text = m.args->>'mailbox_id'
        RETURNING job_id
    )
    SELECT jsonb_build_object(
               'retried', coalesce(jsonb_agg(m.id ORDER BY m.id)
                                   FILTER (WHERE m.action = 'retried'), '[]'),
               'superseded', coalesce(jsonb_agg(m.id ORDER BY m.id)
                                      FILTER (WHERE m.action = 'superseded'), '[]'),
               'failed', coalesce(jsonb_agg(m.id ORDER BY m.id)
                                  FILTER (WHERE m.action = 'failed'), '[]'),
               'logged', (SELECT count(*) FROM logged))
    FROM moved m
$$;
COMMENT ON FUNCTION worker.recover_stalled_jobs_once(double precision, bigint[], bigint[]) IS
    'One pass of worker.recover_stalled_jobs (which retries it if a copy is queued meanwhile).';

CREATE FUNCTION worker.recover_stalled_jobs(
    p_stalled_seconds double precision DEFAULT logic.stalled_worker_seconds(),
    p_dead_worker_ids bigint[] DEFAULT '{}',
    p_live_worker_ids bigint[] DEFAULT '{}'
) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
BEGIN
    FOR attempt IN 1..3 LOOP
        BEGIN
            v_result := worker.recover_stalled_jobs_once(p_stalled_seconds, p_dead_worker_ids,
                                                         p_live_worker_ids);
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- A copy was queued between the decision and the update (its queueing lock is
            -- taken now): decide again; the copy is then seen and this job superseded.
            IF attempt = 3 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    -- Workers the caller knows are dead (its own earlier incarnations) leave the table now,
    -- others once silent for 10 minutes with no job left. (procrastinate's own pruning at
    -- worker start is off, worker/app.py: it counts silence during an outage too, and a
    -- live worker pruned that way loses its jobs to recovery while it still runs them.)
    DELETE FROM public.procrastinate_workers w
    WHERE w.id = ANY (p_dead_worker_ids)
       OR (logic.worker_silent_since(w.last_heartbeat) < now() - interval '10 minutes'
           AND w.id <> ALL (p_live_worker_ids)
           AND NOT EXISTS (SELECT 1 FROM public.procrastinate_jobs j
                           WHERE j.worker_id = w.id AND j.status = 'doing'));
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION worker.recover_stalled_jobs(double precision, bigint[], bigint[]) IS
    'Give back the running jobs of dead workers (silent for p_stalled_seconds, counted from '
    'the database server''s start at the earliest, gone, or named in p_dead_worker_ids; never '
    'those of p_live_worker_ids): retried; superseded (aborted) when a waiting copy with the same '
    'queueing lock exists; failed (DLQ) after worker.max_lost_runs() lost runs. Each is logged '
    'in core.job_failures as WorkerLost. Idempotent and safe to run concurrently; returns '
    '{retried, superseded, failed: [job ids], logged}.';
