-- The dead-letter queue: jobs procrastinate gave up on, with their last error.

CREATE VIEW ops.dlq AS
SELECT j.id AS job_id, j.task_name, j.queue_name, j.attempts, j.args,
       -- A failure the worker could not record (the database was down at that moment) is
       -- still a failed job: its facts come from the job itself.
       coalesce(f.error_class, 'Unrecorded') AS error_class,
       coalesce(f.error_message,
                'the worker could not record this failure (database unavailable)')
           AS error_message,
       coalesce(f.failed_at, e.failed_at) AS failed_at,
       coalesce(f.organization_id, m.organization_id) AS organization_id,
       coalesce(f.mailbox_id, m.id) AS mailbox_id,
       r.replay_job_id, r.replayed_at,
       -- When the job was due: its schedule, else when it was deferred.
       coalesce(j.scheduled_at, e.deferred_at) AS run_at
FROM public.procrastinate_jobs j
LEFT JOIN LATERAL (
    SELECT * FROM core.job_failures f WHERE f.job_id = j.id ORDER BY f.id DESC LIMIT 1
) f ON true
LEFT JOIN LATERAL (
    SELECT max(ev.at) AS failed_at, min(ev.at) AS deferred_at
    FROM public.procrastinate_events ev WHERE ev.job_id = j.id
) e ON true
LEFT JOIN core.mailboxes m ON m.id::text = j.args->>'mailbox_id'
LEFT JOIN core.job_replays r ON r.job_id = j.id
WHERE j.status = 'failed';
COMMENT ON VIEW ops.dlq IS
    'Failed jobs (procrastinate gave up) with their last error and replay, newest first by '
    'failed_at; job arguments hold ids only, never mail. Failures the worker could not record '
    'show error_class Unrecorded; the organisation comes from the job''s mailbox. run_at: '
    'when the job was due (its schedule, else when it was deferred).';

CREATE FUNCTION ops.replay_job(p_job_id bigint, p_organization_id uuid DEFAULT NULL,
                               p_user_id uuid DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    j public.procrastinate_jobs;
    v_replay bigint;
    v_org uuid;
BEGIN
    SELECT * INTO j FROM public.procrastinate_jobs WHERE id = p_job_id FOR UPDATE;
    -- Every failed job is replayable, whether or not its failure could be recorded.
    SELECT d.organization_id INTO v_org FROM ops.dlq d WHERE d.job_id = p_job_id;
    IF j.id IS NULL OR j.status <> 'failed'
       OR (p_organization_id IS NOT NULL AND v_org IS DISTINCT FROM p_organization_id) THEN
        PERFORM logic.fail(404, 'job_not_found', 'No failed job with that id.');
    END IF;
    -- Already replayed: the replay is the answer (no duplicate).
    SELECT replay_job_id INTO v_replay FROM core.job_replays WHERE job_id = p_job_id;
    IF FOUND THEN
        RETURN jsonb_build_object('job_id', p_job_id, 'replay_job_id', v_replay, 'created', false);
    END IF;
    -- A pending twin (same task and arguments) already does the work.
    SELECT id INTO v_replay FROM public.procrastinate_jobs
    WHERE task_name = j.task_name AND args = j.args AND status IN ('todo', 'doing')
    ORDER BY id LIMIT 1;
    IF NOT FOUND THEN
        -- A new job: a fresh attempt budget, same queue, lock and queueing lock.
        v_replay := logic.enqueue(j.task_name, j.args, j.queue_name, j.lock, j.queueing_lock,
                                  NULL, j.priority);
        IF v_replay IS NULL THEN  -- the queueing lock's pending job is the twin
            SELECT id INTO v_replay FROM public.procrastinate_jobs
            WHERE queueing_lock = j.queueing_lock AND status = 'todo';
        END IF;
    END IF;
    INSERT INTO core.job_replays (job_id, replay_job_id, organization_id, replayed_by)
    VALUES (p_job_id, v_replay, v_org, p_user_id);
    RETURN jsonb_build_object('job_id', p_job_id, 'replay_job_id', v_replay, 'created', true);
END
$$;
COMMENT ON FUNCTION ops.replay_job(bigint, uuid, uuid) IS
    'Re-queue a failed job with a fresh attempt budget (or point at its pending twin); '
    'p_organization_id restricts it to that organisation''s jobs.';
