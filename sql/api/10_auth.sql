-- Authentication: every authenticated request opens its transaction with api.begin_request,
-- which proves the session token, checks the route's minimum role and sets the context
-- (app.org_id, app.user_id, ...) that row-level security and audit events read.

CREATE FUNCTION api.begin_request(p_token_hash bytea, p_min_role text, p_request_id text)
    RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    PERFORM set_config('app.request_id', coalesce(p_request_id, ''), true);
    IF p_token_hash IS NULL THEN
        PERFORM logic.fail(401, 'not_authenticated', 'Log in first: no session cookie was sent.');
    END IF;
    SELECT * INTO s FROM logic.session_lookup(p_token_hash);
    IF NOT FOUND OR s.revoked_at IS NOT NULL THEN
        PERFORM logic.fail(401, 'not_authenticated', 'The session is not valid: log in again.');
    ELSIF s.expires_at <= now() THEN
        PERFORM logic.fail(401, 'session_expired', 'The session has expired: log in again.');
    ELSIF s.role IS NULL THEN
        PERFORM logic.fail(401, 'not_a_member',
            'You are no longer a member of this organization: log in again.');
    END IF;
    IF s.role < p_min_role::core.member_role THEN
        PERFORM logic.fail(403, 'forbidden',
            format('This action needs the %s role; you are %s.', p_min_role, s.role));
    END IF;
    PERFORM set_config('app.org_id', s.organization_id::text, true),
            set_config('app.user_id', s.user_id::text, true),
            set_config('app.session_id', s.session_id::text, true),
            set_config('app.role', s.role::text, true);
    RETURN jsonb_build_object('session_id', s.session_id, 'user_id', s.user_id,
                              'organization_id', s.organization_id, 'role', s.role);
END
$$;
COMMENT ON FUNCTION api.begin_request(bytea, text, text) IS
    'Authenticate the request by session token HMAC, require p_min_role (viewer < agent < '
    'admin) and set the transaction''s tenant context. Raises 401/403 API errors.';

CREATE FUNCTION api.dev_login(
    p_body jsonb, p_token_hash bytea, p_previous_token_hash bytea,
    p_ttl_seconds integer, p_user_agent text, p_client_ip text, p_request_id text
) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_email text;
    v_org_name text;
    v_requested_role text;
    v_org core.organizations;
    v_user core.users;
    v_role core.member_role;
    v_session core.sessions;
    v_org_created boolean := false;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['email', 'organization_name', 'role'],
                                        'a login');
    v_email := lower(btrim(logic.json_text_field(p_body, 'email')));
    v_org_name := logic.require_text(logic.json_text_field(p_body, 'organization_name'),
                                     'organization_name', logic.input_limit('organization_name'));
    v_requested_role := logic.json_text_field(p_body, 'role');
    IF NOT logic.is_email_address(v_email) THEN
        PERFORM logic.fail(422, 'invalid_email', 'email must be an address like agent@example.com');
    END IF;
    IF v_requested_role IS NOT NULL AND v_requested_role NOT IN ('admin', 'agent', 'viewer') THEN
        PERFORM logic.fail(422, 'invalid_role', 'role must be admin, agent or viewer');
    END IF;

    INSERT INTO core.organizations (name) VALUES (v_org_name)
    ON CONFLICT ((lower(name))) DO NOTHING
    RETURNING * INTO v_org;
    IF FOUND THEN
        v_org_created := true;
    ELSE
        SELECT * INTO v_org FROM core.organizations WHERE lower(name) = lower(v_org_name);
    END IF;

    INSERT INTO core.users (email) VALUES (v_email)
    ON CONFLICT (email) DO UPDATE SET email = excluded.email
    RETURNING * INTO v_user;

    -- The founder of an organisation is its admin; later members join as agents unless
    -- the (development-only) login asks for a role.
    INSERT INTO core.memberships (organization_id, user_id, role)
    VALUES (v_org.id, v_user.id,
            coalesce(v_requested_role::core.member_role,
                     CASE WHEN v_org_created THEN 'admin' ELSE 'agent' END::core.member_role))
    ON CONFLICT (organization_id, user_id)
        DO UPDATE SET role = coalesce(v_requested_role::core.member_role, memberships.role)
    RETURNING role INTO v_role;

    v_session := logic.session_open(v_user.id, v_org.id, p_token_hash, p_previous_token_hash,
                                    p_ttl_seconds, p_user_agent, p_client_ip);
    PERFORM logic.audit_by(v_org.id, v_user.id, 'auth.dev_login', 'session', v_session.id::text,
        jsonb_build_object('role', v_role, 'organization_created', v_org_created),
        p_request_id);

    RETURN logic.session_json(v_session, v_role);
END
$$;
COMMENT ON FUNCTION api.dev_login(jsonb, bytea, bytea, integer, text, text, text) IS
    'Development login ({email, organization_name, role?}): find or create the organisation, '
    'user and membership, open a session whose token HMAC is p_token_hash (revoking the one '
    'of p_previous_token_hash). The HTTP layer exposes it only with ALLOW_DEV_LOGIN.';

CREATE FUNCTION api.me() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT logic.session_json(s, m.role)
    FROM core.sessions s
    JOIN core.memberships m ON m.organization_id = s.organization_id AND m.user_id = s.user_id
    WHERE s.id = nullif(current_setting('app.session_id', true), '')::uuid
$$;
COMMENT ON FUNCTION api.me() IS 'GET /me: the current session''s user, organisation and role.';

CREATE FUNCTION api.logout() RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_session core.sessions;
BEGIN
    UPDATE core.sessions SET revoked_at = now()
    WHERE id = nullif(current_setting('app.session_id', true), '')::uuid AND revoked_at IS NULL
    RETURNING * INTO v_session;
    IF FOUND THEN
        PERFORM logic.audit(v_session.organization_id, 'auth.logout', 'session',
                            v_session.id::text);
    END IF;
    RETURN jsonb_build_object('logged_out', true);
END
$$;
COMMENT ON FUNCTION api.logout() IS 'POST /auth/logout: revoke the current session.';

CREATE FUNCTION api.switch_org(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_organization_id uuid;
    v_session core.sessions;
    v_role core.member_role;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['organization_id'], 'the request');
    v_organization_id := logic.json_uuid_field(p_body, 'organization_id');
    IF v_organization_id IS NULL THEN
        PERFORM logic.fail(422, 'invalid_organization_id', 'organization_id is required');
    END IF;
    SELECT m.role INTO v_role FROM core.memberships m
    WHERE m.organization_id = v_organization_id AND m.user_id = core.current_user_id();
    IF NOT FOUND THEN
        -- Not revealing whether the organisation exists.
        PERFORM logic.fail(404, 'organization_not_found',
                           'No organization with that id among your memberships.');
    END IF;
    UPDATE core.sessions SET organization_id = v_organization_id
    WHERE id = nullif(current_setting('app.session_id', true), '')::uuid
    RETURNING * INTO v_session;
    PERFORM logic.audit(v_organization_id, 'auth.switch_org', 'session', v_session.id::text,
        jsonb_build_object('from', current_setting('app.org_id', true)));
    RETURN logic.session_json(v_session, v_role);
END
$$;
COMMENT ON FUNCTION api.switch_org(jsonb) IS
    'POST /auth/switch-org {organization_id}: move the current session to another organisation of the user.';
