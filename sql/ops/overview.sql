-- Operations overview: mailbox sync health, collision groups and per-organisation pipeline
-- numbers, for every organisation. A DBA queries these views directly; the API's /ops
-- endpoints (sql/api/60_ops.sql) read them filtered to the session's organisation.
-- The per-mailbox facts reuse the functions behind GET /mailboxes/{id}/sync/status
-- (logic.sync_blocked_reason, logic.mailbox_lag_seconds, logic.mailbox_job_counts).

CREATE VIEW ops.mailbox_sync AS
SELECT m.organization_id,
       m.id AS mailbox_id,
       m.email,
       m.state,
       m.enabled,
       m.ingestion_paused_until AS paused_until,
       m.pause_reason,
       health->>'blocked_reason' AS blocked_reason,
       m.history_id,
       m.backfill_state,
       m.backfill_pages,
       m.backfill_completed_at,
       m.last_history_sync_at,
       m.last_error,
       m.last_error_at,
       m.consecutive_failures,
       (health->>'lag_seconds')::double precision AS lag_seconds,
       logic.mailbox_job_counts(m.id) AS jobs,
       coalesce(recent.failures, 0) AS failures_24h,
       m.last_sync_success_at,
       health->>'health' AS health,
       health->>'reason' AS health_reason,
       (health->>'seconds_since_last_sync')::bigint AS seconds_since_last_sync,
       (health->>'stuck_jobs')::integer AS stuck_jobs,
       logic.mailbox_watch_state(m) AS watch
FROM core.mailboxes m
CROSS JOIN LATERAL logic.mailbox_sync_health(m) AS health
LEFT JOIN (
    SELECT f.mailbox_id, count(*) AS failures
    FROM core.job_failures f
    WHERE f.failed_at > now() - interval '24 hours' AND f.mailbox_id IS NOT NULL
    GROUP BY f.mailbox_id
) recent ON recent.mailbox_id = m.id;
COMMENT ON VIEW ops.mailbox_sync IS
    'Per mailbox (every organisation): state, pause, why sync is blocked, history cursor, '
    'backfill progress, last sync and error, lag in seconds (newest unrouted message), queued '
    'and running jobs by task, failed job attempts in the last 24 hours, and health: ok, or '
    'blocked / stuck / idle / stalled / lagging with the reason (logic.mailbox_sync_health), '
    'and the Gmail push watch (logic.mailbox_watch_state).';

CREATE VIEW ops.collisions AS
SELECT g.organization_id,
       g.id AS collision_group_id,
       g.loose_fingerprint,
       g.message_count,
       g.first_seen_at,
       g.last_seen_at,
       samples.messages AS sample_messages
FROM core.collision_groups g
CROSS JOIN LATERAL (
    -- Members share the group's fingerprint: the (organization_id, loose_fingerprint)
    -- index finds them.
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'subject', s.subject,
                                                 'from_address', s.from_address,
                                                 'sent_at', s.sent_at)
                              ORDER BY s.sent_at NULLS LAST, s.id), '[]') AS messages
    FROM (
        SELECT m.id, m.subject, m.from_address, m.sent_at
        FROM core.messages m
        WHERE m.organization_id = g.organization_id
          AND m.loose_fingerprint = g.loose_fingerprint
          AND m.collision_group_id = g.id
        ORDER BY m.sent_at NULLS LAST, m.id
        LIMIT 5
    ) s
) samples;
COMMENT ON VIEW ops.collisions IS
    'Collision groups (near-duplicate messages that could not be proven identical), every '
    'organisation: fingerprint, message count, first/last seen, up to 5 sample messages '
    '{id, subject, from_address, sent_at}, earliest first.';

CREATE VIEW ops.metrics_overview AS
WITH job_counts AS (
    -- A job belongs to the organisation of the mailbox named in its arguments.
    SELECT m.organization_id,
           count(*) FILTER (WHERE j.status = 'todo') AS queued,
           count(*) FILTER (WHERE j.status = 'doing') AS running,
           count(*) FILTER (WHERE j.status = 'failed') AS failed
    FROM public.procrastinate_jobs j
    JOIN core.mailboxes m ON m.id::text = j.args->>'mailbox_id'
    WHERE j.status IN ('todo', 'doing', 'failed')
    GROUP BY m.organization_id
), mailbox_counts AS (
    SELECT m.organization_id,
           count(*) AS mailboxes,
           count(*) FILTER (WHERE m.ingestion_paused_until > now()) AS paused,
           avg(logic.mailbox_lag_seconds(m)) AS avg_lag_seconds
    FROM core.mailboxes m
    GROUP BY m.organization_id
), occurrence_counts AS (
    SELECT per_state.organization_id, jsonb_object_agg(per_state.state, per_state.n) AS by_state
    FROM (
        SELECT o.organization_id, o.state::text AS state, count(*) AS n
        FROM core.message_occurrences o
        GROUP BY o.organization_id, o.state
    ) per_state
    GROUP BY per_state.organization_id
), dlq_counts AS (
    -- Awaiting action: failed jobs not replayed yet (as the Prometheus dlq_size).
    SELECT d.organization_id, count(*) AS dlq_size
    FROM ops.dlq d
    WHERE d.replay_job_id IS NULL AND d.organization_id IS NOT NULL
    GROUP BY d.organization_id
), recent_failures AS (
    -- Jobs procrastinate gave up on in the last 24 hours (replayed or not).
    SELECT d.organization_id, count(*) AS failed_24h
    FROM ops.dlq d
    WHERE d.failed_at > now() - interval '24 hours' AND d.organization_id IS NOT NULL
    GROUP BY d.organization_id
)
SELECT o.id AS organization_id,
       coalesce(jc.queued, 0) AS jobs_queued,
       coalesce(jc.running, 0) AS jobs_running,
       coalesce(jc.failed, 0) AS jobs_failed,
       coalesce(mc.mailboxes, 0) AS mailboxes,
       coalesce(mc.paused, 0) AS mailboxes_paused,
       coalesce(mc.avg_lag_seconds, 0)::double precision AS avg_lag_seconds,
       coalesce(oc.by_state, '{}') AS occurrences_by_state,
       coalesce(dc.dlq_size, 0) AS dlq_size,
       coalesce(rf.failed_24h, 0) AS jobs_failed_24h
FROM core.organizations o
LEFT JOIN job_counts jc ON jc.organization_id = o.id
LEFT JOIN mailbox_counts mc ON mc.organization_id = o.id
LEFT JOIN occurrence_counts oc ON oc.organization_id = o.id
LEFT JOIN dlq_counts dc ON dc.organization_id = o.id
LEFT JOIN recent_failures rf ON rf.organization_id = o.id;
COMMENT ON VIEW ops.metrics_overview IS
    'Per organisation: queued/running/failed jobs of its mailboxes, mailbox and paused '
    'counts, average lag in seconds, occurrences by state, DLQ size (failed jobs '
    'attributed to it and not replayed yet) and jobs that failed in the last 24 hours.';
