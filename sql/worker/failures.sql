CREATE FUNCTION worker.record_job_failure(
    p_job_id bigint, p_task_name text, p_queue_name text, p_attempt integer,
    p_error_class text, p_error_message text, p_worker text
) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO core.job_failures (job_id, task_name, queue_name, attempt, error_class,
                                   error_message, organization_id, mailbox_id, worker)
    SELECT p_job_id, p_task_name, coalesce(p_queue_name, ''), p_attempt, p_error_class,
           left(coalesce(p_error_message, ''), 1000), m.organization_id, m.id,
           coalesce(p_worker, '')
    FROM (SELECT 1) one
    LEFT JOIN public.procrastinate_jobs j ON j.id = p_job_id
    LEFT JOIN core.mailboxes m ON m.id::text = j.args->>'mailbox_id'
$$;
COMMENT ON FUNCTION worker.record_job_failure(bigint, text, text, integer, text, text, text) IS
    'Worker middleware: record one failed job attempt (no mail content, only the error).';
