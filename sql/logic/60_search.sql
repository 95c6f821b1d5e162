-- The search vector of tickets (core.tickets.search): written by stitching (worker), read
-- by the ticket list (api.ticket_search_query, api.ticket_page_search).
--
-- Search: core.tickets.search uses the 'simple' text search configuration. Mail arrives in
-- any language, and stemming with one language's rules would mangle the others; 'simple'
-- also keeps e-mail addresses and ticket codes as they are. Weights: A code and subject,
-- B requester, C later subjects and senders, D bodies (first 10,000 characters each).

CREATE FUNCTION logic.search_config() RETURNS regconfig
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 'pg_catalog.simple'::regconfig $$;
COMMENT ON FUNCTION logic.search_config() IS
    'The text search configuration of core.tickets.search, for the vectors written here and '
    'for every query over them (api.ticket_search_query).';
GRANT EXECUTE ON FUNCTION logic.search_config() TO ticketing_api;

CREATE FUNCTION logic.search_body_chars() RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT 10000';
COMMENT ON FUNCTION logic.search_body_chars() IS
    'Characters of each message''s text body indexed into its ticket''s search vector.';

CREATE FUNCTION logic.ticket_search_vector(p_code text, p_subject text, p_email text, p_name text)
    RETURNS tsvector
    LANGUAGE sql IMMUTABLE AS $$
    SELECT setweight(to_tsvector(logic.search_config(), p_code || ' ' || replace(p_code, 'T-', '') || ' '
                                           || lower(replace(p_code, '-', ''))), 'A')
        || setweight(to_tsvector(logic.search_config(), coalesce(p_subject, '')), 'A')
        || setweight(to_tsvector(logic.search_config(), coalesce(p_email, '') || ' ' || coalesce(p_name, '')), 'B')
$$;
COMMENT ON FUNCTION logic.ticket_search_vector(text, text, text, text) IS
    'Search lexemes of a ticket''s own fields: code (T-1234, 1234, t1234), subject, requester.';

CREATE FUNCTION logic.message_search_vector(p_message core.messages, p_text_body text)
    RETURNS tsvector
    LANGUAGE sql IMMUTABLE AS $$
    SELECT setweight(to_tsvector(logic.search_config(), coalesce(p_message.subject, '') || ' '
                                           || coalesce(p_message.from_address, '') || ' '
                                           || coalesce(p_message.from_name, '')), 'C')
        || setweight(to_tsvector(logic.search_config(), left(coalesce(p_text_body, ''),
                                                logic.search_body_chars())), 'D')
$$;
COMMENT ON FUNCTION logic.message_search_vector(core.messages, text) IS
    'Search lexemes one message adds to its ticket: subject and sender (C), body start (D).';

CREATE FUNCTION logic.append_search(p_search tsvector, p_more tsvector) RETURNS tsvector
    LANGUAGE sql IMMUTABLE AS $$
    -- tsvector values are capped at 1 MB: a huge ticket stops growing its index instead of
    -- failing the stitch (its first messages stay searchable).
    SELECT CASE WHEN pg_column_size(p_search) + pg_column_size(p_more) < 900000
                THEN p_search || p_more ELSE p_search END
$$;
COMMENT ON FUNCTION logic.append_search(tsvector, tsvector) IS
    'Append lexemes to a ticket''s search vector while it stays well below the 1 MB limit.';
