-- Mailboxes: list, the Gmail connect flow (OAuth state, connect/reconnect), credentials for
-- the connectivity check, and sync administration (backfill, history sync, status, pause,
-- resume). Invoker functions: the API role may read and change core.mailboxes and
-- core.oauth_states under row-level security, so the tenant is the session's organisation.
-- Queueing goes through logic.enqueue_* (SECURITY DEFINER, with their own tenant check).
-- The encrypted refresh token never appears in a JSON shape.

-- The mailbox JSON reports why sync is blocked; the function is a pure function of the row.

CREATE FUNCTION api.mailbox_json(m core.mailboxes) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', m.id,
        'email_address', m.email,
        'provider', m.provider,
        'purpose', m.purpose,
        'gmail_profile_email', CASE WHEN m.provider = 'gmail'
                                     AND m.encrypted_refresh_token IS NOT NULL THEN m.email END,
        'display_name', m.display_name,
        'state', m.state,
        'is_enabled', m.enabled,
        'connected', m.encrypted_refresh_token IS NOT NULL,
        'granted_scopes', to_jsonb(m.granted_scopes),
        -- bigint as text: JavaScript numbers lose precision above 2^53.
        'history_id', m.history_id::text,
        'backfill', jsonb_build_object('state', m.backfill_state, 'pages', m.backfill_pages,
                                       'started_at', m.backfill_started_at,
                                       'completed_at', m.backfill_completed_at),
        'last_history_sync_at', m.last_history_sync_at,
        'last_error', m.last_error,
        'last_error_at', m.last_error_at,
        'paused_until', m.ingestion_paused_until,
        'pause_reason', m.pause_reason,
        'blocked_reason', logic.sync_blocked_reason(m),
        'created_at', m.created_at,
        'updated_at', m.updated_at)
$$;
COMMENT ON FUNCTION api.mailbox_json(core.mailboxes) IS
    'The API shape of a mailbox (never the encrypted refresh token): the web client''s '
    'email_address, purpose (journal or sender), gmail_profile_email, is_enabled, and the '
    'sync state.';

CREATE FUNCTION api.mailbox_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(api.mailbox_json(m) ORDER BY m.email), '[]')
    FROM core.mailboxes m
$$;
COMMENT ON FUNCTION api.mailbox_list() IS
    'GET /mailboxes: the organisation''s mailboxes by address, a bare array (row-level '
    'security scopes).';

CREATE FUNCTION api.mailbox_find(p_mailbox_id uuid, p_for_update boolean DEFAULT false)
    RETURNS core.mailboxes
    LANGUAGE plpgsql AS $$
DECLARE
    v_mailbox core.mailboxes;
BEGIN
    -- Row-level security hides other organisations' mailboxes: they are "not found" too.
    IF p_for_update THEN
        SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = p_mailbox_id FOR UPDATE;
    ELSE
        SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = p_mailbox_id;
    END IF;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'mailbox_not_found', 'No mailbox with that id in this organization.');
    END IF;
    RETURN v_mailbox;
END
$$;
COMMENT ON FUNCTION api.mailbox_find(uuid, boolean) IS
    'The mailbox of the current organisation with that id (optionally locked), else 404 '
    'mailbox_not_found.';

-- ---------------------------------------------------------------- Gmail connect flow

CREATE FUNCTION api.mailbox_oauth_start(p_state_hash bytea, p_ttl_seconds integer,
                                         p_purpose text DEFAULT 'gmail_journal')
    RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_state core.oauth_states;
BEGIN
    INSERT INTO core.oauth_states (state_hash, organization_id, user_id, purpose, expires_at)
    VALUES (p_state_hash, core.current_org_id(), core.current_user_id(), p_purpose,
            now() + make_interval(secs => p_ttl_seconds))
    RETURNING * INTO v_state;
    PERFORM logic.audit(v_state.organization_id, 'mailbox.oauth_start', 'oauth_state',
                        encode(v_state.state_hash, 'hex'),
                        jsonb_build_object('purpose', v_state.purpose,
                                           'expires_at', v_state.expires_at));
    RETURN jsonb_build_object('expires_at', v_state.expires_at);
END
$$;
COMMENT ON FUNCTION api.mailbox_oauth_start(bytea, integer, text) IS
    'POST /mailboxes/gmail/journal/oauth/start: store a one-time OAuth state (its HMAC only) '
    'bound to the session''s organisation and user and to p_purpose (gmail_journal, '
    'gmail_journal_send: the journal also sends replies, gmail_sender: a mailbox that only '
    'sends), expiring after p_ttl_seconds.';

CREATE FUNCTION api.mailbox_oauth_consume_state(p_state_hash bytea) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_state core.oauth_states;
BEGIN
    -- Never raises: the caller commits the consumption first, then reports the verdict,
    -- so a state is spent even when it is refused or the code exchange fails afterwards.
    UPDATE core.oauth_states SET consumed_at = now()
    WHERE state_hash = p_state_hash AND consumed_at IS NULL
    RETURNING * INTO v_state;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM core.oauth_states WHERE state_hash = p_state_hash) THEN
            RETURN jsonb_build_object('valid', false, 'code', 'oauth_state_used',
                'detail', 'This sign-in link was already used: start the connection again.');
        END IF;
        RETURN jsonb_build_object('valid', false, 'code', 'invalid_oauth_state',
            'detail', 'Unknown OAuth state for this organization: start the connection again.');
    END IF;
    IF v_state.user_id IS DISTINCT FROM core.current_user_id() THEN
        RETURN jsonb_build_object('valid', false, 'code', 'oauth_state_mismatch',
            'detail', 'This OAuth state was started by another user: start the connection again.');
    END IF;
    IF v_state.purpose NOT IN ('gmail_journal', 'gmail_journal_send', 'gmail_sender') THEN
        RETURN jsonb_build_object('valid', false, 'code', 'invalid_oauth_state',
            'detail', 'This OAuth state is not for connecting a Gmail mailbox.');
    END IF;
    IF v_state.expires_at <= now() THEN
        RETURN jsonb_build_object('valid', false, 'code', 'oauth_state_expired',
            'detail', 'The sign-in link expired: start the connection again.');
    END IF;
    RETURN jsonb_build_object('valid', true,
        'mailbox_purpose', CASE WHEN v_state.purpose = 'gmail_sender' THEN 'sender'
                                ELSE 'journal' END);
END
$$;
COMMENT ON FUNCTION api.mailbox_oauth_consume_state(bytea) IS
    'GET /mailboxes/gmail/oauth/callback, step 1: consume the OAuth state and return '
    '{valid, code, detail, mailbox_purpose}: unknown, used, another user''s, or expired states '
    'are refused. '
    'Never raises, so the consumption can be committed before anything else happens.';

CREATE FUNCTION api.mailbox_gmail_connect_target(p_email text) RETURNS jsonb
    LANGUAGE plpgsql AS $$
BEGIN
    RETURN logic.gmail_mailbox_target(core.current_org_id(), p_email,
                                      'Gmail returned no usable mailbox address.');
END
$$;
COMMENT ON FUNCTION api.mailbox_gmail_connect_target(text) IS
    'GET /mailboxes/gmail/oauth/callback, step 2: the id the mailbox for p_email has (locked) '
    'or will have, so the refresh token can be encrypted bound to it before it is stored.';

CREATE FUNCTION api.mailbox_gmail_connect(
    p_mailbox_id uuid, p_email text, p_encrypted_refresh_token bytea, p_granted_scopes text[],
    p_watch boolean DEFAULT false,  -- push is on (GMAIL_PUBSUB_TOPIC): queue mailbox_watch
    p_purpose text DEFAULT 'journal'  -- sender: only sends replies, never synced
) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_email text := lower(btrim(p_email));
    v_mailbox core.mailboxes;
    v_created boolean;
    v_queued jsonb;
    v_task text;
    v_job_id bigint;
BEGIN
    IF p_encrypted_refresh_token IS NULL THEN
        PERFORM logic.fail(422, 'refresh_token_missing', 'A refresh token is required.');
    END IF;
    v_created := logic.gmail_mailbox_save(core.current_org_id(), p_mailbox_id, v_email,
                                          p_encrypted_refresh_token,
                                          coalesce(p_granted_scopes, '{}'),
                                          core.current_user_id());
    UPDATE core.mailboxes SET purpose = coalesce(p_purpose, 'journal')
    WHERE id = p_mailbox_id AND purpose IS DISTINCT FROM coalesce(p_purpose, 'journal');
    SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = p_mailbox_id;

    -- A new mailbox starts with a full backfill; a reconnected one goes on where it was.
    -- A sender mailbox is never synced.
    IF v_mailbox.purpose = 'journal' THEN
        v_queued := logic.enqueue_next_sync(v_mailbox);
        IF p_watch THEN
            PERFORM logic.enqueue_watch(v_mailbox.id);
        END IF;
    END IF;
    v_task := v_queued->>'task';
    v_job_id := (v_queued->>'job_id')::bigint;

    PERFORM logic.audit(v_mailbox.organization_id,
                        CASE WHEN v_created THEN 'mailbox.connect' ELSE 'mailbox.reconnect' END,
                        'mailbox', v_mailbox.id::text,
                        jsonb_build_object('email', v_mailbox.email, 'provider', 'gmail',
                                           'granted_scopes', to_jsonb(v_mailbox.granted_scopes),
                                           'queued_task', v_task, 'job_id', v_job_id));
    SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = v_mailbox.id;
    RETURN jsonb_build_object('created', v_created, 'mailbox', api.mailbox_json(v_mailbox),
                              'queued', jsonb_build_object('task', v_task, 'job_id', v_job_id));
END
$$;
COMMENT ON FUNCTION api.mailbox_gmail_connect(uuid, text, bytea, text[], boolean, text) IS
    'GET /mailboxes/gmail/oauth/callback, step 3: create the Gmail mailbox (a journal: queue '
    'its backfill) or store the new token of an existing one (state back to active, sync '
    'queued), and with p_watch (push on) queue its push watch; p_purpose sender: a mailbox '
    'that only sends replies, nothing queued; audited. Returns {created, mailbox, queued}.';

CREATE FUNCTION api.mailbox_credentials(p_mailbox_id uuid)
    RETURNS TABLE (organization_id uuid, email text, provider text,
                   encrypted_refresh_token bytea, granted_scopes text[], enabled boolean,
                   paused boolean)
    LANGUAGE sql STABLE AS $$
    SELECT m.organization_id, m.email, m.provider, m.encrypted_refresh_token, m.granted_scopes,
           m.enabled, coalesce(m.ingestion_paused_until > now(), false)
    FROM api.mailbox_find(p_mailbox_id) m
$$;
COMMENT ON FUNCTION api.mailbox_credentials(uuid) IS
    'GET /mailboxes/{id}/connectivity: the encrypted refresh token for the HTTP layer to '
    'decrypt, the granted scopes, enabled and paused (a row, never JSON); 404 '
    'mailbox_not_found.';

-- ---------------------------------------------------------------- sync administration

CREATE FUNCTION api.mailbox_sync_backfill(p_mailbox_id uuid) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_mailbox core.mailboxes := api.mailbox_find(p_mailbox_id, true);
    v_jobs jsonb := logic.mailbox_job_counts(p_mailbox_id) -> 'mailbox_backfill';
    v_job_id bigint;
BEGIN
    -- A running walk would have its checkpoint reset under it: refuse rather than race.
    IF coalesce((v_jobs ->> 'running')::integer, 0) > 0 THEN
        PERFORM logic.fail(409, 'backfill_running',
            'A backfill of this mailbox is running; wait for it to finish.');
    END IF;
    -- One already waiting: leave it (and its checkpoint) alone.
    IF coalesce((v_jobs ->> 'queued')::integer, 0) = 0 THEN
        v_job_id := logic.enqueue_backfill(p_mailbox_id);
    END IF;
    PERFORM logic.audit(v_mailbox.organization_id, 'mailbox.sync_backfill', 'mailbox',
                        p_mailbox_id::text,
                        jsonb_build_object('queued', v_job_id IS NOT NULL, 'job_id', v_job_id));
    SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = p_mailbox_id;
    RETURN jsonb_build_object('mailbox_id', p_mailbox_id, 'task', 'mailbox_backfill',
                              'queued', v_job_id IS NOT NULL, 'job_id', v_job_id,
                              'blocked_reason', logic.sync_blocked_reason(v_mailbox));
END
$$;
COMMENT ON FUNCTION api.mailbox_sync_backfill(uuid) IS
    'POST /mailboxes/{id}/sync/backfill: reset the checkpoint and queue a full backfill, '
    'unless one is already waiting (queued=false); 409 backfill_running while one runs.';

CREATE FUNCTION api.mailbox_sync_history(p_mailbox_id uuid) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_mailbox core.mailboxes := api.mailbox_find(p_mailbox_id, true);
    v_job_id bigint;
BEGIN
    IF v_mailbox.history_id IS NULL THEN
        PERFORM logic.fail(409, 'history_cursor_missing',
            'This mailbox has no history cursor yet: run (or wait for) a backfill first.');
    END IF;
    v_job_id := logic.enqueue_history_sync(p_mailbox_id);  -- NULL: one is already waiting
    PERFORM logic.audit(v_mailbox.organization_id, 'mailbox.sync_history', 'mailbox',
                        p_mailbox_id::text,
                        jsonb_build_object('queued', v_job_id IS NOT NULL, 'job_id', v_job_id));
    RETURN jsonb_build_object('mailbox_id', p_mailbox_id, 'task', 'mailbox_history_sync',
                              'queued', v_job_id IS NOT NULL, 'job_id', v_job_id,
                              'blocked_reason', logic.sync_blocked_reason(v_mailbox));
END
$$;
COMMENT ON FUNCTION api.mailbox_sync_history(uuid) IS
    'POST /mailboxes/{id}/sync/history: queue an incremental history sync (queued=false when '
    'one is already waiting); 409 history_cursor_missing before the first backfill.';

CREATE FUNCTION api.mailbox_sync_status(p_mailbox_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'mailbox_id', m.id,
        'email', m.email,
        'state', m.state,
        'enabled', m.enabled,
        'cursor', m.history_id::text,
        'backfill', jsonb_build_object('state', m.backfill_state, 'pages', m.backfill_pages,
                                       'started_at', m.backfill_started_at,
                                       'completed_at', m.backfill_completed_at),
        'last_history_sync_at', m.last_history_sync_at,
        'seconds_since_history_sync',
            floor(extract(epoch FROM now() - m.last_history_sync_at))::bigint,
        'last_error', m.last_error,
        'last_error_at', m.last_error_at,
        'consecutive_failures', m.consecutive_failures,
        'paused_until', m.ingestion_paused_until,
        'pause_reason', m.pause_reason,
        'blocked_reason', logic.sync_blocked_reason(m),
        -- Lag: age of the newest message of this mailbox not yet routed; 0 when caught up.
        'lag_seconds', floor(logic.mailbox_lag_seconds(m))::bigint,
        'jobs', logic.mailbox_job_counts(m.id))
    FROM api.mailbox_find(p_mailbox_id) m
$$;
COMMENT ON FUNCTION api.mailbox_sync_status(uuid) IS
    'GET /mailboxes/{id}/sync/status: cursor, backfill progress, last sync and error, pause, '
    'why sync is blocked, lag (now minus the newest unrouted message''s internal date, 0 when '
    'caught up), seconds since the last history sync, queued/running jobs by task.';

CREATE FUNCTION api.mailbox_sync_pause(p_mailbox_id uuid, p_minutes integer) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_mailbox core.mailboxes;
    v_reason text;
BEGIN
    IF p_minutes IS NULL OR p_minutes NOT BETWEEN 1 AND logic.input_limit('pause_minutes') THEN
        PERFORM logic.fail(422, 'invalid_minutes', format(
            'minutes must be a whole number from 1 to %s (one week).',
            logic.input_limit('pause_minutes')));
    END IF;
    v_mailbox := api.mailbox_find(p_mailbox_id, true);
    v_reason := 'paused by ' || coalesce(
        (SELECT u.email FROM core.users u WHERE u.id = core.current_user_id()), 'an admin');
    UPDATE core.mailboxes
    SET ingestion_paused_until = now() + make_interval(mins => p_minutes),
        pause_reason = v_reason, updated_at = now()
    WHERE id = p_mailbox_id
    RETURNING * INTO v_mailbox;
    PERFORM logic.audit(v_mailbox.organization_id, 'mailbox.pause', 'mailbox', p_mailbox_id::text,
                        jsonb_build_object('minutes', p_minutes,
                                           'paused_until', v_mailbox.ingestion_paused_until));
    RETURN jsonb_build_object('mailbox', api.mailbox_json(v_mailbox));
END
$$;
COMMENT ON FUNCTION api.mailbox_sync_pause(uuid, integer) IS
    'POST /mailboxes/{id}/sync/pause?minutes=N: pause ingestion for 1..10080 minutes with '
    'reason "paused by <email>"; sync steps do nothing until it expires or is resumed.';

CREATE FUNCTION api.mailbox_sync_resume(p_mailbox_id uuid, p_watch boolean DEFAULT false)
    RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_mailbox core.mailboxes := api.mailbox_find(p_mailbox_id, true);
    v_was jsonb := jsonb_build_object('paused_until', v_mailbox.ingestion_paused_until,
                                      'pause_reason', v_mailbox.pause_reason,
                                      'consecutive_failures', v_mailbox.consecutive_failures);
    v_queued jsonb;
    v_task text;
    v_job_id bigint;
BEGIN
    UPDATE core.mailboxes
    SET ingestion_paused_until = NULL, pause_reason = NULL, consecutive_failures = 0,
        updated_at = now()
    WHERE id = p_mailbox_id
    RETURNING * INTO v_mailbox;

    v_queued := logic.enqueue_next_sync(v_mailbox);
    IF p_watch THEN
        PERFORM logic.enqueue_watch(v_mailbox.id);
    END IF;
    v_task := v_queued->>'task';
    v_job_id := (v_queued->>'job_id')::bigint;

    PERFORM logic.audit(v_mailbox.organization_id, 'mailbox.resume', 'mailbox',
                        p_mailbox_id::text,
                        v_was || jsonb_build_object('queued_task', v_task, 'job_id', v_job_id));
    SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = p_mailbox_id;
    RETURN jsonb_build_object(
        'mailbox', api.mailbox_json(v_mailbox),
        'queued', jsonb_build_object('task', v_task, 'queued', v_job_id IS NOT NULL,
                                     'job_id', v_job_id));
END
$$;
COMMENT ON FUNCTION api.mailbox_sync_resume(uuid, boolean) IS
    'POST /mailboxes/{id}/sync/resume: clear the pause and the failure streak, then queue a '
    'history sync (a backfill when the mailbox has no cursor yet) and, with p_watch (push '
    'on), a renewal of its push watch.';
