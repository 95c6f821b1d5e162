-- depends: 0016.gmail-push
-- The OSS Ticketing web client (issue 13): the ticket list item in the client's field
-- names, and saved ticket list views.

-- The list item is schema (0010): its new shape is a migration that rewrites the stored
-- items. Flat requester and assignee fields and `ticket_code`, as the web client reads them;
-- tags, original recipient and message count stay as additional fields.
CREATE OR REPLACE FUNCTION core.ticket_list_item(t core.tickets) RETURNS json
    LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', t.id,
        'ticket_code', 'T-' || t.number,
        'subject', t.subject,
        'status', t.status,
        'priority', t.priority,
        'requester_email', t.requester_email,
        'requester_name', t.requester_name,
        'assignee_user_id', t.assignee_user_id,
        'assignee_queue_id', t.assignee_queue_id,
        'tags', to_json(t.tags),
        'original_recipient', t.original_recipient,
        'created_at', t.created_at,
        'updated_at', t.updated_at,
        'last_message_at', t.last_message_at,
        'last_activity_at', t.last_activity_at,
        'message_count', t.message_count)
$$;
COMMENT ON FUNCTION core.ticket_list_item(core.tickets) IS
    'The list item shape of a ticket: id, ticket_code, subject, status, priority, '
    'requester_email, requester_name, assignee_user_id, assignee_queue_id, tags, '
    'original_recipient, timestamps, message_count.';

-- Every stored item in the new shape (the BEFORE trigger rebuilds it on any update).
UPDATE core.tickets t SET list_item = core.ticket_list_item(t);

-- A saved view: a named set of GET /tickets filters, per user and organisation.
CREATE TABLE core.ticket_saved_views (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES core.users ON DELETE CASCADE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 120),
    filters jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(filters) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ticket_saved_views_name_key
    ON core.ticket_saved_views (organization_id, user_id, lower(name));
COMMENT ON TABLE core.ticket_saved_views IS
    'Saved ticket list views: a name and validated GET /tickets filters {q, status, '
    'assignee_user_id, assignee_queue_id, limit}, per user and organisation.';

ALTER TABLE core.ticket_saved_views ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.ticket_saved_views
    USING (organization_id = core.current_org_id())
    WITH CHECK (organization_id = core.current_org_id());
GRANT SELECT, INSERT, DELETE ON core.ticket_saved_views TO ticketing_api;
