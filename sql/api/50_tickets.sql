-- Tickets: list/search (keyset pages), detail, PATCH, notes, attachment lookup.
-- Invoker functions: the API role reads and changes tickets under row-level security, so
-- another organisation's ticket is simply "not found".
--
-- One exception, for the list's index use. Under RLS a query predicate may only become an
-- index condition when its operator is LEAKPROOF, and neither enum equality (status) nor
-- `@@` (full text) is: with RLS on core.tickets, the status filter runs as a filter over the
-- whole activity index and `q` falls back to a sequential scan. So a list page is read
-- through api.listable_tickets, a view that states the tenant predicate itself; what
-- leaves it is the sort keys and each ticket's stored list item.

CREATE VIEW api.listable_tickets AS
SELECT t.id, t.organization_id, t.status, t.assignee_user_id, t.assignee_queue_id,
       t.last_activity_at, t.search, t.list_item
FROM core.tickets t
WHERE t.organization_id = core.current_org_id()
  AND t.merged_into_ticket_id IS NULL AND NOT t.hidden;
COMMENT ON VIEW api.listable_tickets IS
    'The current organisation''s tickets that lists show (not merged, not hidden). The view '
    'owner reads core.tickets, so row-level security does not hide the predicates from the '
    'indexes; the WHERE clause is the tenant filter. The page functions take sort keys and '
    'the stored list item (core.tickets.list_item) from it.';

-- A row of a list page: the keyset position and the item to send.
CREATE TYPE api.ticket_page_row AS (id bigint, last_activity_at timestamptz, list_item json);

-- The keyset pages, one static query per index. Each is a plain SQL function so that the
-- planner inlines it (EXPLAIN shows the real plan) and, with parameters, still matches
-- the partial index: every query names organization_id, the index predicate
-- (merged_into_ticket_id IS NULL AND NOT hidden, inside the view) and the index order.
-- The other filters are optional (NULL = any) and are applied on top of the chosen index.
-- p_after_* is the last row of the previous page ('infinity' for the first page).

CREATE FUNCTION api.ticket_page_all(
    p_status core.ticket_status, p_query tsquery, p_assignee_user_id uuid,
    p_assignee_queue_id uuid, p_after_activity timestamptz, p_after_id bigint, p_limit integer
) RETURNS SETOF api.ticket_page_row
    LANGUAGE sql STABLE AS $$
    SELECT t.id, t.last_activity_at, t.list_item
    FROM api.listable_tickets t
    WHERE t.organization_id = core.current_org_id()
      AND (t.last_activity_at, t.id) < (p_after_activity, p_after_id)
    ORDER BY t.last_activity_at DESC, t.id DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION api.ticket_page_all(core.ticket_status, tsquery, uuid, uuid, timestamptz,
                                        bigint, integer) IS
    'Keyset page of all listable tickets, newest activity first (tickets_activity_idx). '
    'The filter arguments are ignored: the signature is shared by all ticket_page_* variants.';

CREATE FUNCTION api.ticket_page_status(
    p_status core.ticket_status, p_query tsquery, p_assignee_user_id uuid,
    p_assignee_queue_id uuid, p_after_activity timestamptz, p_after_id bigint, p_limit integer
) RETURNS SETOF api.ticket_page_row
    LANGUAGE sql STABLE AS $$
    SELECT t.id, t.last_activity_at, t.list_item
    FROM api.listable_tickets t
    WHERE t.organization_id = core.current_org_id()
      AND t.status = p_status
      AND (t.last_activity_at, t.id) < (p_after_activity, p_after_id)
    ORDER BY t.last_activity_at DESC, t.id DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION api.ticket_page_status(core.ticket_status, tsquery, uuid, uuid,
                                           timestamptz, bigint, integer) IS
    'Keyset page of listable tickets with status p_status (tickets_status_activity_idx).';

CREATE FUNCTION api.ticket_page_assignee_user(
    p_status core.ticket_status, p_query tsquery, p_assignee_user_id uuid,
    p_assignee_queue_id uuid, p_after_activity timestamptz, p_after_id bigint, p_limit integer
) RETURNS SETOF api.ticket_page_row
    LANGUAGE sql STABLE AS $$
    SELECT t.id, t.last_activity_at, t.list_item
    FROM api.listable_tickets t
    WHERE t.organization_id = core.current_org_id()
      AND t.assignee_user_id = p_assignee_user_id
      AND (p_status IS NULL OR t.status = p_status)
      AND (p_assignee_queue_id IS NULL OR t.assignee_queue_id = p_assignee_queue_id)
      AND (t.last_activity_at, t.id) < (p_after_activity, p_after_id)
    ORDER BY t.last_activity_at DESC, t.id DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION api.ticket_page_assignee_user(core.ticket_status, tsquery, uuid, uuid,
                                                  timestamptz, bigint, integer) IS
    'Keyset page of listable tickets assigned to user p_assignee_user_id, optionally also '
    'filtered by status and queue (tickets_assignee_user_activity_idx).';

CREATE FUNCTION api.ticket_page_assignee_queue(
    p_status core.ticket_status, p_query tsquery, p_assignee_user_id uuid,
    p_assignee_queue_id uuid, p_after_activity timestamptz, p_after_id bigint, p_limit integer
) RETURNS SETOF api.ticket_page_row
    LANGUAGE sql STABLE AS $$
    SELECT t.id, t.last_activity_at, t.list_item
    FROM api.listable_tickets t
    WHERE t.organization_id = core.current_org_id()
      AND t.assignee_queue_id = p_assignee_queue_id
      AND (p_status IS NULL OR t.status = p_status)
      AND (t.last_activity_at, t.id) < (p_after_activity, p_after_id)
    ORDER BY t.last_activity_at DESC, t.id DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION api.ticket_page_assignee_queue(core.ticket_status, tsquery, uuid, uuid,
                                                   timestamptz, bigint, integer) IS
    'Keyset page of listable tickets assigned to queue p_assignee_queue_id, optionally also '
    'filtered by status (tickets_assignee_queue_activity_idx).';

CREATE FUNCTION api.ticket_page_search(
    p_status core.ticket_status, p_query tsquery, p_assignee_user_id uuid,
    p_assignee_queue_id uuid, p_after_activity timestamptz, p_after_id bigint, p_limit integer,
    p_not_before timestamptz
) RETURNS SETOF api.ticket_page_row
    LANGUAGE sql STABLE AS $$
    SELECT t.id, t.last_activity_at, t.list_item
    FROM api.listable_tickets t
    WHERE t.organization_id = core.current_org_id()
      AND t.search @@ p_query
      AND (p_status IS NULL OR t.status = p_status)
      AND (p_assignee_user_id IS NULL OR t.assignee_user_id = p_assignee_user_id)
      AND (p_assignee_queue_id IS NULL OR t.assignee_queue_id = p_assignee_queue_id)
      AND (t.last_activity_at, t.id) < (p_after_activity, p_after_id)
      AND t.last_activity_at >= p_not_before
    ORDER BY t.last_activity_at DESC, t.id DESC
    LIMIT p_limit
$$;
COMMENT ON FUNCTION api.ticket_page_search(core.ticket_status, tsquery, uuid, uuid,
                                           timestamptz, bigint, integer, timestamptz) IS
    'Keyset page of listable tickets whose search vector matches p_query, optionally also '
    'filtered by status, user and queue, among those active since p_not_before (a window; '
    '-infinity for all). Planned per call: tickets_search_idx or, for a recent window, '
    'tickets_search_since_* (GIN), tickets_activity_idx, or both combined.';

-- Cursor: base64url (no padding) of {"t": last_activity_at, "id": id, "f": filter hash}.
-- STABLE, as its body is (timestamptz as text follows the time zone): a SQL function
-- declared stricter than its body is not inlined, and is parsed again at every call.
CREATE FUNCTION api.ticket_cursor_encode(p_activity timestamptz, p_id bigint, p_filters text)
    RETURNS text LANGUAGE sql STABLE AS $$
    SELECT rtrim(translate(encode(convert_to(
               jsonb_build_object('t', p_activity, 'id', p_id, 'f', p_filters)::text, 'UTF8'),
               'base64'), E'+/\n', '-_'), '=')
$$;
COMMENT ON FUNCTION api.ticket_cursor_encode(timestamptz, bigint, text) IS
    'The opaque ticket list cursor: base64url of {t: last_activity_at, id, f: filter hash}.';

-- Search text as a tsquery, in the configuration stitching uses to write
-- core.tickets.search. A run of `-` with no word between (`--x`, `- - x`, `-(-x`) is one
-- negation: the websearch parser stacks an operator per `-` and fails past 32 of them
-- ("tsquery stack too small"), so any text a user types must not reach it as such.
CREATE FUNCTION api.ticket_search_query(p_q text) RETURNS tsquery
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT websearch_to_tsquery('simple', regexp_replace(p_q, '-[^[:alnum:]"]*(?=-)', '', 'g'))
$$;
COMMENT ON FUNCTION api.ticket_search_query(text) IS
    'The tsquery of search text q (websearch syntax, config simple; runs of - as one).';

CREATE FUNCTION api.ticket_list(
    p_status text, p_q text, p_assignee_user_id uuid, p_assignee_queue_id uuid,
    p_limit integer, p_cursor text
) RETURNS json
    -- Generic plans for the static page queries: with the first page's 'infinity' keyset
    -- bound a custom plan always looks cheaper, so plpgsql would plan every call, which
    -- costs more than the page itself. The keyset walk of one index is the right plan
    -- whatever the values; the search is an EXECUTE below, planned for its term.
    -- Random page reads priced as for data in memory: a window's tickets are the recently
    -- active, hot ones. At the default price (4) a common term's walk down the activity
    -- index, stopping after a page of matches, looks dearer than collecting and sorting
    -- all the window's matches through a GIN index, and is three times slower.
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan SET random_page_cost = 1.1 AS $$
DECLARE
    v_limit integer := coalesce(p_limit, 50);
    v_q text := nullif(btrim(p_q), '');
    v_status core.ticket_status;
    v_query tsquery;
    v_filters text;
    v_cursor jsonb;
    v_after_activity timestamptz := 'infinity';
    v_after_id bigint := 9223372036854775807;
    v_window interval;
    v_items json;
    v_rows bigint;
    v_last_activity timestamptz;
    v_last_id bigint;
    v_next_cursor text;
BEGIN
    IF v_limit NOT BETWEEN 1 AND 100 THEN
        PERFORM logic.fail(422, 'invalid_limit', 'limit must be between 1 and 100');
    END IF;
    IF p_status IS NOT NULL THEN
        IF NOT p_status = ANY (enum_range(NULL::core.ticket_status)::text[]) THEN
            PERFORM logic.fail(422, 'invalid_status', 'status must be one of '
                || array_to_string(enum_range(NULL::core.ticket_status)::text[], ', '));
        END IF;
        v_status := p_status::core.ticket_status;
    END IF;
    IF length(v_q) > 500 THEN
        PERFORM logic.fail(422, 'invalid_q', 'q must be at most 500 characters');
    END IF;
    v_query := api.ticket_search_query(v_q);

    -- A cursor only continues the listing it came from (limit may change between pages).
    -- A 64-bit hash tells listings apart, at a fraction of md5's cost per request.
    v_filters := to_hex(hashtextextended(jsonb_build_array(v_status, v_q, p_assignee_user_id,
                                                           p_assignee_queue_id)::text, 0));
    IF p_cursor IS NOT NULL THEN
        BEGIN
            IF length(p_cursor) > 400 THEN
                RAISE invalid_parameter_value;
            END IF;
            v_cursor := convert_from(decode(
                translate(p_cursor, '-_', '+/') || repeat('=', (4 - length(p_cursor) % 4) % 4),
                'base64'), 'UTF8')::jsonb;
            v_after_activity := (v_cursor->>'t')::timestamptz;
            v_after_id := (v_cursor->>'id')::bigint;
        EXCEPTION WHEN data_exception THEN
            v_cursor := NULL;
        END;
        IF v_cursor IS NULL OR jsonb_typeof(v_cursor) <> 'object' OR v_after_activity IS NULL
           OR v_after_id IS NULL OR jsonb_typeof(v_cursor->'f') IS DISTINCT FROM 'string' THEN
            PERFORM logic.fail(400, 'invalid_cursor', 'The cursor is not one this API issued.');
        END IF;
        IF v_cursor->>'f' <> v_filters THEN
            PERFORM logic.fail(400, 'cursor_mismatch',
                'The cursor belongs to a listing with other filters; start again without it.');
        END IF;
    END IF;

    -- One more row than asked tells whether another page exists. Each page query numbers
    -- its rows and aggregates them in the same statement: the items to send, how many
    -- rows there were, and the keyset position of the last item for the next cursor.
    IF v_q IS NOT NULL AND numnode(v_query) = 0 THEN
        v_rows := 0;  -- only stop words or punctuation: nothing can match
    ELSIF v_q IS NOT NULL THEN
        -- Newest matches first, looked for in growing windows of activity before the
        -- cursor (2 days, 16 days, 128 days, then everything): a term that matches many
        -- tickets is answered from the recent ones instead of fetching and sorting all its
        -- matches. Each window is an EXECUTE, planned for its term and bounds: how many
        -- tickets a term matches decides between the GIN index, the activity index or both,
        -- which a cached generic plan cannot know. A window that starts after the date of
        -- the recent-search index (tickets_search_since_*) may read that small GIN index:
        -- with the bound a constant, the planner sees that it covers the window.
        v_window := interval '2 days';
        LOOP
            EXECUTE 'SELECT json_agg(p.list_item ORDER BY p.n) FILTER (WHERE p.n <= $7 - 1),
                            count(*),
                            max(p.last_activity_at) FILTER (WHERE p.n = $7 - 1),
                            max(p.id) FILTER (WHERE p.n = $7 - 1)
                     FROM (SELECT x.*, row_number() OVER (ORDER BY x.last_activity_at DESC,
                                                                   x.id DESC) AS n
                           FROM api.ticket_page_search($1, $2, $3, $4, $5, $6, $7, $8) x) p'
            INTO v_items, v_rows, v_last_activity, v_last_id
            USING v_status, v_query, p_assignee_user_id, p_assignee_queue_id,
                  v_after_activity, v_after_id, v_limit + 1,
                  coalesce(least(v_after_activity, now()) - v_window, '-infinity');
            EXIT WHEN v_window IS NULL OR v_rows > v_limit;
            v_window := CASE WHEN v_window < interval '100 days' THEN v_window * 8 END;
        END LOOP;
    ELSE
        -- One static statement for the other variants, each reading its own index: with a
        -- generic plan the conditions on the arguments are one-time filters, so only the
        -- chosen variant runs.
        SELECT json_agg(p.list_item ORDER BY p.n) FILTER (WHERE p.n <= v_limit), count(*),
               max(p.last_activity_at) FILTER (WHERE p.n = v_limit),
               max(p.id) FILTER (WHERE p.n = v_limit)
        INTO v_items, v_rows, v_last_activity, v_last_id
        FROM (SELECT x.*, row_number() OVER (ORDER BY x.last_activity_at DESC, x.id DESC) AS n
              FROM (SELECT * FROM api.ticket_page_assignee_user(
                        v_status, v_query, p_assignee_user_id, p_assignee_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE p_assignee_user_id IS NOT NULL
                    UNION ALL
                    SELECT * FROM api.ticket_page_assignee_queue(
                        v_status, v_query, p_assignee_user_id, p_assignee_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE p_assignee_user_id IS NULL AND p_assignee_queue_id IS NOT NULL
                    UNION ALL
                    SELECT * FROM api.ticket_page_status(
                        v_status, v_query, p_assignee_user_id, p_assignee_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE p_assignee_user_id IS NULL AND p_assignee_queue_id IS NULL
                      AND v_status IS NOT NULL
                    UNION ALL
                    SELECT * FROM api.ticket_page_all(
                        v_status, v_query, p_assignee_user_id, p_assignee_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE p_assignee_user_id IS NULL AND p_assignee_queue_id IS NULL
                      AND v_status IS NULL) x) p;
    END IF;

    IF v_rows > v_limit THEN
        v_next_cursor := api.ticket_cursor_encode(v_last_activity, v_last_id, v_filters);
    END IF;
    RETURN json_build_object('items', coalesce(v_items, '[]'), 'next_cursor', v_next_cursor);
END
$$;
COMMENT ON FUNCTION api.ticket_list(text, text, uuid, uuid, integer, text) IS
    'GET /tickets: {items, next_cursor}, newest activity first, keyset on (last_activity_at, '
    'id); filters status, q (websearch syntax over core.tickets.search, config simple), '
    'assignee user/queue; merged and hidden tickets excluded. 422 invalid_limit (1..100, '
    'default 50) / invalid_status / invalid_q; 400 invalid_cursor / cursor_mismatch (a cursor '
    'only continues the listing with the same filters).';

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
$$;
COMMENT ON FUNCTION api.ticket_message_json(bigint, core.messages, core.message_contents,
                                            core.ticket_messages) IS
    'A thread message of ticket p_ticket_id in the detail shape: headers, bodies (cid images '
    'rewritten), parse evidence (charsets, skipped parts, why the body is empty), direction, stitch {reason, confidence, evidence}, attachments (metadata and '
    'download_url) and occurrences with their recipient evidence.';

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

-- Changes ----------------------------------------------------------------------------------

CREATE FUNCTION api.ticket_for_change(p_ticket_id bigint) RETURNS core.tickets
    LANGUAGE plpgsql AS $$
DECLARE
    v_ticket core.tickets;
BEGIN
    SELECT * INTO v_ticket FROM core.tickets WHERE id = p_ticket_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'ticket_not_found', 'No ticket with that id in this organization.');
    END IF;
    IF v_ticket.merged_into_ticket_id IS NOT NULL THEN
        PERFORM logic.fail(409, 'ticket_merged', format(
            'This ticket was merged into ticket %s; change that one.',
            v_ticket.merged_into_ticket_id));
    END IF;
    RETURN v_ticket;
END
$$;
COMMENT ON FUNCTION api.ticket_for_change(bigint) IS
    'The ticket locked FOR UPDATE; 404 ticket_not_found, 409 ticket_merged (changes go to the '
    'surviving ticket).';

-- A nullable uuid from a PATCH body: JSON null clears, a malformed value is a 422.
CREATE FUNCTION api.patch_uuid(p_changes jsonb, p_field text) RETURNS uuid
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(p_changes->p_field) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_changes->p_field) <> 'string' OR p_changes->>p_field !~*
       '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be a UUID or null');
    END IF;
    RETURN (p_changes->>p_field)::uuid;
END
$$;
COMMENT ON FUNCTION api.patch_uuid(jsonb, text) IS
    'p_changes->p_field as a uuid (JSON null → NULL); 422 invalid_<field> otherwise.';

CREATE FUNCTION api.ticket_update(p_ticket_id bigint, p_changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_field text;
    v_before core.tickets;
    v_after core.tickets;
    v_user uuid;
    v_queue uuid;
    v_old jsonb := '{}';
    v_new jsonb := '{}';
BEGIN
    IF p_changes IS NULL OR jsonb_typeof(p_changes) <> 'object' OR p_changes = '{}' THEN
        PERFORM logic.fail(422, 'no_changes',
            'Send at least one of status, priority, assignee_user_id, assignee_queue_id.');
    END IF;
    FOR v_field IN SELECT jsonb_object_keys(p_changes) LOOP
        IF v_field NOT IN ('status', 'priority', 'assignee_user_id', 'assignee_queue_id') THEN
            PERFORM logic.fail(422, 'unknown_field', format(
                '%s cannot be changed; allowed: status, priority, assignee_user_id, '
                'assignee_queue_id.', v_field));
        END IF;
    END LOOP;

    v_before := api.ticket_for_change(p_ticket_id);
    v_after := v_before;

    IF p_changes ? 'status' THEN
        IF jsonb_typeof(p_changes->'status') IS DISTINCT FROM 'string'
           OR NOT p_changes->>'status' = ANY (enum_range(NULL::core.ticket_status)::text[]) THEN
            PERFORM logic.fail(422, 'invalid_status', 'status must be one of '
                || array_to_string(enum_range(NULL::core.ticket_status)::text[], ', '));
        END IF;
        v_after.status := (p_changes->>'status')::core.ticket_status;
    END IF;
    IF p_changes ? 'priority' THEN
        IF jsonb_typeof(p_changes->'priority') IS DISTINCT FROM 'string'
           OR NOT p_changes->>'priority' = ANY (enum_range(NULL::core.ticket_priority)::text[]) THEN
            PERFORM logic.fail(422, 'invalid_priority', 'priority must be one of '
                || array_to_string(enum_range(NULL::core.ticket_priority)::text[], ', '));
        END IF;
        v_after.priority := (p_changes->>'priority')::core.ticket_priority;
    END IF;

    -- A ticket has at most one assignee: a user or a queue. Assigning one kind replaces
    -- the other; asking for both at once is refused.
    IF p_changes ? 'assignee_user_id' THEN
        v_user := api.patch_uuid(p_changes, 'assignee_user_id');
    END IF;
    IF p_changes ? 'assignee_queue_id' THEN
        v_queue := api.patch_uuid(p_changes, 'assignee_queue_id');
    END IF;
    IF v_user IS NOT NULL AND v_queue IS NOT NULL THEN
        PERFORM logic.fail(422, 'conflicting_assignees',
            'Assign a user or a queue, not both.');
    END IF;
    IF p_changes ? 'assignee_user_id' THEN
        IF v_user IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM core.memberships m
            WHERE m.organization_id = core.current_org_id() AND m.user_id = v_user) THEN
            PERFORM logic.fail(422, 'assignee_user_not_found',
                'assignee_user_id is not a member of this organization.');
        END IF;
        v_after.assignee_user_id := v_user;
        IF v_user IS NOT NULL THEN
            v_after.assignee_queue_id := NULL;
        END IF;
    END IF;
    IF p_changes ? 'assignee_queue_id' THEN
        IF v_queue IS NOT NULL AND NOT EXISTS (SELECT 1 FROM core.queues q WHERE q.id = v_queue) THEN
            PERFORM logic.fail(422, 'assignee_queue_not_found',
                'assignee_queue_id is not a queue of this organization.');
        END IF;
        v_after.assignee_queue_id := v_queue;
        IF v_queue IS NOT NULL THEN
            v_after.assignee_user_id := NULL;
        END IF;
    END IF;

    SELECT coalesce(jsonb_object_agg(b.key, b.value), '{}'),
           coalesce(jsonb_object_agg(b.key, a.value), '{}')
    INTO v_old, v_new
    FROM jsonb_each(jsonb_build_object(
             'status', v_before.status, 'priority', v_before.priority,
             'assignee_user_id', v_before.assignee_user_id,
             'assignee_queue_id', v_before.assignee_queue_id)) b
    JOIN jsonb_each(jsonb_build_object(
             'status', v_after.status, 'priority', v_after.priority,
             'assignee_user_id', v_after.assignee_user_id,
             'assignee_queue_id', v_after.assignee_queue_id)) a ON a.key = b.key
    WHERE a.value <> b.value;
    IF v_new = '{}' THEN
        RETURN v_before.list_item::jsonb;  -- nothing changes: no event, no touch
    END IF;

    UPDATE core.tickets
    SET status = v_after.status,
        priority = v_after.priority,
        assignee_user_id = v_after.assignee_user_id,
        assignee_queue_id = v_after.assignee_queue_id,
        human_touched_at = now(),
        updated_at = now(),
        last_activity_at = greatest(last_activity_at, now())
    WHERE id = v_before.id
    RETURNING * INTO v_after;

    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (v_before.organization_id, v_before.id, 'updated', core.current_user_id(),
            jsonb_build_object('before', v_old, 'after', v_new));
    RETURN v_after.list_item::jsonb;
END
$$;
COMMENT ON FUNCTION api.ticket_update(bigint, jsonb) IS
    'PATCH /tickets/{id}: change status, priority, assignee_user_id (a member) or '
    'assignee_queue_id (a queue); null clears an assignee, assigning one kind clears the other. '
    'Writes one `updated` event {before, after} of the changed fields with the actor and '
    'touches human_touched_at, updated_at, last_activity_at; no-op changes write nothing. 422 '
    'no_changes / unknown_field / invalid_<field> / conflicting_assignees / '
    'assignee_user_not_found / assignee_queue_not_found; 404; 409 ticket_merged.';

CREATE FUNCTION api.ticket_add_note(p_ticket_id bigint, p_body text) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    -- Any whitespace, not only spaces (btrim's default): a note of blank lines is empty.
    v_body text := regexp_replace(p_body, '^\s+|\s+$', '', 'g');
    v_ticket core.tickets;
    v_note core.ticket_notes;
BEGIN
    IF v_body IS NULL OR v_body = '' THEN
        PERFORM logic.fail(422, 'invalid_body', 'body is required');
    END IF;
    IF length(v_body) > 20000 THEN
        PERFORM logic.fail(422, 'invalid_body', 'body must be at most 20000 characters');
    END IF;
    v_ticket := api.ticket_for_change(p_ticket_id);
    INSERT INTO core.ticket_notes (organization_id, ticket_id, author_user_id, body)
    VALUES (v_ticket.organization_id, v_ticket.id, core.current_user_id(), v_body)
    RETURNING * INTO v_note;
    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (v_ticket.organization_id, v_ticket.id, 'note_added', v_note.author_user_id,
            jsonb_build_object('note_id', v_note.id));
    UPDATE core.tickets
    SET last_activity_at = greatest(last_activity_at, now()), updated_at = now()
    WHERE id = v_ticket.id;
    RETURN jsonb_build_object('id', v_note.id, 'ticket_id', v_note.ticket_id, 'body', v_note.body,
                              'author', api.user_ref(v_note.author_user_id),
                              'created_at', v_note.created_at);
END
$$;
COMMENT ON FUNCTION api.ticket_add_note(bigint, text) IS
    'POST /tickets/{id}/notes: an internal note (1..20000 characters, trimmed) by the current '
    'user; writes a `note_added` event and moves last_activity_at. 422 invalid_body, 404, 409.';

CREATE FUNCTION api.ticket_attachment(p_ticket_id bigint, p_attachment_id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_attachment jsonb;
BEGIN
    SELECT jsonb_build_object('id', a.id, 'blob_key', a.blob_key, 'filename', a.filename,
                              'content_type', a.content_type, 'size', a.size)
    INTO v_attachment
    FROM core.attachments a
    JOIN core.ticket_messages tm ON tm.message_id = a.message_id
    WHERE a.id = p_attachment_id AND tm.ticket_id = p_ticket_id;
    IF v_attachment IS NULL THEN
        PERFORM logic.fail(404, 'attachment_not_found',
            'No attachment with that id on this ticket.');
    END IF;
    RETURN v_attachment;
END
$$;
COMMENT ON FUNCTION api.ticket_attachment(bigint, bigint) IS
    'Download lookup: {id, blob_key, filename, content_type, size} of an attachment of a '
    'message of ticket p_ticket_id in the current organisation; else 404 attachment_not_found.';
