-- Routing administration: the simulator (agent), a dry run of logic.route_decision.

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
    IF v_input->>'direction' = 'outbound' THEN
        v_lines := v_lines || 'The message is outbound (the organisation wrote it): the allowlist does not apply.'::text;
    ELSIF v_input->>'recipient' IS NULL THEN
        v_lines := v_lines || 'The original recipient is unknown, so it cannot be allowlisted.'::text;
    END IF;
    IF v_input->>'direction' = 'outbound' THEN
        NULL;  -- straight to the rules
    ELSIF NOT (p_decision->>'allowlisted')::boolean THEN
        IF v_input->>'recipient' IS NOT NULL THEN
            v_lines := v_lines || format(
                'The recipient "%s" matches no enabled allowlist pattern.', v_input->>'recipient');
        END IF;
        RETURN to_jsonb(v_lines || 'Not allowlisted: the ticket becomes spam (auto_spam); rules are not evaluated.'::text);
    ELSE
        v_lines := v_lines || format('The recipient "%s" is allowlisted by pattern "%s".',
                                     v_input->>'recipient', p_decision->'allowlist_entry'->>'pattern');
    END IF;

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
    v_actions jsonb;
    v_explanation jsonb;
    v_new_ticket jsonb := jsonb_build_object('status', 'new', 'assignee_queue_id', NULL,
                                             'assignee_user_id', NULL, 'tags', '[]'::jsonb,
                                             'hidden', false);
BEGIN
    PERFORM logic.reject_unknown_fields(
        p_body, ARRAY['recipient', 'sender_email', 'direction'], 'the simulation');
    v_recipient := logic.routing_address(logic.json_text_field(p_body, 'recipient'));
    v_sender := logic.routing_address(logic.json_text_field(p_body, 'sender_email'));
    -- Both are required; null stands for an address the mail did not reveal (as routing
    -- meets it), so a forgotten field is an error rather than a silent "unknown".
    IF NOT p_body ? 'recipient' OR NOT p_body ? 'sender_email' THEN
        PERFORM logic.fail(422, CASE WHEN p_body ? 'recipient' THEN 'invalid_sender_email'
                                     ELSE 'invalid_recipient' END,
                           'recipient and sender_email are required (null when unknown)');
    END IF;
    IF v_recipient IS NOT NULL AND NOT logic.is_email_address(v_recipient) THEN
        PERFORM logic.fail(422, 'invalid_recipient', 'recipient must be an email address');
    END IF;
    IF v_sender IS NOT NULL AND NOT logic.is_email_address(v_sender) THEN
        PERFORM logic.fail(422, 'invalid_sender_email', 'sender_email must be an email address');
    END IF;
    v_direction := coalesce(logic.valid_direction(logic.json_text_field(p_body, 'direction'),
                                                  'direction'), 'inbound');
    v_decision := logic.route_decision(core.current_org_id(), v_recipient, v_sender, v_direction);
    v_actions := nullif(v_decision->'actions', 'null');
    v_explanation := api.routing_explanation(v_decision);
    RETURN v_decision || jsonb_build_object(
        'would_mark_spam', v_decision->>'outcome' IN ('auto_spam', 'dropped')
                           OR coalesce(v_actions->>'set_status' = 'spam', false),
        'matched_rule', CASE WHEN jsonb_typeof(v_decision->'rule') = 'object' THEN
            jsonb_build_object('id', v_decision->'rule'->'id', 'name', v_decision->'rule'->'name',
                               'priority', v_decision->'rule'->'priority') END,
        'applied_actions', jsonb_build_object(
            'assign_queue_id', v_actions->'assign_queue_id',
            'assign_user_id', CASE WHEN NOT v_decision->'skipped_actions' ? 'assign_user_id'
                                   THEN v_actions->'assign_user_id' END,
            'set_status', v_actions->'set_status',
            'drop', coalesce((v_actions->>'drop')::boolean, false),
            'auto_close', coalesce((v_actions->>'auto_close')::boolean, false),
            'add_tags', coalesce(v_actions->'add_tags', '[]')),
        'explanation', (SELECT string_agg(line, ' ' ORDER BY n)
                        FROM jsonb_array_elements_text(v_explanation) WITH ORDINALITY AS x(line, n)),
        'explanation_steps', v_explanation,
        'new_ticket', jsonb_build_object(
            'before', v_new_ticket,
            'after', logic.routing_effect(v_decision, v_new_ticket)));
END
$$;
COMMENT ON FUNCTION api.routing_simulate(jsonb) IS
    'POST /tickets/routing/simulate {recipient, sender_email, direction?} (null: unknown '
    'address): the decision of logic.route_decision (dry run) with the web client''s '
    'allowlisted, would_mark_spam, matched_rule {id, name, priority}, applied_actions and '
    'explanation (one text; the sentences as explanation_steps), and its effect on a new '
    'ticket.';
