-- Tickets: saved list views, per user and organisation. Invoker functions under row-level
-- security (the organisation); each user sees and deletes only their own views.

CREATE FUNCTION api.ticket_saved_view_json(v core.ticket_saved_views) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', v.id, 'name', v.name, 'filters', v.filters,
                              'is_default', false, 'created_at', v.created_at,
                              'updated_at', v.updated_at)
$$;
COMMENT ON FUNCTION api.ticket_saved_view_json(core.ticket_saved_views) IS
    'The API shape of a saved view: id, name, filters {q, status, assignee_user_id, '
    'assignee_queue_id, limit} (absent ones left out), is_default (always false), timestamps.';

CREATE FUNCTION api.ticket_saved_view_list() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(api.ticket_saved_view_json(v) ORDER BY v.created_at, v.id), '[]')
    FROM core.ticket_saved_views v
    WHERE v.user_id = core.current_user_id()
$$;
COMMENT ON FUNCTION api.ticket_saved_view_list() IS
    'GET /tickets/saved-views: the current user''s saved views in this organisation, oldest '
    'first, a bare array.';

CREATE FUNCTION api.ticket_saved_view_create(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    v_filters jsonb;
    v_view core.ticket_saved_views;
BEGIN
    PERFORM logic.reject_unknown_fields(p_body, ARRAY['name', 'filters'], 'the saved view');
    v_name := logic.require_text(logic.json_text_field(p_body, 'name'), 'name',
                                 logic.input_limit('saved_view_name'));
    v_filters := logic.ticket_list_filters(p_body->'filters');
    INSERT INTO core.ticket_saved_views (organization_id, user_id, name, filters)
    VALUES (core.current_org_id(), core.current_user_id(), v_name, v_filters)
    ON CONFLICT (organization_id, user_id, lower(name)) DO NOTHING
    RETURNING * INTO v_view;
    IF NOT FOUND THEN
        PERFORM logic.fail(409, 'saved_view_exists',
                           format('You already have a saved view named "%s".', v_name));
    END IF;
    RETURN api.ticket_saved_view_json(v_view);
END
$$;
COMMENT ON FUNCTION api.ticket_saved_view_create(jsonb) IS
    'POST /tickets/saved-views {name, filters?}: a saved view of the current user; filters '
    'validated as GET /tickets''s (logic.ticket_list_filters); 422 unknown_field, '
    'invalid_name, invalid_<filter>; 409 saved_view_exists (case-insensitive name).';

CREATE FUNCTION api.ticket_saved_view_delete(p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_view core.ticket_saved_views;
BEGIN
    DELETE FROM core.ticket_saved_views
    WHERE id = p_id AND user_id = core.current_user_id()
    RETURNING * INTO v_view;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'saved_view_not_found', 'You have no saved view with that id.');
    END IF;
    RETURN api.ticket_saved_view_json(v_view);
END
$$;
COMMENT ON FUNCTION api.ticket_saved_view_delete(uuid) IS
    'DELETE /tickets/saved-views/{id}: remove one of the current user''s saved views; 404 '
    'saved_view_not_found otherwise (another user''s view included).';
