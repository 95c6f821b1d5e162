-- The only code that knows procrastinate's versioned defer function. Stages call it in the
-- transaction that records their own result, so the chain never loses or doubles a step.

CREATE FUNCTION logic.enqueue(
    p_task_name text,
    p_args jsonb DEFAULT '{}',
    p_queue text DEFAULT 'default',
    p_lock text DEFAULT NULL,
    p_queueing_lock text DEFAULT NULL,
    p_scheduled_at timestamptz DEFAULT NULL,
    p_priority integer DEFAULT 0
) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_ids bigint[];
    v_constraint text;
BEGIN
    BEGIN
        v_ids := public.procrastinate_defer_jobs_v1(ARRAY[
            ROW(p_queue, p_task_name, p_priority, p_lock, p_queueing_lock, p_args,
                p_scheduled_at)::public.procrastinate_job_to_defer_v1
        ]);
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
        IF v_constraint = 'procrastinate_jobs_queueing_lock_idx_v1' THEN
            RETURN NULL;  -- an identical job is already waiting: nothing to add
        END IF;
        RAISE;
    END;
    RETURN v_ids[1];
END
$$;
COMMENT ON FUNCTION logic.enqueue(text, jsonb, text, text, text, timestamptz, integer) IS
    'Defer a procrastinate job; returns its id, or NULL when p_queueing_lock already has a '
    'pending job.';
