-- Sign in with Google (OpenID Connect, authorization code flow with PKCE): the one-time
-- states of the flow and the login itself. The HTTP layer (app/handlers/signin.py) talks to
-- the provider and verifies the ID token (kernel/google_signin.py); who may join which
-- organisation is decided here (logic.signin_join). All anonymous: SECURITY DEFINER.

CREATE FUNCTION api.signin_start(p_state_hash bytea, p_browser_hash bytea, p_nonce text,
                                 p_code_verifier text)
    RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_expires_at timestamptz := now() + logic.signin_state_lifetime();
BEGIN
    -- Housekeeping: states a day past their expiry are of no use, even as evidence of reuse.
    DELETE FROM core.signin_states WHERE expires_at < now() - interval '1 day';
    INSERT INTO core.signin_states (state_hash, browser_hash, nonce, code_verifier, expires_at)
    VALUES (p_state_hash, p_browser_hash, p_nonce, p_code_verifier, v_expires_at);
    RETURN jsonb_build_object('expires_at', v_expires_at);
END
$$;
COMMENT ON FUNCTION api.signin_start(bytea, bytea, text, text) IS
    'GET /auth/google/start: store a one-time sign-in state (HMACs of the state and of the '
    'browser cookie, the nonce and the PKCE verifier) expiring after '
    'logic.signin_state_lifetime(); returns {expires_at}.';

CREATE FUNCTION api.signin_consume(p_state_hash bytea, p_browser_hash bytea) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s core.signin_states;
BEGIN
    -- Never raises: the caller commits the consumption first, then acts on the verdict, so
    -- a state is spent even when the code exchange or the token check fails afterwards.
    UPDATE core.signin_states SET consumed_at = now()
    WHERE state_hash = p_state_hash AND consumed_at IS NULL
    RETURNING * INTO s;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM core.signin_states WHERE state_hash = p_state_hash) THEN
            RETURN jsonb_build_object('valid', false, 'code', 'signin_state_used',
                'detail', 'This sign-in was already completed: sign in again.');
        END IF;
        RETURN jsonb_build_object('valid', false, 'code', 'invalid_signin_state',
            'detail', 'Unknown sign-in state: sign in again.');
    END IF;
    IF p_browser_hash IS NULL OR s.browser_hash <> p_browser_hash THEN
        RETURN jsonb_build_object('valid', false, 'code', 'signin_state_mismatch',
            'detail', 'This sign-in was started in another browser: sign in again.');
    END IF;
    IF s.expires_at <= now() THEN
        RETURN jsonb_build_object('valid', false, 'code', 'signin_state_expired',
            'detail', 'The sign-in took too long: sign in again.');
    END IF;
    RETURN jsonb_build_object('valid', true, 'nonce', s.nonce,
                              'code_verifier', s.code_verifier);
END
$$;
COMMENT ON FUNCTION api.signin_consume(bytea, bytea) IS
    'GET /auth/google/callback, step 1: spend the sign-in state and return {valid, code, '
    'detail} or {valid, nonce, code_verifier}: unknown, used, expired states and states '
    'started in another browser are refused. Never raises.';

CREATE FUNCTION api.google_login(
    p_email text, p_hosted_domain text, p_subject text, p_name text, p_token_hash bytea,
    p_previous_token_hash bytea, p_ttl_seconds integer, p_user_agent text, p_client_ip text,
    p_request_id text
) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_email text := logic.require_email(p_email);
    v_hd text := nullif(lower(btrim(p_hosted_domain)), '');
    v_user core.users;
    v_joined uuid[];
    v_org_id uuid;
    v_role core.member_role;
    v_session core.sessions;
BEGIN
    IF p_subject IS NULL OR p_subject = '' THEN
        PERFORM logic.fail(400, 'invalid_id_token', 'The ID token names no account (sub).');
    END IF;
    INSERT INTO core.users (email, display_name, google_subject)
    VALUES (v_email, left(coalesce(p_name, ''), logic.input_limit('display_name')), p_subject)
    ON CONFLICT (email) DO UPDATE SET email = excluded.email
    RETURNING * INTO v_user;
    IF v_user.google_subject IS NULL THEN
        UPDATE core.users SET google_subject = p_subject,
                              display_name = CASE WHEN display_name = ''
                                                  THEN left(coalesce(p_name, ''),
                                                            logic.input_limit('display_name'))
                                                  ELSE display_name END
        WHERE id = v_user.id RETURNING * INTO v_user;
    ELSIF v_user.google_subject <> p_subject THEN
        -- The address now belongs to another Google account (a recycled address).
        PERFORM logic.fail(403, 'google_account_mismatch',
            'This e-mail address signed in before with another Google account.');
    END IF;

    v_joined := logic.signin_join(v_user.id, v_email, v_hd, p_request_id);

    -- The organisation just joined, else the one of the user's latest session, else by name;
    -- POST /auth/switch-org moves between them.
    SELECT m.organization_id, m.role INTO v_org_id, v_role
    FROM core.memberships m
    JOIN core.organizations o ON o.id = m.organization_id
    WHERE m.user_id = v_user.id
    ORDER BY m.organization_id = ANY (v_joined) DESC,
             (SELECT max(s.created_at) FROM core.sessions s
              WHERE s.user_id = m.user_id AND s.organization_id = m.organization_id)
                 DESC NULLS LAST,
             lower(o.name)
    LIMIT 1;
    IF NOT FOUND THEN
        PERFORM logic.fail(403, 'not_invited',
            format('No organization admits %s: ask an admin of yours for an invitation.',
                   v_email));
    END IF;

    v_session := logic.session_open(v_user.id, v_org_id, p_token_hash, p_previous_token_hash,
                                    p_ttl_seconds, p_user_agent, p_client_ip);
    PERFORM logic.audit_by(v_org_id, v_user.id, 'auth.google_login', 'session',
                           v_session.id::text,
                           jsonb_build_object('role', v_role, 'hd', v_hd,
                                              'joined', to_jsonb(v_joined)),
                           p_request_id);
    RETURN logic.session_json(v_session, v_role);
END
$$;
COMMENT ON FUNCTION api.google_login(text, text, text, text, bytea, bytea, integer, text,
                                     text, text) IS
    'GET /auth/google/callback, step 2, after the ID token was verified: find or create the '
    'user of the verified e-mail (bound to the Google account p_subject), join what '
    'logic.signin_join admits, open a session in one of the user''s organisations. 403 '
    'not_invited when none admits them, 403 google_account_mismatch for another account.';
