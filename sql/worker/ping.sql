CREATE FUNCTION worker.ping_complete(p_ping_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    UPDATE core.worker_pings
    SET completed_at = now(), completed_by = current_setting('application_name')
    WHERE id = p_ping_id AND completed_at IS NULL
    RETURNING true
$$;
COMMENT ON FUNCTION worker.ping_complete(bigint) IS
    'worker_ping task: mark the ping answered by this worker process.';
