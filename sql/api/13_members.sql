-- Member management (admin): members and their roles, invitations, the audit trail; and the
-- user's own sessions. Membership changes that end sessions are SECURITY DEFINER (the API
-- role has no grant on sessions) and filter on the session's organisation themselves. The
-- last admin is kept by the trigger core.memberships_keep_an_admin (409 last_admin).

CREATE FUNCTION api.member_json(p_user_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('user_id', u.id, 'email', u.email, 'display_name', u.display_name,
                              'role', m.role, 'joined_at', m.created_at)
    FROM core.memberships m JOIN core.users u ON u.id = m.user_id
    WHERE m.organization_id = core.current_org_id() AND m.user_id = p_user_id
$$;
COMMENT ON FUNCTION api.member_json(uuid) IS
    'The member shape {user_id, email, display_name, role, joined_at} of a member of the '
    'session''s organisation (NULL if not a member).';

CREATE FUNCTION api.member_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(
               jsonb_build_object('user_id', u.id, 'email', u.email,
                                  'display_name', u.display_name, 'role', m.role,
                                  'joined_at', m.created_at)
               ORDER BY u.email), '[]'))
    FROM core.memberships m JOIN core.users u ON u.id = m.user_id
    WHERE m.organization_id = core.current_org_id()
$$;
COMMENT ON FUNCTION api.member_list() IS
    'GET /members: the organisation''s members by e-mail {items: [{user_id, email, '
    'display_name, role, joined_at}]}.';

CREATE FUNCTION api.member_update(p_user_id uuid, p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role core.member_role;
    v_old core.member_role;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['role'], 'a member change');
    v_role := logic.require_role(logic.json_text_field(p_body, 'role'));
    SELECT role INTO v_old FROM core.memberships
    WHERE organization_id = core.current_org_id() AND user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'member_not_found', 'No member with that user id here.');
    END IF;
    IF v_old <> v_role THEN
        UPDATE core.memberships SET role = v_role
        WHERE organization_id = core.current_org_id() AND user_id = p_user_id;
        PERFORM logic.audit(core.current_org_id(), 'member.role_changed', 'user', p_user_id::text,
                            jsonb_build_object('from', v_old, 'to', v_role));
    END IF;
    RETURN api.member_json(p_user_id);
END
$$;
COMMENT ON FUNCTION api.member_update(uuid, jsonb) IS
    'PATCH /members/{user_id} {role}: change a member''s role (404 member_not_found, 422 invalid_role, '
    '409 last_admin when it would leave no admin); returns the member.';

CREATE FUNCTION api.member_remove(p_user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_member jsonb := api.member_json(p_user_id);
    v_revoked integer;
BEGIN
    IF v_member IS NULL THEN
        PERFORM logic.fail(404, 'member_not_found', 'No member with that user id here.');
    END IF;
    DELETE FROM core.memberships
    WHERE organization_id = core.current_org_id() AND user_id = p_user_id;
    v_revoked := logic.sessions_end_membership(core.current_org_id(), p_user_id);
    PERFORM logic.audit(core.current_org_id(), 'member.removed', 'user', p_user_id::text,
                        jsonb_build_object('email', v_member->>'email',
                                           'role', v_member->>'role',
                                           'sessions_revoked', v_revoked));
    RETURN v_member;
END
$$;
COMMENT ON FUNCTION api.member_remove(uuid) IS
    'DELETE /members/{user_id}: end the membership and revoke the user''s sessions in this '
    'organisation at once (404 member_not_found, 409 last_admin); returns the member removed.';

-- ---------------------------------------------------------------- invitations

CREATE FUNCTION api.invitation_json(i core.invitations) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', i.id, 'email', i.email, 'role', i.role,
                              'invited_by', i.invited_by, 'created_at', i.created_at,
                              'expires_at', i.expires_at, 'accepted_at', i.accepted_at)
$$;
COMMENT ON FUNCTION api.invitation_json(core.invitations) IS
    'The invitation shape {id, email, role, invited_by, created_at, expires_at, accepted_at}.';

CREATE FUNCTION api.invitation_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(
               jsonb_agg(api.invitation_json(i) ORDER BY i.created_at DESC, i.id), '[]'))
    FROM core.invitations i
    WHERE i.organization_id = core.current_org_id() AND i.accepted_at IS NULL
$$;
COMMENT ON FUNCTION api.invitation_list() IS
    'GET /invitations: the organisation''s open invitations (expired ones included, with '
    'their expires_at), newest first.';

CREATE FUNCTION api.invitation_create(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_email text;
    v_role core.member_role;
    i core.invitations;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['email', 'role'], 'an invitation');
    v_email := logic.require_email(logic.json_text_field(p_body, 'email'));
    v_role := logic.require_role(coalesce(logic.json_text_field(p_body, 'role'), 'agent'));
    IF EXISTS (SELECT 1 FROM core.memberships m JOIN core.users u ON u.id = m.user_id
               WHERE m.organization_id = core.current_org_id() AND u.email = v_email) THEN
        PERFORM logic.fail(409, 'already_a_member', format('%s is already a member.', v_email));
    END IF;
    -- Inviting again replaces the open invitation (new role, new expiry).
    DELETE FROM core.invitations
    WHERE organization_id = core.current_org_id() AND email = v_email AND accepted_at IS NULL;
    INSERT INTO core.invitations (organization_id, email, role, invited_by, expires_at)
    VALUES (core.current_org_id(), v_email, v_role, core.current_user_id(),
            now() + logic.invitation_lifetime())
    RETURNING * INTO i;
    PERFORM logic.audit(i.organization_id, 'invitation.created', 'invitation', i.id::text,
                        jsonb_build_object('email', i.email, 'role', i.role));
    RETURN api.invitation_json(i);
END
$$;
COMMENT ON FUNCTION api.invitation_create(jsonb) IS
    'POST /invitations {email, role?}: invite an e-mail with a role (default agent), valid for '
    'logic.invitation_lifetime(); replaces an open invitation of that e-mail. 409 '
    'already_a_member, 422 invalid_email / invalid_role.';

CREATE FUNCTION api.invitation_delete(p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    i core.invitations;
BEGIN
    DELETE FROM core.invitations
    WHERE organization_id = core.current_org_id() AND id = p_id AND accepted_at IS NULL
    RETURNING * INTO i;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'invitation_not_found', 'No open invitation with that id here.');
    END IF;
    PERFORM logic.audit(i.organization_id, 'invitation.revoked', 'invitation', i.id::text,
                        jsonb_build_object('email', i.email, 'role', i.role));
    RETURN api.invitation_json(i);
END
$$;
COMMENT ON FUNCTION api.invitation_delete(uuid) IS
    'DELETE /invitations/{id}: withdraw an open invitation (404 invitation_not_found).';

-- ---------------------------------------------------------------- audit trail

CREATE FUNCTION api.audit_event_list(p_limit integer, p_cursor text) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit integer := logic.page_size(p_limit, 'audit_page');
    v_before bigint;
    v_items jsonb;
    v_last bigint;
    v_count integer;
BEGIN
    IF p_cursor IS NOT NULL THEN
        IF p_cursor !~ '^[0-9]{1,18}$' THEN
            PERFORM logic.fail(400, 'invalid_cursor', 'cursor is not a next_cursor of this list.');
        END IF;
        v_before := p_cursor::bigint;
    END IF;
    SELECT coalesce(jsonb_agg(item ORDER BY id DESC), '[]'), min(id), count(*)
    INTO v_items, v_last, v_count
    FROM (
        SELECT e.id, jsonb_build_object(
                   'id', e.id, 'action', e.action, 'actor_user_id', e.actor_user_id,
                   'target_type', e.target_type, 'target_id', e.target_id,
                   'details', e.details, 'request_id', e.request_id,
                   'created_at', e.created_at) AS item
        FROM core.audit_events e
        WHERE e.organization_id = core.current_org_id()
          AND (v_before IS NULL OR e.id < v_before)
        ORDER BY e.id DESC
        LIMIT v_limit
    ) page;
    RETURN jsonb_build_object('items', v_items,
                              'next_cursor', CASE WHEN v_count = v_limit THEN v_last::text END);
END
$$;
COMMENT ON FUNCTION api.audit_event_list(integer, text) IS
    'GET /audit-events: the organisation''s audit events, newest first, keyset pages of '
    'p_limit (logic.page_size, audit_page) continued by next_cursor (NULL on the last page).';

-- ---------------------------------------------------------------- the user's own sessions

CREATE FUNCTION api.my_session_list() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(
               jsonb_build_object(
                   'id', s.id, 'organization_id', s.organization_id,
                   'organization_name', o.name, 'created_at', s.created_at,
                   'expires_at', s.expires_at, 'user_agent', s.user_agent,
                   'client_ip', s.client_ip,
                   'current', s.id = nullif(current_setting('app.session_id', true), '')::uuid)
               ORDER BY s.created_at DESC, s.id), '[]'))
    FROM core.sessions s JOIN core.organizations o ON o.id = s.organization_id
    WHERE s.user_id = core.current_user_id() AND s.revoked_at IS NULL AND s.expires_at > now()
$$;
COMMENT ON FUNCTION api.my_session_list() IS
    'GET /me/sessions: the user''s live sessions in every organisation, newest first, the '
    'current one marked.';

CREATE FUNCTION api.my_session_revoke(p_session_id uuid) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_session core.sessions;
BEGIN
    UPDATE core.sessions SET revoked_at = now()
    WHERE id = p_session_id AND user_id = core.current_user_id() AND revoked_at IS NULL
    RETURNING * INTO v_session;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'session_not_found', 'No live session of yours with that id.');
    END IF;
    PERFORM logic.audit(v_session.organization_id, 'auth.session_revoked', 'session',
                        v_session.id::text);
    RETURN jsonb_build_object('revoked', 1);
END
$$;
COMMENT ON FUNCTION api.my_session_revoke(uuid) IS
    'DELETE /me/sessions/{session_id}: sign out one of the user''s sessions (this one or '
    'elsewhere); 404 session_not_found.';

CREATE FUNCTION api.logout_all() RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE core.sessions SET revoked_at = now()
    WHERE user_id = core.current_user_id() AND revoked_at IS NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM logic.audit(core.current_org_id(), 'auth.logout_all', 'user',
                        core.current_user_id()::text, jsonb_build_object('revoked', v_count));
    RETURN jsonb_build_object('logged_out', true, 'revoked', v_count);
END
$$;
COMMENT ON FUNCTION api.logout_all() IS
    'POST /auth/logout-all: revoke every session of the user, in every organisation.';

-- ---------------------------------------------------------------- join policy

CREATE FUNCTION api.join_policy_json() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'join_policy', o.join_policy, 'domain_join_role', o.domain_join_role,
        'domains', (SELECT coalesce(jsonb_agg(d.domain ORDER BY d.domain), '[]')
                    FROM core.organization_domains d WHERE d.organization_id = o.id))
    FROM core.organizations o WHERE o.id = core.current_org_id()
$$;
COMMENT ON FUNCTION api.join_policy_json() IS
    'GET /organization/join-policy: {join_policy, domain_join_role, domains} of the session''s '
    'organisation.';

CREATE FUNCTION api.join_policy_update(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o core.organizations;
    v_before jsonb := api.join_policy_json();
    v_join_policy text;
    v_domain_join_role text;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['join_policy', 'domain_join_role'],
                                        'a join policy');
    v_join_policy := logic.json_text_field(p_body, 'join_policy');
    v_domain_join_role := logic.json_text_field(p_body, 'domain_join_role');
    IF v_join_policy IS NOT NULL AND v_join_policy NOT IN ('invite_only', 'domain') THEN
        PERFORM logic.fail(422, 'invalid_join_policy', 'join_policy must be invite_only or domain');
    END IF;
    IF v_domain_join_role IS NOT NULL AND v_domain_join_role NOT IN ('agent', 'viewer') THEN
        PERFORM logic.fail(422, 'invalid_domain_join_role',
                           'domain_join_role must be agent or viewer');
    END IF;
    IF v_join_policy = 'domain' AND NOT EXISTS (
        SELECT 1 FROM core.organization_domains WHERE organization_id = core.current_org_id()
    ) THEN
        PERFORM logic.fail(409, 'no_verified_domain',
            'The organization has no verified Workspace domain: an operator adds one with '
            'ticketing org-create --domain.');
    END IF;
    UPDATE core.organizations
    SET join_policy = coalesce(v_join_policy, join_policy),
        domain_join_role = coalesce(v_domain_join_role::core.member_role, domain_join_role)
    WHERE id = core.current_org_id()
    RETURNING * INTO o;
    PERFORM logic.audit(o.id, 'organization.join_policy_changed', 'organization', o.id::text,
                        jsonb_build_object('from', v_before - 'domains',
                                           'to', api.join_policy_json() - 'domains'));
    RETURN api.join_policy_json();
END
$$;
COMMENT ON FUNCTION api.join_policy_update(jsonb) IS
    'PATCH /organization/join-policy {join_policy?, domain_join_role?}: set join_policy (invite_only, domain: 409 '
    'no_verified_domain without a verified domain) and domain_join_role (agent, viewer).';
