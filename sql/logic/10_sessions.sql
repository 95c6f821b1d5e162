-- Session lookup and the per-request context that row-level security reads.

CREATE FUNCTION logic.session_lookup(p_token_hash bytea)
    RETURNS TABLE (
        session_id uuid, user_id uuid, organization_id uuid, role core.member_role,
        expires_at timestamptz, revoked_at timestamptz
    )
    -- plpgsql, not sql: it runs on every request, and a SECURITY DEFINER sql function is
    -- planned again at each call while plpgsql keeps its plan for the session.
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT s.id, s.user_id, s.organization_id, m.role, s.expires_at, s.revoked_at
    FROM core.sessions s
    LEFT JOIN core.memberships m
        ON m.organization_id = s.organization_id AND m.user_id = s.user_id
    WHERE s.token_hash = p_token_hash;
END
$$;
COMMENT ON FUNCTION logic.session_lookup(bytea) IS
    'The session whose token HMAC is p_token_hash, with the member role it currently grants.';
GRANT EXECUTE ON FUNCTION logic.session_lookup(bytea) TO ticketing_api;

CREATE FUNCTION logic.session_json(p_session core.sessions, p_role core.member_role)
    RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'user', (SELECT jsonb_build_object('id', u.id, 'email', u.email,
                                           'display_name', u.display_name)
                 FROM core.users u WHERE u.id = p_session.user_id),
        'organization', (SELECT jsonb_build_object('id', o.id, 'name', o.name)
                         FROM core.organizations o WHERE o.id = p_session.organization_id),
        'role', p_role,
        'organizations', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('id', o.id, 'name', o.name,
                                                         'role', m.role) ORDER BY o.name), '[]')
            FROM core.memberships m JOIN core.organizations o ON o.id = m.organization_id
            WHERE m.user_id = p_session.user_id),
        'session', jsonb_build_object('id', p_session.id, 'expires_at', p_session.expires_at)
    )
$$;
COMMENT ON FUNCTION logic.session_json(core.sessions, core.member_role) IS
    'The /me shape of a session: user, organization, role, all memberships, session expiry.';

CREATE FUNCTION logic.audit(p_organization_id uuid, p_action text, p_target_type text,
                            p_target_id text, p_details jsonb DEFAULT '{}')
    RETURNS void LANGUAGE sql AS $$
    INSERT INTO core.audit_events
        (organization_id, actor_user_id, action, target_type, target_id, details, request_id)
    VALUES (p_organization_id, core.current_user_id(), p_action, p_target_type, p_target_id,
            p_details, coalesce(current_setting('app.request_id', true), ''))
$$;
COMMENT ON FUNCTION logic.audit(uuid, text, text, text, jsonb) IS
    'Append an audit event attributed to the request''s user and request id.';
GRANT EXECUTE ON FUNCTION logic.audit(uuid, text, text, text, jsonb) TO ticketing_api;

CREATE FUNCTION logic.audit_by(p_organization_id uuid, p_actor_user_id uuid, p_action text,
                               p_target_type text, p_target_id text, p_details jsonb,
                               p_request_id text)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO core.audit_events
        (organization_id, actor_user_id, action, target_type, target_id, details, request_id)
    VALUES (p_organization_id, p_actor_user_id, p_action, p_target_type, p_target_id,
            coalesce(p_details, '{}'), coalesce(p_request_id, ''))
$$;
COMMENT ON FUNCTION logic.audit_by(uuid, uuid, text, text, text, jsonb, text) IS
    'Append an audit event with an explicit actor (sign-in and the CLI, where no session is '
    'set yet); logic.audit takes the actor from the request.';

-- A login replaces the browser's previous session (the token it presented), so an old
-- cookie stops working the moment a new one is issued.
CREATE FUNCTION logic.session_open(p_user_id uuid, p_organization_id uuid, p_token_hash bytea,
                                   p_previous_token_hash bytea, p_ttl_seconds integer,
                                   p_user_agent text, p_client_ip text)
    RETURNS core.sessions
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_session core.sessions;
BEGIN
    IF p_previous_token_hash IS NOT NULL THEN
        UPDATE core.sessions SET revoked_at = now()
        WHERE token_hash = p_previous_token_hash AND revoked_at IS NULL;
    END IF;
    INSERT INTO core.sessions (token_hash, user_id, organization_id, expires_at,
                               user_agent, client_ip)
    VALUES (p_token_hash, p_user_id, p_organization_id,
            now() + make_interval(secs => p_ttl_seconds),
            left(coalesce(p_user_agent, ''), 500), coalesce(p_client_ip, ''))
    RETURNING * INTO v_session;
    RETURN v_session;
END
$$;
COMMENT ON FUNCTION logic.session_open(uuid, uuid, bytea, bytea, integer, text, text) IS
    'Open a session (token HMAC p_token_hash) of the user in the organisation, revoking the '
    'session the browser presented before (p_previous_token_hash), if any.';
