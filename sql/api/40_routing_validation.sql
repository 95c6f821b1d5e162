-- Routing administration (admin): allowlist and rules CRUD; the simulator (agent); an
-- explicit re-route of one ticket (agent). Invoker functions under row-level security:
-- another organisation's rows are simply not found. Request bodies arrive as the JSON
-- object the client sent and are validated here, field by field, with stable codes.

-- ------------------------------------------------------------------ validation helpers

CREATE FUNCTION api.routing_reject_unknown_fields(p_body jsonb, p_allowed text[], p_where text)
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
COMMENT ON FUNCTION api.routing_reject_unknown_fields(jsonb, text[], text) IS
    '422 unknown_field when p_body has a key outside p_allowed (typos must not pass silently).';

CREATE FUNCTION api.routing_object(p_body jsonb, p_field text) RETURNS jsonb
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
COMMENT ON FUNCTION api.routing_object(jsonb, text) IS
    'p_body.p_field as an object ({} when absent or null), else 422 invalid_<field>.';

CREATE FUNCTION api.routing_text(p_body jsonb, p_field text) RETURNS text
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
COMMENT ON FUNCTION api.routing_text(jsonb, text) IS
    'p_body.p_field as text (NULL when absent or null), else 422 invalid_<field>.';

CREATE FUNCTION api.routing_boolean(p_body jsonb, p_field text, p_default boolean) RETURNS boolean
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
COMMENT ON FUNCTION api.routing_boolean(jsonb, text, boolean) IS
    'p_body.p_field as boolean (p_default when absent or null), else 422 invalid_<field>.';

CREATE FUNCTION api.routing_uuid(p_body jsonb, p_field text) RETURNS uuid
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_text text := api.routing_text(p_body, p_field);
BEGIN
    IF v_text IS NULL THEN
        RETURN NULL;
    ELSIF v_text !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be a UUID');
    END IF;
    RETURN v_text::uuid;
END
$$;
COMMENT ON FUNCTION api.routing_uuid(jsonb, text) IS
    'p_body.p_field as uuid (NULL when absent or null), else 422 invalid_<field>.';

-- A glob pattern as admins may write it: `*` and `?` are the only wildcards; characters
-- other glob dialects treat as special are refused rather than silently taken literally.
-- Runs of `*` mean what one `*` means and are stored as one; at most 16 wildcards and 320
-- characters keep every pattern's matching cost small (logic.glob_regex).
CREATE FUNCTION api.routing_pattern(p_value text, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_pattern text := regexp_replace(btrim(p_value), '\*{2,}', '*', 'g');
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    ELSIF v_pattern = '' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must not be empty');
    ELSIF length(v_pattern) > 320 THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
                           p_field || ' must be at most 320 characters');
    ELSIF length(v_pattern) - length(translate(v_pattern, '*?', '')) > 16 THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
                           p_field || ' must have at most 16 wildcards (* and ?)');
    ELSIF v_pattern ~ '[[:space:][:cntrl:]]' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must not contain whitespace');
    ELSIF v_pattern ~ '[][{}\\]' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
            p_field || ': only * and ? are wildcards; [ ] { } and \ are not allowed');
    END IF;
    RETURN lower(v_pattern);
END
$$;
COMMENT ON FUNCTION api.routing_pattern(text, text) IS
    'A valid glob pattern (trimmed, lower case, runs of * as one; non-empty, <= 320 '
    'characters, <= 16 wildcards, no whitespace, only * and ? as wildcards), else 422 '
    'invalid_<field>.';

CREATE FUNCTION api.routing_direction(p_value text, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NOT NULL AND p_value NOT IN ('inbound', 'outbound') THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be inbound or outbound');
    END IF;
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION api.routing_direction(text, text) IS
    'p_value when NULL, inbound or outbound, else 422 invalid_<field>.';
