-- Routing administration: the rules (admin).
-- Input readers and rules: logic/06_input.sql, logic/50_routing.sql.

-- ------------------------------------------------------------------------------- rules

CREATE FUNCTION api.routing_rule_spec_of(r core.routing_rules) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'name', r.name,
        'priority', r.priority,
        'is_enabled', r.enabled,
        'match_recipient_pattern', r.recipient_pattern,
        'match_sender_domain_pattern', r.sender_domain_pattern,
        'match_sender_email_pattern', r.sender_email_pattern,
        'match_direction', r.direction,
        'action_assign_queue_id', r.assign_queue_id,
        'action_assign_user_id', r.assign_user_id,
        'action_set_status', r.set_status,
        'action_drop', r.drop_message,
        'action_auto_close', r.auto_close,
        'action_add_tags', to_jsonb(r.add_tags))
$$;
COMMENT ON FUNCTION api.routing_rule_spec_of(core.routing_rules) IS
    'A rule as the flat fields clients send and receive: name, priority, is_enabled, '
    'match_* conditions and action_* actions (action_add_tags beyond the web client''s).';

CREATE FUNCTION api.routing_rule_json(r core.routing_rules) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', r.id, 'version', r.version, 'created_at', r.created_at,
                              'updated_at', r.updated_at)
           || api.routing_rule_spec_of(r)
$$;
COMMENT ON FUNCTION api.routing_rule_json(core.routing_rules) IS 'The API shape of a rule.';

CREATE FUNCTION api.routing_rule_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(api.routing_rule_json(r) ORDER BY r.priority, r.id), '[]')
    FROM core.routing_rules r
$$;
COMMENT ON FUNCTION api.routing_rule_list() IS
    'GET /tickets/routing/rules: the organisation''s rules in evaluation order (priority, id), '
    'a bare array.';

-- Validate a whole rule (a create body, or the stored rule with a PATCH merged in) and
-- return it normalised, in the routing_rule_spec_of shape.
CREATE FUNCTION api.routing_rule_spec(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_priority integer := 100;
    v_queue_id uuid;
    v_user_id uuid;
    v_status text;
    v_auto_close boolean;
    v_drop boolean;
    v_tags text[];
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, api.routing_rule_fields(), 'the rule');

    IF p_body ? 'priority' AND jsonb_typeof(p_body->'priority') <> 'null' THEN
        IF jsonb_typeof(p_body->'priority') <> 'number'
           OR (p_body->>'priority')::numeric NOT BETWEEN 0 AND logic.input_limit('rule_priority')
           OR (p_body->>'priority')::numeric <> trunc((p_body->>'priority')::numeric) THEN
            PERFORM logic.fail(422, 'invalid_priority', format(
                'priority must be a whole number from 0 to %s',
                logic.input_limit('rule_priority')));
        END IF;
        v_priority := (p_body->>'priority')::integer;
    END IF;

    IF logic.valid_glob(logic.json_text_field(p_body, 'match_sender_domain_pattern'),
                           'match_sender_domain_pattern') LIKE '%@%' THEN
        PERFORM logic.fail(422, 'invalid_match_sender_domain_pattern',
                           'match_sender_domain_pattern matches the domain only: leave out the @');
    END IF;

    v_queue_id := logic.json_uuid_field(p_body, 'action_assign_queue_id');
    v_user_id := logic.json_uuid_field(p_body, 'action_assign_user_id');
    IF v_queue_id IS NOT NULL AND v_user_id IS NOT NULL THEN
        PERFORM logic.fail(422, 'conflicting_assignees',
                           'A rule assigns a queue or a user, not both.');
    END IF;
    IF v_queue_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM core.queues q
        WHERE q.organization_id = core.current_org_id() AND q.id = v_queue_id) THEN
        PERFORM logic.fail(422, 'unknown_queue',
                           'action_assign_queue_id names no queue of this organization.');
    END IF;
    IF v_user_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM core.memberships m
        WHERE m.organization_id = core.current_org_id() AND m.user_id = v_user_id) THEN
        PERFORM logic.fail(422, 'unknown_user',
                           'action_assign_user_id names no member of this organization.');
    END IF;

    v_status := logic.json_text_field(p_body, 'action_set_status');
    IF v_status IS NOT NULL AND NOT v_status = ANY (enum_range(NULL::core.ticket_status)::text[]) THEN
        PERFORM logic.fail(422, 'invalid_action_set_status', 'action_set_status must be one of '
            || array_to_string(enum_range(NULL::core.ticket_status), ', '));
    END IF;
    v_auto_close := logic.json_boolean_field(p_body, 'action_auto_close', false);
    v_drop := logic.json_boolean_field(p_body, 'action_drop', false);
    IF (v_status IS NOT NULL)::integer + v_auto_close::integer + v_drop::integer > 1 THEN
        PERFORM logic.fail(422, 'conflicting_status_actions',
            'Use at most one of action_set_status, action_auto_close and action_drop.');
    END IF;

    IF p_body ? 'action_add_tags' AND jsonb_typeof(p_body->'action_add_tags') <> 'null' THEN
        IF jsonb_typeof(p_body->'action_add_tags') <> 'array'
           OR jsonb_array_length(p_body->'action_add_tags') > logic.input_limit('rule_tags')
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(p_body->'action_add_tags') e
                      WHERE jsonb_typeof(e) <> 'string'
                         OR length(btrim(e #>> '{}'))
                            NOT BETWEEN 1 AND logic.input_limit('tag_length')
                         OR btrim(e #>> '{}') ~ '[[:space:][:cntrl:],]') THEN
            PERFORM logic.fail(422, 'invalid_action_add_tags', format(
                'action_add_tags must be a list of at most %s tags, each 1 to %s characters '
                'without spaces or commas', logic.input_limit('rule_tags'),
                logic.input_limit('tag_length')));
        END IF;
        -- Tags are compared case-insensitively: stored lower case, each once, in order given.
        SELECT coalesce(array_agg(tag ORDER BY pos), '{}') INTO v_tags
        FROM (SELECT lower(btrim(e)) AS tag, min(pos) AS pos
              FROM jsonb_array_elements_text(p_body->'action_add_tags')
                   WITH ORDINALITY AS x(e, pos)
              GROUP BY lower(btrim(e))) t;
    ELSE
        v_tags := '{}';
    END IF;

    IF v_queue_id IS NULL AND v_user_id IS NULL AND v_status IS NULL AND NOT v_auto_close
       AND NOT v_drop AND cardinality(v_tags) = 0 THEN
        PERFORM logic.fail(422, 'rule_has_no_actions',
            'A rule needs at least one action: action_assign_queue_id, action_assign_user_id, '
            'action_set_status, action_auto_close, action_drop or action_add_tags.');
    END IF;

    RETURN jsonb_build_object(
        'name', logic.require_text(logic.json_text_field(p_body, 'name'), 'name',
                                   logic.input_limit('rule_name')),
        'priority', v_priority,
        'is_enabled', logic.json_boolean_field(p_body, 'is_enabled', true),
        'match_recipient_pattern', logic.valid_glob(
            logic.json_text_field(p_body, 'match_recipient_pattern'), 'match_recipient_pattern'),
        'match_sender_domain_pattern', logic.valid_glob(
            logic.json_text_field(p_body, 'match_sender_domain_pattern'),
            'match_sender_domain_pattern'),
        'match_sender_email_pattern', logic.valid_glob(
            logic.json_text_field(p_body, 'match_sender_email_pattern'), 'match_sender_email_pattern'),
        'match_direction', logic.valid_direction(logic.json_text_field(p_body, 'match_direction'),
                                                 'match_direction'),
        'action_assign_queue_id', v_queue_id,
        'action_assign_user_id', v_user_id,
        'action_set_status', v_status,
        'action_drop', v_drop,
        'action_auto_close', v_auto_close,
        'action_add_tags', to_jsonb(v_tags));
END
$$;
COMMENT ON FUNCTION api.routing_rule_spec(jsonb) IS
    'Validate a flat rule {name, priority, is_enabled, match_*, action_*}; 422 with '
    'unknown_field, invalid_<field>, conflicting_assignees, unknown_queue, unknown_user, '
    'conflicting_status_actions, rule_has_no_actions. Returns it normalised.';

CREATE FUNCTION api.routing_rule_fields() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['name', 'priority', 'is_enabled', 'match_recipient_pattern',
                 'match_sender_domain_pattern', 'match_sender_email_pattern', 'match_direction',
                 'action_assign_queue_id', 'action_assign_user_id', 'action_set_status',
                 'action_drop', 'action_auto_close', 'action_add_tags']
$$;
COMMENT ON FUNCTION api.routing_rule_fields() IS
    'The fields of a rule body (create and update): any other is 422 unknown_field.';

CREATE FUNCTION api.routing_rule_find(p_id uuid) RETURNS core.routing_rules
    LANGUAGE plpgsql AS $$
DECLARE
    v_rule core.routing_rules;
BEGIN
    SELECT * INTO v_rule FROM core.routing_rules WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'rule_not_found', 'No routing rule with that id in this organization.');
    END IF;
    RETURN v_rule;
END
$$;
COMMENT ON FUNCTION api.routing_rule_find(uuid) IS
    'The rule p_id of the current organisation, locked; else 404 rule_not_found.';

-- Write a validated spec into rule p_id (NULL: a new rule). The one place that maps the
-- spec onto columns, so create and update cannot drift apart.
CREATE FUNCTION api.routing_rule_save(p_id uuid, p_spec jsonb) RETURNS core.routing_rules
    LANGUAGE plpgsql AS $$
DECLARE
    v_rule core.routing_rules;
BEGIN
    IF p_id IS NULL THEN
        INSERT INTO core.routing_rules (organization_id, name)
        VALUES (core.current_org_id(), p_spec->>'name')
        RETURNING id INTO p_id;
    END IF;
    UPDATE core.routing_rules
    SET name = p_spec->>'name',
        priority = (p_spec->>'priority')::integer,
        enabled = (p_spec->>'is_enabled')::boolean,
        recipient_pattern = p_spec->>'match_recipient_pattern',
        sender_domain_pattern = p_spec->>'match_sender_domain_pattern',
        sender_email_pattern = p_spec->>'match_sender_email_pattern',
        direction = p_spec->>'match_direction',
        assign_queue_id = (p_spec->>'action_assign_queue_id')::uuid,
        assign_user_id = (p_spec->>'action_assign_user_id')::uuid,
        set_status = (p_spec->>'action_set_status')::core.ticket_status,
        auto_close = (p_spec->>'action_auto_close')::boolean,
        drop_message = (p_spec->>'action_drop')::boolean,
        add_tags = ARRAY(SELECT jsonb_array_elements_text(p_spec->'action_add_tags'))
    WHERE id = p_id
    RETURNING * INTO v_rule;
    RETURN v_rule;
EXCEPTION WHEN unique_violation THEN
    PERFORM logic.fail(409, 'rule_name_exists',
                       format('A routing rule named "%s" already exists.', p_spec->>'name'));
END
$$;
COMMENT ON FUNCTION api.routing_rule_save(uuid, jsonb) IS
    'Store validated spec p_spec as rule p_id (a new rule when NULL); 409 rule_name_exists on '
    'a case-insensitive name clash.';

CREATE FUNCTION api.routing_rule_create(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_spec jsonb := api.routing_rule_spec(p_body);
    v_rule core.routing_rules := api.routing_rule_save(NULL, v_spec);
BEGIN
    PERFORM logic.audit(v_rule.organization_id, 'routing_rule.create', 'routing_rule',
                        v_rule.id::text, v_spec);
    RETURN api.routing_rule_json(v_rule);
END
$$;
COMMENT ON FUNCTION api.routing_rule_create(jsonb) IS
    'POST /tickets/routing/rules {name, priority?, is_enabled?, match_*?, action_*}: 422 on '
    'invalid input (see api.routing_rule_spec), 409 rule_name_exists.';

CREATE FUNCTION api.routing_rule_update(p_id uuid, p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_rule core.routing_rules := api.routing_rule_find(p_id);
    v_current jsonb := api.routing_rule_spec_of(v_rule);
    v_spec jsonb;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, api.routing_rule_fields(), 'the rule');
    -- Merge patch: fields sent replace the stored ones; null clears a condition or an
    -- assignment, and leaves the name, priority, is_enabled and the flags as they are.
    v_spec := api.routing_rule_spec(
        v_current || p_body
        || jsonb_strip_nulls(jsonb_build_object(
               'name', v_current->'name', 'priority', v_current->'priority',
               'is_enabled', v_current->'is_enabled', 'action_drop', v_current->'action_drop',
               'action_auto_close', v_current->'action_auto_close')
           - ARRAY(SELECT k FROM jsonb_each(p_body) AS e(k, v) WHERE jsonb_typeof(v) <> 'null')));
    IF v_spec = v_current THEN
        RETURN api.routing_rule_json(v_rule);  -- nothing changed: no new version
    END IF;
    v_rule := api.routing_rule_save(p_id, v_spec);
    -- Every change is a new version: routing events name the version that decided.
    UPDATE core.routing_rules SET version = version + 1, updated_at = now()
    WHERE id = p_id
    RETURNING * INTO v_rule;
    PERFORM logic.audit(v_rule.organization_id, 'routing_rule.update', 'routing_rule',
                        v_rule.id::text,
                        jsonb_build_object('changes', p_body, 'version', v_rule.version));
    RETURN api.routing_rule_json(v_rule);
END
$$;
COMMENT ON FUNCTION api.routing_rule_update(uuid, jsonb) IS
    'PATCH /tickets/routing/rules/{id}: merge the body into the rule, validate the result as '
    'on create, bump version when anything changed; 404 rule_not_found, 422, 409 '
    'rule_name_exists.';

CREATE FUNCTION api.routing_rule_delete(p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_rule core.routing_rules := api.routing_rule_find(p_id);
BEGIN
    DELETE FROM core.routing_rules WHERE id = p_id;
    PERFORM logic.audit(v_rule.organization_id, 'routing_rule.delete', 'routing_rule',
                        v_rule.id::text,
                        jsonb_build_object('name', v_rule.name, 'version', v_rule.version));
    RETURN api.routing_rule_json(v_rule);
END
$$;
COMMENT ON FUNCTION api.routing_rule_delete(uuid) IS
    'DELETE /tickets/routing/rules/{id}: remove the rule (404 if unknown); returns it.';
