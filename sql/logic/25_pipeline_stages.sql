-- The pipeline's stages, in one place: for each procrastinate task, its queue and priority,
-- the occurrence state it moves occurrences from and to, the stage that follows, and the
-- SQL function that records its result. Queueing (logic.enqueue_sync_job,
-- worker.enqueue_stage), retrying (ops.retry_occurrences) and giving up
-- (worker.give_up_batch) read it; tests/worker/test_pipeline_stages.py checks it against
-- the tasks worker/tasks.py registers.
--
-- Priorities: workers take jobs by priority, then age. Later stages go first, so the work
-- in progress stays small and occurrences finish early instead of every stage's backlog
-- growing at once; sync steps go before all of them, because a listing page is cheap and
-- feeds the whole pipeline, and behind a backlog of fetch jobs it would starve it.

CREATE TYPE logic.pipeline_stage AS (
    task text,                          -- the procrastinate task
    queue text,
    priority integer,
    from_state core.occurrence_state,   -- what the stage consumes (NULL: a sync step)
    to_state core.occurrence_state,     -- what it leaves behind
    next_task text,                     -- what it queues for the occurrences it moved
    records_with text                   -- the SQL function that records its result
);
COMMENT ON TYPE logic.pipeline_stage IS
    'One stage of the pipeline catalog (logic.pipeline_stages()): task, queue, priority, the '
    'occurrence states it moves between, the next task and the SQL function recording it.';

CREATE FUNCTION logic.pipeline_stages() RETURNS SETOF logic.pipeline_stage
    LANGUAGE sql IMMUTABLE AS $$
    VALUES
        ('mailbox_backfill', 'sync', 30, NULL::core.occurrence_state,
         'discovered'::core.occurrence_state, 'occurrence_fetch_raw',
         'worker.backfill_record_page'),
        ('mailbox_history_sync', 'sync', 30, NULL, 'discovered', 'occurrence_fetch_raw',
         'worker.history_record_page'),
        ('occurrence_fetch_raw', 'ingest', 0, 'discovered', 'raw_fetched', 'occurrence_parse',
         'worker.record_raw'),
        ('occurrence_parse', 'ingest', 10, 'raw_fetched', 'parsed', 'occurrence_stitch',
         'worker.record_parsed'),
        ('occurrence_stitch', 'ingest', 20, 'parsed', 'stitched', 'ticket_apply_routing',
         'worker.stitch_occurrences'),
        ('ticket_apply_routing', 'ingest', 25, 'stitched', 'routed', NULL,
         'worker.route_occurrences')
$$;
COMMENT ON FUNCTION logic.pipeline_stages() IS
    'Every pipeline stage: task, queue, priority, occurrence state from and to, next task, '
    'and the SQL function recording its result.';

CREATE FUNCTION logic.pipeline_stage(p_task text) RETURNS logic.pipeline_stage
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_stage logic.pipeline_stage;
BEGIN
    SELECT * INTO v_stage FROM logic.pipeline_stages() s WHERE s.task = p_task;
    IF NOT FOUND THEN
        RAISE 'no pipeline stage runs task %', p_task;
    END IF;
    RETURN v_stage;
END
$$;
COMMENT ON FUNCTION logic.pipeline_stage(text) IS
    'The catalog row of one task (an unknown task is an error, never a default).';

COMMENT ON TYPE core.occurrence_state IS
    'Where an occurrence is in the pipeline (logic.pipeline_stages()): discovered '
    '(worker.backfill_record_page, worker.history_record_page), raw_fetched '
    '(worker.record_raw), parsed (worker.record_parsed), stitched '
    '(worker.stitch_occurrences), routed (worker.route_occurrences), failed (worker.'
    'fail_occurrences, with failed_stage and last_error; ops.retry_occurrences sends it back).';
