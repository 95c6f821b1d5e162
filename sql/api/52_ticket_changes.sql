-- Tickets: changes by agents (PATCH, notes). Invoker functions under row-level security.

-- Changes ----------------------------------------------------------------------------------

CREATE FUNCTION api.ticket_for_change(p_ticket_id bigint) RETURNS core.tickets
    LANGUAGE plpgsql AS $$
DECLARE
    v_ticket core.tickets;
BEGIN
    SELECT * INTO v_ticket FROM core.tickets WHERE id = p_ticket_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM logic.fail(404, 'ticket_not_found', 'No ticket with that id in this organization.');
    END IF;
    IF v_ticket.merged_into_ticket_id IS NOT NULL THEN
        PERFORM logic.fail(409, 'ticket_merged', format(
            'This ticket was merged into ticket %s; change that one.',
            v_ticket.merged_into_ticket_id));
    END IF;
    RETURN v_ticket;
END
$$;
COMMENT ON FUNCTION api.ticket_for_change(bigint) IS
    'The ticket locked FOR UPDATE; 404 ticket_not_found, 409 ticket_merged (changes go to the '
    'surviving ticket).';

CREATE FUNCTION api.ticket_update(p_ticket_id bigint, p_changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_field text;
    v_before core.tickets;
    v_after core.tickets;
    v_user uuid;
    v_queue uuid;
    v_old jsonb := '{}';
    v_new jsonb := '{}';
BEGIN
    IF p_changes IS NULL OR jsonb_typeof(p_changes) <> 'object' OR p_changes = '{}' THEN
        PERFORM logic.fail(422, 'no_changes',
            'Send at least one of status, priority, assignee_user_id, assignee_queue_id.');
    END IF;
    FOR v_field IN SELECT jsonb_object_keys(p_changes) LOOP
        IF v_field NOT IN ('status', 'priority', 'assignee_user_id', 'assignee_queue_id') THEN
            PERFORM logic.fail(422, 'unknown_field', format(
                '%s cannot be changed; allowed: status, priority, assignee_user_id, '
                'assignee_queue_id.', v_field));
        END IF;
    END LOOP;

    v_before := api.ticket_for_change(p_ticket_id);
    v_after := v_before;

    IF p_changes ? 'status' THEN
        IF jsonb_typeof(p_changes->'status') IS DISTINCT FROM 'string'
           OR NOT p_changes->>'status' = ANY (enum_range(NULL::core.ticket_status)::text[]) THEN
            PERFORM logic.fail(422, 'invalid_status', 'status must be one of '
                || array_to_string(enum_range(NULL::core.ticket_status)::text[], ', '));
        END IF;
        v_after.status := (p_changes->>'status')::core.ticket_status;
    END IF;
    IF p_changes ? 'priority' THEN
        IF jsonb_typeof(p_changes->'priority') IS DISTINCT FROM 'string'
           OR NOT p_changes->>'priority' = ANY (enum_range(NULL::core.ticket_priority)::text[]) THEN
            PERFORM logic.fail(422, 'invalid_priority', 'priority must be one of '
                || array_to_string(enum_range(NULL::core.ticket_priority)::text[], ', '));
        END IF;
        v_after.priority := (p_changes->>'priority')::core.ticket_priority;
    END IF;

    -- A ticket has at most one assignee: a user or a queue. Assigning one kind replaces
    -- the other; asking for both at once is refused.
    IF p_changes ? 'assignee_user_id' THEN
        v_user := logic.json_uuid_field(p_changes, 'assignee_user_id');
    END IF;
    IF p_changes ? 'assignee_queue_id' THEN
        v_queue := logic.json_uuid_field(p_changes, 'assignee_queue_id');
    END IF;
    IF v_user IS NOT NULL AND v_queue IS NOT NULL THEN
        PERFORM logic.fail(422, 'conflicting_assignees',
            'Assign a user or a queue, not both.');
    END IF;
    IF p_changes ? 'assignee_user_id' THEN
        IF v_user IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM core.memberships m
            WHERE m.organization_id = core.current_org_id() AND m.user_id = v_user) THEN
            PERFORM logic.fail(422, 'assignee_user_not_found',
                'assignee_user_id is not a member of this organization.');
        END IF;
        v_after.assignee_user_id := v_user;
        IF v_user IS NOT NULL THEN
            v_after.assignee_queue_id := NULL;
        END IF;
    END IF;
    IF p_changes ? 'assignee_queue_id' THEN
        IF v_queue IS NOT NULL AND NOT EXISTS (SELECT 1 FROM core.queues q WHERE q.id = v_queue) THEN
            PERFORM logic.fail(422, 'assignee_queue_not_found',
                'assignee_queue_id is not a queue of this organization.');
        END IF;
        v_after.assignee_queue_id := v_queue;
        IF v_queue IS NOT NULL THEN
            v_after.assignee_user_id := NULL;
        END IF;
    END IF;

    SELECT coalesce(jsonb_object_agg(b.key, b.value), '{}'),
           coalesce(jsonb_object_agg(b.key, a.value), '{}')
    INTO v_old, v_new
    FROM jsonb_each(jsonb_build_object(
             'status', v_before.status, 'priority', v_before.priority,
             'assignee_user_id', v_before.assignee_user_id,
             'assignee_queue_id', v_before.assignee_queue_id)) b
    JOIN jsonb_each(jsonb_build_object(
             'status', v_after.status, 'priority', v_after.priority,
             'assignee_user_id', v_after.assignee_user_id,
             'assignee_queue_id', v_after.assignee_queue_id)) a ON a.key = b.key
    WHERE a.value <> b.value;
    IF v_new = '{}' THEN
        RETURN v_before.list_item::jsonb;  -- nothing changes: no event, no touch
    END IF;

    UPDATE core.tickets
    SET status = v_after.status,
        priority = v_after.priority,
        assignee_user_id = v_after.assignee_user_id,
        assignee_queue_id = v_after.assignee_queue_id,
        human_touched_at = now(),
        updated_at = now(),
        last_activity_at = greatest(last_activity_at, now())
    WHERE id = v_before.id
    RETURNING * INTO v_after;

    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (v_before.organization_id, v_before.id, 'updated', core.current_user_id(),
            jsonb_build_object('before', v_old, 'after', v_new));
    RETURN v_after.list_item::jsonb;
END
$$;
COMMENT ON FUNCTION api.ticket_update(bigint, jsonb) IS
    'PATCH /tickets/{id}: change status, priority, assignee_user_id (a member) or '
    'assignee_queue_id (a queue); null clears an assignee, assigning one kind clears the other. '
    'Writes one `updated` event {before, after} of the changed fields with the actor and '
    'touches human_touched_at, updated_at, last_activity_at; no-op changes write nothing. 422 '
    'no_changes / unknown_field / invalid_<field> / conflicting_assignees / '
    'assignee_user_not_found / assignee_queue_not_found; 404; 409 ticket_merged.';

CREATE FUNCTION api.ticket_add_note(p_ticket_id bigint, p_note jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_body text;
    v_ticket core.tickets;
    v_note core.ticket_notes;
BEGIN
    PERFORM logic.reject_unknown_fields(p_note, ARRAY['body_markdown'], 'a note');
    -- Any whitespace, not only spaces (btrim's default): a note of blank lines is empty.
    v_body := regexp_replace(logic.json_text_field(p_note, 'body_markdown'), '^\s+|\s+$', '',
                             'g');
    IF v_body IS NULL OR v_body = '' THEN
        PERFORM logic.fail(422, 'invalid_body_markdown', 'body_markdown is required');
    END IF;
    PERFORM logic.max_length(v_body, 'body_markdown', 'note_body');
    v_ticket := api.ticket_for_change(p_ticket_id);
    INSERT INTO core.ticket_notes (organization_id, ticket_id, author_user_id, body)
    VALUES (v_ticket.organization_id, v_ticket.id, core.current_user_id(), v_body)
    RETURNING * INTO v_note;
    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (v_ticket.organization_id, v_ticket.id, 'note_added', v_note.author_user_id,
            jsonb_build_object('note_id', v_note.id));
    UPDATE core.tickets
    SET last_activity_at = greatest(last_activity_at, now()), updated_at = now()
    WHERE id = v_ticket.id;
    RETURN api.ticket_note_json(v_note);
END
$$;
COMMENT ON FUNCTION api.ticket_add_note(bigint, jsonb) IS
    'POST /tickets/{id}/notes {body_markdown}: an internal note (trimmed, within the '
    'note_body limit) by the current user, in the api.ticket_note_json shape; writes a '
    '`note_added` event and moves last_activity_at. 422 invalid_body_markdown, 404, 409.';
