-- ticket_apply_routing: the last pipeline stage. A ticket is routed once, by the first of
-- its occurrences to get here; later occurrences (follow-ups, the product's own outbound
-- copies) only advance their own state, so a reply from an unknown sender never turns an
-- open ticket into spam, and nothing automatic overrides a person.

CREATE FUNCTION worker.route_occurrences(p_occurrence_ids bigint[]) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    o record;
    v_ticket core.tickets;
    v_ticket_id bigint;
    v_routed bigint[] := '{}';
    v_unchanged integer := 0;
    v_done integer := 0;
BEGIN
    -- Lock the tickets before the loop, in id order, so concurrent batches touching the same
    -- tickets queue up instead of deadlocking; only occurrences still 'stitched' count:
    -- anything else was routed by an earlier delivery of this job (idempotent).
    PERFORM 1 FROM core.tickets t
    WHERE t.id IN (SELECT coalesce(occ.ticket_id, tm.ticket_id)
                   FROM core.message_occurrences occ
                   LEFT JOIN core.ticket_messages tm ON tm.message_id = occ.message_id
                   WHERE occ.id = ANY(p_occurrence_ids) AND occ.state = 'stitched')
    ORDER BY t.id
    FOR UPDATE OF t;

    FOR o IN
        SELECT occ.id,
               -- SPEC 2.3: an `unknown` recipient is not allowlisted, whatever was stored.
               CASE WHEN occ.recipient_source IS DISTINCT FROM 'unknown'
                    THEN occ.original_recipient END AS original_recipient,
               coalesce(occ.ticket_id, tm.ticket_id) AS ticket_id,
               m.direction, m.from_address, coalesce(m.minted_by_product, false) AS minted_by_product
        FROM core.message_occurrences occ
        LEFT JOIN core.messages m ON m.id = occ.message_id
        LEFT JOIN core.ticket_messages tm ON tm.message_id = occ.message_id
        WHERE occ.id = ANY(p_occurrence_ids) AND occ.state = 'stitched'
        ORDER BY occ.id
        FOR UPDATE OF occ
    LOOP
        -- A ticket merged into another lives on in the survivor.
        v_ticket_id := o.ticket_id;
        LOOP
            SELECT * INTO v_ticket FROM core.tickets WHERE id = v_ticket_id;
            EXIT WHEN NOT FOUND OR v_ticket.merged_into_ticket_id IS NULL
                      OR v_ticket.merged_into_ticket_id = v_ticket.id;
            v_ticket_id := v_ticket.merged_into_ticket_id;
        END LOOP;

        IF v_ticket.id IS NOT NULL AND v_ticket.routed_at IS NULL
           AND v_ticket.human_touched_at IS NULL AND NOT o.minted_by_product THEN
            PERFORM logic.apply_routing(
                v_ticket.id, o.original_recipient, o.from_address, o.direction,
                jsonb_build_object('trigger', 'new_ticket', 'occurrence_id', o.id));
            v_routed := v_routed || v_ticket.id;
        ELSE
            v_unchanged := v_unchanged + 1;
        END IF;

        UPDATE core.message_occurrences
        SET state = 'routed', routed_at = now(), updated_at = now()
        WHERE id = o.id;
        v_done := v_done + 1;
    END LOOP;

    RETURN jsonb_build_object('routed', v_done, 'routed_tickets', to_jsonb(v_routed),
                              'tickets_unchanged', v_unchanged,
                              'skipped', cardinality(p_occurrence_ids) - v_done);
END
$$;
COMMENT ON FUNCTION worker.route_occurrences(bigint[]) IS
    'ticket_apply_routing: for each occurrence still ''stitched'', route its ticket with '
    'logic.apply_routing if the ticket was never routed nor touched by a person and the '
    'message is not the product''s own; mark every such occurrence ''routed''. Returns '
    '{routed, routed_tickets, tickets_unchanged, skipped}.';
