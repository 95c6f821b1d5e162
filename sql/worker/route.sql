-- ticket_apply_routing: the last pipeline stage. A ticket is routed once, by the first of
-- its occurrences to get here; later occurrences (follow-ups, the product's own outbound
-- copies) only advance their own state, so a reply from an unknown sender never turns an
-- open ticket into spam, and nothing automatic overrides a person.

CREATE FUNCTION worker.route_occurrences(p_occurrence_ids bigint[]) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_tickets bigint[];
    v_locked bigint[];
    v_ids bigint[];
    r record;
    v_routed bigint[] := '{}';
BEGIN
    -- Routing takes its turn with stitching: the ticket counter rows of the organisations
    -- first, in order, as worker.stitch_occurrences does. A stitch locks the tickets of each
    -- of its messages in turn (it cannot know them all up front), a routing batch locks all
    -- of its tickets at once: without this lock the two deadlock on tickets and occurrences
    -- (a merge moves occurrences that are waiting to be routed). Routing a batch is short.
    PERFORM 1 FROM core.ticket_counters c
    WHERE c.organization_id IN (SELECT o0.organization_id FROM core.message_occurrences o0
                                WHERE o0.id = ANY (p_occurrence_ids) AND o0.state = 'stitched')
    ORDER BY c.organization_id
    FOR UPDATE;

    -- Then the tickets, in id order, so concurrent batches touching the same tickets queue up
    -- instead of deadlocking: the tickets of the occurrences still
    -- 'stitched' (anything else was routed by an earlier delivery of this job: idempotent),
    -- then, until nothing moves, the tickets they live in now (a stitch may merge meanwhile).
    SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') INTO v_tickets
    FROM (
        SELECT coalesce(occ.ticket_id,
                        (SELECT tm.ticket_id FROM core.ticket_messages tm
                         WHERE tm.message_id = occ.message_id)) AS x
        FROM core.message_occurrences occ
        WHERE occ.id = ANY (p_occurrence_ids) AND occ.state = 'stitched'
    ) own
    WHERE x IS NOT NULL;
    LOOP
        PERFORM 1 FROM core.tickets t WHERE t.id = ANY (v_tickets) ORDER BY t.id
        FOR NO KEY UPDATE;
        v_locked := v_tickets;
        v_tickets := ARRAY(SELECT DISTINCT y FROM unnest(v_locked) AS x,
                                  LATERAL (VALUES (x), (worker.live_ticket(x))) v(y)
                           WHERE y IS NOT NULL ORDER BY 1);
        EXIT WHEN v_tickets = v_locked;
    END LOOP;

    -- Then the occurrences, in id order; the state is checked again on the locked row.
    v_ids := ARRAY(SELECT occ.id FROM core.message_occurrences occ
                   WHERE occ.id = ANY (p_occurrence_ids) AND occ.state = 'stitched'
                   ORDER BY occ.id
                   FOR UPDATE);

    -- One decision per ticket never routed nor touched by a person, taken with the first
    -- (lowest id) occurrence of the batch whose message is not the product's own.
    FOR r IN
        SELECT DISTINCT ON (t.id) t.id AS ticket_id, o.id AS occurrence_id,
               -- SPEC 2.3: an `unknown` recipient is not allowlisted, whatever was stored.
               CASE WHEN o.recipient_source IS DISTINCT FROM 'unknown'
                    THEN o.original_recipient END AS original_recipient,
               m.from_address, m.direction
        FROM core.message_occurrences o
        JOIN core.messages m ON m.id = o.message_id
        CROSS JOIN LATERAL (
            SELECT worker.live_ticket(coalesce(
                o.ticket_id,
                (SELECT tm.ticket_id FROM core.ticket_messages tm
                 WHERE tm.message_id = o.message_id))) AS id
        ) live
        JOIN core.tickets t ON t.id = live.id
        WHERE o.id = ANY (v_ids)
          AND NOT coalesce(m.minted_by_product, false)
          AND t.routed_at IS NULL AND t.human_touched_at IS NULL
        ORDER BY t.id, o.id
    LOOP
        PERFORM logic.apply_routing(
            r.ticket_id, r.original_recipient, r.from_address, r.direction,
            jsonb_build_object('trigger', 'new_ticket', 'occurrence_id', r.occurrence_id));
        v_routed := v_routed || r.ticket_id;
    END LOOP;

    UPDATE core.message_occurrences
    SET state = 'routed', routed_at = now(), updated_at = now()
    WHERE id = ANY (v_ids);

    RETURN jsonb_build_object('routed', cardinality(v_ids), 'routed_tickets', to_jsonb(v_routed),
                              'tickets_unchanged', cardinality(v_ids) - cardinality(v_routed),
                              'skipped', cardinality(p_occurrence_ids) - cardinality(v_ids));
END
$$;
COMMENT ON FUNCTION worker.route_occurrences(bigint[]) IS
    'ticket_apply_routing: mark every occurrence still ''stitched'' ''routed''; route each of '
    'their (live) tickets never routed nor touched by a person once, with logic.apply_routing '
    'and the first occurrence whose message is not the product''s own. Returns {routed, '
    'routed_tickets, tickets_unchanged, skipped}.';
