-- The original recipient of a journalled message: the routing input (the address the mail
-- was sent to, e.g. billing@), chosen here, once, from the candidate addresses the MIME
-- parser collected per header (worker/mime.py keeps every candidate as evidence and, for
-- its own report, mirrors this choice; tests/sql/test_rules.py keeps the two equal).

CREATE FUNCTION logic.recipient_evidence_order()
    RETURNS TABLE (rank integer, header text, source text, confidence text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES (1, 'x-gm-original-to', 'workspace_header', 'high'),
           (2, 'delivered-to', 'delivered_to', 'medium'),
           (3, 'x-original-to', 'x_original_to', 'medium'),
           (4, 'to', 'to_cc_scan', 'low'),
           (5, 'cc', 'to_cc_scan', 'low')
$$;
COMMENT ON FUNCTION logic.recipient_evidence_order() IS
    'The headers that decide the original recipient (SPEC 2.3), first match wins, with the '
    'source and confidence each gives. Other recorded headers are evidence only.';

CREATE FUNCTION logic.original_recipient(p_candidates jsonb, p_journal_address text,
                                         OUT original_recipient text, OUT source text,
                                         OUT confidence text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT c.address, c.source, c.confidence
    FROM (
        SELECT a.address, o.source, o.confidence, o.rank, a.n
        FROM logic.recipient_evidence_order() o,
             jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof(p_candidates -> o.header) = 'array'
                      THEN p_candidates -> o.header ELSE '[]' END)
                 WITH ORDINALITY AS a(address, n)
        -- The journal mailbox's own address is skipped in Delivered-To only: there it is the
        -- top-most entry, put there by the journal delivery itself.
        WHERE (o.header = 'delivered-to'
               AND a.address = lower(btrim(btrim(p_journal_address, E' \t\r\n\f\x0b'), '<>')))
              IS NOT TRUE
        UNION ALL
        SELECT NULL, 'unknown', 'low', 6, 0
    ) c
    ORDER BY c.rank, c.n
    LIMIT 1
$$;
COMMENT ON FUNCTION logic.original_recipient(jsonb, text) IS
    'The original recipient, its source and confidence from the parser''s candidates '
    '({lower-case header: [addresses in header order]}) by logic.recipient_evidence_order(), '
    'skipping the journal address in Delivered-To; (NULL, unknown, low) when none.';
