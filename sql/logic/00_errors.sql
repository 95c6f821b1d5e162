-- Errors are data: SQL raises SQLSTATE 'TKnnn' where nnn is the HTTP status, the human
-- sentence as MESSAGE and the stable machine code as DETAIL. The API's error middleware
-- maps them to {"detail", "code"} without any handler catching anything.

CREATE FUNCTION logic.fail(p_status integer, p_code text, p_message text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_status NOT BETWEEN 400 AND 599 THEN
        RAISE EXCEPTION 'logic.fail: status % is not an HTTP error status', p_status;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'TK' || p_status::text,
        MESSAGE = p_message,
        DETAIL = p_code;
END
$$;
COMMENT ON FUNCTION logic.fail(integer, text, text) IS
    'Raise an API error: SQLSTATE TK<status>, MESSAGE = human sentence, DETAIL = stable code.';
GRANT EXECUTE ON FUNCTION logic.fail(integer, text, text) TO ticketing_api;

-- Text argument checks shared by api functions.
CREATE FUNCTION logic.require_text(p_value text, p_field text, p_max integer) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_trimmed text := btrim(p_value, E' \t\r\n\f');
BEGIN
    IF v_trimmed IS NULL OR v_trimmed = '' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' is required');
    END IF;
    IF length(p_value) > p_max THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
            format('%s must be at most %s characters', p_field, p_max));
    END IF;
    RETURN v_trimmed;
END
$$;
COMMENT ON FUNCTION logic.require_text(text, text, integer) IS
    'Trimmed p_value, or a 422 invalid_<field> error when it is blank or longer than p_max.';
GRANT EXECUTE ON FUNCTION logic.require_text(text, text, integer) TO ticketing_api;
