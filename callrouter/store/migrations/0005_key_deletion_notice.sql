-- A deleted API key (a client deleted with its keys) is announced like a revoked one, so every
-- server process drops it from its key cache at once.

CREATE FUNCTION notify_api_key_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_key_revoked', OLD.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_api_key_deleted();
