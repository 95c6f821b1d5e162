-- depends: 0009.operations
-- A ticket list page is read far more often than a ticket changes, so each ticket stores
-- its list item, ready to send: `list_item` (json text) is rebuilt by a trigger whenever
-- the row is written, and a page of 50 concatenates 50 stored values instead of building
-- 50 objects (json_build_object costs ~12 us per item, most of a list request's time).
-- The message count the item shows is kept on the ticket for the same reason.
--
-- The item's shape is schema: core.ticket_list_item below is its one definition, and a
-- change to it is a migration that also rewrites the stored items.

ALTER TABLE core.tickets
    ADD COLUMN message_count integer NOT NULL DEFAULT 0,
    ADD COLUMN list_item json;

-- Lives in core, not in a code schema: the code schemas are dropped and reloaded by
-- `ticketing migrate`, which would drop the triggers below with them.
CREATE FUNCTION core.ticket_list_item(t core.tickets) RETURNS json
    LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', t.id,
        'code', 'T-' || t.number,
        'subject', t.subject,
        'status', t.status,
        'priority', t.priority,
        'requester', json_build_object('email', t.requester_email, 'name', t.requester_name),
        'assignee', json_build_object('user_id', t.assignee_user_id,
                                      'queue_id', t.assignee_queue_id),
        'tags', to_json(t.tags),
        'original_recipient', t.original_recipient,
        'created_at', t.created_at,
        'updated_at', t.updated_at,
        'last_message_at', t.last_message_at,
        'last_activity_at', t.last_activity_at,
        'message_count', t.message_count)
$$;
COMMENT ON FUNCTION core.ticket_list_item(core.tickets) IS
    'The list item shape of a ticket: id, code, subject, status, priority, requester, '
    'assignee {user_id, queue_id}, tags, original_recipient, timestamps, message_count.';

-- Timestamps are rendered in UTC whatever the writing session's time zone, so that every
-- stored item reads the same way.
CREATE FUNCTION core.tickets_store_list_item() RETURNS trigger
    LANGUAGE plpgsql SET timezone = 'UTC' AS $$
BEGIN
    NEW.list_item := core.ticket_list_item(NEW);
    RETURN NEW;
END
$$;
CREATE TRIGGER tickets_store_list_item BEFORE INSERT OR UPDATE ON core.tickets
    FOR EACH ROW EXECUTE FUNCTION core.tickets_store_list_item();

-- Every existing ticket: its count, and (by the trigger) its item.
UPDATE core.tickets t
SET message_count = (SELECT count(*) FROM core.ticket_messages tm WHERE tm.ticket_id = t.id);
ALTER TABLE core.tickets ALTER COLUMN list_item SET NOT NULL;

-- The message count follows the links, whoever writes them (stitching inserts them,
-- merges move them): statement triggers with transition tables, so a batch of links
-- costs one UPDATE per ticket.

CREATE FUNCTION core.ticket_messages_count() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- Each branch names only the transition tables its event has.
    IF TG_OP = 'INSERT' THEN
        UPDATE core.tickets t SET message_count = t.message_count + d.n
        FROM (SELECT ticket_id, count(*)::integer AS n FROM linked GROUP BY ticket_id) d
        WHERE t.id = d.ticket_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE core.tickets t SET message_count = t.message_count - d.n
        FROM (SELECT ticket_id, count(*)::integer AS n FROM unlinked GROUP BY ticket_id) d
        WHERE t.id = d.ticket_id;
    ELSE  -- UPDATE: a merge moves links from one ticket to another
        UPDATE core.tickets t SET message_count = t.message_count + d.n
        FROM (SELECT ticket_id, sum(n)::integer AS n
              FROM (SELECT ticket_id, 1 AS n FROM linked
                    UNION ALL
                    SELECT ticket_id, -1 FROM unlinked) moved
              GROUP BY ticket_id) d
        WHERE t.id = d.ticket_id AND d.n <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- One trigger per event: a trigger with transition tables may name only one event (and
-- no column list, hence the delta filter for updates).
CREATE TRIGGER ticket_messages_count_insert AFTER INSERT ON core.ticket_messages
    REFERENCING NEW TABLE AS linked
    FOR EACH STATEMENT EXECUTE FUNCTION core.ticket_messages_count();
CREATE TRIGGER ticket_messages_count_update AFTER UPDATE ON core.ticket_messages
    REFERENCING OLD TABLE AS unlinked NEW TABLE AS linked
    FOR EACH STATEMENT EXECUTE FUNCTION core.ticket_messages_count();
CREATE TRIGGER ticket_messages_count_delete AFTER DELETE ON core.ticket_messages
    REFERENCING OLD TABLE AS unlinked
    FOR EACH STATEMENT EXECUTE FUNCTION core.ticket_messages_count();
