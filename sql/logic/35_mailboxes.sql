-- Registration of a Gmail journal mailbox, once for its two callers: the API's OAuth connect
-- (api.mailbox_gmail_connect_target / api.mailbox_gmail_connect, under the session's
-- organisation) and the operator's `ticketing mailbox-register` (ops.gmail_mailbox_target /
-- ops.register_gmail_mailbox, organisation named explicitly). Two steps, as the refresh
-- token is encrypted in Python bound to the mailbox id: the target names the id (locking an
-- existing row), the save stores the token under it, in one transaction. What differs
-- between the callers is a parameter (organisation, scopes, creator, error wording) or
-- stays with the caller (which sync job to queue, the audit vocabulary, the reply).

CREATE FUNCTION logic.gmail_mailbox_target(p_organization_id uuid, p_email text,
                                           p_invalid_email_message text)
    RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_email text := lower(btrim(p_email));
    v_mailbox core.mailboxes;
BEGIN
    IF NOT logic.is_email_address(v_email) THEN
        PERFORM logic.fail(422, 'invalid_email', p_invalid_email_message);
    END IF;
    -- Locked: the save that follows in this transaction updates this very row.
    SELECT * INTO v_mailbox FROM core.mailboxes m
    WHERE m.organization_id = p_organization_id AND m.email = v_email
    FOR UPDATE;
    RETURN jsonb_build_object('organization_id', p_organization_id,
                              'mailbox_id', coalesce(v_mailbox.id, gen_random_uuid()),
                              'exists', v_mailbox.id IS NOT NULL);
END
$$;
COMMENT ON FUNCTION logic.gmail_mailbox_target(uuid, text, text) IS
    'Registration step 1: the id the Gmail mailbox p_email of the organisation has (row '
    'locked) or will have, as {organization_id, mailbox_id, exists}; 422 invalid_email with '
    'the caller''s sentence when p_email is not an address (logic.is_email_address).';
GRANT EXECUTE ON FUNCTION logic.gmail_mailbox_target(uuid, text, text) TO ticketing_api;

CREATE FUNCTION logic.gmail_mailbox_save(
    p_organization_id uuid, p_mailbox_id uuid, p_email text, p_encrypted_refresh_token bytea,
    p_granted_scopes text[],  -- NULL: keep the stored scopes; a new mailbox gets gmail.readonly
    p_created_by uuid         -- the connecting user; NULL from the command line
) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_email text := lower(btrim(p_email));
    v_mailbox core.mailboxes;
BEGIN
    SELECT * INTO v_mailbox FROM core.mailboxes m
    WHERE m.organization_id = p_organization_id AND m.email = v_email
    FOR UPDATE;
    IF FOUND THEN
        IF v_mailbox.id <> p_mailbox_id THEN
            -- The token was encrypted for another id: a concurrent registration won the race.
            PERFORM logic.fail(409, 'mailbox_connect_conflict',
                'The mailbox was connected concurrently; start the connection again.');
        END IF;
        IF v_mailbox.provider <> 'gmail' THEN
            PERFORM logic.fail(409, 'mailbox_provider_mismatch',
                format('%s is registered as a %s mailbox, not Gmail.', v_email, v_mailbox.provider));
        END IF;
        -- Re-registering replaces the token of the same mailbox (a rotated grant).
        UPDATE core.mailboxes
        SET encrypted_refresh_token = p_encrypted_refresh_token,
            granted_scopes = coalesce(p_granted_scopes, granted_scopes),
            state = 'active', updated_at = now()
        WHERE id = v_mailbox.id;
        RETURN false;
    END IF;
    INSERT INTO core.mailboxes (id, organization_id, provider, email, encrypted_refresh_token,
                                granted_scopes, created_by)
    VALUES (p_mailbox_id, p_organization_id, 'gmail', v_email, p_encrypted_refresh_token,
            coalesce(p_granted_scopes, ARRAY['https://www.googleapis.com/auth/gmail.readonly']),
            p_created_by)
    ON CONFLICT (organization_id, email) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM logic.fail(409, 'mailbox_connect_conflict',
            'The mailbox was connected concurrently; start the connection again.');
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION logic.gmail_mailbox_save(uuid, uuid, text, bytea, text[], uuid) IS
    'Registration step 2: create Gmail mailbox p_mailbox_id with its encrypted refresh token, '
    'or store the new token (and scopes, when given) of the existing one and set it active. '
    'Returns whether it was created. 409 mailbox_connect_conflict (registered concurrently '
    'under another id) / mailbox_provider_mismatch. Queues nothing and audits nothing: the '
    'callers do, each in its own terms.';
GRANT EXECUTE ON FUNCTION logic.gmail_mailbox_save(uuid, uuid, text, bytea, text[], uuid)
    TO ticketing_api;
