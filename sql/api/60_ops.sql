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

CREATE FUNCTION api.ops_mailboxes_sync() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_org uuid := api.ops_require_org();
BEGIN
    RETURN (
        SELECT jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
            'mailbox_id', s.mailbox_id,
            'email', s.email,
            'state', s.state,
            'enabled', s.enabled,
            'paused_until', s.paused_until,
            'pause_reason', s.pause_reason,
            'blocked_reason', s.blocked_reason,
            -- bigint as text, as in GET /mailboxes/{id}/sync/status.
            'cursor', s.history_id::text,
            'backfill', jsonb_build_object('state', s.backfill_state, 'pages', s.backfill_pages,
                                           'completed_at', s.backfill_completed_at),
            'last_history_sync_at', s.last_history_sync_at,
            'last_error', s.last_error,
            'last_error_at', s.last_error_at,
            'consecutive_failures', s.consecutive_failures,
            'lag_seconds', floor(s.lag_seconds)::bigint,
            'jobs', s.jobs,
            'failures_24h', s.failures_24h,
            'last_sync_success_at', s.last_sync_success_at,
            'seconds_since_last_sync', s.seconds_since_last_sync,
            'health', s.health,
            'health_reason', s.health_reason,
            'stuck_jobs', s.stuck_jobs,
            'watch', s.watch) ORDER BY s.email), '[]'))
        FROM ops.mailbox_sync s
        WHERE s.organization_id = v_org);
END
$$;
COMMENT ON FUNCTION api.ops_mailboxes_sync() IS
    'GET /ops/mailboxes/sync: ops.mailbox_sync for the session''s organisation, by address.';

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
    'seen first, with counts and up to 5 sample messages; limit 1..200 (default 50).';

CREATE FUNCTION api.ops_metrics_overview() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_org uuid := api.ops_require_org();
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'jobs', jsonb_build_object('queued', m.jobs_queued, 'running', m.jobs_running,
                                       'failed', m.jobs_failed),
            'mailboxes', jsonb_build_object('total', m.mailboxes, 'paused', m.mailboxes_paused),
            'avg_lag_seconds', floor(m.avg_lag_seconds)::bigint,
            'occurrences_by_state', m.occurrences_by_state,
            'dlq_size', m.dlq_size)
        FROM ops.metrics_overview m
        WHERE m.organization_id = v_org);
END
$$;
COMMENT ON FUNCTION api.ops_metrics_overview() IS
    'GET /ops/metrics/overview: ops.metrics_overview for the session''s organisation.';

CREATE FUNCTION api.ops_dlq(p_limit integer DEFAULT 50) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_limit integer := logic.page_size(p_limit, 'ops_page');
    v_org uuid := api.ops_require_org();
BEGIN
    RETURN (
        SELECT jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
            'job_id', d.job_id,
            'task', d.task_name,
            'queue', d.queue_name,
            'attempts', d.attempts,
            -- Identifiers only (mailbox_id, occurrence_ids, ping_id, ...), whatever a task
            -- was given.
            'args', (SELECT coalesce(jsonb_object_agg(a.key, a.value), '{}')
                     FROM jsonb_each(d.args) a
                     WHERE a.key ~ '(^|_)ids?$'),
            'error_class', d.error_class,
            'error_message', d.error_message,
            'failed_at', d.failed_at,
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
    'core.job_failures), newest failure first: task, attempts, id-only arguments, last error, '
    'replay; limit 1..200 (default 50).';

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
