-- depends: 0010.ticket-list-items 0011.ingest-performance
-- Full-text search over recently active tickets (issue 6).
--
-- A search answers its newest matches first, looking in growing windows of activity (see
-- api.ticket_list). Through the GIN index over all tickets, even the first window pays for
-- every match of the term in the whole history: a word in 3% of a million tickets is a
-- 30,000-entry bitmap (~6 ms) to find the 50 newest. A second GIN index covers only the
-- tickets active since a fixed date, a few weeks back; its posting lists are a few percent
-- of the size.
--
-- Its predicate is a constant (`last_activity_at >= '<date>'`), so the planner itself
-- decides when it may be used: a window whose lower bound is on or after that date implies
-- the predicate. Nothing has to be kept in step for results to be right. To keep the index
-- small, the tickets_refresh_recent_search_index task builds a newer one once the date is
-- two horizons old and drops the older (worker.recent_search_index_steps()). Each index is
-- named after its date: tickets_search_since_YYYYMMDD.

CREATE FUNCTION core.recent_search_horizon() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '30 days' $$;
COMMENT ON FUNCTION core.recent_search_horizon() IS
    'How far back a new recent-search index (tickets_search_since_*) covers ticket activity.';

CREATE FUNCTION core.recent_search_index_name(p_since date) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$ SELECT 'tickets_search_since_' || to_char(p_since, 'YYYYMMDD') $$;

CREATE FUNCTION core.recent_search_index_ddl(p_since date, p_concurrently boolean)
    RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format('CREATE INDEX %s IF NOT EXISTS %I ON core.tickets USING gin (search) '
                  'WHERE last_activity_at >= %L::timestamptz',
                  CASE WHEN p_concurrently THEN 'CONCURRENTLY' ELSE '' END,
                  core.recent_search_index_name(p_since),
                  to_char(p_since, 'YYYY-MM-DD') || ' 00:00:00+00')
$$;
COMMENT ON FUNCTION core.recent_search_index_ddl(date, boolean) IS
    'The one definition of a recent-search index: GIN on search for tickets active since '
    'p_since (UTC midnight), named tickets_search_since_YYYYMMDD.';

DO $$
BEGIN
    EXECUTE core.recent_search_index_ddl(
        ((now() AT TIME ZONE 'UTC') - core.recent_search_horizon())::date, false);
END
$$;
