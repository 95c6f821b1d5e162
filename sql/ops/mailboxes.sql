-- Operator registration of a Gmail journal mailbox from an existing refresh token
-- (`ticketing mailbox-register`). Runs as the owner connection, outside any session, so the
-- organisation is named explicitly. The token is encrypted in Python, bound to the mailbox
-- id, hence two steps: ops.gmail_mailbox_target names the id, ops.register_gmail_mailbox
-- stores it; the CLI runs both in one transaction.

CREATE FUNCTION ops.gmail_mailbox_target(p_organization_name text, p_email text)
    RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_email text := lower(btrim(p_email));
    v_org_id uuid;
    v_mailbox core.mailboxes;
BEGIN
    SELECT o.id INTO v_org_id FROM core.organizations o
    WHERE lower(o.name) = lower(btrim(p_organization_name));
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'organization_not_found',
                           format('No organization named "%s".', p_organization_name));
    END IF;
    IF NOT logic.is_email_address(v_email) THEN
        PERFORM logic.fail(422, 'invalid_email', 'email must be an address like journal@example.com');
    END IF;
    SELECT * INTO v_mailbox FROM core.mailboxes m
    WHERE m.organization_id = v_org_id AND m.email = v_email
    FOR UPDATE;
    RETURN jsonb_build_object('organization_id', v_org_id,
                              'mailbox_id', coalesce(v_mailbox.id, gen_random_uuid()),
                              'exists', v_mailbox.id IS NOT NULL);
END
$$;
COMMENT ON FUNCTION ops.gmail_mailbox_target(text, text) IS
    'Registration step 1: the organisation''s id (404 organization_not_found) and the id the '
    'mailbox for p_email has (locked) or will have, to bind the encrypted token to.';

CREATE FUNCTION ops.register_gmail_mailbox(
    p_organization_id uuid, p_mailbox_id uuid, p_email text,
    p_encrypted_refresh_token bytea, p_backfill boolean DEFAULT true,
    p_watch boolean DEFAULT false  -- push is on (GMAIL_PUBSUB_TOPIC): queue mailbox_watch
) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_email text := lower(btrim(p_email));
    v_mailbox core.mailboxes;
    v_created boolean := false;
    v_job_id bigint;
BEGIN
    INSERT INTO core.mailboxes (id, organization_id, provider, email, encrypted_refresh_token,
                                granted_scopes)
    VALUES (p_mailbox_id, p_organization_id, 'gmail', v_email, p_encrypted_refresh_token,
            ARRAY['https://www.googleapis.com/auth/gmail.readonly'])
    ON CONFLICT (organization_id, email) DO NOTHING
    RETURNING * INTO v_mailbox;
    IF FOUND THEN
        v_created := true;
    ELSE
        -- Re-registering replaces the token of the same mailbox (e.g. a rotated grant).
        UPDATE core.mailboxes
        SET encrypted_refresh_token = p_encrypted_refresh_token, state = 'active',
            updated_at = now()
        WHERE organization_id = p_organization_id AND email = v_email AND id = p_mailbox_id
          AND provider = 'gmail'
        RETURNING * INTO v_mailbox;
        IF NOT FOUND THEN
            PERFORM logic.fail(409, 'mailbox_connect_conflict',
                format('%s exists with another id or provider; nothing was changed.', v_email));
        END IF;
    END IF;
    IF p_backfill THEN
        v_job_id := logic.enqueue_backfill(v_mailbox.id);
    END IF;
    IF p_watch THEN
        PERFORM logic.enqueue_watch(v_mailbox.id);
    END IF;
    PERFORM logic.audit(p_organization_id,
                        CASE WHEN v_created THEN 'mailbox.register' ELSE 'mailbox.reregister' END,
                        'mailbox', v_mailbox.id::text,
                        jsonb_build_object('email', v_email, 'via', 'cli',
                                           'backfill_job_id', v_job_id));
    SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = v_mailbox.id;
    RETURN jsonb_build_object('created', v_created, 'mailbox_id', v_mailbox.id,
                              'organization_id', v_mailbox.organization_id,
                              'email', v_mailbox.email, 'state', v_mailbox.state,
                              'backfill_job_id', v_job_id);
END
$$;
COMMENT ON FUNCTION ops.register_gmail_mailbox(uuid, uuid, text, bytea, boolean, boolean) IS
    'Registration step 2: create the Gmail journal mailbox with its encrypted refresh token '
    '(or replace the token of the existing one), optionally queue a backfill and (push on) its '
    'push watch; audited.';
