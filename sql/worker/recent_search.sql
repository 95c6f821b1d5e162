CREATE VIEW worker.recent_search_indexes AS
SELECT c.relname AS index_name,
       to_date(right(c.relname, 8), 'YYYYMMDD') AS since,
       i.indisvalid AS valid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'core.tickets'::regclass
  AND c.relname ~ '^tickets_search_since_[0-9]{8}$';
COMMENT ON VIEW worker.recent_search_indexes IS
    'The recent-search GIN indexes on core.tickets (tickets_search_since_YYYYMMDD): the date '
    'from which each covers ticket activity, and whether it is valid (a failed concurrent '
    'build leaves an invalid one).';

CREATE FUNCTION worker.recent_search_index_steps() RETURNS text[]
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_since date := ((now() AT TIME ZONE 'UTC') - core.recent_search_horizon())::date;
    v_keep text;
    v_steps text[] := '{}';
BEGIN
    -- The newest valid index serves until its date is two horizons back.
    SELECT index_name INTO v_keep FROM worker.recent_search_indexes
    WHERE valid AND since >= v_since - core.recent_search_horizon()
    ORDER BY since DESC LIMIT 1;
    IF v_keep IS NULL THEN
        v_keep := core.recent_search_index_name(v_since);
        IF EXISTS (SELECT 1 FROM worker.recent_search_indexes
                   WHERE index_name = v_keep AND NOT valid) THEN
            v_steps := v_steps || format('DROP INDEX CONCURRENTLY IF EXISTS core.%I', v_keep);
        END IF;
        v_steps := v_steps || core.recent_search_index_ddl(v_since, true);
    END IF;
    -- Then every other one goes: older ones, and leftovers of failed builds.
    RETURN v_steps || ARRAY(SELECT format('DROP INDEX CONCURRENTLY IF EXISTS core.%I', index_name)
                            FROM worker.recent_search_indexes
                            WHERE index_name <> v_keep ORDER BY index_name);
END
$$;
COMMENT ON FUNCTION worker.recent_search_index_steps() IS
    'tickets_refresh_recent_search_index task: the statements that keep one recent-search '
    'index. Once the newest valid one''s date is more than two horizons '
    '(core.recent_search_horizon()) back, build tickets_search_since_<today - horizon> '
    'concurrently; drop every other one. Empty when there is nothing to do.';
