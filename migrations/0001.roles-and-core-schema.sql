-- The `core` schema holds every table; code schemas (logic, worker, api, ops) are
-- reinstalled from sql/ on each migrate. The API role is cluster-wide, so it is created
-- only if absent and may already exist from another database of the same server.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ticketing_api') THEN
        BEGIN
            CREATE ROLE ticketing_api NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by another database's migration
        END;
    END IF;
END
$$;

-- The login user switches to the API role for every API query (SET ROLE).
GRANT ticketing_api TO CURRENT_USER;

CREATE SCHEMA core;
GRANT USAGE ON SCHEMA core TO ticketing_api;

-- The request's organisation, set per transaction by api.begin_request. Row-level
-- security policies depend on these, so they live in core and are migrated, not reloaded.
CREATE FUNCTION core.current_org_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.org_id', true), '')::uuid $$;

CREATE FUNCTION core.current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

-- What the migrate runner last installed from sql/ (readiness compares it with the files).
CREATE TABLE core.schema_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    code_hash text NOT NULL,
    reloaded_at timestamptz NOT NULL DEFAULT now()
);
