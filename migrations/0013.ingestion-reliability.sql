-- depends: 0012.recent-search
-- Ingestion that never stops silently (issue 11).
--
-- A listing walk keeps its query constant: Gmail's page tokens are valid only with the
-- parameters that produced them (AIP-158), so the backfill stores the page size it started
-- with next to its page token. Every successful sync step is timestamped, so "no successful
-- sync for N poll intervals" is a query, not a guess.

ALTER TABLE core.mailboxes
    ADD COLUMN backfill_page_size integer CHECK (backfill_page_size BETWEEN 1 AND 500),
    ADD COLUMN last_sync_success_at timestamptz;

COMMENT ON COLUMN core.mailboxes.backfill_page_size IS
    'maxResults of the running backfill walk; its page token is valid only with it.';
COMMENT ON COLUMN core.mailboxes.last_sync_success_at IS
    'When a sync step (backfill page or history page) of this mailbox last succeeded.';

UPDATE core.mailboxes
SET last_sync_success_at = greatest(last_history_sync_at, backfill_completed_at);
