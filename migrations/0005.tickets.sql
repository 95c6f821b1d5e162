-- depends: 0004.ingestion
-- Tickets: stitching links canonical messages to tickets, routing decides status and
-- assignee; every decision is a row a DBA can read.

CREATE TYPE core.ticket_status AS ENUM ('new', 'open', 'pending', 'resolved', 'closed', 'spam');
CREATE TYPE core.ticket_priority AS ENUM ('low', 'normal', 'high', 'urgent');

-- Per-organisation ticket numbers (code T-<number>), allocated under a row lock.
CREATE TABLE core.ticket_counters (
    organization_id uuid PRIMARY KEY REFERENCES core.organizations ON DELETE CASCADE,
    next_number bigint NOT NULL DEFAULT 1000
);

CREATE TABLE core.tickets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    number bigint NOT NULL,
    subject text NOT NULL DEFAULT '',
    status core.ticket_status NOT NULL DEFAULT 'new',
    priority core.ticket_priority NOT NULL DEFAULT 'normal',
    requester_email text,
    requester_name text NOT NULL DEFAULT '',
    original_recipient text,
    mailbox_id uuid REFERENCES core.mailboxes ON DELETE SET NULL,
    assignee_user_id uuid REFERENCES core.users ON DELETE SET NULL,
    assignee_queue_id uuid,
    tags text[] NOT NULL DEFAULT '{}',
    -- Routing's `drop` action: spam, silently, and out of default lists.
    hidden boolean NOT NULL DEFAULT false,
    merged_into_ticket_id bigint REFERENCES core.tickets ON DELETE SET NULL,
    -- Set when a person changes the ticket: automation never overrides that afterwards.
    human_touched_at timestamptz,
    routed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz,
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    -- Full-text: subject, requester, code and message bodies (maintained by stitching).
    search tsvector NOT NULL DEFAULT ''::tsvector,
    FOREIGN KEY (organization_id, assignee_queue_id)
        REFERENCES core.queues (organization_id, id) ON DELETE SET NULL (assignee_queue_id)
);
CREATE UNIQUE INDEX tickets_number_key ON core.tickets (organization_id, number);
-- The list queries: newest activity first, keyset on (last_activity_at, id).
CREATE INDEX tickets_activity_idx ON core.tickets (organization_id, last_activity_at DESC, id DESC)
    WHERE merged_into_ticket_id IS NULL AND NOT hidden;
CREATE INDEX tickets_status_activity_idx
    ON core.tickets (organization_id, status, last_activity_at DESC, id DESC)
    WHERE merged_into_ticket_id IS NULL AND NOT hidden;
CREATE INDEX tickets_assignee_user_activity_idx
    ON core.tickets (organization_id, assignee_user_id, last_activity_at DESC, id DESC)
    WHERE merged_into_ticket_id IS NULL AND NOT hidden;
CREATE INDEX tickets_assignee_queue_activity_idx
    ON core.tickets (organization_id, assignee_queue_id, last_activity_at DESC, id DESC)
    WHERE merged_into_ticket_id IS NULL AND NOT hidden;
CREATE INDEX tickets_search_idx ON core.tickets USING gin (search);

-- A canonical message belongs to one ticket, with the reason stitching chose it.
CREATE TABLE core.ticket_messages (
    message_id bigint PRIMARY KEY REFERENCES core.messages ON DELETE CASCADE,
    organization_id uuid NOT NULL,
    ticket_id bigint NOT NULL REFERENCES core.tickets ON DELETE CASCADE,
    stitch_reason text NOT NULL CHECK (stitch_reason IN
        ('already_linked', 'signed_marker', 'in_reply_to', 'references', 'thread_member',
         'subject_code', 'new_ticket', 'merged')),
    stitch_confidence text NOT NULL CHECK (stitch_confidence IN ('high', 'medium', 'low')),
    evidence jsonb NOT NULL DEFAULT '{}',
    linked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_messages_ticket_idx ON core.ticket_messages (ticket_id, linked_at);

-- Every Message-ID a ticket's messages carry or reference, seen or not: the thread's
-- members. A message whose ids meet these joins the ticket, whatever the arrival order.
CREATE TABLE core.ticket_thread_ids (
    organization_id uuid NOT NULL,
    rfc_message_id text NOT NULL,
    ticket_id bigint NOT NULL REFERENCES core.tickets ON DELETE CASCADE,
    PRIMARY KEY (organization_id, rfc_message_id)
);
CREATE INDEX ticket_thread_ids_ticket_idx ON core.ticket_thread_ids (ticket_id);

CREATE TABLE core.ticket_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL,
    ticket_id bigint NOT NULL REFERENCES core.tickets ON DELETE CASCADE,
    type text NOT NULL,
    actor_user_id uuid REFERENCES core.users ON DELETE SET NULL,
    data jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_events_ticket_idx ON core.ticket_events (ticket_id, id);

CREATE TABLE core.ticket_notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL,
    ticket_id bigint NOT NULL REFERENCES core.tickets ON DELETE CASCADE,
    author_user_id uuid REFERENCES core.users ON DELETE SET NULL,
    body text NOT NULL CHECK (length(btrim(body)) BETWEEN 1 AND 20000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_notes_ticket_idx ON core.ticket_notes (ticket_id, id);

-- Routing configuration.
CREATE TABLE core.routing_allowlist (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    pattern text NOT NULL CHECK (length(pattern) BETWEEN 1 AND 320),
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX routing_allowlist_pattern_key
    ON core.routing_allowlist (organization_id, lower(pattern));

CREATE TABLE core.routing_rules (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    priority integer NOT NULL DEFAULT 100,
    enabled boolean NOT NULL DEFAULT true,
    version integer NOT NULL DEFAULT 1,
    -- Conditions (all optional, ANDed); glob patterns with * and ?, case-insensitive.
    recipient_pattern text,
    sender_domain_pattern text,
    sender_email_pattern text,
    direction text CHECK (direction IN ('inbound', 'outbound')),
    -- Actions.
    assign_queue_id uuid,
    assign_user_id uuid REFERENCES core.users ON DELETE SET NULL,
    set_status core.ticket_status,
    auto_close boolean NOT NULL DEFAULT false,
    drop_message boolean NOT NULL DEFAULT false,
    add_tags text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (assign_queue_id IS NULL OR assign_user_id IS NULL),
    FOREIGN KEY (organization_id, assign_queue_id)
        REFERENCES core.queues (organization_id, id) ON DELETE SET NULL (assign_queue_id)
);
CREATE UNIQUE INDEX routing_rules_name_key ON core.routing_rules (organization_id, lower(name));
CREATE INDEX routing_rules_order_idx ON core.routing_rules (organization_id, priority, id)
    WHERE enabled;

-- A product marker (X-OSS-Ticket-ID header or +token reply address) whose HMAC the parse
-- stage verified: the ticket number it names, and what was seen (forged ones included).
ALTER TABLE core.messages ADD COLUMN marker_ticket_number bigint;
ALTER TABLE core.messages ADD COLUMN marker_evidence jsonb NOT NULL DEFAULT '{}';

-- Occurrences reach the last two stages; link each to the ticket it was routed with.
ALTER TABLE core.message_occurrences ADD COLUMN ticket_id bigint
    REFERENCES core.tickets ON DELETE SET NULL;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ticket_counters', 'tickets', 'ticket_messages', 'ticket_thread_ids',
                             'ticket_events', 'ticket_notes', 'routing_allowlist', 'routing_rules']
    LOOP
        EXECUTE format('ALTER TABLE core.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON core.%I '
                       'USING (organization_id = core.current_org_id()) '
                       'WITH CHECK (organization_id = core.current_org_id())', t);
    END LOOP;
END
$$;

GRANT SELECT, UPDATE ON core.tickets TO ticketing_api;
GRANT SELECT ON core.ticket_messages, core.ticket_thread_ids TO ticketing_api;
GRANT SELECT, INSERT ON core.ticket_events, core.ticket_notes TO ticketing_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON core.routing_allowlist, core.routing_rules TO ticketing_api;
