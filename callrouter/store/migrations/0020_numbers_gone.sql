-- A number that is gone (deleted, or its row moved to another E.164) is NOTIFYed as 'gone:' and
-- the number: a node forgets it at once. Before, a node only learnt that it had changed, and
-- if the database went away before the number's next call, memory still routed it.
CREATE OR REPLACE FUNCTION notify_numbers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('numbers_changed', '');
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND NEW.e164 IS DISTINCT FROM OLD.e164) THEN
        PERFORM pg_notify('numbers_changed', 'gone:' || OLD.e164);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('numbers_changed', OLD.e164);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.e164 IS DISTINCT FROM OLD.e164) THEN
        PERFORM pg_notify('numbers_changed', NEW.e164);
    END IF;
    RETURN NULL;
END;
$$;
