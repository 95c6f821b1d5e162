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
COMMENT ON TYPE api.ticket_page_row IS
    'A row of a ticket list page: the keyset position (last_activity_at, id) and the stored item.';

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

-- Search text as a tsquery, in the configuration of core.tickets.search
-- (logic.search_config()). A run of `-` with no word between (`--x`, `- - x`, `-(-x`) is one
-- negation: the websearch parser stacks an operator per `-` and fails past 32 of them
-- ("tsquery stack too small"), so any text a user types must not reach it as such.
CREATE FUNCTION api.ticket_search_query(p_q text) RETURNS tsquery
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT websearch_to_tsquery(logic.search_config(), regexp_replace(p_q, '-[^[:alnum:]"]*(?=-)', '', 'g'))
$$;
COMMENT ON FUNCTION api.ticket_search_query(text) IS
    'The tsquery of search text q (websearch syntax, logic.search_config(); runs of - as one).';

CREATE FUNCTION api.ticket_list(
    p_status text, p_q text, p_assignee_user_id text, p_assignee_queue_id text,
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
    -- The one validation of the filters, shared with saved views.
    v_filters_in jsonb := logic.ticket_list_filters(jsonb_build_object(
        'status', p_status, 'q', p_q, 'assignee_user_id', p_assignee_user_id,
        'assignee_queue_id', p_assignee_queue_id, 'limit', p_limit));
    v_limit integer := logic.page_size((v_filters_in->>'limit')::integer, 'ticket_page');
    v_q text := v_filters_in->>'q';
    v_status core.ticket_status := (v_filters_in->>'status')::core.ticket_status;
    v_user_id uuid := (v_filters_in->>'assignee_user_id')::uuid;
    v_queue_id uuid := (v_filters_in->>'assignee_queue_id')::uuid;
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
    v_query := api.ticket_search_query(v_q);

    -- A cursor only continues the listing it came from (limit may change between pages).
    -- A 64-bit hash tells listings apart, at a fraction of md5's cost per request.
    v_filters := to_hex(hashtextextended(jsonb_build_array(v_status, v_q, v_user_id,
                                                           v_queue_id)::text, 0));
    IF p_cursor IS NOT NULL THEN
        BEGIN
            IF length(p_cursor) > logic.input_limit('ticket_cursor') THEN
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
            USING v_status, v_query, v_user_id, v_queue_id,
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
                        v_status, v_query, v_user_id, v_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE v_user_id IS NOT NULL
                    UNION ALL
                    SELECT * FROM api.ticket_page_assignee_queue(
                        v_status, v_query, v_user_id, v_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE v_user_id IS NULL AND v_queue_id IS NOT NULL
                    UNION ALL
                    SELECT * FROM api.ticket_page_status(
                        v_status, v_query, v_user_id, v_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE v_user_id IS NULL AND v_queue_id IS NULL
                      AND v_status IS NOT NULL
                    UNION ALL
                    SELECT * FROM api.ticket_page_all(
                        v_status, v_query, v_user_id, v_queue_id,
                        v_after_activity, v_after_id, v_limit + 1)
                    WHERE v_user_id IS NULL AND v_queue_id IS NULL
                      AND v_status IS NULL) x) p;
    END IF;

    IF v_rows > v_limit THEN
        v_next_cursor := api.ticket_cursor_encode(v_last_activity, v_last_id, v_filters);
    END IF;
    RETURN json_build_object('items', coalesce(v_items, '[]'), 'next_cursor', v_next_cursor);
END
$$;
COMMENT ON FUNCTION api.ticket_list(text, text, text, text, integer, text) IS
    'GET /tickets: {items, next_cursor}, newest activity first, keyset on (last_activity_at, '
    'id); filters status, q (websearch syntax over core.tickets.search, config simple), '
    'assignee user/queue; merged and hidden tickets excluded. Filters are validated by '
    'logic.ticket_list_filters (422; limit default 50); 400 invalid_cursor / cursor_mismatch (a cursor '
    'only continues the listing with the same filters).';
