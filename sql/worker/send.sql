-- outbound_send: the send state of a reply moves here, and only here.
--
-- queued --begin--> sending --sent--> sent
--                   sending --fail--> failed          (permanent refusal, or out of retries)
--                   sending --begin--> sending + check (an earlier attempt's outcome is unknown:
--                                                       ask Gmail before sending again)
-- Each step is its own transaction. `sending` is committed before Gmail is called, so a
-- worker killed anywhere after it leaves a row that says "maybe sent": the next attempt looks
-- for the minted Message-ID in the sending mailbox (messages.list q=rfc822msgid:) first.

CREATE FUNCTION worker.outbound_begin(p_message_id bigint) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    ob core.outbound_messages;
    m core.messages;
    c core.message_contents;
    si core.send_identities;
    mb core.mailboxes;
    v_action text;
    v_thread text;
BEGIN
    SELECT * INTO ob FROM core.outbound_messages WHERE message_id = p_message_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('action', 'done', 'state', NULL);
    END IF;
    IF ob.state IN ('sent', 'failed') THEN
        RETURN jsonb_build_object('action', 'done', 'state', ob.state);
    END IF;
    v_action := CASE WHEN ob.state = 'sending' THEN 'check' ELSE 'send' END;
    UPDATE core.outbound_messages
    SET state = 'sending', attempts = attempts + 1, last_attempt_at = now(), updated_at = now()
    WHERE message_id = ob.message_id;

    SELECT * INTO m FROM core.messages WHERE id = ob.message_id;
    SELECT * INTO c FROM core.message_contents WHERE message_id = ob.message_id;
    SELECT * INTO si FROM core.send_identities WHERE id = ob.send_identity_id;
    SELECT * INTO mb FROM core.mailboxes WHERE id = ob.mailbox_id;
    -- Gmail's thread in the sending mailbox: where a message of this ticket already lives.
    SELECT o.gmail_thread_id INTO v_thread
    FROM core.ticket_messages tm
    JOIN core.message_occurrences o ON o.message_id = tm.message_id
    WHERE tm.ticket_id = ob.ticket_id AND o.mailbox_id = ob.mailbox_id
      AND o.gmail_thread_id IS NOT NULL
    ORDER BY o.internal_date DESC NULLS LAST, o.id DESC
    LIMIT 1;
    RETURN jsonb_build_object(
        'action', v_action,
        'message_id', ob.message_id,
        'organization_id', ob.organization_id,
        'ticket_number', (SELECT t.number FROM core.tickets t WHERE t.id = ob.ticket_id),
        'attempt', ob.attempts + 1,
        'mailbox', CASE WHEN mb.id IS NOT NULL THEN jsonb_build_object(
            'id', mb.id, 'organization_id', mb.organization_id, 'email', mb.email,
            'state', mb.state,
            'encrypted_refresh_token', encode(mb.encrypted_refresh_token, 'base64')) END,
        'identity', CASE WHEN si.id IS NOT NULL THEN jsonb_build_object(
            'from_email', si.from_email, 'from_name', si.from_name,
            'signed_reply_to', si.signed_reply_to, 'enabled', si.enabled) END,
        'rfc_message_id', c.headers->'message-id'->>0,
        'date', m.sent_at,
        'subject', m.subject,
        'to', m.to_addresses,
        'cc', m.cc_addresses,
        'in_reply_to', c.headers->'in-reply-to'->>0,
        'references', c.headers->'references'->>0,
        'body_text', c.text_body,
        'gmail_thread_id', v_thread);
END
$$;
COMMENT ON FUNCTION worker.outbound_begin(bigint) IS
    'outbound_send, step 1 (own transaction): lock the send state; sent/failed → {action: '
    'done}; queued → sending, {action: send}; sending (an earlier attempt''s outcome unknown) '
    '→ {action: check}: look for the message in Gmail before sending. Returns what building '
    'and sending need: mailbox and its grant, identity, headers, body, Gmail thread id.';

CREATE FUNCTION worker.outbound_sent(p_message_id bigint, p_gmail_message_id text,
                                     p_gmail_thread_id text, p_recovered boolean)
    RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    ob core.outbound_messages;
BEGIN
    UPDATE core.outbound_messages
    SET state = 'sent', gmail_message_id = p_gmail_message_id,
        gmail_thread_id = p_gmail_thread_id, sent_at = now(), recovered = p_recovered,
        updated_at = now()
    WHERE message_id = p_message_id AND state = 'sending'
    RETURNING * INTO ob;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('recorded', false);
    END IF;
    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (ob.organization_id, ob.ticket_id, 'reply_sent', ob.author_user_id,
            jsonb_build_object('message_id', ob.message_id, 'oss_message_id', ob.oss_message_id,
                               'gmail_message_id', p_gmail_message_id,
                               'gmail_thread_id', p_gmail_thread_id,
                               'attempts', ob.attempts,
                               'found_after_lost_answer', p_recovered));
    RETURN jsonb_build_object('recorded', true, 'state', 'sent',
                              'gmail_message_id', p_gmail_message_id);
END
$$;
COMMENT ON FUNCTION worker.outbound_sent(bigint, text, text, boolean) IS
    'outbound_send, last step: sending → sent with Gmail''s message and thread ids and sent_at, '
    'a `reply_sent` event (found_after_lost_answer when the rfc822msgid search found it). '
    'Only from sending: {recorded: false} otherwise.';

CREATE FUNCTION worker.outbound_fail(p_message_id bigint, p_kind text, p_reason text)
    RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    ob core.outbound_messages;
BEGIN
    -- A send fails only while sending; a bounce fails a reply Gmail accepted (sent).
    UPDATE core.outbound_messages
    SET state = 'failed', failure_kind = p_kind, failure_reason = left(p_reason, 2000),
        failed_at = now(), updated_at = now()
    WHERE message_id = p_message_id
      AND state = CASE WHEN p_kind = 'bounce' THEN 'sent' ELSE 'sending' END
    RETURNING * INTO ob;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('recorded', false);
    END IF;
    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (ob.organization_id, ob.ticket_id, 'reply_failed', NULL,
            jsonb_build_object('message_id', ob.message_id, 'oss_message_id', ob.oss_message_id,
                               'kind', p_kind, 'reason', ob.failure_reason,
                               'attempts', ob.attempts));
    RETURN jsonb_build_object('recorded', true, 'state', 'failed', 'reason', ob.failure_reason);
END
$$;
COMMENT ON FUNCTION worker.outbound_fail(bigint, text, text) IS
    'A reply failed: p_kind send (from sending: Gmail refused it, the grant is revoked, or the '
    'retries ran out) or bounce (from sent: a delivery report); state failed with the reason '
    'and a `reply_failed` event. {recorded: false} when the state did not allow it.';

CREATE FUNCTION worker.outbound_record_bounces(p_message_ids bigint[]) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_count integer := 0;
BEGIN
    -- A delivery report names the message it reports on (its embedded copy's Message-ID,
    -- parsed into the report's evidence); when that is one of our replies, it failed.
    FOR r IN
        SELECT b.id AS bounce_id, ob.message_id,
               c.parse_evidence->'delivery_report' AS report
        FROM core.messages b
        JOIN core.message_contents c ON c.message_id = b.id
        JOIN core.messages m ON m.organization_id = b.organization_id AND m.minted_by_product
                            AND m.rfc_message_id = c.parse_evidence->'delivery_report'
                                                   ->>'original_message_id'
        JOIN core.outbound_messages ob ON ob.message_id = m.id
        WHERE b.id = ANY (p_message_ids) AND b.automated = 'bounce'
        ORDER BY ob.message_id
    LOOP
        IF (worker.outbound_fail(r.message_id, 'bounce', coalesce(
                (SELECT string_agg(concat_ws(' ', x->>'final_recipient', x->>'status',
                                             x->>'diagnostic_code'), '; ')
                 FROM jsonb_array_elements(coalesce(r.report->'recipients', '[]')) x
                 WHERE coalesce(x->>'action', 'failed') = 'failed'),
                'delivery report without a reason'))->>'recorded')::boolean THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION worker.outbound_record_bounces(bigint[]) IS
    'Delivery reports among p_message_ids that report on one of our sent replies fail that '
    'reply (kind bounce, reason: final recipient, status and diagnostic code of the failed '
    'recipients). Returns how many replies it failed.';
