-- Ops endpoints (admin): thin readers of the ops views, which span every organisation and
-- procrastinate's own tables. Hence SECURITY DEFINER with an explicit filter on the
-- session's organisation in every query. PL/pgSQL because the ops schema is loaded after
-- api: the views are resolved when the functions run, not when they are created.

CREATE FUNCTION api.ops_require_org() RETURNS uuid
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_org uuid := core.current_org_id();
BEGIN
    -- Without a session organisation the ops views would answer for every organisation.
    IF v_org IS NULL THEN
        PERFORM logic.fail(403, 'forbidden', 'No organisation is selected for this session.');
    END IF;
    RETURN v_org;
END
$$;
COMMENT ON FUNCTION api.ops_require_org() IS
    'The session''s organisation, or 403 forbidden: ops readers never run unscoped.';

CREATE FUNCTION api.ops_job_counts_by_type(p_jobs jsonb, p_status text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(j.key, (j.value->>p_status)::integer)
                        FILTER (WHERE (j.value->>p_status)::integer > 0), '{}')
    FROM jsonb_each(coalesce(p_jobs, '{}')) j
$$;
COMMENT ON FUNCTION api.ops_job_counts_by_type(jsonb, text) IS
    'From logic.mailbox_job_counts'' {task: {queued, running}}: {task: count} of p_status '
    '(queued or running), tasks with none left out.';

CREATE FUNCTION api.ops_mailboxes_sync() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_org uuid := api.ops_require_org();
BEGIN
    RETURN (
        SELECT jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
            'mailbox_id', s.mailbox_id,
            'email_address', s.email,
            'provider', mb.provider,
            'purpose', mb.purpose,
            'state', s.state,
            'is_enabled', s.enabled,
            'paused_until', s.paused_until,
            'pause_reason', s.pause_reason,
            'blocked_reason', s.blocked_reason,
            -- A number, as the web client reads it; Gmail history ids stay far below 2^53.
            'gmail_history_id', s.history_id,
            'backfill', jsonb_build_object('state', s.backfill_state, 'pages', s.backfill_pages,
                                           'completed_at', s.backfill_completed_at),
            'last_full_sync_at', s.backfill_completed_at,
            'last_incremental_sync_at', s.last_history_sync_at,
            'last_sync_error', s.last_error,
            'last_error_at', s.last_error_at,
            'consecutive_failures', s.consecutive_failures,
            'sync_lag_seconds', floor(s.lag_seconds)::bigint,
            'queued_jobs_by_type', api.ops_job_counts_by_type(s.jobs, 'queued'),
            'running_jobs_by_type', api.ops_job_counts_by_type(s.jobs, 'running'),
            'jobs', s.jobs,
            'failed_jobs_last_24h', s.failures_24h,
            'last_sync_success_at', s.last_sync_success_at,
            'seconds_since_last_sync', s.seconds_since_last_sync,
            'health', s.health,
            'health_reason', s.health_reason,
            'stuck_jobs', s.stuck_jobs,
            'watch', s.watch) ORDER BY s.email), '[]'))
        FROM ops.mailbox_sync s
        JOIN core.mailboxes mb ON mb.id = s.mailbox_id
        WHERE s.organization_id = v_org);
END
$$;
COMMENT ON FUNCTION api.ops_mailboxes_sync() IS
    'GET /ops/mailboxes/sync: ops.mailbox_sync for the session''s organisation, by address, '
    'in the web client''s field names (email_address, is_enabled, gmail_history_id, '
    'last_full_sync_at, last_incremental_sync_at, last_sync_error, sync_lag_seconds, '
    'queued/running_jobs_by_type, failed_jobs_last_24h) plus state, backfill, health and the '
    'push watch.';

CREATE FUNCTION api.ops_collisions(p_limit integer DEFAULT 50) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_limit integer := logic.page_size(p_limit, 'ops_page');
    v_org uuid := api.ops_require_org();
BEGIN
    RETURN (
        SELECT jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
            'collision_group_id', c.collision_group_id,
            'loose_fingerprint', c.loose_fingerprint,
            'message_count', c.message_count,
            'first_seen_at', c.first_seen_at,
            'last_seen_at', c.last_seen_at,
            'sample_message_ids', (SELECT coalesce(jsonb_agg(sm->'id' ORDER BY n), '[]')
                                   FROM jsonb_array_elements(c.sample_messages)
                                        WITH ORDINALITY AS x(sm, n)),
            'sample_messages', c.sample_messages)
            ORDER BY c.last_seen_at DESC, c.collision_group_id DESC), '[]'))
        FROM (
            SELECT * FROM ops.collisions c
            WHERE c.organization_id = v_org
            ORDER BY c.last_seen_at DESC, c.collision_group_id DESC
            LIMIT v_limit
        ) c);
END
$$;
COMMENT ON FUNCTION api.ops_collisions(integer) IS
    'GET /ops/messages/collisions?limit=N: the organisation''s collision groups, most recently '
    'seen first, with counts, up to 5 sample message ids (sample_message_ids) and those '
    'messages (sample_messages); limit 1..200 (default 50).';

CREATE FUNCTION api.ops_metrics_overview() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_org uuid := api.ops_require_org();
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'queued_jobs', m.jobs_queued,
            'running_jobs', m.jobs_running,
            'failed_jobs_24h', m.jobs_failed_24h,
            'failed_jobs', m.jobs_failed,
            'mailbox_count', m.mailboxes,
            'paused_mailbox_count', m.mailboxes_paused,
            'avg_sync_lag_seconds', floor(m.avg_lag_seconds)::bigint,
            'occurrences_by_state', m.occurrences_by_state,
            'dlq_size', m.dlq_size)
        FROM ops.metrics_overview m
        WHERE m.organization_id = v_org);
END
$$;
COMMENT ON FUNCTION api.ops_metrics_overview() IS
    'GET /ops/metrics/overview: ops.metrics_overview for the session''s organisation, flat: '
    'queued_jobs, running_jobs, failed_jobs_24h, failed_jobs, mailbox_count, '
    'paused_mailbox_count, avg_sync_lag_seconds, occurrences_by_state, dlq_size.';

CREATE FUNCTION api.ops_dlq(p_limit integer DEFAULT 50) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_limit integer := logic.page_size(p_limit, 'ops_page');
    v_org uuid := api.ops_require_org();
BEGIN
    RETURN (
        SELECT jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
            'id', d.job_id,
            'type', d.task_name,
            'status', CASE WHEN d.replay_job_id IS NULL THEN 'failed' ELSE 'replayed' END,
            'queue', d.queue_name,
            'attempts', d.attempts,
            -- The job failed for good: it has used every attempt it was allowed.
            'max_attempts', d.attempts,
            'last_error', d.error_class || ': ' || d.error_message,
            'error_class', d.error_class,
            'error_message', d.error_message,
            'run_at', d.run_at,
            'updated_at', d.failed_at,
            -- Identifiers only (mailbox_id, occurrence_ids, ping_id, ...), whatever a task
            -- was given: never mail.
            'payload', (SELECT coalesce(jsonb_object_agg(a.key, a.value), '{}')
                        FROM jsonb_each(d.args) a
                        WHERE a.key ~ '(^|_)ids?$'),
            'replay', CASE WHEN d.replay_job_id IS NOT NULL THEN
                          jsonb_build_object('replay_job_id', d.replay_job_id,
                                             'replayed_at', d.replayed_at) END)
            ORDER BY d.failed_at DESC, d.job_id DESC), '[]'))
        FROM (
            SELECT * FROM ops.dlq d
            WHERE d.organization_id = v_org
            ORDER BY d.failed_at DESC, d.job_id DESC
            LIMIT v_limit
        ) d);
END
$$;
COMMENT ON FUNCTION api.ops_dlq(integer) IS
    'GET /ops/jobs/dlq?limit=N: the organisation''s failed jobs (attributed through '
    'core.job_failures), newest failure first, in the web client''s fields (id, type, '
    'status failed/replayed, attempts, max_attempts, last_error, run_at, updated_at, payload '
    'of id-only arguments) plus queue, error class and message, replay; limit 1..200 '
    '(default 50).';

CREATE FUNCTION api.ops_replay_job(p_job_id bigint) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_org uuid := api.ops_require_org();
    v_result jsonb;
BEGIN
    -- 404 job_not_found for unknown, unfailed, and other organisations' jobs alike.
    v_result := ops.replay_job(p_job_id, v_org, core.current_user_id());
    PERFORM logic.audit(v_org, 'job.replay', 'job', p_job_id::text,
                        jsonb_build_object('replay_job_id', v_result->'replay_job_id',
                                           'created', v_result->'created'));
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION api.ops_replay_job(bigint) IS
    'POST /ops/jobs/{job_id}/replay: re-queue one of the organisation''s failed jobs with a '
    'fresh attempt budget (once: a second call returns the same replay, created=false); '
    'audited; 404 job_not_found otherwise.';

CREATE FUNCTION api.ops_collisions_backfill() RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_org uuid := api.ops_require_org();
    v_scanned bigint;
    v_groups bigint;
    v_messages bigint;
BEGIN
    -- The same per-fingerprint locks as the parse stage, so a concurrent parse of a
    -- near-duplicate and this backfill see each other.
    PERFORM pg_advisory_xact_lock(keys.k)
    FROM (SELECT DISTINCT hashtextextended(v_org::text || m.loose_fingerprint, 0) AS k
          FROM core.messages m
          WHERE m.organization_id = v_org
          GROUP BY m.loose_fingerprint HAVING count(*) > 1
          ORDER BY 1) keys;
    SELECT count(DISTINCT m.loose_fingerprint) INTO v_scanned
    FROM core.messages m WHERE m.organization_id = v_org;
    WITH shared AS (
        SELECT m.loose_fingerprint, count(*)::integer AS n
        FROM core.messages m
        WHERE m.organization_id = v_org
        GROUP BY m.loose_fingerprint
        HAVING count(*) > 1
    ), created AS (
        INSERT INTO core.collision_groups (organization_id, loose_fingerprint, message_count)
        SELECT v_org, s.loose_fingerprint, s.n
        FROM shared s
        WHERE NOT EXISTS (SELECT 1 FROM core.collision_groups g
                          WHERE g.organization_id = v_org
                            AND g.loose_fingerprint = s.loose_fingerprint)
        ORDER BY s.loose_fingerprint
        RETURNING id
    ), recounted AS (
        UPDATE core.collision_groups g SET message_count = s.n
        FROM shared s
        WHERE g.organization_id = v_org AND g.loose_fingerprint = s.loose_fingerprint
          AND g.message_count <> s.n
        RETURNING g.id
    )
    SELECT (SELECT count(*) FROM created) + (SELECT count(*) FROM recounted) INTO v_groups;
    WITH linked AS (
        UPDATE core.messages m SET collision_group_id = g.id
        FROM core.collision_groups g
        WHERE m.organization_id = v_org AND g.organization_id = v_org
          AND g.loose_fingerprint = m.loose_fingerprint
          AND g.message_count > 1
          AND m.collision_group_id IS DISTINCT FROM g.id
        RETURNING m.id
    )
    SELECT count(*) INTO v_messages FROM linked;
    PERFORM logic.audit(v_org, 'collisions.backfill', 'collision_groups', v_org::text,
                        jsonb_build_object('groups_updated', v_groups,
                                           'messages_updated', v_messages));
    RETURN jsonb_build_object('fingerprints_scanned', v_scanned, 'groups_updated', v_groups,
                              'messages_updated', v_messages);
END
$$;
COMMENT ON FUNCTION api.ops_collisions_backfill() IS
    'POST /ops/messages/collisions/backfill: recompute the organisation''s collision groups '
    'from the stored loose fingerprints, set-based: a group for every fingerprint two or more '
    'messages share, its message count, and each such message linked to it. Idempotent: a '
    'second run updates nothing. {fingerprints_scanned, groups_updated, messages_updated}.';
