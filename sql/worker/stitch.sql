-- occurrence_stitch (SPEC 2.5): link each parsed message to a ticket, with the reason.
--
-- Cascade, first hit wins: already linked → signed product marker → In-Reply-To, then
-- References newest first, naming a message the product has seen → any id of the message
-- meeting a ticket's thread ids (order independence) → [T-1234] in the subject from the
-- requester or a participant → a new ticket. When a message's ids meet several tickets the
-- tickets are one thread and are merged into the oldest.

-- References one message may contribute (the parser also keeps only the newest 50 per
-- header): a runaway References header cannot glue unrelated threads together.
CREATE FUNCTION worker.max_thread_refs() RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT 50';
COMMENT ON FUNCTION worker.max_thread_refs() IS
    'How many In-Reply-To/References ids one message may contribute to its thread.';

CREATE FUNCTION worker.message_addresses(p_message core.messages) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN (
    SELECT coalesce(array_agg(DISTINCT lower(a)) FILTER (WHERE a IS NOT NULL AND a <> ''), '{}')
    FROM (
        SELECT p_message.from_address AS a
        UNION ALL
        SELECT e->>'address'
        FROM jsonb_array_elements(coalesce(p_message.reply_to, '[]')
                                  || coalesce(p_message.to_addresses, '[]')
                                  || coalesce(p_message.cc_addresses, '[]')) AS e
        WHERE jsonb_typeof(e) = 'object'
    ) addresses
    );
END
$$;
COMMENT ON FUNCTION worker.message_addresses(core.messages) IS
    'Every e-mail address of a message (from, reply-to, to, cc), lower-cased.';

CREATE FUNCTION worker.message_thread_ids(p_message_id bigint)
    RETURNS TABLE (ref text, kind text, rank integer)
    LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH m AS (
        SELECT msg.*, worker.message_addresses(msg) AS addresses
        FROM core.messages msg WHERE msg.id = p_message_id
    ),
    candidates AS (
        -- The order the cascade tries them: own id, In-Reply-To, References newest first.
        SELECT r.ref, r.kind,
               CASE r.kind WHEN 'self' THEN 0 WHEN 'in_reply_to' THEN 1 ELSE 2 END AS kind_order,
               CASE WHEN r.kind = 'references' THEN -r.position ELSE r.position END AS ord
        FROM core.message_thread_refs r, m
        WHERE r.message_id = p_message_id
          AND (r.kind = 'self'
               OR (strpos(r.ref, '@') > 0
                   -- <user@host> copied from an address header is not a Message-ID, unless
                   -- a message of the organisation really has that id.
                   AND (lower(r.ref) <> ALL (m.addresses)
                        OR EXISTS (SELECT 1 FROM core.messages s
                                   WHERE s.organization_id = m.organization_id
                                     AND s.rfc_message_id = r.ref))))
    ),
    distinct_ids AS (
        SELECT DISTINCT ON (c.ref) c.ref, c.kind, c.kind_order, c.ord
        FROM candidates c
        ORDER BY c.ref, c.kind_order, c.ord
    ),
    ranked AS (
        SELECT d.ref, d.kind, d.kind_order,
               (row_number() OVER (ORDER BY d.kind_order, d.ord) - 1)::integer AS rank,
               (row_number() OVER (PARTITION BY d.kind = 'self' ORDER BY d.kind_order, d.ord))::integer
                   AS n_of_kind
        FROM distinct_ids d
    )
    SELECT ranked.ref, ranked.kind, ranked.rank
    FROM ranked
    WHERE ranked.kind = 'self' OR ranked.n_of_kind <= worker.max_thread_refs()
    ORDER BY ranked.rank;
END
$$;
COMMENT ON FUNCTION worker.message_thread_ids(bigint) IS
    'The ids a message contributes to its thread, in cascade order (rank 0 = its own id when '
    'it has one, then In-Reply-To, then References newest first): no token without @, no '
    'token equal to one of its own addresses unless a message has that Message-ID, at most '
    'worker.max_thread_refs() references.';

CREATE FUNCTION worker.live_ticket(p_ticket_id bigint) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    WITH RECURSIVE chain (id, merged_into, depth) AS (
        SELECT t.id, t.merged_into_ticket_id, 0 FROM core.tickets t WHERE t.id = p_ticket_id
        UNION ALL
        SELECT t.id, t.merged_into_ticket_id, chain.depth + 1
        FROM chain JOIN core.tickets t ON t.id = chain.merged_into
        WHERE chain.depth < 100
    )
    SELECT id FROM chain WHERE merged_into IS NULL ORDER BY depth LIMIT 1
    );
END
$$;
COMMENT ON FUNCTION worker.live_ticket(bigint) IS
    'The ticket a (possibly merged) ticket now lives in: follows merged_into_ticket_id.';

CREATE FUNCTION worker.merge_tickets(p_survivor bigint, p_merged bigint, p_evidence jsonb)
    RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    s core.tickets;
    m core.tickets;
    v_moved integer;
BEGIN
    SELECT * INTO s FROM core.tickets WHERE id = p_survivor;
    SELECT * INTO m FROM core.tickets WHERE id = p_merged;
    IF m.id IS NULL OR s.id IS NULL OR m.id = s.id OR m.merged_into_ticket_id IS NOT NULL THEN
        RETURN;
    END IF;

    -- Messages keep the reason they were linked with; the move is the merge event.
    UPDATE core.ticket_messages SET ticket_id = s.id WHERE ticket_id = m.id;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    UPDATE core.ticket_thread_ids SET ticket_id = s.id WHERE ticket_id = m.id;
    UPDATE core.ticket_notes SET ticket_id = s.id WHERE ticket_id = m.id;
    UPDATE core.ticket_events SET ticket_id = s.id WHERE ticket_id = m.id;
    UPDATE core.message_occurrences SET ticket_id = s.id WHERE ticket_id = m.id;
    -- Tickets merged into the merged one earlier now point at the survivor directly.
    UPDATE core.tickets SET merged_into_ticket_id = s.id WHERE merged_into_ticket_id = m.id;

    UPDATE core.tickets t
    SET last_message_at = CASE WHEN m.last_message_at IS NULL THEN t.last_message_at
                               ELSE greatest(t.last_message_at, m.last_message_at) END,
        last_activity_at = greatest(t.last_activity_at, m.last_activity_at),
        tags = ARRAY(SELECT DISTINCT tag FROM unnest(t.tags || m.tags) AS tag ORDER BY 1),
        search = logic.append_search(t.search, m.search),
        updated_at = now()
    WHERE t.id = s.id;
    UPDATE core.tickets SET merged_into_ticket_id = s.id, updated_at = now() WHERE id = m.id;

    INSERT INTO core.ticket_events (organization_id, ticket_id, type, data)
    VALUES (s.organization_id, s.id, 'merged',
            jsonb_build_object('role', 'survivor', 'merged_ticket_id', m.id,
                               'messages_moved', v_moved, 'evidence', p_evidence)),
           (m.organization_id, m.id, 'merged',
            jsonb_build_object('role', 'merged', 'into_ticket_id', s.id,
                               'messages_moved', v_moved, 'evidence', p_evidence));
END
$$;
COMMENT ON FUNCTION worker.merge_tickets(bigint, bigint, jsonb) IS
    'Merge ticket p_merged into p_survivor: messages (reasons kept), thread ids, notes, events '
    'and occurrences move; the merged ticket points at the survivor; both get a merged event.';

CREATE FUNCTION worker.subject_code_ticket(p_message core.messages) RETURNS bigint
    LANGUAGE sql STABLE AS $$
    SELECT t.id
    FROM regexp_matches(p_message.subject, '\[T-(\d{1,15})\]', 'gi') AS code(parts)
    JOIN core.tickets named ON named.organization_id = p_message.organization_id
                           AND named.number = code.parts[1]::bigint
    JOIN core.tickets t ON t.id = worker.live_ticket(named.id)
    WHERE p_message.from_address IS NOT NULL
      AND (lower(t.requester_email) = lower(p_message.from_address)
           OR EXISTS (SELECT 1 FROM core.ticket_messages tm
                      JOIN core.messages x ON x.id = tm.message_id
                      WHERE tm.ticket_id = t.id
                        AND lower(p_message.from_address) = ANY (worker.message_addresses(x))))
    LIMIT 1
$$;
COMMENT ON FUNCTION worker.subject_code_ticket(core.messages) IS
    'The ticket named by [T-1234] in the subject, only when the sender is its requester or '
    'already on one of its messages (from/reply-to/to/cc); NULL otherwise.';

-- The stitch of one message, in the order stitch_message runs them: the tickets its ids
-- meet, the cascade's match, locking (and merging) the tickets met, then either a new
-- ticket or joining the matched one.

CREATE FUNCTION worker.stitch_met_tickets(m core.messages, p_refs text[]) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    v_met bigint[];
BEGIN
    -- Every live ticket the message's ids meet: its own id or references registered as a
    -- thread id, or a linked message referencing its own id (that covers <id> tokens that
    -- looked like an address until this message, which has that id, arrived).
    -- (Lookups by id go through LATERAL ... LIMIT 1, one index probe per id: the plan must
    -- stay that even on tables that were never analysed, where a join may turn into a scan
    -- of every row of the organisation.)
    SELECT coalesce(array_agg(DISTINCT worker.live_ticket(met.ticket_id)), '{}') INTO v_met
    FROM (
        SELECT ti.ticket_id
        FROM unnest(p_refs) AS ids(ref),
             LATERAL (SELECT t0.ticket_id FROM core.ticket_thread_ids t0
                      WHERE t0.organization_id = m.organization_id AND t0.rfc_message_id = ids.ref
                      LIMIT 1) ti
        UNION ALL
        SELECT tm.ticket_id
        FROM core.message_thread_refs r
        JOIN core.ticket_messages tm ON tm.message_id = r.message_id
        WHERE m.rfc_message_id IS NOT NULL AND r.organization_id = m.organization_id
          AND r.ref = m.rfc_message_id AND r.kind <> 'self' AND r.message_id <> m.id
    ) met;
    RETURN v_met;
END
$$;
COMMENT ON FUNCTION worker.stitch_met_tickets(core.messages, text[]) IS
    'The live tickets a message''s thread ids (p_refs) meet: registered thread ids, and linked '
    'messages that reference the message''s own id.';

CREATE FUNCTION worker.stitch_match(m core.messages, p_refs text[], p_kinds text[],
                                    p_met bigint[], OUT matched_ticket bigint,
                                    OUT reason text, OUT confidence text, OUT evidence jsonb)
    LANGUAGE plpgsql AS $$
DECLARE
    v_hit record;
BEGIN
    evidence := '{}';
    -- 2. A verified product marker naming a ticket of this organisation.
    IF m.marker_ticket_number IS NOT NULL THEN
        SELECT worker.live_ticket(t0.id) INTO matched_ticket
        FROM core.tickets t0
        WHERE t0.organization_id = m.organization_id AND t0.number = m.marker_ticket_number;
        IF matched_ticket IS NOT NULL THEN
            reason := 'signed_marker';
            confidence := 'high';
            evidence := jsonb_build_object('marker_ticket_number', m.marker_ticket_number,
                                           'marker', m.marker_evidence);
        END IF;
    END IF;

    IF reason IS NULL AND cardinality(p_met) > 0 THEN
        -- 3. In-Reply-To, then References newest first, naming a message in a ticket.
        SELECT ids.ref, ids.kind, s.id AS message_id INTO v_hit
        FROM unnest(p_refs, p_kinds) WITH ORDINALITY AS ids(ref, kind, rank),
             LATERAL (SELECT s0.id FROM core.messages s0
                      JOIN core.ticket_messages tm ON tm.message_id = s0.id
                      WHERE s0.organization_id = m.organization_id
                        AND s0.rfc_message_id = ids.ref AND s0.id <> m.id
                      ORDER BY s0.id LIMIT 1) s
        WHERE ids.kind <> 'self'
        ORDER BY ids.rank
        LIMIT 1;
        IF FOUND THEN
            reason := v_hit.kind;
            evidence := jsonb_build_object('matched_id', v_hit.ref, 'header', v_hit.kind,
                                           'matched_message_id', v_hit.message_id);
        ELSE
            -- 4. Thread membership: the ids meet a ticket's thread ids (order independence).
            SELECT ids.ref, ids.kind INTO v_hit
            FROM unnest(p_refs, p_kinds) WITH ORDINALITY AS ids(ref, kind, rank),
                 LATERAL (SELECT 1 FROM core.ticket_thread_ids t0
                          WHERE t0.organization_id = m.organization_id
                            AND t0.rfc_message_id = ids.ref
                          LIMIT 1) ti
            ORDER BY ids.rank
            LIMIT 1;
            reason := 'thread_member';
            evidence := CASE WHEN FOUND
                THEN jsonb_build_object('matched_id', v_hit.ref, 'header', v_hit.kind)
                ELSE jsonb_build_object('referenced_by_ticket_message', m.rfc_message_id) END;
        END IF;
        confidence := 'medium';
        matched_ticket := (SELECT min(x) FROM unnest(p_met) AS x);
    END IF;

    -- 5. [T-1234] in the subject, from the requester or a participant.
    IF reason IS NULL AND m.subject ~* '\[T-\d' THEN
        matched_ticket := worker.subject_code_ticket(m);
        IF matched_ticket IS NOT NULL THEN
            reason := 'subject_code';
            confidence := 'medium';
            evidence := jsonb_build_object('subject', m.subject, 'sender', m.from_address);
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION worker.stitch_match(core.messages, text[], text[], bigint[]) IS
    'Steps 2 to 5 of the cascade for a message not yet linked: signed marker, In-Reply-To / '
    'References, thread membership, subject code. Returns the ticket with reason, confidence '
    'and evidence; reason NULL when nothing matched (a new ticket).';

CREATE FUNCTION worker.stitch_lock_and_merge(p_occurrence core.message_occurrences,
                                             m core.messages, p_ticket bigint, p_met bigint[],
                                             p_reason text, p_evidence jsonb,
                                             OUT ticket bigint, OUT merged integer,
                                             OUT evidence jsonb)
    LANGUAGE plpgsql AS $$
DECLARE
    v_met bigint[];
    v_locked bigint[];
    v_other bigint;
BEGIN
    merged := 0;
    evidence := p_evidence;
    -- Lock the tickets in id order and re-resolve: a concurrent stitch may have merged
    -- one of them meanwhile (it then holds the row until it commits).
    v_met := ARRAY(SELECT DISTINCT x FROM unnest(p_met || p_ticket) AS x ORDER BY x);
    LOOP
        PERFORM 1 FROM core.tickets t1 WHERE t1.id = ANY (v_met) ORDER BY t1.id FOR NO KEY UPDATE;
        v_locked := v_met;
        v_met := ARRAY(SELECT DISTINCT worker.live_ticket(x) FROM unnest(v_locked) AS x
                       ORDER BY 1);
        EXIT WHEN v_met = v_locked;
    END LOOP;
    ticket := worker.live_ticket(p_ticket);
    -- Several tickets met: one thread. The oldest survives.
    IF cardinality(v_met) > 1 THEN
        ticket := v_met[1];
        FOREACH v_other IN ARRAY v_met[2:] LOOP
            PERFORM worker.merge_tickets(ticket, v_other, jsonb_build_object(
                'bridging_message_id', m.id, 'rfc_message_id', m.rfc_message_id,
                'occurrence_id', p_occurrence.id, 'reason', p_reason, 'match', evidence));
            merged := merged + 1;
        END LOOP;
        evidence := evidence || jsonb_build_object('merged_ticket_ids', to_jsonb(v_met[2:]));
    END IF;
END
$$;
COMMENT ON FUNCTION worker.stitch_lock_and_merge(core.message_occurrences, core.messages, bigint,
                                                 bigint[], text, jsonb) IS
    'Lock the matched ticket and every ticket met (id order, re-resolving merges made '
    'meanwhile); when several remain, merge them into the oldest. Returns the surviving '
    'ticket, the number of merges and the evidence (with merged_ticket_ids when any).';

CREATE FUNCTION worker.stitch_new_ticket(p_occurrence core.message_occurrences, m core.messages,
                                         p_inbound boolean, p_time timestamptz, p_body text)
    RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_number bigint;
    v_subject text;
    v_requester_email text;
    v_requester_name text;
    v_ticket bigint;
BEGIN
    -- Written once: its number comes from the organisation's counter, whose row lock the
    -- caller (worker.stitch_occurrences) took before any other lock; its search vector
    -- holds its code, its own fields and this message. It is routed later, by
    -- ticket_apply_routing (worker.route_occurrences).
    UPDATE core.ticket_counters c SET next_number = c.next_number + 1
    WHERE c.organization_id = m.organization_id
    RETURNING c.next_number - 1 INTO v_number;
    IF v_number IS NULL THEN
        RAISE EXCEPTION 'stitching: no ticket counter for organisation %', m.organization_id;
    END IF;
    v_subject := left(coalesce(m.subject, ''), 1000);
    v_requester_email := CASE WHEN p_inbound THEN m.from_address
                              ELSE coalesce(m.to_addresses->0->>'address', m.from_address) END;
    v_requester_name := CASE WHEN p_inbound THEN coalesce(m.from_name, '')
                             ELSE coalesce(m.to_addresses->0->>'name', '') END;
    INSERT INTO core.tickets (organization_id, number, subject, status, priority,
                              requester_email, requester_name, original_recipient, mailbox_id,
                              last_message_at, last_activity_at, created_at,
                              last_message_direction, search)
    VALUES (m.organization_id, v_number, v_subject, 'new', 'normal', v_requester_email,
            v_requester_name, p_occurrence.original_recipient, p_occurrence.mailbox_id,
            CASE WHEN p_inbound THEN p_time END, p_time, now(), m.direction,
            logic.append_search(
                logic.ticket_search_vector('T-' || v_number, v_subject, v_requester_email,
                                            v_requester_name),
                logic.message_search_vector(m, p_body)))
    RETURNING id INTO v_ticket;
    INSERT INTO core.ticket_events (organization_id, ticket_id, type, data)
    VALUES (m.organization_id, v_ticket, 'created',
            jsonb_build_object('code', 'T-' || v_number, 'by', 'stitching'));
    RETURN v_ticket;
END
$$;
COMMENT ON FUNCTION worker.stitch_new_ticket(core.message_occurrences, core.messages, boolean,
                                             timestamptz, text) IS
    'Step 6 of the cascade: a new ticket for message m (next number of the organisation''s '
    'counter, requester from the direction, search vector, a `created` event); returns its id.';

CREATE FUNCTION worker.stitch_join_ticket(p_occurrence core.message_occurrences, m core.messages,
                                          p_ticket bigint, p_inbound boolean, p_time timestamptz,
                                          p_body text)
    RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    t core.tickets;
BEGIN
    SELECT * INTO t FROM core.tickets WHERE id = p_ticket;
    -- p_inbound: a person outside the organisation wrote it (not the organisation's own
    -- mail, not an auto-reply or a delivery report): only such a message is the customer's
    -- answer, moves the message time and reopens.
    UPDATE core.tickets tk
    SET last_message_at = CASE WHEN p_inbound THEN greatest(tk.last_message_at, p_time)
                               ELSE tk.last_message_at END,
        last_activity_at = CASE WHEN p_inbound THEN greatest(tk.last_activity_at, p_time)
                                ELSE tk.last_activity_at END,
        last_message_direction = CASE
            WHEN p_time >= greatest(coalesce(t.last_message_at, '-infinity'),
                                    coalesce(t.last_activity_at, '-infinity'))
                 OR tk.last_message_direction IS NULL
            THEN m.direction ELSE tk.last_message_direction END,
        status = CASE WHEN p_inbound AND tk.status IN ('resolved', 'closed', 'pending')
                           AND p_time >= coalesce(t.last_message_at, '-infinity')
                      THEN 'open'::core.ticket_status ELSE tk.status END,
        search = logic.append_search(tk.search, logic.message_search_vector(m, p_body)),
        updated_at = now()
    WHERE tk.id = p_ticket;

    IF p_inbound AND t.status IN ('resolved', 'closed', 'pending')
       AND p_time >= coalesce(t.last_message_at, '-infinity') THEN
        -- Only a reply newer than everything on the ticket reopens it: a backfill that
        -- meets an old message late must not reopen a ticket resolved since. A ticket
        -- waiting on the customer (pending, after our reply) is open again.
        INSERT INTO core.ticket_events (organization_id, ticket_id, type, data)
        VALUES (t.organization_id, t.id, 'reopened',
                jsonb_build_object('from_status', t.status, 'to_status', 'open',
                                   'message_id', m.id, 'occurrence_id', p_occurrence.id,
                                   'sender', m.from_address));
    END IF;
END
$$;
COMMENT ON FUNCTION worker.stitch_join_ticket(core.message_occurrences, core.messages, bigint,
                                              boolean, timestamptz, text) IS
    'A message joining an existing ticket: moves its message and activity times (a '
    'customer''s message only: p_inbound), its last direction, appends the message''s search '
    'lexemes, and reopens a resolved, closed or pending ticket on a customer''s message newer '
    'than everything on it (a `reopened` event).';

CREATE FUNCTION worker.stitch_message(p_occurrence core.message_occurrences, p_mailbox_email text)
    RETURNS TABLE (ticket_id bigint, reason text, created boolean, merged integer)
    LANGUAGE plpgsql AS $$
DECLARE
    m core.messages;
    v_body text;
    v_ticket bigint;
    v_reason text;
    v_confidence text;
    v_evidence jsonb;
    v_met bigint[];
    v_merged integer := 0;
    v_created boolean := false;
    v_time timestamptz;
    v_inbound boolean;
    v_refs text[];
    v_kinds text[];
BEGIN
    SELECT * INTO m FROM core.messages WHERE id = p_occurrence.message_id;

    -- 1. Already linked: another occurrence (another mailbox's copy) of the same message.
    SELECT worker.live_ticket(tm.ticket_id) INTO v_ticket
    FROM core.ticket_messages tm WHERE tm.message_id = m.id;
    IF v_ticket IS NOT NULL THEN
        RETURN QUERY SELECT v_ticket, 'already_linked'::text, false, 0;
        RETURN;
    END IF;

    -- The message's thread ids in cascade order, computed once (rank = array position - 1).
    SELECT coalesce(array_agg(ids.ref ORDER BY ids.rank), '{}'),
           coalesce(array_agg(ids.kind ORDER BY ids.rank), '{}')
    INTO v_refs, v_kinds
    FROM worker.message_thread_ids(m.id) ids;
    v_met := worker.stitch_met_tickets(m, v_refs);

    -- 2 to 5: marker, In-Reply-To / References, thread membership, subject code.
    SELECT s.matched_ticket, s.reason, s.confidence, s.evidence
    INTO v_ticket, v_reason, v_confidence, v_evidence
    FROM worker.stitch_match(m, v_refs, v_kinds, v_met) s;
    IF v_reason IS NOT NULL THEN
        SELECT s.ticket, s.merged, s.evidence INTO v_ticket, v_merged, v_evidence
        FROM worker.stitch_lock_and_merge(p_occurrence, m, v_ticket, v_met, v_reason,
                                          v_evidence) s;
    END IF;

    v_inbound := m.direction = 'inbound'
                 AND lower(coalesce(m.from_address, '')) IS DISTINCT FROM lower(p_mailbox_email);
    -- Gmail's receipt time first (a Date header can lie); never in the future.
    v_time := least(coalesce(p_occurrence.internal_date, m.sent_at, now()), now());
    SELECT c.text_body INTO v_body FROM core.message_contents c WHERE c.message_id = m.id;

    IF v_reason IS NULL THEN
        -- 6. A new ticket.
        v_ticket := worker.stitch_new_ticket(p_occurrence, m, v_inbound, v_time, v_body);
        v_reason := 'new_ticket';
        v_confidence := 'low';
        v_evidence := jsonb_build_object('thread_ids_checked', cardinality(v_refs));
        IF m.marker_evidence <> '{}' THEN
            v_evidence := v_evidence || jsonb_build_object('marker', m.marker_evidence);
        END IF;
        v_created := true;
    ELSIF m.marker_evidence <> '{}' AND v_reason <> 'signed_marker' THEN
        v_evidence := v_evidence || jsonb_build_object('marker', m.marker_evidence);
    END IF;

    INSERT INTO core.ticket_messages (message_id, organization_id, ticket_id, stitch_reason,
                                      stitch_confidence, evidence)
    VALUES (m.id, m.organization_id, v_ticket, v_reason, v_confidence, v_evidence);

    -- The primary key makes a thread id belong to one ticket; all tickets holding any of
    -- these ids were merged above, so a conflict can only be with this ticket.
    INSERT INTO core.ticket_thread_ids (organization_id, rfc_message_id, ticket_id)
    SELECT m.organization_id, ids.ref, v_ticket FROM unnest(v_refs) AS ids(ref)
    ON CONFLICT (organization_id, rfc_message_id) DO NOTHING;

    IF NOT v_created THEN
        -- Auto-replies and delivery reports join, but are never the customer's answer.
        PERFORM worker.stitch_join_ticket(p_occurrence, m, v_ticket,
                                          v_inbound AND m.automated IS NULL, v_time, v_body);
    END IF;

    RETURN QUERY SELECT v_ticket, v_reason, v_created, v_merged;
END
$$;
COMMENT ON FUNCTION worker.stitch_message(core.message_occurrences, text) IS
    'Link one parsed occurrence''s canonical message to a ticket (SPEC 2.5 cascade), merging '
    'tickets its ids bridge; returns the ticket, the reason, whether it was created, merges. The caller '
    'holds the row lock of the organisation''s ticket counter.';

CREATE FUNCTION worker.stitch_occurrences(p_occurrence_ids bigint[]) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    o core.message_occurrences;
    v_mailbox_id uuid;
    v_mailbox_email text;
    r record;
    v_stitched bigint[] := '{}';
    v_new_tickets integer := 0;
    v_reasons jsonb := '{}';
    v_merged integer := 0;
    b record;
BEGIN
    -- Stitching of one organisation is serial: a batch first locks the ticket counter rows
    -- of its organisations, in order, before any other lock (so this lock can never be part
    -- of a deadlock). Concurrent messages of one thread therefore always meet each other's
    -- tickets and thread ids, and new tickets get their numbers as they are inserted.
    INSERT INTO core.ticket_counters (organization_id)
    SELECT DISTINCT o0.organization_id FROM core.message_occurrences o0
    WHERE o0.id = ANY (p_occurrence_ids) AND o0.state = 'parsed'
    ON CONFLICT (organization_id) DO NOTHING;
    PERFORM 1 FROM core.ticket_counters c
    WHERE c.organization_id IN (SELECT o0.organization_id FROM core.message_occurrences o0
                                WHERE o0.id = ANY (p_occurrence_ids) AND o0.state = 'parsed')
    ORDER BY c.organization_id
    FOR UPDATE;

    FOR o IN
        SELECT * FROM core.message_occurrences oc
        WHERE oc.id = ANY (p_occurrence_ids) AND oc.state = 'parsed'
        ORDER BY oc.id
        FOR UPDATE
    LOOP
        -- Re-check after the row lock: a duplicate delivery may have stitched it meanwhile.
        CONTINUE WHEN o.state <> 'parsed' OR o.message_id IS NULL;
        IF v_mailbox_id IS DISTINCT FROM o.mailbox_id THEN
            SELECT mb.email INTO v_mailbox_email FROM core.mailboxes mb WHERE mb.id = o.mailbox_id;
            v_mailbox_id := o.mailbox_id;
        END IF;
        SELECT * INTO r FROM worker.stitch_message(o, v_mailbox_email);

        UPDATE core.message_occurrences
        SET state = 'stitched', ticket_id = r.ticket_id, stitched_at = now(), updated_at = now()
        WHERE id = o.id;
        v_stitched := v_stitched || o.id;
        v_new_tickets := v_new_tickets + r.created::integer;
        v_merged := v_merged + r.merged;
        v_reasons := jsonb_set(v_reasons, ARRAY[r.reason],
                               to_jsonb(coalesce((v_reasons->>r.reason)::integer, 0) + 1));
    END LOOP;

    -- The next stage, in this transaction: routing, per mailbox, in batches.
    FOR b IN
        SELECT oc.mailbox_id, array_agg(oc.id ORDER BY oc.id) AS ids
        FROM core.message_occurrences oc WHERE oc.id = ANY (v_stitched)
        GROUP BY oc.mailbox_id
    LOOP
        PERFORM worker.enqueue_next_stage('occurrence_stitch', b.mailbox_id, b.ids);
    END LOOP;

    RETURN jsonb_build_object('stitched', cardinality(v_stitched),
                              'new_tickets', v_new_tickets,
                              'merged', v_merged, 'reasons', v_reasons);
END
$$;
COMMENT ON FUNCTION worker.stitch_occurrences(bigint[]) IS
    'occurrence_stitch: link each parsed occurrence (id order; others are skipped, so a '
    're-delivered job changes nothing) to a ticket with reason, confidence and evidence, '
    'merge tickets a message bridges, number new tickets, mark the occurrences stitched and '
    'queue ticket_apply_routing; stitching of an organisation is serial (counter row lock).';
