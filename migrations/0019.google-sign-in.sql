-- depends: 0016.gmail-push
-- Production sign-in (issue 14): "Sign in with Google" (OpenID Connect), who may join which
-- organisation (verified Workspace domains, join policy, invitations), and the rule that an
-- organisation always keeps an admin.

-- Join policy: invite_only (default) or domain (anyone whose ID token carries one of the
-- organisation's verified Workspace domains as `hd` joins with domain_join_role).
ALTER TABLE core.organizations
    ADD COLUMN join_policy text NOT NULL DEFAULT 'invite_only'
        CHECK (join_policy IN ('invite_only', 'domain')),
    ADD COLUMN domain_join_role core.member_role NOT NULL DEFAULT 'agent'
        CHECK (domain_join_role IN ('agent', 'viewer'));
COMMENT ON COLUMN core.organizations.join_policy IS
    'invite_only: only invited e-mails join; domain: a Google account of a verified Workspace '
    'domain (the ID token''s hd claim) joins with domain_join_role.';

-- A Workspace domain belongs to one organisation at most.
CREATE TABLE core.organization_domains (
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    domain text NOT NULL CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, domain)
);
CREATE UNIQUE INDEX organization_domains_domain_key ON core.organization_domains (domain);
COMMENT ON TABLE core.organization_domains IS
    'Verified Google Workspace domains of an organisation, matched against the ID token''s hd '
    'claim (never against the e-mail''s domain alone).';

CREATE TABLE core.invitations (
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (email = lower(email)),
    role core.member_role NOT NULL,
    invited_by uuid REFERENCES core.users ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid REFERENCES core.users ON DELETE SET NULL,
    PRIMARY KEY (organization_id, id),
    CHECK (expires_at > created_at)
);
-- One open invitation per e-mail and organisation; sign-in looks them up by e-mail.
CREATE UNIQUE INDEX invitations_open_key ON core.invitations (organization_id, email)
    WHERE accepted_at IS NULL;
CREATE INDEX invitations_open_email_idx ON core.invitations (email) WHERE accepted_at IS NULL;
COMMENT ON TABLE core.invitations IS
    'An admin''s invitation of an e-mail with a role; used by signing in with that verified '
    'e-mail before expires_at.';

-- The Google account (the ID token's sub) a user signed in with: a recycled address held by
-- another Google account later does not inherit the user.
ALTER TABLE core.users ADD COLUMN google_subject text;
CREATE UNIQUE INDEX users_google_subject_key ON core.users (google_subject);

-- One-time sign-in states of the OpenID Connect flow: only the HMACs of the state and of the
-- browser binding cookie are stored, with the nonce and the PKCE verifier the callback needs.
-- Not tenant data: reached only through SECURITY DEFINER functions.
CREATE TABLE core.signin_states (
    state_hash bytea PRIMARY KEY,
    browser_hash bytea NOT NULL,
    nonce text NOT NULL CHECK (length(nonce) BETWEEN 16 AND 128),
    code_verifier text NOT NULL CHECK (length(code_verifier) BETWEEN 43 AND 128),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX signin_states_expires_idx ON core.signin_states (expires_at);
COMMENT ON TABLE core.signin_states IS
    'One-time OpenID Connect sign-in states (HMAC of state and browser cookie, nonce, PKCE '
    'verifier); consumed by the callback, refused once used or expired.';

-- An organisation always keeps an admin: the last admin can be neither demoted nor removed
-- (deleting the organisation itself still cascades). The organisation row is locked first,
-- so two admins removing each other at once cannot both succeed.
CREATE FUNCTION core.memberships_keep_an_admin() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.role = 'admin' AND (TG_OP = 'DELETE' OR NEW.role <> 'admin') THEN
        PERFORM 1 FROM core.organizations o WHERE o.id = OLD.organization_id FOR UPDATE;
        IF FOUND AND NOT EXISTS (
            SELECT 1 FROM core.memberships m
            WHERE m.organization_id = OLD.organization_id AND m.role = 'admin'
        ) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'TK409',
                MESSAGE = 'An organization keeps at least one admin: make another member '
                          'admin first.',
                DETAIL = 'last_admin';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION core.memberships_keep_an_admin() IS
    'Trigger: refuses (TK409 last_admin) the demotion or removal of an organisation''s last '
    'admin.';
CREATE TRIGGER memberships_keep_an_admin
    AFTER UPDATE OF role OR DELETE ON core.memberships
    FOR EACH ROW EXECUTE FUNCTION core.memberships_keep_an_admin();

ALTER TABLE core.organization_domains ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.organization_domains
    USING (organization_id = core.current_org_id());

ALTER TABLE core.invitations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.invitations
    USING (organization_id = core.current_org_id())
    WITH CHECK (organization_id = core.current_org_id());

GRANT SELECT ON core.organization_domains TO ticketing_api;
GRANT SELECT, INSERT, DELETE ON core.invitations TO ticketing_api;
