-- depends: 0004.ingestion
-- Operations: every failed job attempt (the DLQ's history) and replays of failed jobs.
-- procrastinate owns its job table; these rows refer to job ids without a foreign key so
-- that pruning old jobs never fails.

CREATE TABLE core.job_failures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL,
    task_name text NOT NULL,
    queue_name text NOT NULL DEFAULT '',
    attempt integer NOT NULL,
    error_class text NOT NULL,
    error_message text NOT NULL DEFAULT '',
    -- From the job's mailbox, when it has one: lets an organisation see its own failures.
    organization_id uuid REFERENCES core.organizations ON DELETE CASCADE,
    mailbox_id uuid,
    worker text NOT NULL DEFAULT '',
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_failures_job_idx ON core.job_failures (job_id, id DESC);
CREATE INDEX job_failures_recent_idx ON core.job_failures (failed_at DESC);

CREATE TABLE core.job_replays (
    job_id bigint PRIMARY KEY,
    replay_job_id bigint NOT NULL,
    organization_id uuid REFERENCES core.organizations ON DELETE CASCADE,
    replayed_by uuid REFERENCES core.users ON DELETE SET NULL,
    replayed_at timestamptz NOT NULL DEFAULT now()
);
