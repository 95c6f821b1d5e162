-- occurrence_parse: each parsed message becomes (or joins) a canonical message.
--
-- Set-based: one statement per kind of row for the whole batch (a job carries up to
-- worker.batch_size() occurrences), not a loop of small statements per message.

CREATE FUNCTION worker.record_parsed(p_mailbox_id uuid, p_parsed jsonb, p_failures jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_parsed bigint[];
    v_created bigint[];
    v_groups bigint[];
BEGIN
    -- The occurrences still waiting for this stage, locked in id order (an earlier delivery
    -- of this job may have parsed the others: they are skipped).
    v_parsed := ARRAY(
        SELECT o.id FROM core.message_occurrences o
        WHERE o.id = ANY (worker.batch_occurrence_ids(p_parsed))
          AND o.state = 'raw_fetched'
        ORDER BY o.id
        FOR UPDATE);

    -- New canonical messages: identity is the unique (organization_id, strict_signature), so
    -- concurrent copies cannot create two rows; copies within the batch insert one row (the
    -- first item's). The product's own outbound mail comes back through the journal: it is
    -- an occurrence of the message the product minted, whatever the journal copy's headers
    -- look like, so it creates nothing. Rows go in signature order (no deadlock between two
    -- batches inserting the same signatures).
    WITH items AS (
        SELECT DISTINCT ON (o.id) e.n, e.item AS p, o.organization_id AS org, o.raw_blob_key
        FROM jsonb_array_elements(p_parsed) WITH ORDINALITY AS e(item, n)
        JOIN core.message_occurrences o ON o.id = (e.item->>'occurrence_id')::bigint
        WHERE o.id = ANY (v_parsed)
        ORDER BY o.id, e.n
    ),
    fresh AS (
        SELECT DISTINCT ON (i.org, i.p->>'strict_signature') i.*
        FROM items i
        WHERE NOT EXISTS (SELECT 1 FROM core.messages m
                          WHERE m.organization_id = i.org
                            AND m.rfc_message_id = i.p->>'message_id' AND m.minted_by_product)
        ORDER BY i.org, i.p->>'strict_signature', i.n
    ),
    inserted AS (
        INSERT INTO core.messages (
            organization_id, strict_signature, loose_fingerprint, rfc_message_id, subject,
            normalized_subject, from_name, from_address, reply_to, to_addresses, cc_addresses,
            sent_at, snippet, raw_blob_key, marker_ticket_number, marker_evidence)
        SELECT f.org, f.p->>'strict_signature', f.p->>'loose_fingerprint', f.p->>'message_id',
               coalesce(f.p->>'subject', ''), coalesce(f.p->>'normalized_subject', ''),
               coalesce(f.p->>'from_name', ''), f.p->>'from_address',
               coalesce(f.p->'reply_to', '[]'), coalesce(f.p->'to', '[]'),
               coalesce(f.p->'cc', '[]'), (f.p->>'date')::timestamptz,
               coalesce(f.p->>'snippet', ''), f.raw_blob_key,
               -- Verified by the parse stage (kernel/markers.py); forged markers only as evidence.
               (f.p->>'marker_ticket_number')::bigint, coalesce(f.p->'marker_evidence', '{}')
        FROM fresh f
        ORDER BY f.org, f.p->>'strict_signature'
        ON CONFLICT (organization_id, strict_signature) DO NOTHING
        RETURNING id, organization_id, strict_signature
    ),
    created AS (
        SELECT ins.id, f.org, f.p
        FROM inserted ins
        JOIN fresh f ON f.org = ins.organization_id AND f.p->>'strict_signature' = ins.strict_signature
    ),
    contents AS (
        INSERT INTO core.message_contents (message_id, organization_id, headers, text_body,
                                           html_body, body_sha256, parse_evidence)
        SELECT c.id, c.org, coalesce(c.p->'headers', '{}'), coalesce(c.p->>'text_body', ''),
               coalesce(c.p->>'html_body', ''), coalesce(c.p->>'body_sha256', ''),
               coalesce(c.p->'parse_evidence', '{}')
        FROM created c
    ),
    attachments AS (
        INSERT INTO core.attachments (organization_id, message_id, position, filename,
                                      content_type, size, sha256, blob_key, content_id,
                                      disposition)
        SELECT c.org, c.id, a.position, coalesce(a.filename, ''), a.content_type, a.size,
               a.sha256, a.blob_key, a.content_id, a.disposition
        FROM created c,
             jsonb_to_recordset(coalesce(c.p->'attachments', '[]')) AS a(
                 position integer, filename text, content_type text, size bigint,
                 sha256 text, blob_key text, content_id text, disposition text)
    ),
    refs AS (
        INSERT INTO core.message_thread_refs (organization_id, message_id, kind, position, ref)
        SELECT c.org, c.id, 'self', 0, c.p->>'message_id'
        FROM created c WHERE c.p->>'message_id' IS NOT NULL
        UNION ALL
        SELECT c.org, c.id, 'in_reply_to', r.n::integer - 1, r.ref
        FROM created c,
             jsonb_array_elements_text(coalesce(c.p->'in_reply_to', '[]'))
                 WITH ORDINALITY AS r(ref, n)
        UNION ALL
        SELECT c.org, c.id, 'references', r.n::integer - 1, r.ref
        FROM created c,
             jsonb_array_elements_text(coalesce(c.p->'references', '[]'))
                 WITH ORDINALITY AS r(ref, n)
        UNION ALL
        -- A delivery report threads on the message it reports on (its embedded copy's
        -- Message-ID), as the newest reference, unless it names it already.
        SELECT c.org, c.id, 'references', jsonb_array_length(coalesce(c.p->'references', '[]')),
               c.p->'parse_evidence'->'delivery_report'->>'original_message_id'
        FROM created c
        WHERE c.p->'parse_evidence'->'delivery_report'->>'original_message_id' IS NOT NULL
          AND NOT coalesce(c.p->'references', '[]')
                  ? (c.p->'parse_evidence'->'delivery_report'->>'original_message_id')
          AND NOT coalesce(c.p->'in_reply_to', '[]')
                  ? (c.p->'parse_evidence'->'delivery_report'->>'original_message_id')
    )
    SELECT coalesce(array_agg(c.id), '{}') INTO v_created FROM created c;

    -- Near-duplicates that cannot be proven identical share a collision group. The locks
    -- (one per fingerprint, taken in one order) make two concurrent near-duplicates see
    -- each other.
    IF cardinality(v_created) > 0 THEN
        PERFORM pg_advisory_xact_lock(keys.k)
        FROM (SELECT DISTINCT hashtextextended(m.organization_id::text || m.loose_fingerprint, 0) AS k
              FROM core.messages m WHERE m.id = ANY (v_created)
              ORDER BY 1) keys;
        WITH grouped AS (
            INSERT INTO core.collision_groups (organization_id, loose_fingerprint)
            SELECT DISTINCT c.organization_id, c.loose_fingerprint
            FROM core.messages c
            WHERE c.id = ANY (v_created)
              AND EXISTS (SELECT 1 FROM core.messages m
                          WHERE m.organization_id = c.organization_id
                            AND m.loose_fingerprint = c.loose_fingerprint AND m.id <> c.id)
            ORDER BY 1, 2
            ON CONFLICT (organization_id, loose_fingerprint) DO UPDATE SET last_seen_at = now()
            RETURNING id, organization_id, loose_fingerprint
        ),
        members AS (
            UPDATE core.messages m SET collision_group_id = g.id
            FROM grouped g
            WHERE m.organization_id = g.organization_id
              AND m.loose_fingerprint = g.loose_fingerprint
              AND m.collision_group_id IS DISTINCT FROM g.id
        )
        SELECT coalesce(array_agg(g.id), '{}') INTO v_groups FROM grouped g;
        IF cardinality(v_groups) > 0 THEN
            -- Counted through the fingerprint index (the group's members are exactly the
            -- messages with its fingerprint; collision_group_id has no index).
            UPDATE core.collision_groups g
            SET message_count = (SELECT count(*) FROM core.messages m
                                 WHERE m.organization_id = g.organization_id
                                   AND m.loose_fingerprint = g.loose_fingerprint)
            WHERE g.id = ANY (v_groups);
        END IF;
    END IF;

    -- What each new message is, decided from its sender and stored headers
    -- (logic.classify_message): outbound when the organisation sent it, auto-reply or
    -- delivery report; the reasons are its classification evidence. A delivery report about
    -- one of our replies fails that reply.
    IF cardinality(v_created) > 0 THEN
        UPDATE core.messages m
        SET direction = k.v->>'direction', automated = k.v->>'automated', classification = k.v
        FROM (SELECT m2.id, logic.classify_message(m2.organization_id, m2.from_address,
                                                   c.headers, c.parse_evidence) AS v
              FROM core.messages m2 JOIN core.message_contents c ON c.message_id = m2.id
              WHERE m2.id = ANY (v_created)) k
        WHERE m.id = k.id;
        PERFORM worker.outbound_record_bounces(v_created);
    END IF;

    -- Each occurrence joins its canonical message (the product's minted one, else the one
    -- with its signature) with its recipient evidence.
    WITH items AS (
        SELECT DISTINCT ON (o.id) e.item AS p, o.id, o.organization_id AS org
        FROM jsonb_array_elements(p_parsed) WITH ORDINALITY AS e(item, n)
        JOIN core.message_occurrences o ON o.id = (e.item->>'occurrence_id')::bigint
        WHERE o.id = ANY (v_parsed)
        ORDER BY o.id, e.n
    )
    UPDATE core.message_occurrences o
    SET state = 'parsed',
        message_id = coalesce(
            (SELECT min(m.id) FROM core.messages m
             WHERE m.organization_id = i.org AND m.rfc_message_id = i.p->>'message_id'
               AND m.minted_by_product),
            (SELECT m.id FROM core.messages m
             WHERE m.organization_id = i.org AND m.strict_signature = i.p->>'strict_signature')),
        original_recipient = r.original_recipient,
        recipient_source = r.source,
        recipient_confidence = r.confidence,
        recipient_evidence = coalesce(i.p->'recipient'->'candidates', '{}'),
        parsed_at = now(), updated_at = now()
    FROM items i
    -- The choice is made here from the parser's candidates: logic.original_recipient.
    CROSS JOIN LATERAL logic.original_recipient(
        coalesce(i.p->'recipient'->'candidates', '{}'),
        (SELECT mb.email FROM core.mailboxes mb WHERE mb.id = p_mailbox_id)) r
    WHERE o.id = i.id;

    PERFORM worker.fail_occurrences('occurrence_parse', p_failures);
    PERFORM worker.enqueue_next_stage('occurrence_parse', p_mailbox_id, v_parsed);
    RETURN jsonb_build_object('parsed', cardinality(v_parsed),
                              'new_messages', cardinality(v_created),
                              'failed', jsonb_array_length(p_failures));
END
$$;
COMMENT ON FUNCTION worker.record_parsed(uuid, jsonb, jsonb) IS
    'occurrence_parse: link each parsed occurrence to its canonical message (found or created '
    'under the unique strict signature; the product''s minted Message-IDs; collision groups '
    'for near-duplicates; direction, auto-reply and delivery report by logic.classify_message, '
    'failing a reply a delivery report names), store recipient evidence, record failures with '
    'their reason, queue stitching of the parsed ones.';
