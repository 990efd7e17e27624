-- Webhooks changes NOTIFYed on webhooks_changed: nodes keep which events each client wants in memory.
-- A call event no webhook wants then costs no query (three per call before).
CREATE FUNCTION notify_webhooks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('webhooks_changed', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_webhooks_changed();
