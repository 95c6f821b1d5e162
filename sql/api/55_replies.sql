-- Replies (issue 17): send identities (admin) and an agent's reply to a ticket. Invoker
-- functions under row-level security; Gmail is asked by the HTTP layer (kernel/gmail_send.py)
-- and its answer judged here.

-- ---------------------------------------------------------------- send identities

CREATE FUNCTION api.send_identity_list(p_all boolean) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(logic.send_identity_json(si) ORDER BY si.created_at, si.id), '[]')
    FROM core.send_identities si
    WHERE si.enabled OR (p_all AND current_setting('app.role', true) = 'admin')
$$;
COMMENT ON FUNCTION api.send_identity_list(boolean) IS
    'GET /tickets/send-identities: the organisation''s send identities, oldest first, as a '
    'bare array: the enabled ones, or all of them for an admin asking with p_all (?all=true).';

CREATE FUNCTION api.send_identity_find(p_id uuid) RETURNS core.send_identities
    LANGUAGE plpgsql AS $$
DECLARE
    si core.send_identities;
BEGIN
    SELECT * INTO si FROM core.send_identities WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'send_identity_not_found',
                           'No send identity with that id in this organization.');
    END IF;
    RETURN si;
END
$$;
COMMENT ON FUNCTION api.send_identity_find(uuid) IS
    'The send identity (locked) of the current organisation; 404 send_identity_not_found.';

CREATE FUNCTION api.send_identity_create(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_email text;
    v_name text;
    v_mailbox_id uuid;
    si core.send_identities;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['mailbox_id', 'from_email', 'from_name',
                                                      'is_enabled', 'signed_reply_to'],
                                        'a send identity');
    v_email := lower(btrim(logic.json_text_field(p_body, 'from_email')));
    IF NOT logic.is_email_address(v_email) THEN
        PERFORM logic.fail(422, 'invalid_from_email', 'from_email must be an e-mail address.');
    END IF;
    v_name := btrim(coalesce(logic.max_length(logic.json_text_field(p_body, 'from_name'),
                                              'from_name', 'sender_name'), ''));
    v_mailbox_id := logic.json_uuid_field(p_body, 'mailbox_id');
    IF v_mailbox_id IS NULL THEN
        PERFORM logic.fail(422, 'invalid_mailbox_id', 'mailbox_id is required.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM core.mailboxes m WHERE m.id = v_mailbox_id) THEN
        PERFORM logic.fail(404, 'mailbox_not_found',
                           'mailbox_id names no mailbox of this organization.');
    END IF;
    IF EXISTS (SELECT 1 FROM core.send_identities x WHERE x.from_email = v_email) THEN
        PERFORM logic.fail(409, 'send_identity_exists',
                           format('%s is already a send identity.', v_email));
    END IF;
    INSERT INTO core.send_identities (organization_id, mailbox_id, from_email, from_name,
                                      enabled, signed_reply_to, created_by)
    VALUES (core.current_org_id(), v_mailbox_id, v_email, v_name,
            logic.json_boolean_field(p_body, 'is_enabled', true),
            logic.json_boolean_field(p_body, 'signed_reply_to', false), core.current_user_id())
    RETURNING * INTO si;
    PERFORM logic.audit(si.organization_id, 'send_identity.create', 'send_identity', si.id::text,
                        jsonb_build_object('from_email', si.from_email, 'mailbox_id', si.mailbox_id));
    RETURN logic.send_identity_json(si);
END
$$;
COMMENT ON FUNCTION api.send_identity_create(jsonb) IS
    'POST /tickets/send-identities: {mailbox_id, from_email, from_name?, is_enabled?, '
    'signed_reply_to?} → the identity, status pending until verified. 422 invalid_from_email '
    '/ invalid_from_name / invalid_mailbox_id; 404 mailbox_not_found; 409 '
    'send_identity_exists.';

CREATE FUNCTION api.send_identity_update(p_id uuid, p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    si core.send_identities := api.send_identity_find(p_id);
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['from_name', 'is_enabled',
                                                      'signed_reply_to'], 'a send identity');
    UPDATE core.send_identities
    SET from_name = coalesce(btrim(logic.max_length(logic.json_text_field(p_body, 'from_name'),
                                                    'from_name', 'sender_name')), from_name),
        enabled = logic.json_boolean_field(p_body, 'is_enabled', enabled),
        signed_reply_to = logic.json_boolean_field(p_body, 'signed_reply_to', signed_reply_to),
        updated_at = now()
    WHERE id = si.id
    RETURNING * INTO si;
    PERFORM logic.audit(si.organization_id, 'send_identity.update', 'send_identity', si.id::text,
                        p_body);
    RETURN logic.send_identity_json(si);
END
$$;
COMMENT ON FUNCTION api.send_identity_update(uuid, jsonb) IS
    'PATCH /tickets/send-identities/{id}: from_name, is_enabled, signed_reply_to. 404; 422 '
    'invalid_<field>.';

CREATE FUNCTION api.send_identity_delete(p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    si core.send_identities := api.send_identity_find(p_id);
BEGIN
    DELETE FROM core.send_identities WHERE id = si.id;
    PERFORM logic.audit(si.organization_id, 'send_identity.delete', 'send_identity', si.id::text,
                        jsonb_build_object('from_email', si.from_email));
    RETURN jsonb_build_object('deleted', true);
END
$$;
COMMENT ON FUNCTION api.send_identity_delete(uuid) IS
    'DELETE /tickets/send-identities/{id}: remove it (replies already sent keep their state). '
    '404 send_identity_not_found.';

CREATE FUNCTION api.send_identity_verify_target(p_id uuid)
    RETURNS TABLE (identity_id uuid, from_email text, mailbox_id uuid, organization_id uuid,
                   mailbox_email text, provider text, encrypted_refresh_token bytea,
                   can_send boolean)
    LANGUAGE sql AS $$
    SELECT si.id, si.from_email, mb.id, mb.organization_id, mb.email, mb.provider,
           mb.encrypted_refresh_token,
           'https://www.googleapis.com/auth/gmail.send' = ANY (mb.granted_scopes)
           OR 'https://mail.google.com/' = ANY (mb.granted_scopes)
           OR 'https://www.googleapis.com/auth/gmail.compose' = ANY (mb.granted_scopes)
           OR 'https://www.googleapis.com/auth/gmail.modify' = ANY (mb.granted_scopes)
    FROM api.send_identity_find(p_id) si
    JOIN core.mailboxes mb ON mb.id = si.mailbox_id
$$;
COMMENT ON FUNCTION api.send_identity_verify_target(uuid) IS
    'POST /tickets/send-identities/{id}/verify, step 1: the identity''s mailbox and its '
    'encrypted grant for the HTTP layer to ask Gmail, and whether the grant may send. 404.';

CREATE FUNCTION api.send_identity_record_verification(p_id uuid, p_send_as jsonb, p_error text)
    RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    si core.send_identities := api.send_identity_find(p_id);
    v_scopes text[] := (SELECT mb.granted_scopes FROM core.mailboxes mb WHERE mb.id = si.mailbox_id);
    v_entry jsonb;
    v_status text;
    v_reason text;
BEGIN
    SELECT e INTO v_entry FROM jsonb_array_elements(coalesce(p_send_as, '[]')) e
    WHERE lower(e->>'sendAsEmail') = si.from_email LIMIT 1;
    IF p_error IS NOT NULL THEN
        v_status := 'failed';
        v_reason := p_error;
    ELSIF NOT (v_scopes && ARRAY['https://www.googleapis.com/auth/gmail.send',
                                 'https://mail.google.com/',
                                 'https://www.googleapis.com/auth/gmail.compose',
                                 'https://www.googleapis.com/auth/gmail.modify']) THEN
        v_status := 'failed';
        v_reason := 'The mailbox''s grant does not include gmail.send: connect it again with '
                    'purpose journal_send or sender.';
    ELSIF v_entry IS NULL THEN
        v_status := 'failed';
        v_reason := format('%s is neither the mailbox''s address nor one of its send-as aliases.',
                           si.from_email);
    ELSIF coalesce((v_entry->>'isPrimary')::boolean, false)
          OR v_entry->>'verificationStatus' = 'accepted' THEN
        v_status := 'verified';
        v_reason := CASE WHEN coalesce((v_entry->>'isPrimary')::boolean, false)
                         THEN 'the mailbox''s own address'
                         ELSE 'a send-as alias with verificationStatus accepted' END;
    ELSE
        v_status := 'failed';
        v_reason := format('The send-as alias is not verified in Gmail (verificationStatus %s).',
                           coalesce(v_entry->>'verificationStatus', 'missing'));
    END IF;
    UPDATE core.send_identities
    SET status = v_status, status_reason = v_reason,
        verified_at = CASE WHEN v_status = 'verified' THEN now() ELSE verified_at END,
        updated_at = now()
    WHERE id = si.id
    RETURNING * INTO si;
    PERFORM logic.audit(si.organization_id, 'send_identity.verify', 'send_identity', si.id::text,
                        jsonb_build_object('status', v_status, 'reason', v_reason));
    RETURN logic.send_identity_json(si);
END
$$;
COMMENT ON FUNCTION api.send_identity_record_verification(uuid, jsonb, text) IS
    'POST /tickets/send-identities/{id}/verify, step 2: judge Gmail''s sendAs list (or the '
    'error reaching it): verified when the grant may send and from_email is the account''s '
    'primary address or an alias with verificationStatus accepted; else failed with the '
    'reason. Returns the identity.';

-- ---------------------------------------------------------------- replies

CREATE FUNCTION api.reply_thread_refs(p_ticket_id bigint)
    RETURNS TABLE (in_reply_to text, refs text[])
    LANGUAGE sql STABLE AS $$
    -- The message answered: the ticket's newest message with a Message-ID that a person
    -- outside the organisation sent (else its newest message with one). Its References
    -- (or In-Reply-To) plus its own id are the reply's References, the newest 20.
    WITH answered AS (
        SELECT m.id, m.rfc_message_id
        FROM core.ticket_messages tm JOIN core.messages m ON m.id = tm.message_id
        WHERE tm.ticket_id = p_ticket_id AND m.rfc_message_id IS NOT NULL
        ORDER BY (m.direction = 'inbound' AND m.automated IS NULL) DESC,
                 coalesce(m.sent_at, tm.linked_at) DESC, m.id DESC
        LIMIT 1
    ),
    chain AS (
        SELECT r.ref, r.position AS n FROM answered a
        JOIN core.message_thread_refs r ON r.message_id = a.id AND r.kind = 'references'
        UNION ALL
        SELECT r.ref, r.position FROM answered a
        JOIN core.message_thread_refs r ON r.message_id = a.id AND r.kind = 'in_reply_to'
        WHERE NOT EXISTS (SELECT 1 FROM core.message_thread_refs x
                          WHERE x.message_id = a.id AND x.kind = 'references')
        UNION ALL
        SELECT a.rfc_message_id, 1000000 FROM answered a
    )
    SELECT (SELECT a.rfc_message_id FROM answered a),
           coalesce((SELECT array_agg(c.ref ORDER BY c.n)
                     FROM (SELECT * FROM chain ORDER BY n DESC LIMIT 20) c), '{}')
$$;
COMMENT ON FUNCTION api.reply_thread_refs(bigint) IS
    'In-Reply-To and References of a reply to ticket p_ticket_id: the newest message a person '
    'outside the organisation sent (with a Message-ID), and its chain plus its own id (the '
    'newest 20).';

CREATE FUNCTION api.ticket_reply(p_ticket_id bigint, p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    t core.tickets := api.ticket_for_change(p_ticket_id);
    si core.send_identities;
    v_to text[];
    v_cc text[];
    v_subject text;
    v_body text;
    v_oss uuid := gen_random_uuid();
    v_rfc_id text;
    v_in_reply_to text;
    v_refs text[];
    v_message bigint;
    v_headers jsonb;
    v_job bigint;
    v_now timestamptz := now();
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['send_identity_id', 'to_emails',
                                                      'cc_emails', 'subject', 'body_text'],
                                        'a reply');
    IF logic.json_uuid_field(p_body, 'send_identity_id') IS NULL THEN
        PERFORM logic.fail(422, 'invalid_send_identity_id', 'send_identity_id is required.');
    END IF;
    SELECT * INTO si FROM core.send_identities
    WHERE id = logic.json_uuid_field(p_body, 'send_identity_id') FOR SHARE;
    IF si.id IS NULL THEN
        PERFORM logic.fail(404, 'send_identity_not_found',
                           'No send identity with that id in this organization.');
    END IF;
    IF NOT si.enabled THEN
        PERFORM logic.fail(422, 'send_identity_disabled', 'This send identity is disabled.');
    END IF;
    IF si.status <> 'verified' THEN
        PERFORM logic.fail(422, 'send_identity_unverified',
                           'This send identity is not verified: verify it first.');
    END IF;
    v_to := logic.reply_addresses(p_body->'to_emails', 'to_emails', 1);
    v_cc := logic.reply_addresses(p_body->'cc_emails', 'cc_emails', 0);
    v_subject := logic.reply_subject(logic.require_text(
        regexp_replace(logic.json_text_field(p_body, 'subject'), '[\r\n]+', ' ', 'g'),
        'subject', logic.input_limit('reply_subject')));
    v_body := logic.json_text_field(p_body, 'body_text');
    PERFORM logic.require_text(v_body, 'body_text', logic.input_limit('reply_body'));
    v_body := replace(replace(v_body, E'\r\n', E'\n'), E'\r', E'\n');

    -- Message-IDs are stored without angle brackets, as the parser stores them; the
    -- headers carry them.
    v_rfc_id := format('oss.%s@%s', v_oss, split_part(si.from_email, '@', 2));
    SELECT r.in_reply_to, r.refs INTO v_in_reply_to, v_refs FROM api.reply_thread_refs(t.id) r;
    v_headers := jsonb_strip_nulls(jsonb_build_object(
        'from', jsonb_build_array(si.from_email),
        'to', to_jsonb(ARRAY[array_to_string(v_to, ', ')]),
        'cc', CASE WHEN cardinality(v_cc) > 0 THEN to_jsonb(ARRAY[array_to_string(v_cc, ', ')]) END,
        'subject', jsonb_build_array(v_subject),
        'message-id', jsonb_build_array('<' || v_rfc_id || '>'),
        'in-reply-to', CASE WHEN v_in_reply_to IS NOT NULL
                            THEN jsonb_build_array('<' || v_in_reply_to || '>') END,
        'references', CASE WHEN cardinality(v_refs) > 0
                           THEN to_jsonb(ARRAY[(SELECT string_agg('<' || r || '>', ' ' ORDER BY n)
                                                FROM unnest(v_refs) WITH ORDINALITY AS x(r, n))])
                      END));

    INSERT INTO core.messages (organization_id, strict_signature, loose_fingerprint, direction,
                               minted_by_product, rfc_message_id, subject, normalized_subject,
                               from_name, from_address, to_addresses, cc_addresses, sent_at,
                               snippet, classification)
    VALUES (t.organization_id, 'outbound:' || v_oss, 'outbound:' || v_oss, 'outbound', true,
            v_rfc_id, v_subject, lower(regexp_replace(btrim(v_subject), '\s+', ' ', 'g')),
            si.from_name, si.from_email,
            (SELECT jsonb_agg(jsonb_build_object('name', '', 'address', a)) FROM unnest(v_to) a),
            coalesce((SELECT jsonb_agg(jsonb_build_object('name', '', 'address', a))
                      FROM unnest(v_cc) a), '[]'),
            v_now, left(btrim(regexp_replace(v_body, '\s+', ' ', 'g')), 200),
            jsonb_build_object('direction', 'outbound', 'automated', NULL,
                               'reasons', jsonb_build_array(jsonb_build_object(
                                   'rule', 'agent_reply', 'detail', 'sent by the product'))))
    RETURNING id INTO v_message;
    INSERT INTO core.message_contents (message_id, organization_id, headers, text_body,
                                       body_sha256)
    VALUES (v_message, t.organization_id, v_headers, v_body,
            encode(sha256(convert_to(v_body, 'UTF8')), 'hex'));
    INSERT INTO core.message_thread_refs (organization_id, message_id, kind, position, ref)
    SELECT t.organization_id, v_message, 'self', 0, v_rfc_id
    UNION ALL
    SELECT t.organization_id, v_message, 'in_reply_to', 0, v_in_reply_to
    WHERE v_in_reply_to IS NOT NULL
    UNION ALL
    SELECT t.organization_id, v_message, 'references', n::integer - 1, ref
    FROM unnest(v_refs) WITH ORDINALITY AS r(ref, n);
    INSERT INTO core.ticket_messages (message_id, organization_id, ticket_id, stitch_reason,
                                      stitch_confidence, evidence)
    VALUES (v_message, t.organization_id, t.id, 'agent_reply', 'high',
            jsonb_build_object('oss_message_id', v_oss, 'author_user_id', core.current_user_id()));
    -- The customer's answer quotes the reply's Message-ID: it must find this ticket.
    INSERT INTO core.ticket_thread_ids (organization_id, rfc_message_id, ticket_id)
    SELECT t.organization_id, ref, t.id FROM unnest(v_refs || v_rfc_id) AS ref
    ON CONFLICT (organization_id, rfc_message_id) DO NOTHING;
    INSERT INTO core.outbound_messages (message_id, organization_id, oss_message_id, ticket_id,
                                        send_identity_id, mailbox_id, author_user_id, queued_at)
    VALUES (v_message, t.organization_id, v_oss, t.id, si.id, si.mailbox_id,
            core.current_user_id(), v_now);

    UPDATE core.tickets
    SET status = 'pending', human_touched_at = v_now, last_activity_at = v_now,
        last_message_direction = 'outbound', updated_at = v_now
    WHERE id = t.id;
    v_job := logic.enqueue_outbound_send(v_message);
    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (t.organization_id, t.id, 'reply_queued', core.current_user_id(),
            jsonb_build_object('message_id', v_message, 'oss_message_id', v_oss,
                               'rfc_message_id', v_rfc_id, 'send_identity_id', si.id,
                               'from_email', si.from_email, 'to_emails', to_jsonb(v_to),
                               'cc_emails', to_jsonb(v_cc), 'job_id', v_job,
                               'from_status', t.status, 'to_status', 'pending'));
    RETURN jsonb_build_object('status', 'queued', 'job_id', v_job, 'message_id', v_message,
                              'oss_message_id', v_oss, 'rfc_message_id', v_rfc_id,
                              'ticket_id', t.id);
END
$$;
COMMENT ON FUNCTION api.ticket_reply(bigint, jsonb) IS
    'POST /tickets/{id}/reply: store the outbound canonical message (minted Message-ID, '
    'threaded on the newest customer message), link it to the ticket, set the ticket pending '
    '(a `reply_queued` event) and queue outbound_send, in one transaction. Returns {status: '
    'queued, job_id, message_id, oss_message_id, rfc_message_id, ticket_id}. 404 '
    'ticket_not_found / send_identity_not_found; 409 ticket_merged; 422 '
    'invalid_send_identity_id, send_identity_disabled, send_identity_unverified, '
    'invalid_to_emails, invalid_cc_emails, invalid_subject, invalid_body_text.';
