-- Creating an organisation is an operator's act (`ticketing org-create`): no endpoint creates
-- one anonymously. Its first admin signs in with Google as the e-mail given here.

CREATE FUNCTION ops.organization_create(p_name text, p_admin_email text, p_domains text[],
                                        p_join_policy text, p_domain_join_role text)
    RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_name text := logic.require_text(p_name, 'name', logic.input_limit('organization_name'));
    v_email text := logic.require_email(p_admin_email);
    v_domains text[];
    v_domain text;
    v_org core.organizations;
    v_user core.users;
BEGIN
    SELECT coalesce(array_agg(DISTINCT lower(btrim(d))), '{}') INTO v_domains
    FROM unnest(coalesce(p_domains, '{}')) d;
    FOREACH v_domain IN ARRAY v_domains LOOP
        IF NOT logic.is_domain_name(v_domain) THEN
            PERFORM logic.fail(422, 'invalid_domain',
                format('%s is not a domain name like example.com.', v_domain));
        END IF;
        IF EXISTS (SELECT 1 FROM core.organization_domains WHERE domain = v_domain) THEN
            PERFORM logic.fail(409, 'domain_taken',
                format('%s already belongs to another organization.', v_domain));
        END IF;
    END LOOP;
    IF coalesce(p_join_policy, 'invite_only') NOT IN ('invite_only', 'domain') THEN
        PERFORM logic.fail(422, 'invalid_join_policy', 'join policy must be invite_only or domain');
    END IF;
    IF coalesce(p_domain_join_role, 'agent') NOT IN ('agent', 'viewer') THEN
        PERFORM logic.fail(422, 'invalid_domain_join_role', 'domain role must be agent or viewer');
    END IF;
    IF p_join_policy = 'domain' AND cardinality(v_domains) = 0 THEN
        PERFORM logic.fail(422, 'invalid_join_policy',
            'join policy domain needs at least one verified domain');
    END IF;

    INSERT INTO core.organizations (name, join_policy, domain_join_role)
    VALUES (v_name, coalesce(p_join_policy, 'invite_only'),
            coalesce(p_domain_join_role, 'agent')::core.member_role)
    ON CONFLICT ((lower(name))) DO NOTHING
    RETURNING * INTO v_org;
    IF NOT FOUND THEN
        PERFORM logic.fail(409, 'organization_exists',
            format('An organization named %s exists already.', v_name));
    END IF;
    INSERT INTO core.organization_domains (organization_id, domain)
    SELECT v_org.id, d FROM unnest(v_domains) d;

    INSERT INTO core.users (email) VALUES (v_email)
    ON CONFLICT (email) DO UPDATE SET email = excluded.email
    RETURNING * INTO v_user;
    INSERT INTO core.memberships (organization_id, user_id, role)
    VALUES (v_org.id, v_user.id, 'admin');

    PERFORM logic.audit_by(v_org.id, NULL, 'organization.created', 'organization',
                           v_org.id::text,
                           jsonb_build_object('name', v_org.name, 'admin', v_email,
                                              'domains', to_jsonb(v_domains),
                                              'join_policy', v_org.join_policy,
                                              'domain_join_role', v_org.domain_join_role),
                           'cli');
    RETURN jsonb_build_object('id', v_org.id, 'name', v_org.name, 'admin', v_email,
                              'admin_user_id', v_user.id, 'domains', to_jsonb(v_domains),
                              'join_policy', v_org.join_policy,
                              'domain_join_role', v_org.domain_join_role);
END
$$;
COMMENT ON FUNCTION ops.organization_create(text, text, text[], text, text) IS
    'ticketing org-create: a new organisation with its verified Workspace domains, join policy '
    '(invite_only or domain, with the role domain members get) and first admin (the user of '
    'that e-mail, created if new). 409 organization_exists / domain_taken, 422 on bad input.';
