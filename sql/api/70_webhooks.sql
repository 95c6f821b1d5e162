-- Webhooks: calls that carry no session (their caller is authenticated in the handler).

CREATE FUNCTION api.gmail_push(p_email text, p_history_id bigint) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_email text := lower(btrim(p_email));
    v_result jsonb;
BEGIN
    IF NOT logic.is_email_address(v_email) THEN
        PERFORM logic.fail(422, 'invalid_push', 'The notification names no mailbox.');
    END IF;
    -- A Gmail push names the mailbox by address and the history id it has reached. Each
    -- matching mailbox that may sync and is behind gets a history sync: its queueing lock
    -- makes a storm of pushes one waiting job, and a push during a running sync one more.
    WITH touched AS (
        UPDATE core.mailboxes m
        SET last_push_at = now(),
            last_push_history_id = greatest(m.last_push_history_id, p_history_id)
        WHERE m.provider = 'gmail' AND m.email = v_email
        RETURNING m.*
    ), queued AS (
        SELECT logic.enqueue_sync_job(t.id, 'mailbox_history_sync') AS job_id
        FROM touched t
        WHERE logic.sync_blocked_reason(t::core.mailboxes) IS NULL
          AND t.backfill_state <> 'running'
          AND t.history_id < p_history_id
    )
    SELECT jsonb_build_object(
        'mailboxes', mailboxes, 'queued', queued,
        'outcome', CASE WHEN mailboxes = 0 THEN 'unknown_mailbox'
                        WHEN queued > 0 THEN 'sync_queued'
                        ELSE 'no_sync_needed' END)
    INTO v_result
    FROM (SELECT (SELECT count(*) FROM touched) AS mailboxes,
                 (SELECT count(job_id) FROM queued) AS queued) counts;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION api.gmail_push(text, bigint) IS
    'POST /webhooks/gmail/pubsub: a Gmail push for p_email at p_history_id; queue a history '
    'sync of each such mailbox that is behind and may sync. Returns {mailboxes, queued, '
    'outcome: unknown_mailbox | sync_queued | no_sync_needed}; 422 invalid_push when p_email '
    'is not an e-mail address (logic.is_email_address).';
