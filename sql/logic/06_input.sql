-- Request input, read and checked once for every api function: the limits every field is
-- held to, and readers for JSON request bodies (the object the client sent, field by field,
-- with stable codes). The OpenAPI document states the same limits; app/apidoc.py mirrors
-- logic.input_limits() and tests/sql/test_rules.py keeps the two equal.

CREATE FUNCTION logic.input_limits() RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'organization_name', 200,      -- characters
        'queue_name', 100,
        'queue_description', 2000,
        'saved_view_name', 120,
        'rule_name', 200,
        'rule_priority', 10000,        -- 0..this
        'rule_tags', 20,               -- tags a rule may add
        'tag_length', 50,
        'glob_length', 320,            -- an allowlist or rule pattern
        'glob_wildcards', 16,
        'note_body', 20000,
        'search_query', 500,
        'ticket_cursor', 400,
        'ticket_page', 100,            -- items per page: 1..this
        'ops_page', 200,
        'audit_page', 200,
        'display_name', 200,           -- a Google account's name, as stored (cut, not refused)
        'page_default', 50,            -- items per page when the client names none
        'pause_minutes', 10080,        -- one week
        'reply_recipients', 50,        -- addresses in to_emails, and again in cc_emails
        'reply_subject', 994,          -- before its `Re: `: a 998-character header line
        'reply_body', 100000,
        'sender_name', 200,            -- a send identity's display name
        'mail_domains', 50             -- the organisation's own mail domains
    )
$$;
COMMENT ON FUNCTION logic.input_limits() IS
    'Every input limit by name: the longest text of each kind, the most items per page, '
    'the largest numbers. The one home of these figures; read one with logic.input_limit.';
GRANT EXECUTE ON FUNCTION logic.input_limits() TO ticketing_api;

CREATE FUNCTION logic.input_limit(p_name text) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_limit integer := (logic.input_limits()->>p_name)::integer;
BEGIN
    IF v_limit IS NULL THEN
        RAISE EXCEPTION 'no input limit named %', p_name;  -- a programming error: 500
    END IF;
    RETURN v_limit;
END
$$;
COMMENT ON FUNCTION logic.input_limit(text) IS
    'The limit p_name of logic.input_limits(); raises (an internal error) for an unknown name.';
GRANT EXECUTE ON FUNCTION logic.input_limit(text) TO ticketing_api;

CREATE FUNCTION logic.reject_unknown_fields(p_body jsonb, p_allowed text[], p_where text)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_unknown text;
BEGIN
    SELECT min(k) INTO v_unknown FROM jsonb_object_keys(p_body) k WHERE k <> ALL (p_allowed);
    IF v_unknown IS NOT NULL THEN
        PERFORM logic.fail(422, 'unknown_field',
            format('Unknown field "%s" in %s; allowed: %s.', v_unknown, p_where,
                   array_to_string(p_allowed, ', ')));
    END IF;
END
$$;
COMMENT ON FUNCTION logic.reject_unknown_fields(jsonb, text[], text) IS
    '422 unknown_field when p_body has a key outside p_allowed (typos must not pass silently).';
GRANT EXECUTE ON FUNCTION logic.reject_unknown_fields(jsonb, text[], text) TO ticketing_api;

CREATE FUNCTION logic.json_object_field(p_body jsonb, p_field text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_body->p_field IS NULL OR jsonb_typeof(p_body->p_field) = 'null' THEN
        RETURN '{}';
    ELSIF jsonb_typeof(p_body->p_field) <> 'object' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be an object');
    END IF;
    RETURN p_body->p_field;
END
$$;
COMMENT ON FUNCTION logic.json_object_field(jsonb, text) IS
    'p_body.p_field as an object ({} when absent or null), else 422 invalid_<field>.';
GRANT EXECUTE ON FUNCTION logic.json_object_field(jsonb, text) TO ticketing_api;

CREATE FUNCTION logic.json_text_field(p_body jsonb, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_body->p_field IS NULL OR jsonb_typeof(p_body->p_field) = 'null' THEN
        RETURN NULL;
    ELSIF jsonb_typeof(p_body->p_field) <> 'string' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be a string');
    END IF;
    RETURN p_body->>p_field;
END
$$;
COMMENT ON FUNCTION logic.json_text_field(jsonb, text) IS
    'p_body.p_field as text (NULL when absent or null), else 422 invalid_<field>.';
GRANT EXECUTE ON FUNCTION logic.json_text_field(jsonb, text) TO ticketing_api;

CREATE FUNCTION logic.json_boolean_field(p_body jsonb, p_field text, p_default boolean)
    RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_body->p_field IS NULL OR jsonb_typeof(p_body->p_field) = 'null' THEN
        RETURN p_default;
    ELSIF jsonb_typeof(p_body->p_field) <> 'boolean' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be true or false');
    END IF;
    RETURN (p_body->p_field)::boolean;
END
$$;
COMMENT ON FUNCTION logic.json_boolean_field(jsonb, text, boolean) IS
    'p_body.p_field as boolean (p_default when absent or null), else 422 invalid_<field>.';
GRANT EXECUTE ON FUNCTION logic.json_boolean_field(jsonb, text, boolean) TO ticketing_api;

CREATE FUNCTION logic.json_uuid_field(p_body jsonb, p_field text) RETURNS uuid
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_text text := logic.json_text_field(p_body, p_field);
BEGIN
    IF v_text IS NULL THEN
        RETURN NULL;
    ELSIF v_text !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be a UUID');
    END IF;
    RETURN v_text::uuid;
END
$$;
COMMENT ON FUNCTION logic.json_uuid_field(jsonb, text) IS
    'p_body.p_field as uuid (NULL when absent or null), else 422 invalid_<field>.';
GRANT EXECUTE ON FUNCTION logic.json_uuid_field(jsonb, text) TO ticketing_api;

CREATE FUNCTION logic.page_size(p_limit integer, p_maximum text) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_maximum integer := logic.input_limit(p_maximum);
BEGIN
    IF p_limit IS NULL THEN
        RETURN logic.input_limit('page_default');
    ELSIF p_limit NOT BETWEEN 1 AND v_maximum THEN
        PERFORM logic.fail(422, 'invalid_limit',
                           format('limit must be an integer between 1 and %s.', v_maximum));
    END IF;
    RETURN p_limit;
END
$$;
COMMENT ON FUNCTION logic.page_size(integer, text) IS
    'Items per page: p_limit, the page_default input limit when NULL, 422 invalid_limit '
    'outside 1..the input limit named p_maximum (ticket_page, ops_page).';
GRANT EXECUTE ON FUNCTION logic.page_size(integer, text) TO ticketing_api;

CREATE FUNCTION logic.max_length(p_value text, p_field text, p_limit text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF length(p_value) > logic.input_limit(p_limit) THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, format(
            '%s must be at most %s characters', p_field, logic.input_limit(p_limit)));
    END IF;
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION logic.max_length(text, text, text) IS
    'p_value (NULL passes), or 422 invalid_<field> when it is longer than the input limit '
    'named p_limit.';
GRANT EXECUTE ON FUNCTION logic.max_length(text, text, text) TO ticketing_api;
