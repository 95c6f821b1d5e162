CREATE FUNCTION api.schema_status() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'migrations', (SELECT coalesce(jsonb_agg(migration_id ORDER BY migration_id), '[]')
                       FROM public._yoyo_migration),
        'code_hash', (SELECT code_hash FROM core.schema_state))
$$;
COMMENT ON FUNCTION api.schema_status() IS
    'GET /readyz: applied migration ids and the hash of the sql/ code last installed.';
