-- Operator registration of a Gmail journal mailbox from an existing refresh token
-- (`ticketing mailbox-register`). Runs as the owner connection, outside any session, so the
-- organisation is named explicitly. The token is encrypted in Python, bound to the mailbox
-- id, hence two steps: ops.gmail_mailbox_target names the id, ops.register_gmail_mailbox
-- stores it; the CLI runs both in one transaction. Both steps are the API connect flow's
-- (sql/logic/35_mailboxes.sql); what is the CLI's own is the forced backfill and the audit.

CREATE FUNCTION ops.gmail_mailbox_target(p_organization_name text, p_email text)
    RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_org_id uuid;
BEGIN
    SELECT o.id INTO v_org_id FROM core.organizations o
    WHERE lower(o.name) = lower(btrim(p_organization_name));
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'organization_not_found',
                           format('No organization named "%s".', p_organization_name));
    END IF;
    RETURN logic.gmail_mailbox_target(v_org_id, p_email,
                                      'email must be an address like journal@example.com');
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
    v_created boolean;
    v_job_id bigint;
BEGIN
    v_created := logic.gmail_mailbox_save(p_organization_id, p_mailbox_id, v_email,
                                          p_encrypted_refresh_token, NULL, NULL);
    -- Saved under p_mailbox_id (logic.gmail_mailbox_save refuses any other id).
    IF p_backfill THEN
        v_job_id := logic.enqueue_backfill(p_mailbox_id);
    END IF;
    IF p_watch THEN
        PERFORM logic.enqueue_watch(p_mailbox_id);
    END IF;
    PERFORM logic.audit(p_organization_id,
                        CASE WHEN v_created THEN 'mailbox.register' ELSE 'mailbox.reregister' END,
                        'mailbox', p_mailbox_id::text,
                        jsonb_build_object('email', v_email, 'via', 'cli',
                                           'backfill_job_id', v_job_id));
    SELECT * INTO v_mailbox FROM core.mailboxes WHERE id = p_mailbox_id;
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
