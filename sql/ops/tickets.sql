-- Routing decisions per ticket for a DBA (stitching has ops.message_stitching and
-- ops.ticket_threads; routing writes `routed` events, plus `auto_spam`/`dropped`).

CREATE VIEW ops.ticket_routing AS
SELECT t.organization_id, t.id AS ticket_id, 'T-' || t.number AS ticket_code,
       t.status, t.hidden, t.routed_at, t.human_touched_at,
       e.id AS event_id, e.created_at AS decided_at, e.actor_user_id,
       e.data->'decision'->>'outcome' AS outcome,
       (e.data->'decision'->>'allowlisted')::boolean AS allowlisted,
       e.data->'decision'->'input'->>'recipient' AS recipient,
       e.data->'decision'->'input'->>'sender' AS sender,
       e.data->'decision'->'rule' AS rule,
       e.data->'decision'->'actions' AS actions,
       e.data->'before' AS before,
       e.data->'after' AS after,
       e.data AS event_data
FROM core.ticket_events e
JOIN core.tickets t ON t.id = e.ticket_id
WHERE e.type = 'routed';
COMMENT ON VIEW ops.ticket_routing IS
    'Every routing decision applied to a ticket (its `routed` events): outcome (auto_spam, '
    'no_rule, rule, dropped), allowlisted, recipient, sender, rule, actions, state before and '
    'after, and the ticket''s current status. E.g. SELECT * FROM ops.ticket_routing WHERE '
    'ticket_code = ''T-1042'' ORDER BY event_id.';
