-- Routing administration (admin): allowlist and rules CRUD; the simulator (agent); an
-- explicit re-route of one ticket (agent). Invoker functions under row-level security:
-- another organisation's rows are simply not found. Request bodies arrive as the JSON
-- object the client sent and are validated here, field by field, with stable codes.

-- ------------------------------------------------------------------ validation helpers

CREATE FUNCTION api.routing_reject_unknown_fields(p_body jsonb, p_allowed text[], p_where text)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_unknown text;
BEGIN
    SELECT min(k) INTO v_unknown FROM jsonb_object_keys(p_body) k WHERE k <> ALL (p_allowed);
    IF v_unknown IS NOT NULL THEN
        PERFORM logic.fail(422, 'unknown_field',
            format('Unknown field "%s" in %s; allowed: %s.', v_unknown, p_where,
                   array_to_string(p_allowed, ', ')));
    END IF;
END
$$;
COMMENT ON FUNCTION api.routing_reject_unknown_fields(jsonb, text[], text) IS
    '422 unknown_field when p_body has a key outside p_allowed (typos must not pass silently).';

CREATE FUNCTION api.routing_object(p_body jsonb, p_field text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_body->p_field IS NULL OR jsonb_typeof(p_body->p_field) = 'null' THEN
        RETURN '{}';
    ELSIF jsonb_typeof(p_body->p_field) <> 'object' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be an object');
    END IF;
    RETURN p_body->p_field;
END
$$;
COMMENT ON FUNCTION api.routing_object(jsonb, text) IS
    'p_body.p_field as an object ({} when absent or null), else 422 invalid_<field>.';

CREATE FUNCTION api.routing_text(p_body jsonb, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_body->p_field IS NULL OR jsonb_typeof(p_body->p_field) = 'null' THEN
        RETURN NULL;
    ELSIF jsonb_typeof(p_body->p_field) <> 'string' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be a string');
    END IF;
    RETURN p_body->>p_field;
END
$$;
COMMENT ON FUNCTION api.routing_text(jsonb, text) IS
    'p_body.p_field as text (NULL when absent or null), else 422 invalid_<field>.';

CREATE FUNCTION api.routing_boolean(p_body jsonb, p_field text, p_default boolean) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_body->p_field IS NULL OR jsonb_typeof(p_body->p_field) = 'null' THEN
        RETURN p_default;
    ELSIF jsonb_typeof(p_body->p_field) <> 'boolean' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be true or false');
    END IF;
    RETURN (p_body->p_field)::boolean;
END
$$;
COMMENT ON FUNCTION api.routing_boolean(jsonb, text, boolean) IS
    'p_body.p_field as boolean (p_default when absent or null), else 422 invalid_<field>.';

CREATE FUNCTION api.routing_uuid(p_body jsonb, p_field text) RETURNS uuid
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_text text := api.routing_text(p_body, p_field);
BEGIN
    IF v_text IS NULL THEN
        RETURN NULL;
    ELSIF v_text !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be a UUID');
    END IF;
    RETURN v_text::uuid;
END
$$;
COMMENT ON FUNCTION api.routing_uuid(jsonb, text) IS
    'p_body.p_field as uuid (NULL when absent or null), else 422 invalid_<field>.';

-- A glob pattern as admins may write it: `*` and `?` are the only wildcards; characters
-- other glob dialects treat as special are refused rather than silently taken literally.
-- Runs of `*` mean what one `*` means and are stored as one; at most 16 wildcards and 320
-- characters keep every pattern's matching cost small (logic.glob_regex).
CREATE FUNCTION api.routing_pattern(p_value text, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_pattern text := regexp_replace(btrim(p_value), '\*{2,}', '*', 'g');
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    ELSIF v_pattern = '' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must not be empty');
    ELSIF length(v_pattern) > 320 THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
                           p_field || ' must be at most 320 characters');
    ELSIF length(v_pattern) - length(translate(v_pattern, '*?', '')) > 16 THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
                           p_field || ' must have at most 16 wildcards (* and ?)');
    ELSIF v_pattern ~ '[[:space:][:cntrl:]]' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must not contain whitespace');
    ELSIF v_pattern ~ '[][{}\\]' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
            p_field || ': only * and ? are wildcards; [ ] { } and \ are not allowed');
    END IF;
    RETURN lower(v_pattern);
END
$$;
COMMENT ON FUNCTION api.routing_pattern(text, text) IS
    'A valid glob pattern (trimmed, lower case, runs of * as one; non-empty, <= 320 '
    'characters, <= 16 wildcards, no whitespace, only * and ? as wildcards), else 422 '
    'invalid_<field>.';

CREATE FUNCTION api.routing_direction(p_value text, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NOT NULL AND p_value NOT IN ('inbound', 'outbound') THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be inbound or outbound');
    END IF;
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION api.routing_direction(text, text) IS
    'p_value when NULL, inbound or outbound, else 422 invalid_<field>.';

-- --------------------------------------------------------------------------- allowlist

CREATE FUNCTION api.routing_allowlist_json(a core.routing_allowlist) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', a.id, 'pattern', a.pattern, 'enabled', a.enabled,
                              'created_at', a.created_at, 'updated_at', a.updated_at)
$$;
COMMENT ON FUNCTION api.routing_allowlist_json(core.routing_allowlist) IS
    'The API shape of an allowlist entry.';

CREATE FUNCTION api.routing_allowlist_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(api.routing_allowlist_json(a)
                                                          ORDER BY lower(a.pattern), a.id), '[]'))
    FROM core.routing_allowlist a
$$;
COMMENT ON FUNCTION api.routing_allowlist_list() IS
    'GET /tickets/routing/allowlist: the organisation''s allowlist patterns, by pattern.';

-- Validated {pattern, enabled} of an allowlist entry from a (merged) request body.
CREATE FUNCTION api.routing_allowlist_spec(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_pattern text;
BEGIN
    PERFORM api.routing_reject_unknown_fields(p_body, ARRAY['pattern', 'enabled'],
                                              'the allowlist entry');
    v_pattern := api.routing_pattern(api.routing_text(p_body, 'pattern'), 'pattern');
    IF v_pattern IS NULL THEN
        PERFORM logic.fail(422, 'invalid_pattern', 'pattern is required');
    END IF;
    RETURN jsonb_build_object('pattern', v_pattern,
                              'enabled', api.routing_boolean(p_body, 'enabled', true));
END
$$;
COMMENT ON FUNCTION api.routing_allowlist_spec(jsonb) IS
    'Validate an allowlist body {pattern, enabled}: 422 unknown_field, invalid_pattern, '
    'invalid_enabled; returns the normalised values.';

CREATE FUNCTION api.routing_allowlist_find(p_id uuid) RETURNS core.routing_allowlist
    LANGUAGE plpgsql AS $$
DECLARE
    v_entry core.routing_allowlist;
BEGIN
    SELECT * INTO v_entry FROM core.routing_allowlist WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'allowlist_entry_not_found',
                           'No allowlist entry with that id in this organization.');
    END IF;
    RETURN v_entry;
END
$$;
COMMENT ON FUNCTION api.routing_allowlist_find(uuid) IS
    'The allowlist entry p_id of the current organisation, locked; else 404 '
    'allowlist_entry_not_found.';

CREATE FUNCTION api.routing_allowlist_create(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_spec jsonb := api.routing_allowlist_spec(p_body);
    v_entry core.routing_allowlist;
BEGIN
    INSERT INTO core.routing_allowlist (organization_id, pattern, enabled)
    VALUES (core.current_org_id(), v_spec->>'pattern', (v_spec->>'enabled')::boolean)
    ON CONFLICT (organization_id, lower(pattern)) DO NOTHING
    RETURNING * INTO v_entry;
    IF NOT FOUND THEN
        PERFORM logic.fail(409, 'allowlist_pattern_exists',
            format('The allowlist already has the pattern "%s".', v_spec->>'pattern'));
    END IF;
    PERFORM logic.audit(v_entry.organization_id, 'routing_allowlist.create', 'routing_allowlist',
                        v_entry.id::text, v_spec);
    RETURN api.routing_allowlist_json(v_entry);
END
$$;
COMMENT ON FUNCTION api.routing_allowlist_create(jsonb) IS
    'POST /tickets/routing/allowlist {pattern, enabled?}: 422 on an invalid pattern, 409 '
    'allowlist_pattern_exists on a case-insensitive duplicate.';

CREATE FUNCTION api.routing_allowlist_update(p_id uuid, p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_entry core.routing_allowlist := api.routing_allowlist_find(p_id);
    v_spec jsonb;
BEGIN
    PERFORM api.routing_reject_unknown_fields(p_body, ARRAY['pattern', 'enabled'],
                                              'the allowlist entry');
    v_spec := api.routing_allowlist_spec(
        jsonb_build_object('pattern', v_entry.pattern, 'enabled', v_entry.enabled)
        || jsonb_strip_nulls(p_body));
    BEGIN
        UPDATE core.routing_allowlist
        SET pattern = v_spec->>'pattern', enabled = (v_spec->>'enabled')::boolean,
            updated_at = now()
        WHERE id = p_id
        RETURNING * INTO v_entry;
    EXCEPTION WHEN unique_violation THEN
        PERFORM logic.fail(409, 'allowlist_pattern_exists',
            format('The allowlist already has the pattern "%s".', v_spec->>'pattern'));
    END;
    PERFORM logic.audit(v_entry.organization_id, 'routing_allowlist.update', 'routing_allowlist',
                        v_entry.id::text, jsonb_build_object('changes', p_body, 'now', v_spec));
    RETURN api.routing_allowlist_json(v_entry);
END
$$;
COMMENT ON FUNCTION api.routing_allowlist_update(uuid, jsonb) IS
    'PATCH /tickets/routing/allowlist/{id} {pattern?, enabled?}: 404, 422 or 409 as for '
    'create.';

CREATE FUNCTION api.routing_allowlist_delete(p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_entry core.routing_allowlist := api.routing_allowlist_find(p_id);
BEGIN
    DELETE FROM core.routing_allowlist WHERE id = p_id;
    PERFORM logic.audit(v_entry.organization_id, 'routing_allowlist.delete', 'routing_allowlist',
                        v_entry.id::text, jsonb_build_object('pattern', v_entry.pattern));
    RETURN api.routing_allowlist_json(v_entry);
END
$$;
COMMENT ON FUNCTION api.routing_allowlist_delete(uuid) IS
    'DELETE /tickets/routing/allowlist/{id}: remove the entry (404 if unknown); returns it.';

-- ------------------------------------------------------------------------------- rules

CREATE FUNCTION api.routing_rule_spec_of(r core.routing_rules) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'name', r.name,
        'priority', r.priority,
        'enabled', r.enabled,
        'conditions', jsonb_build_object(
            'recipient_pattern', r.recipient_pattern,
            'sender_domain_pattern', r.sender_domain_pattern,
            'sender_email_pattern', r.sender_email_pattern,
            'direction', r.direction),
        'actions', jsonb_build_object(
            'assign_queue_id', r.assign_queue_id,
            'assign_user_id', r.assign_user_id,
            'set_status', r.set_status,
            'auto_close', r.auto_close,
            'drop', r.drop_message,
            'add_tags', to_jsonb(r.add_tags)))
$$;
COMMENT ON FUNCTION api.routing_rule_spec_of(core.routing_rules) IS
    'A rule as {name, priority, enabled, conditions {...}, actions {...}}: the shape clients '
    'send and receive.';

CREATE FUNCTION api.routing_rule_json(r core.routing_rules) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', r.id, 'version', r.version, 'created_at', r.created_at,
                              'updated_at', r.updated_at)
           || api.routing_rule_spec_of(r)
$$;
COMMENT ON FUNCTION api.routing_rule_json(core.routing_rules) IS 'The API shape of a rule.';

CREATE FUNCTION api.routing_rule_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('items', coalesce(jsonb_agg(api.routing_rule_json(r)
                                                          ORDER BY r.priority, r.id), '[]'))
    FROM core.routing_rules r
$$;
COMMENT ON FUNCTION api.routing_rule_list() IS
    'GET /tickets/routing/rules: the organisation''s rules in evaluation order (priority, id).';

-- Validate a whole rule (a create body, or the stored rule with a PATCH merged in) and
-- return it normalised, in the routing_rule_spec_of shape.
CREATE FUNCTION api.routing_rule_spec(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_conditions jsonb;
    v_actions jsonb;
    v_priority integer := 100;
    v_queue_id uuid;
    v_user_id uuid;
    v_status text;
    v_auto_close boolean;
    v_drop boolean;
    v_tags text[];
BEGIN
    PERFORM api.routing_reject_unknown_fields(
        p_body, ARRAY['name', 'priority', 'enabled', 'conditions', 'actions'], 'the rule');
    v_conditions := api.routing_object(p_body, 'conditions');
    v_actions := api.routing_object(p_body, 'actions');
    PERFORM api.routing_reject_unknown_fields(
        v_conditions,
        ARRAY['recipient_pattern', 'sender_domain_pattern', 'sender_email_pattern', 'direction'],
        'conditions');
    PERFORM api.routing_reject_unknown_fields(
        v_actions,
        ARRAY['assign_queue_id', 'assign_user_id', 'set_status', 'auto_close', 'drop', 'add_tags'],
        'actions');

    IF p_body ? 'priority' AND jsonb_typeof(p_body->'priority') <> 'null' THEN
        IF jsonb_typeof(p_body->'priority') <> 'number'
           OR (p_body->>'priority')::numeric NOT BETWEEN 0 AND 10000
           OR (p_body->>'priority')::numeric <> trunc((p_body->>'priority')::numeric) THEN
            PERFORM logic.fail(422, 'invalid_priority',
                               'priority must be a whole number from 0 to 10000');
        END IF;
        v_priority := (p_body->>'priority')::integer;
    END IF;

    IF api.routing_pattern(api.routing_text(v_conditions, 'sender_domain_pattern'),
                           'sender_domain_pattern') LIKE '%@%' THEN
        PERFORM logic.fail(422, 'invalid_sender_domain_pattern',
                           'sender_domain_pattern matches the domain only: leave out the @');
    END IF;

    v_queue_id := api.routing_uuid(v_actions, 'assign_queue_id');
    v_user_id := api.routing_uuid(v_actions, 'assign_user_id');
    IF v_queue_id IS NOT NULL AND v_user_id IS NOT NULL THEN
        PERFORM logic.fail(422, 'conflicting_assignees',
                           'A rule assigns a queue or a user, not both.');
    END IF;
    IF v_queue_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM core.queues q
        WHERE q.organization_id = core.current_org_id() AND q.id = v_queue_id) THEN
        PERFORM logic.fail(422, 'unknown_queue', 'assign_queue_id names no queue of this organization.');
    END IF;
    IF v_user_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM core.memberships m
        WHERE m.organization_id = core.current_org_id() AND m.user_id = v_user_id) THEN
        PERFORM logic.fail(422, 'unknown_user',
                           'assign_user_id names no member of this organization.');
    END IF;

    v_status := api.routing_text(v_actions, 'set_status');
    IF v_status IS NOT NULL AND NOT v_status = ANY (enum_range(NULL::core.ticket_status)::text[]) THEN
        PERFORM logic.fail(422, 'invalid_set_status',
            'set_status must be one of ' || array_to_string(enum_range(NULL::core.ticket_status), ', '));
    END IF;
    v_auto_close := api.routing_boolean(v_actions, 'auto_close', false);
    v_drop := api.routing_boolean(v_actions, 'drop', false);
    IF (v_status IS NOT NULL)::integer + v_auto_close::integer + v_drop::integer > 1 THEN
        PERFORM logic.fail(422, 'conflicting_status_actions',
                           'Use at most one of set_status, auto_close and drop.');
    END IF;

    IF v_actions ? 'add_tags' AND jsonb_typeof(v_actions->'add_tags') <> 'null' THEN
        IF jsonb_typeof(v_actions->'add_tags') <> 'array'
           OR jsonb_array_length(v_actions->'add_tags') > 20
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_actions->'add_tags') e
                      WHERE jsonb_typeof(e) <> 'string'
                         OR length(btrim(e #>> '{}')) NOT BETWEEN 1 AND 50
                         OR btrim(e #>> '{}') ~ '[[:space:][:cntrl:],]') THEN
            PERFORM logic.fail(422, 'invalid_add_tags',
                'add_tags must be a list of at most 20 tags, each 1 to 50 characters without '
                'spaces or commas');
        END IF;
        -- Tags are compared case-insensitively: stored lower case, each once, in order given.
        SELECT coalesce(array_agg(tag ORDER BY pos), '{}') INTO v_tags
        FROM (SELECT lower(btrim(e)) AS tag, min(pos) AS pos
              FROM jsonb_array_elements_text(v_actions->'add_tags') WITH ORDINALITY AS x(e, pos)
              GROUP BY lower(btrim(e))) t;
    ELSE
        v_tags := '{}';
    END IF;

    IF v_queue_id IS NULL AND v_user_id IS NULL AND v_status IS NULL AND NOT v_auto_close
       AND NOT v_drop AND cardinality(v_tags) = 0 THEN
        PERFORM logic.fail(422, 'rule_has_no_actions',
            'A rule needs at least one action: assign_queue_id, assign_user_id, set_status, '
            'auto_close, drop or add_tags.');
    END IF;

    RETURN jsonb_build_object(
        'name', logic.require_text(api.routing_text(p_body, 'name'), 'name', 200),
        'priority', v_priority,
        'enabled', api.routing_boolean(p_body, 'enabled', true),
        'conditions', jsonb_build_object(
            'recipient_pattern', api.routing_pattern(
                api.routing_text(v_conditions, 'recipient_pattern'), 'recipient_pattern'),
            'sender_domain_pattern', api.routing_pattern(
                api.routing_text(v_conditions, 'sender_domain_pattern'), 'sender_domain_pattern'),
            'sender_email_pattern', api.routing_pattern(
                api.routing_text(v_conditions, 'sender_email_pattern'), 'sender_email_pattern'),
            'direction', api.routing_direction(api.routing_text(v_conditions, 'direction'),
                                               'direction')),
        'actions', jsonb_build_object(
            'assign_queue_id', v_queue_id, 'assign_user_id', v_user_id, 'set_status', v_status,
            'auto_close', v_auto_close, 'drop', v_drop, 'add_tags', to_jsonb(v_tags)));
END
$$;
COMMENT ON FUNCTION api.routing_rule_spec(jsonb) IS
    'Validate a rule {name, priority, enabled, conditions, actions}; 422 with unknown_field, '
    'invalid_<field>, conflicting_assignees, unknown_queue, unknown_user, '
    'conflicting_status_actions, rule_has_no_actions. Returns it normalised.';

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
    c jsonb := p_spec->'conditions';
    a jsonb := p_spec->'actions';
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
        enabled = (p_spec->>'enabled')::boolean,
        recipient_pattern = c->>'recipient_pattern',
        sender_domain_pattern = c->>'sender_domain_pattern',
        sender_email_pattern = c->>'sender_email_pattern',
        direction = c->>'direction',
        assign_queue_id = (a->>'assign_queue_id')::uuid,
        assign_user_id = (a->>'assign_user_id')::uuid,
        set_status = (a->>'set_status')::core.ticket_status,
        auto_close = (a->>'auto_close')::boolean,
        drop_message = (a->>'drop')::boolean,
        add_tags = ARRAY(SELECT jsonb_array_elements_text(a->'add_tags'))
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
    'POST /tickets/routing/rules {name, priority?, enabled?, conditions?, actions}: 422 on '
    'invalid input (see api.routing_rule_spec), 409 rule_name_exists.';

CREATE FUNCTION api.routing_rule_update(p_id uuid, p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_rule core.routing_rules := api.routing_rule_find(p_id);
    v_current jsonb := api.routing_rule_spec_of(v_rule);
    v_spec jsonb;
BEGIN
    PERFORM api.routing_reject_unknown_fields(
        p_body, ARRAY['name', 'priority', 'enabled', 'conditions', 'actions'], 'the rule');
    -- Merge patch: fields sent replace the stored ones; inside conditions and actions too,
    -- where null clears a condition or an action.
    v_spec := api.routing_rule_spec(
        v_current || (p_body - 'conditions' - 'actions')
        || jsonb_build_object(
               'conditions', v_current->'conditions' || api.routing_object(p_body, 'conditions'),
               'actions', v_current->'actions' || api.routing_object(p_body, 'actions')));
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

-- --------------------------------------------------------------------------- simulator

CREATE FUNCTION api.routing_condition_sentence(p_name text, p_check jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT format('%s %s %s "%s"',
                  CASE p_name WHEN 'recipient_pattern' THEN 'recipient'
                              WHEN 'sender_domain_pattern' THEN 'sender domain'
                              WHEN 'sender_email_pattern' THEN 'sender'
                              ELSE 'direction' END,
                  coalesce('"' || (p_check->>'value') || '"', '(unknown)'),
                  CASE WHEN (p_check->>'matched')::boolean
                       THEN CASE p_name WHEN 'direction' THEN 'is' ELSE 'matches' END
                       ELSE CASE p_name WHEN 'direction' THEN 'is not' ELSE 'does not match' END
                  END,
                  p_check->>'pattern')
$$;
COMMENT ON FUNCTION api.routing_condition_sentence(text, jsonb) IS
    'One condition check as words, e.g. ''sender domain "x.com" does not match "*.org"''.';

CREATE FUNCTION api.routing_explanation(p_decision jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_input jsonb := p_decision->'input';
    -- JSON null (no rule fired) as SQL NULL.
    v_rule jsonb := nullif(p_decision->'rule', 'null');
    v_actions jsonb := nullif(p_decision->'actions', 'null');
    v_lines text[] := '{}';
    v_did text[] := '{}';
    r record;
BEGIN
    IF v_input->>'recipient' IS NULL THEN
        v_lines := v_lines || 'The original recipient is unknown, so it cannot be allowlisted.'::text;
    END IF;
    IF NOT (p_decision->>'allowlisted')::boolean THEN
        IF v_input->>'recipient' IS NOT NULL THEN
            v_lines := v_lines || format(
                'The recipient "%s" matches no enabled allowlist pattern.', v_input->>'recipient');
        END IF;
        RETURN to_jsonb(v_lines || 'Not allowlisted: the ticket becomes spam (auto_spam); rules are not evaluated.'::text);
    END IF;
    v_lines := v_lines || format('The recipient "%s" is allowlisted by pattern "%s".',
                                 v_input->>'recipient', p_decision->'allowlist_entry'->>'pattern');

    -- Every enabled rule evaluated before the one that fired (all of them if none did).
    FOR r IN
        SELECT rr.name, rr.priority,
               logic.rule_condition_checks(rr, v_input->>'recipient', v_input->>'sender',
                                           v_input->>'direction') AS checks
        FROM core.routing_rules rr
        WHERE rr.organization_id = core.current_org_id() AND rr.enabled
          AND (v_rule IS NULL OR (rr.priority, rr.id) < ((v_rule->>'priority')::integer,
                                                          (v_rule->>'id')::uuid))
        ORDER BY rr.priority, rr.id
    LOOP
        v_lines := v_lines || format('Rule "%s" (priority %s) does not apply: %s.', r.name,
            r.priority,
            (SELECT string_agg(api.routing_condition_sentence(key, value), '; ' ORDER BY key)
             FROM jsonb_each(r.checks) WHERE NOT (value->>'matched')::boolean));
    END LOOP;

    IF v_rule IS NULL THEN
        RETURN to_jsonb(v_lines || 'No enabled rule matches: the ticket keeps status new, unassigned.'::text);
    END IF;
    v_lines := v_lines || format('Rule "%s" (priority %s, version %s) fires: %s.',
        v_rule->>'name', v_rule->>'priority', v_rule->>'version',
        coalesce((SELECT string_agg(api.routing_condition_sentence(key, value || '{"matched": true}'),
                                    '; ' ORDER BY key)
                  FROM jsonb_each(p_decision->'matched_conditions')),
                 'it has no conditions, so it matches every message'));

    IF (v_actions->>'drop')::boolean THEN
        v_did := v_did || 'drops the message (spam, hidden from default lists)'::text;
    END IF;
    IF v_actions->>'assign_queue_id' IS NOT NULL THEN
        v_did := v_did || format('assigns queue "%s"',
            (SELECT q.name FROM core.queues q WHERE q.id = (v_actions->>'assign_queue_id')::uuid));
    END IF;
    IF v_actions->>'assign_user_id' IS NOT NULL THEN
        v_did := v_did || format('assigns user %s',
            (SELECT u.email FROM core.users u WHERE u.id = (v_actions->>'assign_user_id')::uuid));
    END IF;
    IF p_decision->'skipped_actions' ? 'assign_user_id' THEN
        v_did := v_did || 'cannot assign its user, who is no longer a member'::text;
    END IF;
    IF (v_actions->>'auto_close')::boolean THEN
        v_did := v_did || 'closes the ticket'::text;
    ELSIF v_actions->>'set_status' IS NOT NULL THEN
        v_did := v_did || format('sets status %s', v_actions->>'set_status');
    END IF;
    IF jsonb_array_length(v_actions->'add_tags') > 0 THEN
        v_did := v_did || format('adds tags %s',
            (SELECT string_agg(t, ', ') FROM jsonb_array_elements_text(v_actions->'add_tags') t));
    END IF;
    RETURN to_jsonb(v_lines || format('It %s.', array_to_string(v_did, ', ')));
END
$$;
COMMENT ON FUNCTION api.routing_explanation(jsonb) IS
    'Human sentences explaining a routing decision: allowlist verdict, each earlier rule that '
    'did not apply and why, the rule that fired and what it does.';

CREATE FUNCTION api.routing_simulate(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_recipient text;
    v_sender text;
    v_direction text;
    v_decision jsonb;
    v_new_ticket jsonb := jsonb_build_object('status', 'new', 'assignee_queue_id', NULL,
                                             'assignee_user_id', NULL, 'tags', '[]'::jsonb,
                                             'hidden', false);
BEGIN
    PERFORM api.routing_reject_unknown_fields(p_body, ARRAY['recipient', 'sender', 'direction'],
                                              'the simulation');
    v_recipient := logic.routing_address(api.routing_text(p_body, 'recipient'));
    v_sender := logic.routing_address(api.routing_text(p_body, 'sender'));
    -- Both are required; null stands for an address the mail did not reveal (as routing
    -- meets it), so a forgotten field is an error rather than a silent "unknown".
    IF NOT p_body ? 'recipient' OR NOT p_body ? 'sender' THEN
        PERFORM logic.fail(422, CASE WHEN p_body ? 'recipient' THEN 'invalid_sender'
                                     ELSE 'invalid_recipient' END,
                           'recipient and sender are required (null when unknown)');
    END IF;
    IF v_recipient !~ '^[^@[:space:]]+@[^@[:space:]]+$' OR length(v_recipient) > 320 THEN
        PERFORM logic.fail(422, 'invalid_recipient', 'recipient must be an email address');
    END IF;
    IF v_sender !~ '^[^@[:space:]]+@[^@[:space:]]+$' OR length(v_sender) > 320 THEN
        PERFORM logic.fail(422, 'invalid_sender', 'sender must be an email address');
    END IF;
    v_direction := coalesce(api.routing_direction(api.routing_text(p_body, 'direction'),
                                                  'direction'), 'inbound');
    v_decision := logic.route_decision(core.current_org_id(), v_recipient, v_sender, v_direction);
    RETURN v_decision || jsonb_build_object(
        'explanation', api.routing_explanation(v_decision),
        'new_ticket', jsonb_build_object(
            'before', v_new_ticket,
            'after', logic.routing_effect(v_decision, v_new_ticket)));
END
$$;
COMMENT ON FUNCTION api.routing_simulate(jsonb) IS
    'POST /tickets/routing/simulate {recipient, sender, direction?} (null: unknown address): '
    'the decision of '
    'logic.route_decision (dry run), an explanation, and its effect on a new ticket.';

-- ---------------------------------------------------------------------------- re-route

CREATE FUNCTION api.ticket_reroute(p_ticket_id bigint) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_ticket core.tickets;
    v_input jsonb;
    v_result jsonb;
BEGIN
    SELECT * INTO v_ticket FROM core.tickets WHERE id = p_ticket_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'ticket_not_found', 'No ticket with that id in this organization.');
    END IF;
    -- The same message facts as the first routing (its event), against today's rules;
    -- without one, the ticket's earliest occurrence.
    SELECT e.data->'decision'->'input' INTO v_input
    FROM core.ticket_events e
    WHERE e.ticket_id = p_ticket_id AND e.type = 'routed'
    ORDER BY e.id LIMIT 1;
    IF v_input IS NULL THEN
        SELECT jsonb_build_object('recipient', CASE WHEN o.recipient_source IS DISTINCT FROM
                                                         'unknown' THEN o.original_recipient END,
                                  'sender', m.from_address,
                                  'direction', m.direction) INTO v_input
        FROM core.ticket_messages tm
        JOIN core.messages m ON m.id = tm.message_id
        JOIN core.message_occurrences o ON o.message_id = m.id
        WHERE tm.ticket_id = p_ticket_id
        ORDER BY o.id LIMIT 1;
    END IF;
    v_input := coalesce(v_input, jsonb_build_object('recipient', v_ticket.original_recipient,
                                                    'sender', v_ticket.requester_email,
                                                    'direction', 'inbound'));
    v_result := logic.apply_routing(p_ticket_id, v_input->>'recipient', v_input->>'sender',
                                    v_input->>'direction', '{"trigger": "reroute"}');
    PERFORM logic.audit(v_ticket.organization_id, 'ticket.reroute', 'ticket', p_ticket_id::text,
                        jsonb_build_object('outcome', v_result->'decision'->'outcome'));
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION api.ticket_reroute(bigint) IS
    'POST /tickets/{id}/reroute: route the ticket again, explicitly (even after a person '
    'touched it), with the facts of its first routing; 404 ticket_not_found.';
