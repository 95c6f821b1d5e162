-- Occurrences that failed a stage: listable per stage, and retriable.

CREATE VIEW ops.failed_occurrences AS
SELECT o.id AS occurrence_id, o.organization_id, o.mailbox_id, mb.email AS mailbox,
       o.gmail_message_id, o.failed_stage, o.last_error, o.failure_count, o.updated_at
FROM core.message_occurrences o
JOIN core.mailboxes mb ON mb.id = o.mailbox_id
WHERE o.state = 'failed';
COMMENT ON VIEW ops.failed_occurrences IS
    'Occurrences that failed a pipeline stage, with the stage and the reason.';

CREATE VIEW ops.occurrence_failures_by_stage AS
SELECT organization_id, failed_stage, count(*) AS occurrences, max(updated_at) AS last_failure_at
FROM core.message_occurrences
WHERE state = 'failed'
GROUP BY organization_id, failed_stage;
COMMENT ON VIEW ops.occurrence_failures_by_stage IS 'Failed occurrences counted per stage.';

CREATE FUNCTION ops.retry_occurrences(p_occurrence_ids bigint[]) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_retried integer := 0;
    batch record;
BEGIN
    -- Back to the state the failed stage consumes; the stage runs again on them.
    FOR batch IN
        WITH reset AS (
            UPDATE core.message_occurrences o
            SET state = stage.from_state, failed_stage = NULL, updated_at = now()
            FROM logic.pipeline_stages() stage
            WHERE o.id = ANY(p_occurrence_ids) AND o.state = 'failed'
              AND stage.task = o.failed_stage
              AND o.failed_stage IN ('occurrence_fetch_raw', 'occurrence_parse')
            RETURNING o.id, o.mailbox_id, stage.task
        )
        SELECT mailbox_id, task, array_agg(id) AS ids FROM reset GROUP BY mailbox_id, task
    LOOP
        PERFORM worker.enqueue_stage(batch.task, batch.mailbox_id, batch.ids);
        v_retried := v_retried + cardinality(batch.ids);
    END LOOP;
    RETURN v_retried;
END
$$;
COMMENT ON FUNCTION ops.retry_occurrences(bigint[]) IS
    'Retry failed occurrences from the stage that failed (e.g. SELECT ops.retry_occurrences('
    'array(SELECT occurrence_id FROM ops.failed_occurrences WHERE failed_stage = ''occurrence_parse''))).';
