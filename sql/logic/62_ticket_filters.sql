-- The filters of the ticket list, validated in one place: GET /tickets's query parameters
-- (api.ticket_list) and the filters a saved view stores (api.ticket_saved_view_create).

CREATE FUNCTION logic.ticket_list_filters(p_filters jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_key text;
    v_value jsonb;
    v_text text;
    v_result jsonb := '{}';
BEGIN
    IF p_filters IS NULL OR jsonb_typeof(p_filters) = 'null' THEN
        RETURN v_result;
    ELSIF jsonb_typeof(p_filters) <> 'object' THEN
        PERFORM logic.fail(422, 'invalid_filters', 'filters must be an object');
    END IF;
    PERFORM logic.reject_unknown_fields(
        p_filters, ARRAY['q', 'status', 'assignee_user_id', 'assignee_queue_id', 'limit'],
        'the filters');
    FOR v_key, v_value IN SELECT * FROM jsonb_each(p_filters) ORDER BY 1 LOOP
        CONTINUE WHEN jsonb_typeof(v_value) = 'null';
        IF v_key = 'limit' THEN
            IF jsonb_typeof(v_value) <> 'number'
               OR (v_value #>> '{}')::numeric <> trunc((v_value #>> '{}')::numeric)
               OR abs((v_value #>> '{}')::numeric) > 2147483647 THEN
                PERFORM logic.fail(422, 'invalid_limit', format(
                    'limit must be an integer between 1 and %s.',
                    logic.input_limit('ticket_page')));
            END IF;
            v_result := v_result || jsonb_build_object(
                'limit', logic.page_size((v_value #>> '{}')::integer, 'ticket_page'));
            CONTINUE;
        END IF;
        v_text := nullif(btrim(logic.json_text_field(p_filters, v_key)), '');
        CONTINUE WHEN v_text IS NULL AND v_key IN ('q', 'status');
        IF v_key = 'status' AND NOT v_text = ANY (enum_range(NULL::core.ticket_status)::text[]) THEN
            PERFORM logic.fail(422, 'invalid_status', 'status must be one of '
                || array_to_string(enum_range(NULL::core.ticket_status)::text[], ', '));
        ELSIF v_key = 'q' THEN
            PERFORM logic.max_length(v_text, 'q', 'search_query');
        ELSIF v_key IN ('assignee_user_id', 'assignee_queue_id') THEN
            -- Present but blank names no one: not a UUID either.
            v_text := logic.json_uuid_field(jsonb_build_object(v_key, coalesce(v_text, '')),
                                            v_key)::text;
        END IF;
        v_result := v_result || jsonb_build_object(v_key, v_text);
    END LOOP;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION logic.ticket_list_filters(jsonb) IS
    'Validate ticket list filters {q, status, assignee_user_id, assignee_queue_id, limit} '
    '(null or blank q/status: no filter): 422 unknown_field, invalid_status, invalid_q '
    '(longer than the search_query input limit), invalid_assignee_user_id / '
    'invalid_assignee_queue_id (not a UUID), invalid_limit (not 1..the ticket_page limit). '
    'Returns the normalised filters, absent ones left out.';
GRANT EXECUTE ON FUNCTION logic.ticket_list_filters(jsonb) TO ticketing_api;
