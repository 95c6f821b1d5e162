CREATE FUNCTION ops.request_worker_ping() RETURNS bigint
    LANGUAGE sql AS $$
    WITH ping AS (INSERT INTO core.worker_pings DEFAULT VALUES RETURNING id),
         job AS (SELECT logic.enqueue('worker_ping', jsonb_build_object('ping_id', id)) FROM ping)
    SELECT ping.id FROM ping, job
$$;
COMMENT ON FUNCTION ops.request_worker_ping() IS
    'Defer a worker_ping job and return the ping id; a live worker answers it within seconds '
    '(see ops.worker_pings).';

CREATE VIEW ops.worker_pings AS
SELECT id, requested_at, completed_at, completed_by, completed_at - requested_at AS latency
FROM core.worker_pings;
COMMENT ON VIEW ops.worker_pings IS 'Worker round trips requested with ops.request_worker_ping().';
