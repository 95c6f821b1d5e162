-- Stitching decisions for a DBA: why each message is in its ticket, and what each ticket holds.

CREATE VIEW ops.message_stitching AS
SELECT tm.organization_id, tm.message_id, t.id AS ticket_id, 'T-' || t.number AS ticket_code,
       live.id AS live_ticket_id, 'T-' || live.number AS live_ticket_code,
       tm.stitch_reason, tm.stitch_confidence, tm.evidence, m.rfc_message_id, m.subject,
       m.from_address, m.sent_at, tm.linked_at
FROM core.ticket_messages tm
JOIN core.tickets t ON t.id = tm.ticket_id
JOIN core.tickets live ON live.id = coalesce(t.merged_into_ticket_id, t.id)
JOIN core.messages m ON m.id = tm.message_id;
COMMENT ON VIEW ops.message_stitching IS
    'Per message: its ticket (code), stitch reason, confidence and evidence (which id, token '
    'or marker matched), Message-ID, subject, sender.';

CREATE VIEW ops.ticket_threads AS
SELECT t.organization_id, t.id AS ticket_id, 'T-' || t.number AS ticket_code, t.status,
       t.subject, t.requester_email, t.merged_into_ticket_id, t.created_at, t.last_message_at,
       (SELECT count(*) FROM core.ticket_messages tm WHERE tm.ticket_id = t.id) AS messages,
       (SELECT count(*) FROM core.ticket_thread_ids ti WHERE ti.ticket_id = t.id) AS thread_ids,
       (SELECT coalesce(jsonb_object_agg(reason, n), '{}')
        FROM (SELECT tm.stitch_reason AS reason, count(*) AS n FROM core.ticket_messages tm
              WHERE tm.ticket_id = t.id GROUP BY tm.stitch_reason) reasons) AS reasons,
       (SELECT count(*) FROM core.tickets merged WHERE merged.merged_into_ticket_id = t.id)
           AS tickets_merged_in
FROM core.tickets t;
COMMENT ON VIEW ops.ticket_threads IS
    'Per ticket: message count, thread ids registered, stitch reasons counted, tickets merged '
    'into it (merged tickets show merged_into_ticket_id).';
