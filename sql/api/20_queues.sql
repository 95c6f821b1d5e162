CREATE FUNCTION api.queue_json(q core.queues) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', q.id, 'name', q.name, 'description', q.description,
                              'created_at', q.created_at)
$$;
COMMENT ON FUNCTION api.queue_json(core.queues) IS 'The API shape of a queue.';

CREATE FUNCTION api.queue_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(api.queue_json(q) ORDER BY lower(q.name)), '[]')
    FROM core.queues q
$$;
COMMENT ON FUNCTION api.queue_list() IS
    'GET /queues: the organisation''s queues by name, a bare array (row-level security does '
    'the scoping).';

CREATE FUNCTION api.queue_create(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    v_description text;
    v_queue core.queues;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['name', 'description'], 'a queue');
    v_name := logic.require_text(logic.json_text_field(p_body, 'name'), 'name',
                                 logic.input_limit('queue_name'));
    v_description := logic.max_length(logic.json_text_field(p_body, 'description'),
                                      'description', 'queue_description');
    INSERT INTO core.queues (organization_id, name, description, created_by)
    VALUES (core.current_org_id(), v_name, coalesce(v_description, ''), core.current_user_id())
    ON CONFLICT (organization_id, lower(name)) DO NOTHING
    RETURNING * INTO v_queue;
    IF NOT FOUND THEN
        PERFORM logic.fail(409, 'queue_exists', format('A queue named "%s" already exists.', v_name));
    END IF;
    PERFORM logic.audit(v_queue.organization_id, 'queue.create', 'queue', v_queue.id::text,
                        jsonb_build_object('name', v_queue.name));
    RETURN api.queue_json(v_queue);
END
$$;
COMMENT ON FUNCTION api.queue_create(jsonb) IS
    'POST /queues {name, description?}: create a queue in the current organisation; 409 queue_exists on a '
    'case-insensitive name clash.';
