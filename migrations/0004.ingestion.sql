-- depends: 0003.identity-and-tenancy
-- Ingestion: mailboxes and their sync state, OAuth connect states, occurrences (one Gmail
-- message in one mailbox), canonical messages (one logical email), contents, attachments,
-- thread references and collision groups.
-- Pipeline rows carry bigint ids so jobs can address them by id alone; every table still
-- carries organization_id, with RLS and indexes that lead with it for tenant queries.

CREATE TYPE core.mailbox_state AS ENUM ('active', 'needs_reconnect', 'disabled');

CREATE TABLE core.mailboxes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    provider text NOT NULL DEFAULT 'gmail' CHECK (provider IN ('gmail', 'mbox')),
    email text NOT NULL CHECK (email = lower(email) AND email ~ '^[^@\s]+@[^@\s]+$'),
    display_name text NOT NULL DEFAULT '',
    state core.mailbox_state NOT NULL DEFAULT 'active',
    enabled boolean NOT NULL DEFAULT true,
    -- OAuth refresh token, AES-256-GCM (nonce || ciphertext), bound to org and mailbox.
    encrypted_refresh_token bytea,
    granted_scopes text[] NOT NULL DEFAULT '{}',
    -- History sync cursor: only a sync step moves it.
    history_id bigint,
    last_history_sync_at timestamptz,
    -- Backfill: the history id recorded before the first page, and the page checkpoint.
    backfill_state text NOT NULL DEFAULT 'idle' CHECK (backfill_state IN ('idle', 'running', 'done')),
    backfill_history_id bigint,
    backfill_page_token text,
    backfill_pages integer NOT NULL DEFAULT 0,
    backfill_started_at timestamptz,
    backfill_completed_at timestamptz,
    -- Failures and pause (manual or circuit breaker).
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error text,
    last_error_at timestamptz,
    ingestion_paused_until timestamptz,
    pause_reason text,
    created_by uuid REFERENCES core.users ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX mailboxes_org_email_key ON core.mailboxes (organization_id, email);

-- One-time OAuth states: only the HMAC of the state token is stored.
CREATE TABLE core.oauth_states (
    state_hash bytea PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES core.users ON DELETE CASCADE,
    purpose text NOT NULL CHECK (purpose IN ('gmail_journal')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz
);

CREATE TYPE core.occurrence_state AS ENUM
    ('discovered', 'raw_fetched', 'parsed', 'stitched', 'routed', 'failed');

CREATE TABLE core.collision_groups (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    loose_fingerprint text NOT NULL,
    message_count integer NOT NULL DEFAULT 0,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX collision_groups_fingerprint_key
    ON core.collision_groups (organization_id, loose_fingerprint);

-- A canonical message: one logical email, however many occurrences it has.
CREATE TABLE core.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    strict_signature text NOT NULL,
    loose_fingerprint text NOT NULL,
    collision_group_id bigint REFERENCES core.collision_groups ON DELETE SET NULL,
    direction text NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound', 'outbound')),
    minted_by_product boolean NOT NULL DEFAULT false,
    rfc_message_id text,
    subject text NOT NULL DEFAULT '',
    normalized_subject text NOT NULL DEFAULT '',
    from_name text NOT NULL DEFAULT '',
    from_address text,
    reply_to jsonb NOT NULL DEFAULT '[]',
    to_addresses jsonb NOT NULL DEFAULT '[]',
    cc_addresses jsonb NOT NULL DEFAULT '[]',
    sent_at timestamptz,
    snippet text NOT NULL DEFAULT '',
    raw_blob_key text,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The dedupe identity: no race can create two canonical rows for one signature.
CREATE UNIQUE INDEX messages_signature_key ON core.messages (organization_id, strict_signature);
CREATE INDEX messages_rfc_message_id_idx ON core.messages (organization_id, rfc_message_id);
CREATE INDEX messages_loose_fingerprint_idx ON core.messages (organization_id, loose_fingerprint);

CREATE TABLE core.message_contents (
    message_id bigint PRIMARY KEY REFERENCES core.messages ON DELETE CASCADE,
    organization_id uuid NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}',
    text_body text NOT NULL DEFAULT '',
    html_body text NOT NULL DEFAULT '',
    body_sha256 text NOT NULL DEFAULT ''
);

CREATE TABLE core.attachments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL,
    message_id bigint NOT NULL REFERENCES core.messages ON DELETE CASCADE,
    position integer NOT NULL,
    filename text NOT NULL DEFAULT '',
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    size bigint NOT NULL,
    sha256 text NOT NULL,
    blob_key text NOT NULL,
    content_id text,
    disposition text NOT NULL DEFAULT 'attachment' CHECK (disposition IN ('attachment', 'inline')),
    UNIQUE (message_id, position)
);

-- Every Message-ID a message declares (its own, In-Reply-To, References): stitching finds
-- threads by the ids, seen or not.
CREATE TABLE core.message_thread_refs (
    organization_id uuid NOT NULL,
    message_id bigint NOT NULL REFERENCES core.messages ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('self', 'in_reply_to', 'references')),
    position integer NOT NULL,
    ref text NOT NULL,
    PRIMARY KEY (message_id, kind, position)
);
CREATE INDEX message_thread_refs_ref_idx ON core.message_thread_refs (organization_id, ref);

CREATE TABLE core.message_occurrences (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES core.organizations ON DELETE CASCADE,
    mailbox_id uuid NOT NULL REFERENCES core.mailboxes ON DELETE CASCADE,
    gmail_message_id text NOT NULL,
    gmail_thread_id text,
    label_ids text[] NOT NULL DEFAULT '{}',
    internal_date timestamptz,
    state core.occurrence_state NOT NULL DEFAULT 'discovered',
    failed_stage text,
    last_error text,
    failure_count integer NOT NULL DEFAULT 0,
    raw_blob_key text,
    raw_sha256 text,
    raw_size integer,
    message_id bigint REFERENCES core.messages ON DELETE SET NULL,
    original_recipient text,
    recipient_source text CHECK (recipient_source IN
        ('workspace_header', 'delivered_to', 'x_original_to', 'to_cc_scan', 'unknown')),
    recipient_confidence text CHECK (recipient_confidence IN ('high', 'medium', 'low')),
    recipient_evidence jsonb NOT NULL DEFAULT '{}',
    deleted_in_gmail_at timestamptz,
    discovered_at timestamptz NOT NULL DEFAULT now(),
    raw_fetched_at timestamptz,
    parsed_at timestamptz,
    stitched_at timestamptz,
    routed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'failed') = (failed_stage IS NOT NULL))
);
CREATE UNIQUE INDEX message_occurrences_gmail_key
    ON core.message_occurrences (mailbox_id, gmail_message_id);
CREATE INDEX message_occurrences_org_state_idx
    ON core.message_occurrences (organization_id, state);
CREATE INDEX message_occurrences_message_idx ON core.message_occurrences (message_id);
CREATE INDEX message_occurrences_unrouted_idx
    ON core.message_occurrences (mailbox_id, internal_date)
    WHERE state <> 'routed';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['mailboxes', 'oauth_states', 'collision_groups', 'messages',
                             'message_contents', 'attachments', 'message_thread_refs',
                             'message_occurrences']
    LOOP
        EXECUTE format('ALTER TABLE core.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON core.%I '
                       'USING (organization_id = core.current_org_id()) '
                       'WITH CHECK (organization_id = core.current_org_id())', t);
    END LOOP;
END
$$;

-- The API reads pipeline rows directly (under RLS); it changes mailboxes and OAuth states
-- only through api functions, which run as the API role too.
GRANT SELECT, INSERT, UPDATE ON core.mailboxes, core.oauth_states TO ticketing_api;
GRANT SELECT ON core.collision_groups, core.messages, core.message_contents, core.attachments,
    core.message_thread_refs, core.message_occurrences TO ticketing_api;
