-- Input rules shared by every caller: one definition each, used by api, ops and worker
-- functions alike. Where Python checks the same thing before SQL (the OpenAPI document's
-- patterns), tests/sql/test_rules.py keeps the two equal.

CREATE FUNCTION logic.email_address_pattern() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '^[^@\s]+@[^@\s]+\.[^@\s]+$'
$$;
COMMENT ON FUNCTION logic.email_address_pattern() IS
    'The syntax of an e-mail address we accept as input (a POSIX regex): no whitespace, one '
    '@, a dot in the domain. Deliberately loose: the mail system is the real judge.';
GRANT EXECUTE ON FUNCTION logic.email_address_pattern() TO ticketing_api;

CREATE FUNCTION logic.max_email_length() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 320';
COMMENT ON FUNCTION logic.max_email_length() IS
    'The longest e-mail address accepted as input (64 local + @ + 255 domain).';
GRANT EXECUTE ON FUNCTION logic.max_email_length() TO ticketing_api;

CREATE FUNCTION logic.is_email_address(p_value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_value IS NOT NULL AND length(p_value) <= logic.max_email_length()
           AND p_value ~ logic.email_address_pattern()
$$;
COMMENT ON FUNCTION logic.is_email_address(text) IS
    'Whether p_value (already trimmed and lower-cased by the caller) is an e-mail address by '
    'logic.email_address_pattern() and logic.max_email_length(); false for NULL.';
GRANT EXECUTE ON FUNCTION logic.is_email_address(text) TO ticketing_api;
