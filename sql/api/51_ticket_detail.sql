-- Tickets: the detail of one ticket. Invoker functions under row-level security.

-- Detail ---------------------------------------------------------------------------------

CREATE FUNCTION api.user_ref(p_user_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_user_id IS NOT NULL THEN
        jsonb_build_object('user_id', p_user_id,
                           'email', (SELECT u.email FROM core.users u WHERE u.id = p_user_id),
                           'display_name', (SELECT u.display_name FROM core.users u
                                            WHERE u.id = p_user_id))
    END
$$;
COMMENT ON FUNCTION api.user_ref(uuid) IS
    'A user as {user_id, email, display_name} (email NULL once the user left the '
    'organisation); NULL for no user (automation).';

CREATE FUNCTION api.ticket_message_html(p_ticket_id bigint, p_message_id bigint, p_html text)
    RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_html text := p_html;
    v_image record;
BEGIN
    IF p_html IS NULL OR strpos(lower(p_html), 'cid:') = 0 THEN
        RETURN p_html;
    END IF;
    -- The parser's sanitiser keeps only `cid:` image sources, always double-quoted, with
    -- `&` escaped; each one naming an inline attachment of this message is pointed at it.
    FOR v_image IN
        SELECT DISTINCT ON (ref.source) ref.source, a.id AS attachment_id
        FROM (SELECT m[1] AS source, m[2] AS content_id
              FROM regexp_matches(p_html, '(src="cid:([^"]*)")', 'gi') AS m) ref
        JOIN core.attachments a
            ON a.message_id = p_message_id AND a.disposition = 'inline'
           AND a.content_id IN (ref.content_id, replace(ref.content_id, '&amp;', '&'))
        ORDER BY ref.source, a.position
    LOOP
        v_html := replace(v_html, v_image.source,
            format('src="/tickets/%s/attachments/%s/download"', p_ticket_id, v_image.attachment_id));
    END LOOP;
    RETURN v_html;
END
$$;
COMMENT ON FUNCTION api.ticket_message_html(bigint, bigint, text) IS
    'Sanitised HTML body with each <img src="cid:X"> that names an inline attachment of the '
    'message rewritten to /tickets/{ticket}/attachments/{attachment}/download.';

CREATE FUNCTION api.ticket_message_json(p_ticket_id bigint, m core.messages,
                                        c core.message_contents, tm core.ticket_messages)
    RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', m.id,
        'rfc_message_id', m.rfc_message_id,
        'from', jsonb_build_object('name', m.from_name, 'address', m.from_address),
        'reply_to', m.reply_to,
        'to', m.to_addresses,
        'cc', m.cc_addresses,
        'subject', m.subject,
        'sent_at', m.sent_at,
        'snippet', m.snippet,
        'text_body', coalesce(c.text_body, ''),
        'html_body', api.ticket_message_html(p_ticket_id, m.id, coalesce(c.html_body, '')),
        'parse_evidence', coalesce(c.parse_evidence, '{}'),
        'direction', m.direction,
        'stitch', jsonb_build_object('reason', tm.stitch_reason,
                                     'confidence', tm.stitch_confidence,
                                     'evidence', tm.evidence, 'linked_at', tm.linked_at),
        'attachments', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', a.id, 'filename', a.filename, 'content_type', a.content_type,
                       'size', a.size, 'content_id', a.content_id,
                       'disposition', a.disposition,
                       'download_url', format('/tickets/%s/attachments/%s/download',
                                              p_ticket_id, a.id))
                       ORDER BY a.position), '[]')
            FROM core.attachments a WHERE a.message_id = m.id),
        'occurrences', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', o.id,
                       'mailbox', jsonb_build_object('id', mb.id, 'email', mb.email),
                       'gmail_message_id', o.gmail_message_id,
                       'gmail_thread_id', o.gmail_thread_id,
                       'internal_date', o.internal_date,
                       'original_recipient', o.original_recipient,
                       'recipient_source', o.recipient_source,
                       'recipient_confidence', o.recipient_confidence,
                       'recipient_evidence', o.recipient_evidence,
                       'state', o.state)
                       ORDER BY o.id), '[]')
            FROM core.message_occurrences o
            JOIN core.mailboxes mb ON mb.id = o.mailbox_id
            WHERE o.message_id = m.id))
        || jsonb_build_object(
            'automated', m.automated,
            'classification', m.classification,
            'outbound_send', (SELECT logic.outbound_json(ob) FROM core.outbound_messages ob
                              WHERE ob.message_id = m.id))
$$;
COMMENT ON FUNCTION api.ticket_message_json(bigint, core.messages, core.message_contents,
                                            core.ticket_messages) IS
    'A thread message of ticket p_ticket_id in the detail shape: headers, bodies (cid images '
    'rewritten), parse evidence (charsets, skipped parts, why the body is empty), direction, stitch {reason, confidence, evidence}, attachments (metadata and '
    'download_url), occurrences with their recipient evidence, automated (auto_reply, bounce) '
    'with its classification evidence, and outbound_send (the send state of a reply the '
    'product sent, else null).';

CREATE FUNCTION api.ticket_detail(p_ticket_id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_ticket core.tickets;
BEGIN
    SELECT * INTO v_ticket FROM core.tickets WHERE id = p_ticket_id;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'ticket_not_found', 'No ticket with that id in this organization.');
    END IF;
    RETURN v_ticket.list_item::jsonb || jsonb_build_object(
        'hidden', v_ticket.hidden,
        'merged_into_ticket_id', v_ticket.merged_into_ticket_id,
        'mailbox_id', v_ticket.mailbox_id,
        'human_touched_at', v_ticket.human_touched_at,
        'routed_at', v_ticket.routed_at,
        'messages', (
            SELECT coalesce(jsonb_agg(api.ticket_message_json(v_ticket.id, m, c, tm)
                                      ORDER BY coalesce(m.sent_at, tm.linked_at), m.id), '[]')
            FROM core.ticket_messages tm
            JOIN core.messages m ON m.id = tm.message_id
            LEFT JOIN core.message_contents c ON c.message_id = m.id
            WHERE tm.ticket_id = v_ticket.id),
        'events', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', e.id, 'type', e.type, 'actor', api.user_ref(e.actor_user_id),
                       'data', e.data, 'created_at', e.created_at) ORDER BY e.id), '[]')
            FROM core.ticket_events e WHERE e.ticket_id = v_ticket.id),
        'notes', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', n.id, 'body', n.body, 'author', api.user_ref(n.author_user_id),
                       'created_at', n.created_at) ORDER BY n.id), '[]')
            FROM core.ticket_notes n WHERE n.ticket_id = v_ticket.id));
END
$$;
COMMENT ON FUNCTION api.ticket_detail(bigint) IS
    'GET /tickets/{id}: the ticket item plus hidden, merged_into_ticket_id, human_touched_at, '
    'routed_at, messages (sent order), events (with actor) and notes. 404 ticket_not_found.';
