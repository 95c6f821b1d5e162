-- Routing (SPEC 2.6): allowlist + rules → a decision. logic.route_decision is the one source
-- of truth: the worker applies it to new tickets, the simulator explains it, a re-route
-- command applies it again. It reads the configuration of p_organization_id explicitly, so
-- it gives the same answer as the owner (worker, no RLS) and as the API role (under RLS).

-- Glob patterns: `*` any run of characters, `?` one character, everything else literal;
-- case-insensitive. Translated to an anchored regular expression after escaping every
-- regular-expression metacharacter, so `.`, `+`, `(`, `[`, `\` ... match only themselves.
-- A run of `*` becomes one `.*`: the same language, and the compiled form (and the cost of
-- matching it) no longer grows with the run, also for patterns stored before the API
-- collapsed runs.
CREATE FUNCTION logic.glob_regex(p_pattern text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '^'
           || replace(replace(regexp_replace(regexp_replace(p_pattern, '\*{2,}', '*', 'g'),
                                             '([.^$*+?()\[\]{}|\\])', '\\\1', 'g'),
                              '\*', '.*'),
                      '\?', '.')
           || '$'
$$;
COMMENT ON FUNCTION logic.glob_regex(text) IS
    'The anchored regular expression glob p_pattern compiles to (runs of * as one .*).';
GRANT EXECUTE ON FUNCTION logic.glob_regex(text) TO ticketing_api;

CREATE FUNCTION logic.glob_match(p_pattern text, p_value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(p_value ~* logic.glob_regex(p_pattern), false)
$$;
COMMENT ON FUNCTION logic.glob_match(text, text) IS
    'Whether p_value matches glob p_pattern (* and ? wildcards, all else literal), '
    'case-insensitively; false when either is NULL.';
GRANT EXECUTE ON FUNCTION logic.glob_match(text, text) TO ticketing_api;

-- A glob pattern as admins may write it: `*` and `?` are the only wildcards; characters
-- other glob dialects treat as special are refused rather than silently taken literally.
-- Runs of `*` mean what one `*` means and are stored as one; the glob_length and
-- glob_wildcards input limits keep every pattern's matching cost small (logic.glob_regex).
CREATE FUNCTION logic.valid_glob(p_value text, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_pattern text := regexp_replace(btrim(p_value), '\*{2,}', '*', 'g');
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    ELSIF v_pattern = '' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must not be empty');
    ELSIF length(v_pattern) > logic.input_limit('glob_length') THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, format(
            '%s must be at most %s characters', p_field, logic.input_limit('glob_length')));
    ELSIF length(v_pattern) - length(translate(v_pattern, '*?', ''))
          > logic.input_limit('glob_wildcards') THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, format(
            '%s must have at most %s wildcards (* and ?)', p_field,
            logic.input_limit('glob_wildcards')));
    ELSIF v_pattern ~ '[[:space:][:cntrl:]]' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must not contain whitespace');
    ELSIF v_pattern ~ '[][{}\\]' THEN
        PERFORM logic.fail(422, 'invalid_' || p_field,
            p_field || ': only * and ? are wildcards; [ ] { } and \ are not allowed');
    END IF;
    RETURN lower(v_pattern);
END
$$;
COMMENT ON FUNCTION logic.valid_glob(text, text) IS
    'A valid glob pattern (trimmed, lower case, runs of * as one; non-empty, within the '
    'glob_length and glob_wildcards input limits, no whitespace, only * and ? as wildcards), '
    'else 422 invalid_<field>.';
GRANT EXECUTE ON FUNCTION logic.valid_glob(text, text) TO ticketing_api;

CREATE FUNCTION logic.valid_direction(p_value text, p_field text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NOT NULL AND p_value NOT IN ('inbound', 'outbound') THEN
        PERFORM logic.fail(422, 'invalid_' || p_field, p_field || ' must be inbound or outbound');
    END IF;
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION logic.valid_direction(text, text) IS
    'p_value when NULL, inbound or outbound, else 422 invalid_<field>.';
GRANT EXECUTE ON FUNCTION logic.valid_direction(text, text) TO ticketing_api;

-- Routing compares addresses in one form: trimmed, lower case, NULL when blank.
CREATE FUNCTION logic.routing_address(p_address text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(lower(btrim(p_address)), '')
$$;
COMMENT ON FUNCTION logic.routing_address(text) IS
    'The form routing matches addresses in: trimmed, lower case, NULL when blank.';
GRANT EXECUTE ON FUNCTION logic.routing_address(text) TO ticketing_api;

-- Each condition a rule sets, with the value it was compared to and the result. Conditions
-- the rule leaves NULL are absent: they match everything.
CREATE FUNCTION logic.rule_condition_checks(
    r core.routing_rules, p_recipient text, p_sender text, p_direction text
) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    SELECT coalesce(jsonb_object_agg(c.name, jsonb_build_object('pattern', c.pattern,
                                                                'value', c.value,
                                                                'matched', c.matched)),
                    '{}')
    FROM (
        SELECT v.name, v.pattern, v.value,
               CASE WHEN v.name = 'direction' THEN v.value IS NOT DISTINCT FROM v.pattern
                    ELSE logic.glob_match(v.pattern, v.value) END AS matched
        FROM (VALUES
            ('recipient_pattern', r.recipient_pattern, p_recipient),
            ('sender_domain_pattern', r.sender_domain_pattern,
             nullif(substring(p_sender FROM '@([^@]*)$'), '')),
            ('sender_email_pattern', r.sender_email_pattern, p_sender),
            ('direction', r.direction, p_direction)
        ) AS v(name, pattern, value)
        WHERE v.pattern IS NOT NULL
    ) c
    );
END
$$;
COMMENT ON FUNCTION logic.rule_condition_checks(core.routing_rules, text, text, text) IS
    'The conditions rule r sets: {name: {pattern, value, matched}} for normalised recipient, '
    'sender and direction ({} when the rule has none, i.e. matches everything).';
GRANT EXECUTE ON FUNCTION logic.rule_condition_checks(core.routing_rules, text, text, text)
    TO ticketing_api;

CREATE FUNCTION logic.route_decision(
    p_organization_id uuid, p_recipient text, p_sender text, p_direction text
) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    WITH input AS (
        SELECT logic.routing_address(p_recipient) AS recipient,
               logic.routing_address(p_sender) AS sender,
               coalesce(p_direction, 'inbound') AS direction
    ),
    allowed AS (
        -- The first enabled pattern that admits the recipient (reported as the evidence).
        SELECT a.id, a.pattern
        FROM core.routing_allowlist a, input i
        WHERE a.organization_id = p_organization_id AND a.enabled
          AND logic.glob_match(a.pattern, i.recipient)
        ORDER BY lower(a.pattern), a.id
        LIMIT 1
    ),
    fired AS (
        SELECT r.*, c.checks
        FROM core.routing_rules r
        CROSS JOIN input i
        CROSS JOIN LATERAL (
            SELECT logic.rule_condition_checks(r, i.recipient, i.sender, i.direction) AS checks
        ) c
        WHERE r.organization_id = p_organization_id AND r.enabled
          -- The allowlist judges what customers send, not what the organisation sends.
          AND (EXISTS (SELECT 1 FROM allowed) OR i.direction = 'outbound')
          AND NOT jsonb_path_exists(c.checks, '$.* ? (@.matched == false)')
        ORDER BY r.priority, r.id
        LIMIT 1
    ),
    actions AS (
        SELECT jsonb_build_object(
                   'assign_queue_id', f.assign_queue_id,
                   -- A user who left the organisation is not assigned (the rule still fires).
                   'assign_user_id', CASE WHEN member.ok THEN f.assign_user_id END,
                   'set_status', f.set_status,
                   'auto_close', f.auto_close,
                   'drop', f.drop_message,
                   'add_tags', to_jsonb(f.add_tags)) AS actions,
               f.assign_user_id IS NOT NULL AND NOT member.ok AS user_gone
        FROM fired f
        CROSS JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM core.memberships m
                           WHERE m.organization_id = p_organization_id
                             AND m.user_id = f.assign_user_id) AS ok
        ) member
    )
    SELECT jsonb_build_object(
        'input', jsonb_build_object(
            'recipient', i.recipient, 'sender', i.sender,
            'sender_domain', nullif(substring(i.sender FROM '@([^@]*)$'), ''),
            'direction', i.direction),
        'allowlisted', a.id IS NOT NULL,
        'allowlist_entry', CASE WHEN a.id IS NOT NULL
                                THEN jsonb_build_object('id', a.id, 'pattern', a.pattern) END,
        'rule', CASE WHEN f.id IS NOT NULL THEN jsonb_build_object(
                    'id', f.id, 'name', f.name, 'version', f.version, 'priority', f.priority) END,
        'matched_conditions', CASE WHEN f.id IS NOT NULL THEN (
                    SELECT coalesce(jsonb_object_agg(key, value - 'matched'), '{}')
                    FROM jsonb_each(f.checks)) END,
        'actions', act.actions,
        'skipped_actions', CASE WHEN act.user_gone THEN '["assign_user_id"]'::jsonb
                                ELSE '[]'::jsonb END,
        'outcome', CASE WHEN a.id IS NULL AND i.direction <> 'outbound' THEN 'auto_spam'
                        WHEN f.id IS NULL THEN 'no_rule'
                        WHEN f.drop_message THEN 'dropped'
                        ELSE 'rule' END,
        -- The status the decision sets; NULL leaves the ticket's status as it is.
        'status', CASE WHEN (a.id IS NULL AND i.direction <> 'outbound') OR f.drop_message
                       THEN 'spam'
                       WHEN f.auto_close THEN 'closed'
                       ELSE f.set_status::text END)
    FROM input i
    LEFT JOIN allowed a ON true
    LEFT JOIN fired f ON true
    LEFT JOIN actions act ON true
    );
END
$$;
COMMENT ON FUNCTION logic.route_decision(uuid, text, text, text) IS
    'THE routing decision for a message of p_organization_id: {input, allowlisted, '
    'allowlist_entry, rule {id, name, version, priority}, matched_conditions, actions, '
    'skipped_actions, outcome (auto_spam|no_rule|rule|dropped), status}. Unknown recipient → '
    'not allowlisted; the allowlist spams only inbound mail (an outbound message, the '
    'organisation writing first, goes to the rules). Used by the worker, the simulator and '
    're-route alike.';
GRANT EXECUTE ON FUNCTION logic.route_decision(uuid, text, text, text) TO ticketing_api;

-- What a decision does to a ticket: pure, so the simulator can show the worker's effect.
-- State shape: {status, assignee_queue_id, assignee_user_id, tags, hidden}.
CREATE FUNCTION logic.routing_effect(p_decision jsonb, p_before jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_decision->>'outcome'
        WHEN 'auto_spam' THEN p_before || jsonb_build_object('status', 'spam')
        WHEN 'no_rule' THEN p_before
        ELSE p_before
             || jsonb_strip_nulls(jsonb_build_object(
                    'status', p_decision->'status',
                    'assignee_queue_id', p_decision->'actions'->'assign_queue_id',
                    'assignee_user_id', p_decision->'actions'->'assign_user_id'))
             || jsonb_build_object(
                    'hidden', coalesce((p_before->>'hidden')::boolean, false)
                              OR coalesce((p_decision->'actions'->>'drop')::boolean, false),
                    -- Union, existing tags first, in order.
                    'tags', (SELECT coalesce(jsonb_agg(t.tag ORDER BY t.pos), '[]')
                             FROM (SELECT tag, min(pos) AS pos
                                   FROM (SELECT tag, pos FROM jsonb_array_elements_text(
                                             coalesce(p_before->'tags', '[]'))
                                             WITH ORDINALITY AS e(tag, pos)
                                         UNION ALL
                                         SELECT tag, pos + 1000000 FROM jsonb_array_elements_text(
                                             coalesce(p_decision->'actions'->'add_tags', '[]'))
                                             WITH ORDINALITY AS e(tag, pos)) all_tags
                                   GROUP BY tag) t))
        END
$$;
COMMENT ON FUNCTION logic.routing_effect(jsonb, jsonb) IS
    'The ticket state {status, assignee_queue_id, assignee_user_id, tags, hidden} after '
    'applying routing decision p_decision to state p_before.';
GRANT EXECUTE ON FUNCTION logic.routing_effect(jsonb, jsonb) TO ticketing_api;

CREATE FUNCTION logic.ticket_routing_state(t core.tickets) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('status', t.status, 'assignee_queue_id', t.assignee_queue_id,
                              'assignee_user_id', t.assignee_user_id, 'tags', to_jsonb(t.tags),
                              'hidden', t.hidden)
$$;
COMMENT ON FUNCTION logic.ticket_routing_state(core.tickets) IS
    'The part of a ticket routing may change: {status, assignee_queue_id, assignee_user_id, '
    'tags, hidden}.';
GRANT EXECUTE ON FUNCTION logic.ticket_routing_state(core.tickets) TO ticketing_api;

-- Decide and apply, recording the decision as a `routed` event (plus `auto_spam` or
-- `dropped`). The caller decides WHETHER to route (once per ticket, never over a human,
-- unless explicitly asked); this function only does it.
CREATE FUNCTION logic.apply_routing(
    p_ticket_id bigint, p_recipient text, p_sender text, p_direction text, p_context jsonb
) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_ticket core.tickets;
    v_decision jsonb;
    v_before jsonb;
    v_after jsonb;
BEGIN
    SELECT * INTO STRICT v_ticket FROM core.tickets WHERE id = p_ticket_id FOR NO KEY UPDATE;
    v_decision := logic.route_decision(v_ticket.organization_id, p_recipient, p_sender, p_direction);
    v_before := logic.ticket_routing_state(v_ticket);
    v_after := logic.routing_effect(v_decision, v_before);

    UPDATE core.tickets
    SET status = (v_after->>'status')::core.ticket_status,
        assignee_queue_id = (v_after->>'assignee_queue_id')::uuid,
        assignee_user_id = (v_after->>'assignee_user_id')::uuid,
        tags = ARRAY(SELECT jsonb_array_elements_text(v_after->'tags')),
        hidden = (v_after->>'hidden')::boolean,
        routed_at = now(),
        updated_at = CASE WHEN v_after = v_before THEN updated_at ELSE now() END
    WHERE id = p_ticket_id;

    INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
    VALUES (v_ticket.organization_id, p_ticket_id, 'routed', core.current_user_id(),
            coalesce(p_context, '{}')
            || jsonb_build_object('decision', v_decision, 'before', v_before, 'after', v_after));
    IF v_decision->>'outcome' IN ('auto_spam', 'dropped') THEN
        INSERT INTO core.ticket_events (organization_id, ticket_id, type, actor_user_id, data)
        VALUES (v_ticket.organization_id, p_ticket_id, v_decision->>'outcome',
                core.current_user_id(),
                jsonb_build_object('recipient', v_decision->'input'->'recipient',
                                   'rule', v_decision->'rule'));
    END IF;
    RETURN jsonb_build_object('ticket_id', p_ticket_id, 'decision', v_decision,
                              'before', v_before, 'after', v_after);
END
$$;
COMMENT ON FUNCTION logic.apply_routing(bigint, text, text, text, jsonb) IS
    'Route ticket p_ticket_id now: logic.route_decision, applied through logic.routing_effect, '
    'stored as a `routed` event (p_context merged into its data) plus `auto_spam`/`dropped`; '
    'sets routed_at. Returns {ticket_id, decision, before, after}.';
GRANT EXECUTE ON FUNCTION logic.apply_routing(bigint, text, text, text, jsonb) TO ticketing_api;
