-- Tickets: attachment lookup for downloads. Invoker function under row-level security.

CREATE FUNCTION api.ticket_attachment(p_ticket_id bigint, p_attachment_id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_attachment jsonb;
BEGIN
    SELECT jsonb_build_object('id', a.id, 'blob_key', a.blob_key, 'filename', a.filename,
                              'content_type', a.content_type, 'size', a.size)
    INTO v_attachment
    FROM core.attachments a
    JOIN core.ticket_messages tm ON tm.message_id = a.message_id
    WHERE a.id = p_attachment_id AND tm.ticket_id = p_ticket_id;
    IF v_attachment IS NULL THEN
        PERFORM logic.fail(404, 'attachment_not_found',
            'No attachment with that id on this ticket.');
    END IF;
    RETURN v_attachment;
END
$$;
COMMENT ON FUNCTION api.ticket_attachment(bigint, bigint) IS
    'Download lookup: {id, blob_key, filename, content_type, size} of an attachment of a '
    'message of ticket p_ticket_id in the current organisation; else 404 attachment_not_found.';
