-- Replies and the organisation's own mail (issue 17): the one reply subject rule, the
-- addresses of a reply, which addresses are the organisation's, how a stored message is classified
-- (direction, auto-reply, delivery report) and the queueing of outbound_send.

CREATE FUNCTION logic.reply_subject(p_subject text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- Any run of leading `Re:` (any case, also `Re[2]:`) becomes one `Re: `.
    SELECT 'Re: ' || regexp_replace(btrim(p_subject), '^(\s*re(\[\d+\])?\s*:\s*)+', '', 'i')
$$;
COMMENT ON FUNCTION logic.reply_subject(text) IS
    'The subject of a reply: p_subject with exactly one leading `Re: `.';
GRANT EXECUTE ON FUNCTION logic.reply_subject(text) TO ticketing_api;

CREATE FUNCTION logic.reply_addresses(p_value jsonb, p_field text, p_min integer)
    RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_addresses text[];
    v_bad text;
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) = 'null' THEN
        p_value := '[]';
    END IF;
    IF jsonb_typeof(p_value) <> 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(p_value) e WHERE jsonb_typeof(e) <> 'string')
    THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
                           p_field || ' must be an array of e-mail addresses.');
    END IF;
    IF jsonb_array_length(p_value) NOT BETWEEN p_min AND logic.input_limit('reply_recipients')
    THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
            format('%s must hold %s to %s addresses.', p_field, p_min,
                   logic.input_limit('reply_recipients')));
    END IF;
    SELECT e INTO v_bad FROM jsonb_array_elements_text(p_value) e
    WHERE NOT logic.is_email_address(lower(btrim(e))) LIMIT 1;
    IF FOUND THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
                           format('%s: %s is not an e-mail address.', p_field, left(v_bad, 320)));
    END IF;
    -- Lower-cased and trimmed, duplicates dropped, first occurrence's order kept.
    SELECT coalesce(array_agg(a ORDER BY n), '{}') INTO v_addresses
    FROM (SELECT DISTINCT ON (lower(btrim(e))) lower(btrim(e)) AS a, n
          FROM jsonb_array_elements_text(p_value) WITH ORDINALITY AS x(e, n)
          ORDER BY lower(btrim(e)), n) d;
    RETURN v_addresses;
END
$$;
COMMENT ON FUNCTION logic.reply_addresses(jsonb, text, integer) IS
    'The addresses of a reply field (a JSON array of strings), normalised and deduplicated; '
    '422 invalid_<field> when it is not an array of p_min to the reply_recipients input limit '
    'of addresses (logic.is_email_address).';
GRANT EXECUTE ON FUNCTION logic.reply_addresses(jsonb, text, integer) TO ticketing_api;

-- ---------------------------------------------------------------- the organisation's mail

CREATE FUNCTION logic.org_address_reason(p_organization_id uuid, p_address text) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_address IS NULL THEN NULL
        WHEN EXISTS (SELECT 1 FROM core.send_identities si
                     WHERE si.organization_id = p_organization_id
                       AND si.from_email = lower(p_address))
            THEN 'sender is a send identity'
        WHEN EXISTS (SELECT 1 FROM core.organization_mail_domains d
                     WHERE d.organization_id = p_organization_id
                       AND d.domain = lower(split_part(p_address, '@', 2)))
            THEN 'sender domain is the organisation''s'
    END
$$;
COMMENT ON FUNCTION logic.org_address_reason(uuid, text) IS
    'Why p_address is one of the organisation''s own addresses (a send identity, or a domain '
    'of core.organization_mail_domains), or NULL when it is not.';

CREATE FUNCTION logic.header_values(p_headers jsonb, p_name text) RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(ARRAY(SELECT jsonb_array_elements_text(
                              CASE WHEN jsonb_typeof(p_headers->p_name) = 'array'
                                   THEN p_headers->p_name ELSE '[]' END)), '{}')
$$;
COMMENT ON FUNCTION logic.header_values(jsonb, text) IS
    'The values of header p_name (lower-case) in a stored header map {name: [values]}.';

CREATE FUNCTION logic.classify_message(
    p_organization_id uuid, p_from_address text, p_headers jsonb, p_parse_evidence jsonb
) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_reasons jsonb := '[]';
    v_org_reason text := logic.org_address_reason(p_organization_id, p_from_address);
    v_automated text;
    v_value text;
BEGIN
    IF v_org_reason IS NOT NULL THEN
        v_reasons := v_reasons || jsonb_build_object('rule', 'org_sender', 'detail', v_org_reason,
                                                     'sender', lower(p_from_address));
    END IF;
    -- RFC 3464: a delivery report.
    IF p_parse_evidence ? 'delivery_report'
       OR EXISTS (SELECT 1 FROM unnest(logic.header_values(p_headers, 'content-type')) v
                  WHERE v ~* '^\s*multipart/report\s*;.*report-type\s*=\s*"?delivery-status')
    THEN
        v_automated := 'bounce';
        v_reasons := v_reasons || jsonb_build_object('rule', 'delivery_report',
            'detail', 'multipart/report; report-type=delivery-status (RFC 3464)');
    END IF;
    -- RFC 3834 and the de-facto headers of autoresponders.
    IF v_automated IS NULL THEN
        SELECT v INTO v_value FROM unnest(logic.header_values(p_headers, 'auto-submitted')) v
        WHERE lower(btrim(split_part(v, ';', 1))) <> 'no' LIMIT 1;
        IF FOUND THEN
            v_automated := 'auto_reply';
            v_reasons := v_reasons || jsonb_build_object('rule', 'auto_submitted',
                'detail', 'Auto-Submitted: ' || left(v_value, 100));
        END IF;
        SELECT v INTO v_value FROM unnest(logic.header_values(p_headers, 'precedence')) v
        WHERE lower(btrim(v)) IN ('bulk', 'junk', 'list', 'auto_reply') LIMIT 1;
        IF FOUND THEN
            v_automated := 'auto_reply';
            v_reasons := v_reasons || jsonb_build_object('rule', 'precedence',
                'detail', 'Precedence: ' || left(v_value, 100));
        END IF;
        SELECT h INTO v_value
        FROM unnest(ARRAY['x-autoreply', 'x-autorespond', 'x-autoresponder',
                          'x-auto-response-suppress']) h
        WHERE cardinality(logic.header_values(p_headers, h)) > 0
          AND (h <> 'x-auto-response-suppress'
               OR EXISTS (SELECT 1 FROM unnest(logic.header_values(p_headers, h)) v
                          WHERE v ~* '(^|,)\s*(all|oof|autoreply)\s*(,|$)'))
        LIMIT 1;
        IF FOUND THEN
            v_automated := 'auto_reply';
            v_reasons := v_reasons || jsonb_build_object('rule', 'autoresponder_header',
                'detail', v_value || ' is present');
        END IF;
    END IF;
    RETURN jsonb_build_object(
        'direction', CASE WHEN v_org_reason IS NOT NULL THEN 'outbound' ELSE 'inbound' END,
        'automated', v_automated,
        'reasons', v_reasons);
END
$$;
COMMENT ON FUNCTION logic.classify_message(uuid, text, jsonb, jsonb) IS
    'What a received message is, from its sender and stored headers: {direction (outbound '
    'when the sender is the organisation''s, logic.org_address_reason), automated (bounce: '
    'an RFC 3464 delivery report; auto_reply: Auto-Submitted other than no, Precedence '
    'bulk/junk/list, X-Autoreply, X-Autorespond and the like; else null), reasons [{rule, '
    'detail}]}.';

-- ---------------------------------------------------------------- send identities

CREATE FUNCTION logic.send_identity_json(si core.send_identities) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', si.id,
        'mailbox_id', si.mailbox_id,
        'from_email', si.from_email,
        'from_name', si.from_name,
        'status', si.status,
        'status_reason', si.status_reason,
        'verified_at', si.verified_at,
        'is_enabled', si.enabled,
        'signed_reply_to', si.signed_reply_to,
        'created_at', si.created_at,
        'updated_at', si.updated_at)
$$;
COMMENT ON FUNCTION logic.send_identity_json(core.send_identities) IS
    'A send identity as the API shows it: id, mailbox_id, from_email, from_name, status '
    '(pending/verified/failed) with status_reason and verified_at, is_enabled, '
    'signed_reply_to, timestamps.';
GRANT EXECUTE ON FUNCTION logic.send_identity_json(core.send_identities) TO ticketing_api;

CREATE FUNCTION logic.outbound_json(ob core.outbound_messages) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN ob.message_id IS NOT NULL THEN jsonb_build_object(
        'state', ob.state,
        'oss_message_id', ob.oss_message_id,
        'send_identity_id', ob.send_identity_id,
        'mailbox_id', ob.mailbox_id,
        'author_user_id', ob.author_user_id,
        'attempts', ob.attempts,
        'job_id', ob.job_id,
        'gmail_message_id', ob.gmail_message_id,
        'gmail_thread_id', ob.gmail_thread_id,
        'queued_at', ob.queued_at,
        'sent_at', ob.sent_at,
        'failure_kind', ob.failure_kind,
        'failure_reason', ob.failure_reason,
        'failed_at', ob.failed_at)
    END
$$;
COMMENT ON FUNCTION logic.outbound_json(core.outbound_messages) IS
    'The send state of a message the product sent (NULL for any other message): state '
    '(queued/sending/sent/failed), ids, attempts, Gmail ids, times, failure kind and reason.';
GRANT EXECUTE ON FUNCTION logic.outbound_json(core.outbound_messages) TO ticketing_api;

-- ---------------------------------------------------------------- queueing

CREATE FUNCTION logic.enqueue_outbound_send(p_message_id bigint) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_job bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM core.outbound_messages ob
                   WHERE ob.message_id = p_message_id
                     AND (core.current_org_id() IS NULL
                          OR ob.organization_id = core.current_org_id())) THEN
        PERFORM logic.fail(404, 'message_not_found', 'No outbound message with that id.');
    END IF;
    -- The lock keeps two sends of one message from ever running at once; the queueing lock
    -- keeps a second copy from waiting beside the first.
    v_job := logic.enqueue('outbound_send', jsonb_build_object('message_id', p_message_id),
                           'send', 'outbound:' || p_message_id, 'outbound:' || p_message_id,
                           NULL, 40);
    IF v_job IS NOT NULL THEN
        UPDATE core.outbound_messages SET job_id = v_job WHERE message_id = p_message_id;
    END IF;
    RETURN coalesce(v_job, (SELECT ob.job_id FROM core.outbound_messages ob
                            WHERE ob.message_id = p_message_id));
END
$$;
COMMENT ON FUNCTION logic.enqueue_outbound_send(bigint) IS
    'Queue outbound_send for an outbound message of the current organisation (queue send, '
    'priority 40, lock outbound:<id>); returns the job id (the waiting one when already '
    'queued). 404 message_not_found.';
GRANT EXECUTE ON FUNCTION logic.enqueue_outbound_send(bigint) TO ticketing_api;
