-- The organisation's own mail domains (admin). Mail whose sender is on one of them is the
-- organisation's (logic.org_address_reason): outbound, never routed, never spam, never
-- reopens a ticket. Kept apart from the verified Workspace domains of sign-in
-- (core.organization_domains), which decide who may join: an internal helpdesk receives
-- its colleagues' requests from its own Workspace domain, and those stay inbound.

CREATE FUNCTION api.mail_domains_json() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('domains', coalesce(jsonb_agg(d.domain ORDER BY d.domain), '[]'))
    FROM core.organization_mail_domains d
$$;
COMMENT ON FUNCTION api.mail_domains_json() IS
    'GET /organization/mail-domains: {domains} of the current organisation, by name '
    '(row-level security does the scoping).';

CREATE FUNCTION api.mail_domains_replace(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_before jsonb := api.mail_domains_json();
    v_domains text[];
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['domains'], 'the mail domains');
    IF jsonb_typeof(p_body->'domains') IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_body->'domains') > logic.input_limit('mail_domains')
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(p_body->'domains') e
                  WHERE jsonb_typeof(e) <> 'string'
                     OR NOT logic.is_domain_name(lower(btrim(e #>> '{}')))) THEN
        PERFORM logic.fail(422, 'invalid_domains', format(
            'domains must be a list of at most %s domain names like acme.example',
            logic.input_limit('mail_domains')));
    END IF;
    SELECT coalesce(array_agg(DISTINCT lower(btrim(e))), '{}') INTO v_domains
    FROM jsonb_array_elements_text(p_body->'domains') e;
    DELETE FROM core.organization_mail_domains d
    WHERE d.organization_id = core.current_org_id() AND d.domain <> ALL (v_domains);
    INSERT INTO core.organization_mail_domains (organization_id, domain)
    SELECT core.current_org_id(), d FROM unnest(v_domains) d
    ON CONFLICT DO NOTHING;
    PERFORM logic.audit(core.current_org_id(), 'organization.mail_domains_changed',
                        'organization', core.current_org_id()::text,
                        jsonb_build_object('from', v_before->'domains',
                                           'to', api.mail_domains_json()->'domains'));
    RETURN api.mail_domains_json();
END
$$;
COMMENT ON FUNCTION api.mail_domains_replace(jsonb) IS
    'PUT /organization/mail-domains {domains}: the organisation''s own mail domains become '
    'exactly these (trimmed, lower case, each once; at most the mail_domains input limit; '
    '422 invalid_domains otherwise). Audited as organization.mail_domains_changed.';
