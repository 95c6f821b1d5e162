-- depends: 0016.gmail-push
-- Agent replies (issue 17): send identities (the addresses an organisation answers from,
-- each bound to a Gmail mailbox whose grant includes gmail.send), the send state of every
-- message the product sends, the organisation's own mail domains (direction of mail the
-- product did not send) and a mailbox purpose (a sender mailbox is never ingested).

-- A mailbox is the journal (read, ingested) or a sender (only sends; never synced).
ALTER TABLE core.mailboxes
    ADD COLUMN purpose text NOT NULL DEFAULT 'journal' CHECK (purpose IN ('journal', 'sender'));
COMMENT ON COLUMN core.mailboxes.purpose IS
    'journal: the journal mailbox, synced and ingested; sender: connected only to send replies '
    '(never synced).';

ALTER TABLE core.oauth_states DROP CONSTRAINT oauth_states_purpose_check;
ALTER TABLE core.oauth_states ADD CONSTRAINT oauth_states_purpose_check
    CHECK (purpose IN ('gmail_journal', 'gmail_journal_send', 'gmail_sender'));

CREATE TABLE core.send_identities (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    mailbox_id uuid NOT NULL REFERENCES core.mailboxes ON DELETE CASCADE,
    from_email text NOT NULL CHECK (from_email = lower(from_email)),
    from_name text NOT NULL DEFAULT '' CHECK (length(from_name) <= 200),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified', 'failed')),
    status_reason text,
    verified_at timestamptz,
    enabled boolean NOT NULL DEFAULT true,
    -- Replies carry a signed `+t<number>.<sig>` Reply-To on this address (its domain must
    -- deliver plus-addressed mail to the journal).
    signed_reply_to boolean NOT NULL DEFAULT false,
    created_by uuid REFERENCES core.users ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX send_identities_org_email_key
    ON core.send_identities (organization_id, from_email);
CREATE INDEX send_identities_mailbox_idx ON core.send_identities (mailbox_id);
COMMENT ON TABLE core.send_identities IS
    'An address the organisation answers from, bound to the Gmail mailbox that sends it; '
    'verified against users.settings.sendAs.list.';

-- Extra domains the organisation sends from (besides its send identities' addresses).
CREATE TABLE core.organization_mail_domains (
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    domain text NOT NULL CHECK (domain = lower(domain) AND domain ~ '^[a-z0-9.-]+\.[a-z0-9-]+$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, domain)
);
COMMENT ON TABLE core.organization_mail_domains IS
    'Domains whose senders are the organisation: their mail is outbound (never routed, never '
    'spam, never reopens a ticket).';

-- The send state of each message the product sends: one row per outbound canonical message.
CREATE TABLE core.outbound_messages (
    message_id bigint PRIMARY KEY REFERENCES core.messages ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    oss_message_id uuid NOT NULL DEFAULT gen_random_uuid(),
    ticket_id bigint NOT NULL REFERENCES core.tickets ON DELETE CASCADE,
    send_identity_id uuid REFERENCES core.send_identities ON DELETE SET NULL,
    -- The sending mailbox, fixed when the reply is queued.
    mailbox_id uuid REFERENCES core.mailboxes ON DELETE SET NULL,
    author_user_id uuid REFERENCES core.users ON DELETE SET NULL,
    state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    job_id bigint,
    gmail_thread_id text,
    gmail_message_id text,
    sent_at timestamptz,
    -- How the send ended when it was not a success; a bounce after `sent` moves it to failed.
    failure_reason text,
    failure_kind text CHECK (failure_kind IN ('send', 'bounce')),
    failed_at timestamptz,
    -- How the sent message was found when Gmail's answer was lost (rfc822msgid search).
    recovered boolean NOT NULL DEFAULT false,
    queued_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'sent') <= (gmail_message_id IS NOT NULL AND sent_at IS NOT NULL)),
    CHECK ((state = 'failed') = (failure_reason IS NOT NULL))
);
CREATE UNIQUE INDEX outbound_messages_oss_id_key ON core.outbound_messages (oss_message_id);
CREATE INDEX outbound_messages_ticket_idx ON core.outbound_messages (ticket_id);
COMMENT ON TABLE core.outbound_messages IS
    'Send state of a message the product sends: queued -> sending -> sent / failed, moved '
    'only by worker.outbound_* functions; Gmail''s id and sent_at once sent.';

-- A reply is linked to its ticket when it is written, not by stitching.
ALTER TABLE core.ticket_messages DROP CONSTRAINT ticket_messages_stitch_reason_check;
ALTER TABLE core.ticket_messages ADD CONSTRAINT ticket_messages_stitch_reason_check
    CHECK (stitch_reason IN ('already_linked', 'signed_marker', 'in_reply_to', 'references',
                             'thread_member', 'subject_code', 'new_ticket', 'merged',
                             'agent_reply'));

-- What a message is, decided in SQL from its stored headers (logic.classify_message) when
-- it is recorded: a machine's answer (auto-reply, delivery report) and why.
ALTER TABLE core.messages
    ADD COLUMN automated text CHECK (automated IN ('auto_reply', 'bounce')),
    ADD COLUMN classification jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN core.messages.automated IS
    'auto_reply (RFC 3834 and the like: joins its thread, never reopens) or bounce (RFC 3464 '
    'delivery report); NULL for mail a person wrote.';
COMMENT ON COLUMN core.messages.classification IS
    'Why the message has its direction and `automated` value: the rules that matched.';

-- The direction of the ticket's newest message, for list items.
ALTER TABLE core.tickets ADD COLUMN last_message_direction text
    CHECK (last_message_direction IN ('inbound', 'outbound'));
COMMENT ON COLUMN core.tickets.last_message_direction IS
    'Direction of the newest message linked to the ticket (list items show it).';

UPDATE core.tickets t
SET last_message_direction = (
    SELECT m.direction FROM core.ticket_messages tm JOIN core.messages m ON m.id = tm.message_id
    WHERE tm.ticket_id = t.id ORDER BY coalesce(m.sent_at, tm.linked_at) DESC, m.id DESC LIMIT 1);

-- The stored list item is core.ticket_list_item (the item's shape, migration 0010) plus
-- the fields added since: composed here, so this migration does not restate the shape.
CREATE FUNCTION core.ticket_list_item_stored(t core.tickets) RETURNS json
    LANGUAGE sql STABLE AS $$
    SELECT (core.ticket_list_item(t)::jsonb
            || jsonb_build_object('last_message_direction', t.last_message_direction))::json
$$;
COMMENT ON FUNCTION core.ticket_list_item_stored(core.tickets) IS
    'What core.tickets.list_item holds: core.ticket_list_item plus last_message_direction.';

CREATE OR REPLACE FUNCTION core.tickets_store_list_item() RETURNS trigger
    LANGUAGE plpgsql SET timezone = 'UTC' AS $$
BEGIN
    NEW.list_item := core.ticket_list_item_stored(NEW);
    RETURN NEW;
END
$$;
UPDATE core.tickets SET list_item = list_item;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['send_identities', 'organization_mail_domains', 'outbound_messages']
    LOOP
        EXECUTE format('ALTER TABLE core.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON core.%I '
                       'USING (organization_id = core.current_org_id()) '
                       'WITH CHECK (organization_id = core.current_org_id())', t);
    END LOOP;
END
$$;

-- A reply is written by the API (under RLS) in one transaction: the canonical message, its
-- contents and thread ids, its link to the ticket and its send state.
GRANT SELECT, INSERT, UPDATE, DELETE ON core.send_identities, core.organization_mail_domains
    TO ticketing_api;
GRANT SELECT, INSERT ON core.outbound_messages, core.messages, core.message_contents,
    core.message_thread_refs, core.ticket_messages, core.ticket_thread_ids TO ticketing_api;
