-- occurrence_parse: the parsed message becomes (or joins) a canonical message.

CREATE FUNCTION worker.upsert_canonical_message(p_org uuid, p jsonb)
    RETURNS TABLE (message_id bigint, created boolean)
    LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_group bigint;
BEGIN
    -- The product's own outbound mail comes back through the journal: it is an occurrence of
    -- the message the product minted, whatever the journal copy's headers look like.
    IF p->>'message_id' IS NOT NULL THEN
        SELECT m.id INTO v_id FROM core.messages m
        WHERE m.organization_id = p_org AND m.rfc_message_id = p->>'message_id'
          AND m.minted_by_product;
        IF FOUND THEN
            RETURN QUERY SELECT v_id, false;
            RETURN;
        END IF;
    END IF;

    -- Identity under the unique constraint: concurrent copies cannot create two rows.
    INSERT INTO core.messages (
        organization_id, strict_signature, loose_fingerprint, rfc_message_id, subject,
        normalized_subject, from_name, from_address, reply_to, to_addresses, cc_addresses,
        sent_at, snippet, raw_blob_key, marker_ticket_number, marker_evidence)
    VALUES (
        p_org, p->>'strict_signature', p->>'loose_fingerprint', p->>'message_id',
        coalesce(p->>'subject', ''), coalesce(p->>'normalized_subject', ''),
        coalesce(p->>'from_name', ''), p->>'from_address', coalesce(p->'reply_to', '[]'),
        coalesce(p->'to', '[]'), coalesce(p->'cc', '[]'), (p->>'date')::timestamptz,
        coalesce(p->>'snippet', ''), p->>'raw_blob_key',
        -- Verified by the parse stage (app/markers.py); forged markers only as evidence.
        (p->>'marker_ticket_number')::bigint, coalesce(p->'marker_evidence', '{}'))
    ON CONFLICT (organization_id, strict_signature) DO NOTHING
    RETURNING id INTO v_id;

    IF v_id IS NULL THEN
        SELECT m.id INTO v_id FROM core.messages m
        WHERE m.organization_id = p_org AND m.strict_signature = p->>'strict_signature';
        RETURN QUERY SELECT v_id, false;
        RETURN;
    END IF;

    INSERT INTO core.message_contents (message_id, organization_id, headers, text_body, html_body,
                                       body_sha256)
    VALUES (v_id, p_org, coalesce(p->'headers', '{}'), coalesce(p->>'text_body', ''),
            coalesce(p->>'html_body', ''), coalesce(p->>'body_sha256', ''));

    INSERT INTO core.attachments (organization_id, message_id, position, filename, content_type,
                                  size, sha256, blob_key, content_id, disposition)
    SELECT p_org, v_id, a.position, coalesce(a.filename, ''), a.content_type, a.size, a.sha256,
           a.blob_key, a.content_id, a.disposition
    FROM jsonb_to_recordset(coalesce(p->'attachments', '[]')) AS a(
        position integer, filename text, content_type text, size bigint, sha256 text,
        blob_key text, content_id text, disposition text);

    INSERT INTO core.message_thread_refs (organization_id, message_id, kind, position, ref)
    SELECT p_org, v_id, 'self', 0, p->>'message_id' WHERE p->>'message_id' IS NOT NULL
    UNION ALL
    SELECT p_org, v_id, 'in_reply_to', r.n::integer - 1, r.ref
    FROM jsonb_array_elements_text(coalesce(p->'in_reply_to', '[]')) WITH ORDINALITY AS r(ref, n)
    UNION ALL
    SELECT p_org, v_id, 'references', r.n::integer - 1, r.ref
    FROM jsonb_array_elements_text(coalesce(p->'references', '[]')) WITH ORDINALITY AS r(ref, n);

    -- Near-duplicates that cannot be proven identical share a collision group. The lock
    -- makes two concurrent near-duplicates see each other.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_org::text || (p->>'loose_fingerprint'), 0));
    IF EXISTS (SELECT 1 FROM core.messages m
               WHERE m.organization_id = p_org AND m.loose_fingerprint = p->>'loose_fingerprint'
                 AND m.id <> v_id) THEN
        INSERT INTO core.collision_groups (organization_id, loose_fingerprint)
        VALUES (p_org, p->>'loose_fingerprint')
        ON CONFLICT (organization_id, loose_fingerprint) DO UPDATE SET last_seen_at = now()
        RETURNING id INTO v_group;
        UPDATE core.messages m SET collision_group_id = v_group
        WHERE m.organization_id = p_org AND m.loose_fingerprint = p->>'loose_fingerprint'
          AND m.collision_group_id IS DISTINCT FROM v_group;
        UPDATE core.collision_groups g
        SET message_count = (SELECT count(*) FROM core.messages m WHERE m.collision_group_id = v_group)
        WHERE g.id = v_group;
    END IF;

    RETURN QUERY SELECT v_id, true;
END
$$;
COMMENT ON FUNCTION worker.upsert_canonical_message(uuid, jsonb) IS
    'Find or create the canonical message of a parsed email (strict signature identity, '
    'product-minted Message-IDs, collision groups for near-duplicates).';

CREATE FUNCTION worker.record_parsed(p_mailbox_id uuid, p_parsed jsonb, p_failures jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    o core.message_occurrences;
    v_message_id bigint;
    v_created boolean;
    v_parsed bigint[] := '{}';
    v_new_messages integer := 0;
BEGIN
    FOR item IN SELECT value FROM jsonb_array_elements(p_parsed) LOOP
        SELECT * INTO o FROM core.message_occurrences
        WHERE id = (item->>'occurrence_id')::bigint AND state = 'raw_fetched'
        FOR UPDATE;
        CONTINUE WHEN NOT FOUND;  -- already parsed by an earlier delivery of this job

        SELECT u.message_id, u.created INTO v_message_id, v_created
        FROM worker.upsert_canonical_message(o.organization_id,
                                             item || jsonb_build_object('raw_blob_key', o.raw_blob_key)) u;
        v_new_messages := v_new_messages + v_created::integer;

        UPDATE core.message_occurrences
        SET state = 'parsed', message_id = v_message_id,
            original_recipient = item->'recipient'->>'original_recipient',
            recipient_source = item->'recipient'->>'source',
            recipient_confidence = item->'recipient'->>'confidence',
            recipient_evidence = coalesce(item->'recipient'->'candidates', '{}'),
            parsed_at = now(), updated_at = now()
        WHERE id = o.id;
        v_parsed := v_parsed || o.id;
    END LOOP;
    PERFORM worker.fail_occurrences('occurrence_parse', p_failures);
    PERFORM worker.enqueue_occurrence_batches('occurrence_stitch', p_mailbox_id, v_parsed);
    RETURN jsonb_build_object('parsed', cardinality(v_parsed), 'new_messages', v_new_messages,
                              'failed', jsonb_array_length(p_failures));
END
$$;
COMMENT ON FUNCTION worker.record_parsed(uuid, jsonb, jsonb) IS
    'occurrence_parse: link each parsed occurrence to its canonical message, store recipient '
    'evidence, record failures with their reason, queue stitching of the parsed ones.';
