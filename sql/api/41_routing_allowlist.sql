-- Routing administration: the allowlist (admin).
-- Input readers and rules: logic/06_input.sql, logic/50_routing.sql.

-- --------------------------------------------------------------------------- allowlist

CREATE FUNCTION api.routing_allowlist_json(a core.routing_allowlist) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', a.id, 'pattern', a.pattern, 'is_enabled', a.enabled,
                              'created_at', a.created_at, 'updated_at', a.updated_at)
$$;
COMMENT ON FUNCTION api.routing_allowlist_json(core.routing_allowlist) IS
    'The API shape of an allowlist entry.';

CREATE FUNCTION api.routing_allowlist_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(api.routing_allowlist_json(a) ORDER BY lower(a.pattern), a.id),
                    '[]')
    FROM core.routing_allowlist a
$$;
COMMENT ON FUNCTION api.routing_allowlist_list() IS
    'GET /tickets/routing/allowlist: the organisation''s allowlist patterns by pattern, a '
    'bare array.';

-- Validated {pattern, enabled} of an allowlist entry from a (merged) request body.
CREATE FUNCTION api.routing_allowlist_spec(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_pattern text;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['pattern', 'is_enabled'],
                                              'the allowlist entry');
    v_pattern := logic.valid_glob(logic.json_text_field(p_body, 'pattern'), 'pattern');
    IF v_pattern IS NULL THEN
        PERFORM logic.fail(422, 'invalid_pattern', 'pattern is required');
    END IF;
    RETURN jsonb_build_object('pattern', v_pattern,
                              'is_enabled', logic.json_boolean_field(p_body, 'is_enabled', true));
END
$$;
COMMENT ON FUNCTION api.routing_allowlist_spec(jsonb) IS
    'Validate an allowlist body {pattern, is_enabled}: 422 unknown_field, invalid_pattern, '
    'invalid_is_enabled; returns the normalised values.';

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
    VALUES (core.current_org_id(), v_spec->>'pattern', (v_spec->>'is_enabled')::boolean)
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
    'POST /tickets/routing/allowlist {pattern, is_enabled?}: 422 on an invalid pattern, 409 '
    'allowlist_pattern_exists on a case-insensitive duplicate.';

CREATE FUNCTION api.routing_allowlist_update(p_id uuid, p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_entry core.routing_allowlist := api.routing_allowlist_find(p_id);
    v_spec jsonb;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['pattern', 'is_enabled'],
                                              'the allowlist entry');
    v_spec := api.routing_allowlist_spec(
        jsonb_build_object('pattern', v_entry.pattern, 'is_enabled', v_entry.enabled)
        || jsonb_strip_nulls(p_body));
    BEGIN
        UPDATE core.routing_allowlist
        SET pattern = v_spec->>'pattern', enabled = (v_spec->>'is_enabled')::boolean,
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
    'PATCH /tickets/routing/allowlist/{id} {pattern?, is_enabled?}: 404, 422 or 409 as for '
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
