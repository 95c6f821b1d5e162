-- depends: 0001.roles-and-core-schema
-- Organisations, users, memberships, sessions, audit events and queues.
-- Tenant tables lead with organization_id in keys and indexes (RLS filters on it, and it
-- is the distribution column should the database ever be sharded by organisation).

CREATE TYPE core.member_role AS ENUM ('viewer', 'agent', 'admin');  -- ascending power

CREATE TABLE core.organizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX organizations_name_key ON core.organizations (lower(name));

CREATE TABLE core.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (email = lower(email) AND email ~ '^[^@\s]+@[^@\s]+$'),
    display_name text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON core.users (email);

CREATE TABLE core.memberships (
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES core.users ON DELETE CASCADE,
    role core.member_role NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user_idx ON core.memberships (user_id);

-- Only the HMAC of the session token is stored; the token itself lives in the cookie.
CREATE TABLE core.sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash bytea NOT NULL,
    user_id uuid NOT NULL REFERENCES core.users ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    user_agent text NOT NULL DEFAULT '',
    client_ip text NOT NULL DEFAULT '',
    CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX sessions_token_hash_key ON core.sessions (token_hash);
CREATE INDEX sessions_user_idx ON core.sessions (user_id);

CREATE TABLE core.audit_events (
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    actor_user_id uuid REFERENCES core.users ON DELETE SET NULL,
    action text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}',
    request_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX audit_events_recent_idx ON core.audit_events (organization_id, created_at DESC);

CREATE TABLE core.queues (
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    created_by uuid REFERENCES core.users ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX queues_name_key ON core.queues (organization_id, lower(name));

-- Row-level security: the API role sees only the organisation of its request.
ALTER TABLE core.organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.organizations
    USING (id = core.current_org_id());

ALTER TABLE core.memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.memberships
    USING (organization_id = core.current_org_id())
    WITH CHECK (organization_id = core.current_org_id());

ALTER TABLE core.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.users
    USING (EXISTS (
        SELECT 1 FROM core.memberships m
        WHERE m.user_id = users.id AND m.organization_id = core.current_org_id()
    ));

ALTER TABLE core.sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.sessions
    USING (organization_id = core.current_org_id());

ALTER TABLE core.audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.audit_events
    USING (organization_id = core.current_org_id())
    WITH CHECK (organization_id = core.current_org_id());

ALTER TABLE core.queues ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.queues
    USING (organization_id = core.current_org_id())
    WITH CHECK (organization_id = core.current_org_id());

-- Sessions are reached only through SECURITY DEFINER functions (logic.session_lookup,
-- api.dev_login, api.logout, api.switch_org): the API role gets no grant on them.
GRANT SELECT ON core.organizations, core.users, core.memberships TO ticketing_api;
GRANT SELECT, INSERT ON core.audit_events TO ticketing_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON core.queues TO ticketing_api;

-- A trivial round trip through the job queue: operators (and a test) defer worker_ping
-- from SQL and see it completed by a worker.
CREATE TABLE core.worker_pings (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    completed_by text
);
