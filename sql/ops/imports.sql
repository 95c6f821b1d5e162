CREATE FUNCTION ops.ensure_import_mailbox(p_organization_name text, p_email text) RETURNS uuid
    LANGUAGE plpgsql AS $$
DECLARE
    v_org uuid;
    v_mailbox uuid;
    v_email text := lower(btrim(p_email));
BEGIN
    SELECT id INTO v_org FROM core.organizations WHERE lower(name) = lower(btrim(p_organization_name));
    IF NOT FOUND THEN
        INSERT INTO core.organizations (name) VALUES (btrim(p_organization_name)) RETURNING id INTO v_org;
    END IF;
    SELECT id INTO v_mailbox FROM core.mailboxes WHERE organization_id = v_org AND email = v_email;
    IF NOT FOUND THEN
        -- An archive-only mailbox: nothing to sync from Gmail, so backfill is 'done'.
        INSERT INTO core.mailboxes (organization_id, provider, email, backfill_state)
        VALUES (v_org, 'mbox', v_email, 'done')
        RETURNING id INTO v_mailbox;
    END IF;
    RETURN v_mailbox;
END
$$;
COMMENT ON FUNCTION ops.ensure_import_mailbox(text, text) IS
    'import-mbox: the mailbox (created as provider mbox if absent, with its organisation) '
    'that imported messages become occurrences of.';
