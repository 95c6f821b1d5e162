-- Routing administration: an explicit re-route of one ticket (agent).

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
