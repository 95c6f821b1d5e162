-- depends: 0013.ingestion-reliability
-- Gmail push notifications (issue 18): each journal mailbox is watched (users.watch), so
-- Gmail publishes every change to a Cloud Pub/Sub topic, whose push subscription calls
-- POST /webhooks/gmail/pubsub; polling stays as the safety net.

ALTER TABLE core.mailboxes
    ADD COLUMN watch_topic text,
    ADD COLUMN watch_expires_at timestamptz,
    ADD COLUMN watch_renewed_at timestamptz,
    ADD COLUMN watch_error text,
    ADD COLUMN watch_error_at timestamptz,
    ADD COLUMN last_push_at timestamptz,
    ADD COLUMN last_push_history_id bigint;

COMMENT ON COLUMN core.mailboxes.watch_topic IS
    'Pub/Sub topic the mailbox''s Gmail watch publishes to (NULL: not watched).';
COMMENT ON COLUMN core.mailboxes.watch_expires_at IS
    'When Gmail stops notifying unless the watch is renewed (mailbox_watch_renew renews it '
    'daily).';
COMMENT ON COLUMN core.mailboxes.last_push_at IS
    'When the last push notification for this mailbox arrived.';

-- A push names its mailbox by address only.
CREATE INDEX mailboxes_email_idx ON core.mailboxes (email) WHERE provider = 'gmail';
