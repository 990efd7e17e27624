-- Number changes NOTIFYed on numbers_changed with the E.164 number: nodes answer calls from memory
-- and read a number again only once it changed (a query per INVITE before).
CREATE FUNCTION notify_numbers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('numbers_changed', '');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('numbers_changed', OLD.e164);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.e164 IS DISTINCT FROM OLD.e164) THEN
        PERFORM pg_notify('numbers_changed', NEW.e164);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER numbers_changed AFTER INSERT OR UPDATE OR DELETE ON numbers
    FOR EACH ROW EXECUTE FUNCTION notify_numbers_changed();
CREATE TRIGGER numbers_truncated AFTER TRUNCATE ON numbers
    FOR EACH STATEMENT EXECUTE FUNCTION notify_numbers_changed();
