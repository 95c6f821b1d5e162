-- Gmail push watches (users.watch / users.stop). The mailbox_watch task calls Gmail; these
-- functions decide which mailboxes need it and record the outcome.

CREATE FUNCTION worker.watch_action(m core.mailboxes, p_topic text) RETURNS text
    LANGUAGE sql STABLE AS $$
    -- 'watch' (set up or renew), 'stop', or NULL (nothing to do now). Google asks for a
    -- daily renewal; a watch lasts 7 days.
    SELECT CASE
        WHEN m.provider <> 'gmail' THEN NULL
        WHEN p_topic IS NULL OR NOT m.enabled OR m.state = 'disabled' THEN
            CASE WHEN m.watch_topic IS NOT NULL THEN 'stop' END
        WHEN m.state <> 'active' THEN NULL  -- needs_reconnect: no grant to call Gmail with
        WHEN m.watch_topic IS DISTINCT FROM p_topic
             OR m.watch_expires_at IS NULL OR m.watch_expires_at < now() + interval '1 day'
             OR m.watch_renewed_at < now() - interval '1 day' THEN 'watch'
    END
$$;
COMMENT ON FUNCTION worker.watch_action(core.mailboxes, text) IS
    'What the mailbox''s push watch needs given the configured topic (NULL: push off): '
    'watch, stop, or NULL.';

CREATE FUNCTION worker.enqueue_due_watches(p_topic text) RETURNS integer
    LANGUAGE sql AS $$
    SELECT count(logic.enqueue_watch(m.id))::integer
    FROM core.mailboxes m
    WHERE worker.watch_action(m, p_topic) IS NOT NULL
$$;
COMMENT ON FUNCTION worker.enqueue_due_watches(text) IS
    'Periodic (mailbox_watch_renew): queue mailbox_watch for every mailbox whose watch must be '
    'set up, renewed or stopped; returns how many were queued.';

CREATE FUNCTION worker.record_watch(
    p_mailbox_id uuid, p_topic text, p_expiration_ms bigint, p_error text
) RETURNS void
    LANGUAGE sql AS $$
    UPDATE core.mailboxes
    SET watch_topic = CASE WHEN p_error IS NULL THEN p_topic ELSE watch_topic END,
        watch_expires_at = CASE WHEN p_error IS NOT NULL THEN watch_expires_at
                                WHEN p_topic IS NULL THEN NULL
                                ELSE to_timestamp(p_expiration_ms / 1000.0) END,
        watch_renewed_at = CASE WHEN p_error IS NULL AND p_topic IS NOT NULL THEN now()
                                ELSE watch_renewed_at END,
        watch_error = left(p_error, 2000),
        watch_error_at = CASE WHEN p_error IS NULL THEN NULL ELSE now() END,
        updated_at = now()
    WHERE id = p_mailbox_id
$$;
COMMENT ON FUNCTION worker.record_watch(uuid, text, bigint, text) IS
    'mailbox_watch: a watch set up or renewed (topic, expiration in epoch ms), stopped (topic '
    'NULL), or failed (the error; the last good watch is kept until it expires).';
