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

CREATE FUNCTION api.ticket_emails(p_addresses jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(a->>'address' ORDER BY n) FILTER (WHERE a->>'address' IS NOT NULL),
                    '[]')
    FROM jsonb_array_elements(coalesce(p_addresses, '[]')) WITH ORDINALITY AS x(a, n)
$$;
COMMENT ON FUNCTION api.ticket_emails(jsonb) IS
    'The addresses of a [{name, address}] list, in order (to_emails, cc_emails).';

CREATE FUNCTION api.ticket_message_json(p_ticket_id bigint, m core.messages,
                                        c core.message_contents, tm core.ticket_messages)
    RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'message_id', m.id,
        'direction', m.direction,
        'stitched_at', tm.linked_at,
        'stitch_reason', tm.stitch_reason,
        'stitch_confidence', tm.stitch_confidence,
        'stitch_evidence', tm.evidence,
        'collision_group_id', m.collision_group_id,
        'rfc_message_id', m.rfc_message_id,
        'date_header', m.sent_at,
        'subject', m.subject,
        'from_email', m.from_address,
        'from_name', m.from_name,
        'to_emails', api.ticket_emails(m.to_addresses),
        'cc_emails', api.ticket_emails(m.cc_addresses),
        'to', m.to_addresses,
        'cc', m.cc_addresses,
        'reply_to', m.reply_to,
        'snippet', m.snippet,
        'body_text', coalesce(c.text_body, ''),
        'body_html_sanitized', api.ticket_message_html(p_ticket_id, m.id, coalesce(c.html_body, '')),
        'parse_evidence', coalesce(c.parse_evidence, '{}'),
        'attachments', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', a.id, 'filename', a.filename, 'content_type', a.content_type,
                       'size_bytes', a.size, 'is_inline', a.disposition = 'inline',
                       'content_id', a.content_id,
                       'download_url', format('/tickets/%s/attachments/%s/download',
                                              p_ticket_id, a.id))
                       ORDER BY a.position), '[]')
            FROM core.attachments a WHERE a.message_id = m.id),
        'occurrences', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', o.id,
                       'mailbox_id', o.mailbox_id,
                       'mailbox_email', mb.email,
                       'gmail_message_id', o.gmail_message_id,
                       'gmail_thread_id', o.gmail_thread_id,
                       'internal_date', o.internal_date,
                       'state', o.state,
                       'original_recipient', o.original_recipient,
                       'original_recipient_source', coalesce(o.recipient_source, 'unknown'),
                       'original_recipient_confidence',
                           coalesce(o.recipient_confidence, 'unknown'),
                       'original_recipient_evidence', o.recipient_evidence,
                       'routed_at', o.routed_at,
                       -- A failed occurrence's error, under the stage it failed in.
                       'parse_error', CASE WHEN o.failed_stage LIKE '%parse%'
                                           OR o.failed_stage LIKE '%fetch%'
                                      THEN o.last_error END,
                       'stitch_error', CASE WHEN o.failed_stage LIKE '%stitch%'
                                       THEN o.last_error END,
                       'route_error', CASE WHEN o.failed_stage LIKE '%rout%'
                                      THEN o.last_error END,
                       'failed_stage', o.failed_stage)
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
    'A thread message of ticket p_ticket_id in the web client''s shape: message_id, '
    'direction, stitch (stitched_at, reason, confidence; evidence as stitch_evidence), '
    'collision_group_id, headers (date_header, from_email, to_emails, cc_emails; the address '
    'objects as to, cc, reply_to), bodies (body_text, body_html_sanitized with cid images '
    'rewritten), parse evidence, attachments (size_bytes, is_inline, download_url), '
    'occurrences with their original recipient evidence and per-stage errors, automated '
    '(auto_reply, bounce) with its classification evidence, and outbound_send (the send '
    'state of a reply the product sent, else null).';

CREATE FUNCTION api.ticket_note_json(n core.ticket_notes) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', n.id, 'ticket_id', n.ticket_id, 'author_user_id', n.author_user_id,
        'author', api.user_ref(n.author_user_id), 'body_markdown', n.body,
        -- Notes are plain text shown as such: no HTML rendering is offered.
        'body_html_sanitized', NULL::text,
        'created_at', n.created_at, 'updated_at', n.created_at)
$$;
COMMENT ON FUNCTION api.ticket_note_json(core.ticket_notes) IS
    'The API shape of an internal note: id, ticket_id, author_user_id (and author {user_id, '
    'email, display_name}), body_markdown, body_html_sanitized (always null), created_at, '
    'updated_at (notes are never edited: created_at).';

CREATE FUNCTION api.ticket_detail(p_ticket_id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_ticket core.tickets;
BEGIN
    SELECT * INTO v_ticket FROM core.tickets WHERE id = p_ticket_id;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'ticket_not_found', 'No ticket with that id in this organization.');
    END IF;
    RETURN jsonb_build_object(
        'ticket', v_ticket.list_item::jsonb || jsonb_build_object(
            'hidden', v_ticket.hidden,
            'merged_into_ticket_id', v_ticket.merged_into_ticket_id,
            'mailbox_id', v_ticket.mailbox_id,
            'human_touched_at', v_ticket.human_touched_at,
            'routed_at', v_ticket.routed_at),
        'messages', (
            SELECT coalesce(jsonb_agg(api.ticket_message_json(v_ticket.id, m, c, tm)
                                      ORDER BY coalesce(m.sent_at, tm.linked_at), m.id), '[]')
            FROM core.ticket_messages tm
            JOIN core.messages m ON m.id = tm.message_id
            LEFT JOIN core.message_contents c ON c.message_id = m.id
            WHERE tm.ticket_id = v_ticket.id),
        'events', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', e.id, 'event_type', e.type, 'actor_user_id', e.actor_user_id,
                       'actor', api.user_ref(e.actor_user_id), 'event_data', e.data,
                       'created_at', e.created_at) ORDER BY e.id), '[]')
            FROM core.ticket_events e WHERE e.ticket_id = v_ticket.id),
        'notes', (
            SELECT coalesce(jsonb_agg(api.ticket_note_json(n) ORDER BY n.id), '[]')
            FROM core.ticket_notes n WHERE n.ticket_id = v_ticket.id));
END
$$;
COMMENT ON FUNCTION api.ticket_detail(bigint) IS
    'GET /tickets/{id}: {ticket, messages, events, notes}: the ticket (list item plus hidden, '
    'merged_into_ticket_id, mailbox_id, human_touched_at, routed_at), its messages in sent '
    'order, events (event_type, actor_user_id and actor, event_data) and notes. 404 '
    'ticket_not_found.';
