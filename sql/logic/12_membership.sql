-- Who may join which organisation: the join rules sign-in (api.google_login), member
-- management and the CLI (ops.organization_create) share.

CREATE FUNCTION logic.invitation_lifetime() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '14 days' $$;
COMMENT ON FUNCTION logic.invitation_lifetime() IS
    'How long an invitation can be used after it was made.';
GRANT EXECUTE ON FUNCTION logic.invitation_lifetime() TO ticketing_api;

CREATE FUNCTION logic.require_role(p_role text) RETURNS core.member_role
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_role IS NULL OR p_role NOT IN ('admin', 'agent', 'viewer') THEN
        PERFORM logic.fail(422, 'invalid_role', 'role must be admin, agent or viewer');
    END IF;
    RETURN p_role::core.member_role;
END
$$;
COMMENT ON FUNCTION logic.require_role(text) IS
    'p_role as a member role, or 422 invalid_role.';
GRANT EXECUTE ON FUNCTION logic.require_role(text) TO ticketing_api;

CREATE FUNCTION logic.signin_state_lifetime() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '10 minutes' $$;
COMMENT ON FUNCTION logic.signin_state_lifetime() IS
    'How long a started Google sign-in may take before its state is refused as expired.';

CREATE FUNCTION logic.is_domain_name(p_value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_value IS NOT NULL AND length(p_value) <= 253
           AND p_value ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$'
$$;
COMMENT ON FUNCTION logic.is_domain_name(text) IS
    'Whether p_value (lower-case) is a DNS domain name with at least two labels, as a Google '
    'Workspace domain (the hd claim) is.';
GRANT EXECUTE ON FUNCTION logic.is_domain_name(text) TO ticketing_api;

CREATE FUNCTION logic.require_email(p_value text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_email text := lower(btrim(p_value));
BEGIN
    IF NOT logic.is_email_address(v_email) THEN
        PERFORM logic.fail(422, 'invalid_email', 'email must be an address like agent@example.com');
    END IF;
    RETURN v_email;
END
$$;
COMMENT ON FUNCTION logic.require_email(text) IS
    'p_value trimmed and lower-cased, or 422 invalid_email unless logic.is_email_address.';
GRANT EXECUTE ON FUNCTION logic.require_email(text) TO ticketing_api;

-- Invitations first (the role an admin chose), then the domain policy: an organisation whose
-- verified Workspace domain is the token's hd claim. The e-mail's domain alone never admits
-- anyone: a personal Google account can carry any address.
CREATE FUNCTION logic.signin_join(p_user_id uuid, p_email text, p_hosted_domain text,
                                  p_request_id text)
    RETURNS uuid[] LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_joined uuid[] := '{}';
    v_new boolean;
    i core.invitations;
    o core.organizations;
BEGIN
    FOR i IN
        UPDATE core.invitations SET accepted_at = now(), accepted_by = p_user_id
        WHERE email = p_email AND accepted_at IS NULL AND expires_at > now()
        RETURNING *
    LOOP
        INSERT INTO core.memberships (organization_id, user_id, role)
        VALUES (i.organization_id, p_user_id, i.role)
        ON CONFLICT (organization_id, user_id) DO NOTHING;
        v_new := FOUND;  -- false: already a member, who keeps the role they have
        IF v_new THEN
            v_joined := v_joined || i.organization_id;
        END IF;
        PERFORM logic.audit_by(i.organization_id, p_user_id, 'invitation.accepted', 'invitation',
                               i.id::text,
                               jsonb_build_object('email', p_email, 'role', i.role,
                                                  'joined', v_new),
                               p_request_id);
    END LOOP;

    IF p_hosted_domain IS NOT NULL THEN
        FOR o IN
            SELECT org.* FROM core.organizations org
            JOIN core.organization_domains d ON d.organization_id = org.id
            WHERE d.domain = p_hosted_domain AND org.join_policy = 'domain'
        LOOP
            INSERT INTO core.memberships (organization_id, user_id, role)
            VALUES (o.id, p_user_id, o.domain_join_role)
            ON CONFLICT (organization_id, user_id) DO NOTHING;
            IF FOUND THEN
                v_joined := v_joined || o.id;
                PERFORM logic.audit_by(o.id, p_user_id, 'member.joined', 'user', p_user_id::text,
                                       jsonb_build_object('email', p_email,
                                                          'role', o.domain_join_role,
                                                          'via', 'domain',
                                                          'domain', p_hosted_domain),
                                       p_request_id);
            END IF;
        END LOOP;
    END IF;
    RETURN v_joined;
END
$$;
COMMENT ON FUNCTION logic.signin_join(uuid, text, text, text) IS
    'Memberships a verified sign-in earns: open invitations of p_email (with the invited role), '
    'then organisations whose verified Workspace domain is p_hosted_domain (hd) and whose '
    'join policy is domain. Returns the organisations joined now; audits each.';

CREATE FUNCTION logic.sessions_end_membership(p_organization_id uuid, p_user_id uuid)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE core.sessions SET revoked_at = now()
    WHERE organization_id = p_organization_id AND user_id = p_user_id AND revoked_at IS NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION logic.sessions_end_membership(uuid, uuid) IS
    'Revoke every live session of the user in the organisation (membership ended); returns how '
    'many.';
