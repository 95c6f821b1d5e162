-- Ingestion steps. Each records its result and queues its successor in one transaction, so
-- a crash between steps loses nothing and doubles nothing; each is idempotent, because
-- procrastinate delivers a job at least once.

-- Fetch and parse jobs carry up to this many occurrences: one Gmail batch request each.
CREATE FUNCTION worker.batch_size() RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT 50';
COMMENT ON FUNCTION worker.batch_size() IS 'Occurrences per fetch/parse job (one Gmail batch).';

-- The occurrence ids of a stage's result ([{occurrence_id, ...}]). Stages select their rows
-- with `o.id = ANY (worker.batch_occurrence_ids(...))` rather than a join with the batch:
-- that stays a primary-key lookup even on a table never analysed.
CREATE FUNCTION worker.batch_occurrence_ids(p_batch jsonb) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN ARRAY(SELECT (e->>'occurrence_id')::bigint FROM jsonb_array_elements(p_batch) e);
END
$$;
COMMENT ON FUNCTION worker.batch_occurrence_ids(jsonb) IS
    'The occurrence_id of each element of a stage''s result array.';

CREATE FUNCTION worker.enqueue_stage(
    p_task text, p_mailbox_id uuid, p_occurrence_ids bigint[]
) RETURNS integer
    LANGUAGE sql AS $$
    -- Queue and priority from the stage catalog (logic.pipeline_stages).
    SELECT count(logic.enqueue(p_task,
                               jsonb_build_object('mailbox_id', p_mailbox_id,
                                                  'occurrence_ids', to_jsonb(ids)),
                               p_queue => stage.queue, p_priority => stage.priority))::integer
    FROM logic.pipeline_stage(p_task) AS stage
    CROSS JOIN (
        SELECT array_agg(id ORDER BY id) AS ids
        FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n
              FROM unnest(p_occurrence_ids) AS id) numbered
        GROUP BY n / worker.batch_size()
    ) batches
$$;
COMMENT ON FUNCTION worker.enqueue_stage(text, uuid, bigint[]) IS
    'Queue p_task for the occurrences in batches of worker.batch_size(); returns the job count.';

CREATE FUNCTION worker.enqueue_next_stage(
    p_task_done text, p_mailbox_id uuid, p_occurrence_ids bigint[]
) RETURNS integer
    LANGUAGE sql AS $$
    SELECT worker.enqueue_stage(stage.next_task, p_mailbox_id, p_occurrence_ids)
    FROM logic.pipeline_stage(p_task_done) AS stage
    WHERE stage.next_task IS NOT NULL
$$;
COMMENT ON FUNCTION worker.enqueue_next_stage(text, uuid, bigint[]) IS
    'Queue the stage that follows p_task_done (logic.pipeline_stages) for the occurrences it '
    'moved on; returns the job count.';

CREATE FUNCTION worker.mailbox_for_sync(p_mailbox_id uuid)
    RETURNS TABLE (mailbox core.mailboxes, blocked_reason text)
    LANGUAGE sql STABLE AS $$
    SELECT m, logic.sync_blocked_reason(m) FROM core.mailboxes m WHERE m.id = p_mailbox_id
$$;
COMMENT ON FUNCTION worker.mailbox_for_sync(uuid) IS
    'A mailbox with the reason it may not sync now (NULL when it may).';

-- Insert the Gmail messages of one listing page or history page as occurrences; returns
-- the ids that are new (existing ones are left alone: a re-run adds nothing).
CREATE FUNCTION worker.discover_occurrences(p_mailbox core.mailboxes, p_messages jsonb)
    RETURNS bigint[]
    LANGUAGE sql AS $$
    WITH inserted AS (
        INSERT INTO core.message_occurrences
            (organization_id, mailbox_id, gmail_message_id, gmail_thread_id, label_ids)
        SELECT p_mailbox.organization_id, p_mailbox.id, m.id, m.thread_id,
               coalesce(m.label_ids, '{}')
        FROM jsonb_to_recordset(p_messages) AS m(id text, thread_id text, label_ids text[])
        ON CONFLICT (mailbox_id, gmail_message_id) DO NOTHING
        RETURNING id
    )
    SELECT coalesce(array_agg(id), '{}') FROM inserted
$$;
COMMENT ON FUNCTION worker.discover_occurrences(core.mailboxes, jsonb) IS
    'Record listed Gmail messages [{id, thread_id, label_ids}] as occurrences; returns new ids.';

CREATE FUNCTION worker.backfill_record_page(
    p_mailbox_id uuid,
    p_page_token text,          -- the checkpoint this page was fetched from
    p_history_id bigint,        -- the mailbox's history id, read before the first page
    p_messages jsonb,           -- [{id, thread_id}]
    p_next_page_token text,
    p_page_size integer         -- maxResults the page was listed with
) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    m core.mailboxes;
    v_new bigint[];
BEGIN
    -- NO KEY UPDATE: serialises sync steps of the mailbox without blocking the foreign-key
    -- checks (FOR KEY SHARE) of stages inserting rows that reference it.
    SELECT * INTO m FROM core.mailboxes WHERE id = p_mailbox_id FOR NO KEY UPDATE;
    IF NOT FOUND OR m.backfill_state <> 'running'
       OR m.backfill_page_token IS DISTINCT FROM p_page_token THEN
        -- A duplicate delivery of a page already recorded: the chain has moved on.
        RETURN jsonb_build_object('recorded', false);
    END IF;

    v_new := worker.discover_occurrences(m, p_messages);
    PERFORM worker.enqueue_next_stage('mailbox_backfill', m.id, v_new);

    UPDATE core.mailboxes
    SET backfill_history_id = coalesce(backfill_history_id, p_history_id),
        -- The walk's next token is valid only with the query that made it.
        backfill_page_size = coalesce(backfill_page_size, p_page_size),
        backfill_page_token = p_next_page_token,
        backfill_pages = backfill_pages + 1,
        updated_at = now()
    WHERE id = m.id
    RETURNING * INTO m;

    IF p_next_page_token IS NULL THEN
        -- History sync continues from the id recorded before the walk began, so nothing
        -- that arrived during the walk is missed (replays are idempotent).
        UPDATE core.mailboxes
        SET backfill_state = 'done', backfill_completed_at = now(),
            history_id = m.backfill_history_id
        WHERE id = m.id;
        PERFORM logic.enqueue_history_sync(m.id);
    ELSE
        PERFORM logic.enqueue_backfill_step(m.id);
    END IF;
    PERFORM logic.record_sync_success(m.id);
    RETURN jsonb_build_object('recorded', true, 'new_occurrences', cardinality(v_new),
                              'done', p_next_page_token IS NULL);
END
$$;
COMMENT ON FUNCTION worker.backfill_record_page(uuid, text, bigint, jsonb, text, integer) IS
    'mailbox_backfill: store one listing page as occurrences, queue their fetch, checkpoint '
    'the page token (with the page size it belongs to) and queue the next page (or, after '
    'the last, hand over to history sync).';

CREATE FUNCTION worker.backfill_restart_walk(p_mailbox_id uuid, p_page_token text, p_error text)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    -- Gmail refused the checkpointed page token (expired, or issued for another query):
    -- walk the listing again from its first page. Occurrences already recorded stay (a
    -- re-listed message adds nothing); the history id recorded before the first page is
    -- kept, so mail that arrived meanwhile is still replayed by history sync.
    UPDATE core.mailboxes
    SET backfill_page_token = NULL, backfill_page_size = NULL, backfill_pages = 0,
        updated_at = now()
    WHERE id = p_mailbox_id AND backfill_state = 'running'
      AND backfill_page_token IS NOT DISTINCT FROM p_page_token;
    IF NOT FOUND THEN
        RETURN false;  -- the chain has moved on meanwhile
    END IF;
    PERFORM logic.record_sync_failure(p_mailbox_id, 'backfill page token refused, walk restarted: '
                                                    || p_error);
    PERFORM logic.enqueue_backfill_step(p_mailbox_id);
    RETURN true;
END
$$;
COMMENT ON FUNCTION worker.backfill_restart_walk(uuid, text, text) IS
    'mailbox_backfill: Gmail refused the checkpointed page token; restart the listing walk '
    'from its first page (idempotent) and queue it. False when the checkpoint moved meanwhile.';

CREATE FUNCTION worker.history_record_page(
    p_mailbox_id uuid,
    p_cursor bigint,            -- the history id this sync started from
    p_added jsonb,              -- [{id, thread_id, label_ids}]
    p_deleted text[],           -- Gmail ids deleted
    p_labels jsonb,             -- [{id, added: [...], removed: [...]}]
    p_new_cursor bigint,
    p_last_page boolean
) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    m core.mailboxes;
    v_new bigint[];
BEGIN
    -- NO KEY UPDATE: serialises sync steps of the mailbox without blocking the foreign-key
    -- checks (FOR KEY SHARE) of stages inserting rows that reference it.
    SELECT * INTO m FROM core.mailboxes WHERE id = p_mailbox_id FOR NO KEY UPDATE;
    IF NOT FOUND OR m.history_id IS DISTINCT FROM p_cursor THEN
        RETURN jsonb_build_object('recorded', false);
    END IF;

    v_new := worker.discover_occurrences(m, p_added);
    PERFORM worker.enqueue_next_stage('mailbox_history_sync', m.id, v_new);

    UPDATE core.message_occurrences o
    SET deleted_in_gmail_at = now(), updated_at = now()
    WHERE o.mailbox_id = m.id AND o.gmail_message_id = ANY(p_deleted)
      AND o.deleted_in_gmail_at IS NULL;

    UPDATE core.message_occurrences o
    SET label_ids = ARRAY(
            SELECT DISTINCT label FROM unnest(o.label_ids || change.added) AS label
            WHERE label <> ALL(change.removed) ORDER BY 1),
        updated_at = now()
    FROM jsonb_to_recordset(p_labels) AS change(id text, added text[], removed text[])
    WHERE o.mailbox_id = m.id AND o.gmail_message_id = change.id;

    -- The cursor moves only here, with the occurrences it covers.
    UPDATE core.mailboxes
    SET history_id = p_new_cursor,
        last_history_sync_at = CASE WHEN p_last_page THEN now() ELSE last_history_sync_at END,
        updated_at = now()
    WHERE id = m.id;
    PERFORM logic.record_sync_success(m.id);
    RETURN jsonb_build_object('recorded', true, 'new_occurrences', cardinality(v_new));
END
$$;
COMMENT ON FUNCTION worker.history_record_page(uuid, bigint, jsonb, text[], jsonb, bigint, boolean) IS
    'mailbox_history_sync: store one history page (added, deleted, label changes) and move '
    'the cursor in the same transaction; a stale cursor (duplicate job) records nothing.';

CREATE FUNCTION worker.occurrences_in_state(p_ids bigint[], p_state core.occurrence_state)
    RETURNS TABLE (id bigint, organization_id uuid, gmail_message_id text, raw_blob_key text)
    LANGUAGE sql STABLE AS $$
    SELECT o.id, o.organization_id, o.gmail_message_id, o.raw_blob_key
    FROM core.message_occurrences o
    WHERE o.id = ANY(p_ids) AND o.state = p_state
    ORDER BY o.id
$$;
COMMENT ON FUNCTION worker.occurrences_in_state(bigint[], core.occurrence_state) IS
    'The given occurrences that still wait in p_state (a re-delivered job skips the rest).';

CREATE FUNCTION worker.fail_occurrences(p_stage text, p_failures jsonb) RETURNS integer
    LANGUAGE sql AS $$
    WITH failed AS (
        UPDATE core.message_occurrences o
        SET state = 'failed', failed_stage = p_stage, last_error = left(f.error, 2000),
            failure_count = o.failure_count + 1, updated_at = now()
        FROM jsonb_to_recordset(p_failures) AS f(occurrence_id bigint, error text)
        WHERE o.id = ANY (worker.batch_occurrence_ids(p_failures))
          AND o.id = f.occurrence_id AND o.state <> 'failed'
        RETURNING 1
    )
    SELECT count(*)::integer FROM failed
$$;
COMMENT ON FUNCTION worker.fail_occurrences(text, jsonb) IS
    'Mark occurrences failed at p_stage with their reason: [{occurrence_id, error}].';

CREATE FUNCTION worker.record_raw(
    p_mailbox_id uuid, p_fetched jsonb, p_failures jsonb,
    p_parse_ids bigint[]  -- NULL mid-batch; at the end, the batch: queue parsing of its raw ones
) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    v_fetched bigint[];
BEGIN
    WITH updated AS (
        UPDATE core.message_occurrences o
        SET state = 'raw_fetched', raw_blob_key = f.blob_key, raw_sha256 = f.sha256,
            raw_size = f.size, gmail_thread_id = coalesce(f.thread_id, o.gmail_thread_id),
            label_ids = coalesce(f.label_ids, o.label_ids),
            internal_date = to_timestamp(f.internal_date_ms / 1000.0),
            raw_fetched_at = now(), updated_at = now()
        FROM jsonb_to_recordset(p_fetched) AS f(
            occurrence_id bigint, blob_key text, sha256 text, size integer, thread_id text,
            label_ids text[], internal_date_ms bigint)
        WHERE o.id = ANY (worker.batch_occurrence_ids(p_fetched))
          AND o.id = f.occurrence_id AND o.state = 'discovered'
        RETURNING o.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_fetched FROM updated;
    PERFORM worker.fail_occurrences('occurrence_fetch_raw', p_failures);
    IF p_parse_ids IS NOT NULL THEN
        -- Chunks recorded earlier (by this run, or by a run that died) are parsed together
        -- with the last one: one parse job per fetch batch.
        PERFORM worker.enqueue_next_stage(
            'occurrence_fetch_raw', p_mailbox_id,
            ARRAY(SELECT o.id FROM core.message_occurrences o
                  WHERE o.id = ANY (p_parse_ids) AND o.state = 'raw_fetched' ORDER BY o.id));
    END IF;
    RETURN jsonb_build_object('fetched', cardinality(v_fetched),
                              'failed', jsonb_array_length(p_failures));
END
$$;
COMMENT ON FUNCTION worker.record_raw(uuid, jsonb, jsonb, bigint[]) IS
    'occurrence_fetch_raw: record stored raw blobs [{occurrence_id, blob_key, sha256, size, '
    'thread_id, label_ids, internal_date_ms}] and failures of one chunk of a batch; with '
    'p_parse_ids (the last chunk), queue parsing of those of the batch now raw_fetched.';

CREATE FUNCTION worker.give_up_batch(
    p_stage text, p_mailbox_id uuid, p_occurrence_ids bigint[], p_error text
) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_waiting core.occurrence_state := (logic.pipeline_stage(p_stage)).from_state;
    v_failed integer;
BEGIN
    -- Only what still waits for the stage fails: a fetch batch records its chunks as it
    -- goes, and what it stored before giving up goes on to parsing.
    v_failed := worker.fail_occurrences(p_stage, (
        SELECT coalesce(jsonb_agg(jsonb_build_object('occurrence_id', o.id, 'error', p_error)),
                        '[]')
        FROM core.message_occurrences o
        WHERE o.id = ANY (p_occurrence_ids) AND o.state = v_waiting));
    IF p_stage = 'occurrence_fetch_raw' THEN
        PERFORM worker.record_raw(p_mailbox_id, '[]', '[]', p_occurrence_ids);
    END IF;
    RETURN v_failed;
END
$$;
COMMENT ON FUNCTION worker.give_up_batch(text, uuid, bigint[], text) IS
    'A fetch or parse job is out of retries: its occurrences still waiting for the stage fail '
    'with the error (listable, retriable); those a fetch batch already stored are parsed.';

CREATE FUNCTION worker.record_imported(p_mailbox_id uuid, p_items jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    m core.mailboxes;
    v_new bigint[];
BEGIN
    SELECT * INTO m FROM core.mailboxes WHERE id = p_mailbox_id;
    WITH inserted AS (
        INSERT INTO core.message_occurrences
            (organization_id, mailbox_id, gmail_message_id, gmail_thread_id, label_ids, state,
             raw_blob_key, raw_sha256, raw_size, internal_date, raw_fetched_at)
        SELECT m.organization_id, m.id, i.id, i.thread_id, coalesce(i.label_ids, '{}'),
               'raw_fetched', i.blob_key, i.sha256, i.size,
               to_timestamp(i.internal_date_ms / 1000.0), now()
        FROM jsonb_to_recordset(p_items) AS i(id text, thread_id text, label_ids text[],
                                               blob_key text, sha256 text, size integer,
                                               internal_date_ms bigint)
        ON CONFLICT (mailbox_id, gmail_message_id) DO NOTHING
        RETURNING id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_new FROM inserted;
    PERFORM worker.enqueue_stage('occurrence_parse', m.id, v_new);
    RETURN jsonb_build_object('new_occurrences', cardinality(v_new),
                              'already_imported', jsonb_array_length(p_items) - cardinality(v_new));
END
$$;
COMMENT ON FUNCTION worker.record_imported(uuid, jsonb) IS
    'import-mbox: record messages whose raw bytes are already stored as raw_fetched '
    'occurrences and queue their parsing (re-importing adds nothing).';

-- The worker's Python calls only worker.* functions; these name the logic it shares with
-- the API, so each call the worker makes is greppable in this schema.
CREATE FUNCTION worker.enqueue_due_syncs() RETURNS integer
    LANGUAGE sql AS 'SELECT logic.enqueue_due_syncs()';
COMMENT ON FUNCTION worker.enqueue_due_syncs() IS
    'Periodic sync (mailbox_sync_due, the SYNC_POLL_SECONDS loop): logic.enqueue_due_syncs.';

CREATE FUNCTION worker.restart_backfill(p_mailbox_id uuid) RETURNS bigint
    LANGUAGE sql AS 'SELECT logic.enqueue_backfill(p_mailbox_id)';
COMMENT ON FUNCTION worker.restart_backfill(uuid) IS
    'History too old for Gmail (404): a full backfill from the first page (logic.enqueue_backfill).';

CREATE FUNCTION worker.record_sync_failure(p_mailbox_id uuid, p_error text) RETURNS void
    LANGUAGE sql AS 'SELECT logic.record_sync_failure(p_mailbox_id, p_error)';
COMMENT ON FUNCTION worker.record_sync_failure(uuid, text) IS
    'A sync step failed (logic.record_sync_failure: the circuit breaker counts it).';

CREATE FUNCTION worker.mark_needs_reconnect(p_mailbox_id uuid, p_error text) RETURNS void
    LANGUAGE sql AS 'SELECT logic.mark_needs_reconnect(p_mailbox_id, p_error)';
COMMENT ON FUNCTION worker.mark_needs_reconnect(uuid, text) IS
    'Gmail revoked the grant (logic.mark_needs_reconnect).';

CREATE FUNCTION worker.stalled_worker_seconds() RETURNS double precision
    LANGUAGE sql IMMUTABLE AS 'SELECT logic.stalled_worker_seconds()';
COMMENT ON FUNCTION worker.stalled_worker_seconds() IS
    'logic.stalled_worker_seconds(), for the worker''s recovery calls.';
