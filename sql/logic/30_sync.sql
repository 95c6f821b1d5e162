-- Mailbox sync: when a mailbox may sync, how sync jobs are queued, and how failures and
-- the circuit breaker are recorded. Only sync steps (worker.*) move the history cursor.

CREATE FUNCTION logic.sync_blocked_reason(m core.mailboxes) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN m.purpose = 'sender' THEN 'sender'
        WHEN NOT m.enabled THEN 'disabled'
        WHEN m.state = 'needs_reconnect' THEN 'needs_reconnect'
        WHEN m.state = 'disabled' THEN 'disabled'
        WHEN m.ingestion_paused_until > now() THEN 'paused'
    END
$$;
COMMENT ON FUNCTION logic.sync_blocked_reason(core.mailboxes) IS
    'Why a mailbox may not sync now (sender: connected only to send replies, never ingested; '
    'disabled, needs_reconnect, paused), or NULL.';
GRANT EXECUTE ON FUNCTION logic.sync_blocked_reason(core.mailboxes) TO ticketing_api;

CREATE FUNCTION logic.require_mailbox(p_mailbox_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- Callers are SECURITY DEFINER: the tenant check is explicit. The worker (no tenant
    -- context) may reach every mailbox.
    PERFORM 1 FROM core.mailboxes
    WHERE id = p_mailbox_id
      AND (core.current_org_id() IS NULL OR organization_id = core.current_org_id());
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'mailbox_not_found', 'No such mailbox.');
    END IF;
END
$$;
COMMENT ON FUNCTION logic.require_mailbox(uuid) IS
    'Raise 404 mailbox_not_found unless the mailbox exists in the request''s organisation.';

-- Sync jobs are queued by admins (API role) and by the worker. SECURITY DEFINER because only
-- logic.enqueue may touch procrastinate; the tenant check keeps the API to its organisation.
CREATE FUNCTION logic.mailbox_lag_seconds(m core.mailboxes) RETURNS double precision
    LANGUAGE sql STABLE AS $$
    -- SPEC 2.1: now minus the internal date of the newest message still on its way to
    -- `routed` (failed ones are the DLQ's business, not lag); 0 when caught up.
    SELECT coalesce(extract(epoch FROM now() - max(o.internal_date)), 0)::double precision
    FROM core.message_occurrences o
    WHERE o.mailbox_id = m.id AND o.state NOT IN ('routed', 'failed')
$$;
COMMENT ON FUNCTION logic.mailbox_lag_seconds(core.mailboxes) IS
    'Seconds between now and the newest occurrence of the mailbox not yet routed (0 if none).';
GRANT EXECUTE ON FUNCTION logic.mailbox_lag_seconds(core.mailboxes) TO ticketing_api;

CREATE FUNCTION logic.enqueue_sync_job(p_mailbox_id uuid, p_task text) RETURNS bigint
    LANGUAGE sql AS $$
    -- Sync jobs of a mailbox run one at a time (lock), and a request never doubles a waiting
    -- job of the same task (queueing lock); queue and priority come from the stage catalog.
    SELECT logic.enqueue(
        p_task, jsonb_build_object('mailbox_id', p_mailbox_id),
        p_queue => stage.queue, p_lock => 'mailbox:' || p_mailbox_id,
        p_queueing_lock => p_task || ':' || p_mailbox_id, p_priority => stage.priority)
    FROM logic.pipeline_stage(p_task) AS stage
$$;
COMMENT ON FUNCTION logic.enqueue_sync_job(uuid, text) IS
    'Queue mailbox_backfill or mailbox_history_sync for a mailbox with the sync conventions '
    '(queue sync, lock mailbox:<id>, one waiting job per task); NULL when one already waits.';

CREATE FUNCTION logic.enqueue_watch(p_mailbox_id uuid) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- Not under the mailbox's sync lock: a watch renewal never waits behind a long walk.
    -- The task itself decides between watch and stop (push on or off, mailbox enabled).
    SELECT logic.enqueue('mailbox_watch', jsonb_build_object('mailbox_id', p_mailbox_id),
                         p_queue => stage.queue,
                         p_queueing_lock => 'mailbox_watch:' || p_mailbox_id,
                         p_priority => stage.priority)
    FROM logic.pipeline_stage('mailbox_history_sync') AS stage  -- a sync step's place
$$;
COMMENT ON FUNCTION logic.enqueue_watch(uuid) IS
    'Queue mailbox_watch for a mailbox (set up, renew or stop its Gmail push watch); NULL '
    'when one already waits.';
GRANT EXECUTE ON FUNCTION logic.enqueue_watch(uuid) TO ticketing_api;

CREATE FUNCTION logic.mailbox_watch_state(m core.mailboxes) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'state', CASE
            WHEN m.watch_topic IS NOT NULL AND m.watch_expires_at > now() THEN 'active'
            WHEN m.watch_error IS NOT NULL THEN 'failed'
            WHEN m.watch_topic IS NOT NULL THEN 'expired'
            ELSE 'off' END,
        'topic', m.watch_topic,
        'expires_at', m.watch_expires_at,
        'renewed_at', m.watch_renewed_at,
        'error', m.watch_error,
        'error_at', m.watch_error_at,
        'last_push_at', m.last_push_at)
$$;
COMMENT ON FUNCTION logic.mailbox_watch_state(core.mailboxes) IS
    'The mailbox''s Gmail push watch: {state: active | expired | failed | off, topic, '
    'expires_at, renewed_at, error, error_at, last_push_at}.';
GRANT EXECUTE ON FUNCTION logic.mailbox_watch_state(core.mailboxes) TO ticketing_api;

CREATE FUNCTION logic.enqueue_history_sync(p_mailbox_id uuid) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM logic.require_mailbox(p_mailbox_id);
    RETURN logic.enqueue_sync_job(p_mailbox_id, 'mailbox_history_sync');
END
$$;
COMMENT ON FUNCTION logic.enqueue_history_sync(uuid) IS
    'Queue one history sync for the mailbox (no-op when one is already waiting).';
GRANT EXECUTE ON FUNCTION logic.enqueue_history_sync(uuid) TO ticketing_api;

CREATE FUNCTION logic.enqueue_backfill_step(p_mailbox_id uuid) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM logic.require_mailbox(p_mailbox_id);
    RETURN logic.enqueue_sync_job(p_mailbox_id, 'mailbox_backfill');
END
$$;
COMMENT ON FUNCTION logic.enqueue_backfill_step(uuid) IS
    'Queue the next page of a running backfill from its checkpoint (no-op when one waits).';
GRANT EXECUTE ON FUNCTION logic.enqueue_backfill_step(uuid) TO ticketing_api;

CREATE FUNCTION logic.enqueue_backfill(p_mailbox_id uuid) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Restart the walk from the first page; the history id is recorded again before it.
    UPDATE core.mailboxes
    SET backfill_state = 'running', backfill_page_token = NULL, backfill_history_id = NULL,
        backfill_page_size = NULL, backfill_pages = 0, backfill_started_at = now(), backfill_completed_at = NULL,
        updated_at = now()
    WHERE id = p_mailbox_id
      AND (core.current_org_id() IS NULL OR organization_id = core.current_org_id());
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'mailbox_not_found', 'No such mailbox.');
    END IF;
    RETURN logic.enqueue_backfill_step(p_mailbox_id);
END
$$;
COMMENT ON FUNCTION logic.enqueue_backfill(uuid) IS
    'Reset the backfill checkpoint and queue a full backfill of the mailbox.';
GRANT EXECUTE ON FUNCTION logic.enqueue_backfill(uuid) TO ticketing_api;

CREATE FUNCTION logic.enqueue_next_sync(m core.mailboxes) RETURNS jsonb
    LANGUAGE sql AS $$
    -- Whatever sync the mailbox needs next: an interrupted walk goes on from its checkpoint,
    -- a mailbox without a cursor starts a backfill, any other gets a history sync.
    SELECT jsonb_build_object('task', task, 'job_id', job_id, 'queued', job_id IS NOT NULL)
    FROM (
        SELECT CASE WHEN m.backfill_state = 'running' OR m.history_id IS NULL
                    THEN 'mailbox_backfill' ELSE 'mailbox_history_sync' END AS task,
               CASE WHEN m.backfill_state = 'running' THEN logic.enqueue_backfill_step(m.id)
                    WHEN m.history_id IS NULL THEN logic.enqueue_backfill(m.id)
                    ELSE logic.enqueue_history_sync(m.id) END AS job_id
    ) next
$$;
COMMENT ON FUNCTION logic.enqueue_next_sync(core.mailboxes) IS
    'Queue the sync a mailbox needs next (continue its backfill, start one, or history sync); '
    'returns {task, job_id, queued}.';
GRANT EXECUTE ON FUNCTION logic.enqueue_next_sync(core.mailboxes) TO ticketing_api;

CREATE FUNCTION logic.mailbox_job_counts(p_mailbox_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(task_name, counts), '{}')
    FROM (
        SELECT task_name,
               jsonb_build_object('queued', count(*) FILTER (WHERE status = 'todo'),
                                  'running', count(*) FILTER (WHERE status = 'doing')) AS counts
        FROM public.procrastinate_jobs
        WHERE status IN ('todo', 'doing') AND args->>'mailbox_id' = p_mailbox_id::text
        GROUP BY task_name
    ) per_task
$$;
COMMENT ON FUNCTION logic.mailbox_job_counts(uuid) IS
    'Queued and running jobs of one mailbox, by task: {"task": {"queued": n, "running": n}}.';
GRANT EXECUTE ON FUNCTION logic.mailbox_job_counts(uuid) TO ticketing_api;

CREATE FUNCTION logic.record_sync_success(p_mailbox_id uuid) RETURNS void
    LANGUAGE sql AS $$
    UPDATE core.mailboxes
    SET consecutive_failures = 0, last_sync_success_at = now(), updated_at = now(),
        -- An expired pause is over once a sync has succeeded after it.
        ingestion_paused_until = CASE WHEN ingestion_paused_until <= now() THEN NULL
                                      ELSE ingestion_paused_until END,
        pause_reason = CASE WHEN ingestion_paused_until <= now() THEN NULL ELSE pause_reason END
    WHERE id = p_mailbox_id
$$;
COMMENT ON FUNCTION logic.record_sync_success(uuid) IS
    'A sync step succeeded: timestamp it, reset the failure streak and clear an expired pause.';

CREATE FUNCTION logic.record_sync_failure(p_mailbox_id uuid, p_error text) RETURNS core.mailboxes
    LANGUAGE sql AS $$
    -- Circuit breaker: the 5th consecutive failure pauses the mailbox for 15 minutes;
    -- periodic sync resumes by itself when the pause expires.
    UPDATE core.mailboxes
    SET consecutive_failures = CASE WHEN consecutive_failures + 1 >= 5 THEN 0
                                    ELSE consecutive_failures + 1 END,
        last_error = left(p_error, 2000), last_error_at = now(), updated_at = now(),
        ingestion_paused_until = CASE WHEN consecutive_failures + 1 >= 5
                                      THEN now() + interval '15 minutes'
                                      ELSE ingestion_paused_until END,
        pause_reason = CASE WHEN consecutive_failures + 1 >= 5
                            THEN 'circuit breaker: 5 consecutive sync failures; last: '
                                 || left(p_error, 500)
                            ELSE pause_reason END
    WHERE id = p_mailbox_id
    RETURNING *
$$;
COMMENT ON FUNCTION logic.record_sync_failure(uuid, text) IS
    'Record a failed sync attempt; the 5th in a row auto-pauses the mailbox for 15 minutes.';

CREATE FUNCTION logic.mark_needs_reconnect(p_mailbox_id uuid, p_error text) RETURNS void
    LANGUAGE sql AS $$
    UPDATE core.mailboxes
    SET state = 'needs_reconnect', last_error = left(p_error, 2000), last_error_at = now(),
        updated_at = now()
    WHERE id = p_mailbox_id
$$;
COMMENT ON FUNCTION logic.mark_needs_reconnect(uuid, text) IS
    'The Gmail grant was revoked: stop syncing until an admin reconnects the mailbox.';

CREATE FUNCTION logic.enqueue_due_syncs() RETURNS integer
    LANGUAGE sql AS $$
    -- Every mailbox that may sync and has something to do gets what it needs next: a
    -- backfill whose chain stopped (a failed step, an expired pause) goes on from its
    -- checkpoint, any other mailbox past its backfill gets a history sync.
    SELECT count(*) FILTER (WHERE (next->>'queued')::boolean)::integer
    FROM core.mailboxes m
    CROSS JOIN LATERAL logic.enqueue_next_sync(m) AS next
    WHERE m.provider = 'gmail'
      AND (m.backfill_state = 'running' OR m.history_id IS NOT NULL)
      AND logic.sync_blocked_reason(m) IS NULL
$$;
COMMENT ON FUNCTION logic.enqueue_due_syncs() IS
    'Periodic: logic.enqueue_next_sync for every enabled, connected, unpaused Gmail mailbox '
    'with a running backfill or a cursor; returns the number of jobs queued.';
