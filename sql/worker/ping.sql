CREATE FUNCTION worker.ping_complete(p_ping_id bigint) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE core.worker_pings
    SET completed_at = coalesce(completed_at, now()),
        completed_by = coalesce(completed_by, current_setting('application_name'))
    WHERE id = p_ping_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no worker ping %', p_ping_id;
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION worker.ping_complete(bigint) IS
    'worker_ping task: mark the ping answered by this worker process (an unknown ping fails).';
