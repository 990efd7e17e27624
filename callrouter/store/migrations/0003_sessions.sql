-- Visitor sessions, their number leases and form submissions (dynamic number insertion).

-- Form fields whose values the swap script may send (others are recorded by name only).
ALTER TABLE pools ADD COLUMN form_fields text[] NOT NULL DEFAULT '{}';

CREATE TABLE sessions (
    id              uuid PRIMARY KEY,
    client_id       uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    pool_id         uuid NOT NULL,
    visitor_id      text,
    number          text,
    attribution     jsonb NOT NULL DEFAULT '{}',
    user_agent      text,
    ip_network      text,
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    lease_expires_at timestamptz,
    ended           boolean NOT NULL DEFAULT false,
    FOREIGN KEY (client_id, pool_id) REFERENCES pools (client_id, id) ON DELETE CASCADE,
    UNIQUE (client_id, id)
);
-- Restart: the live leases are read back before the first INVITE is routed.
CREATE INDEX sessions_live ON sessions (lease_expires_at) WHERE number IS NOT NULL;
CREATE INDEX sessions_pool ON sessions (pool_id, created_at);

CREATE TABLE forms (
    id              uuid PRIMARY KEY,
    client_id       uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    session_id      uuid NOT NULL,
    form            text NOT NULL,
    fields          jsonb NOT NULL DEFAULT '{}',
    attribution     jsonb NOT NULL DEFAULT '{}',
    page            text,
    submitted_at    timestamptz NOT NULL,
    FOREIGN KEY (client_id, session_id) REFERENCES sessions (client_id, id) ON DELETE CASCADE,
    UNIQUE (client_id, id)
);
CREATE INDEX forms_client ON forms (client_id, id);

-- The router keeps pools in memory; it LISTENs here to reload a pool whose settings or numbers
-- changed, whoever changed them (the API, another process, an operator with psql).
CREATE FUNCTION notify_pool_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'pools' THEN
        PERFORM pg_notify('pool_changed', coalesce(NEW.id, OLD.id)::text);
    ELSE
        IF TG_OP <> 'INSERT' AND OLD.pool_id IS NOT NULL THEN
            PERFORM pg_notify('pool_changed', OLD.pool_id::text);
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.pool_id IS NOT NULL THEN
            PERFORM pg_notify('pool_changed', NEW.pool_id::text);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER pools_changed AFTER INSERT OR UPDATE OR DELETE ON pools
    FOR EACH ROW EXECUTE FUNCTION notify_pool_change();
CREATE TRIGGER pool_numbers_changed AFTER INSERT OR UPDATE OF pool_id OR DELETE ON numbers
    FOR EACH ROW EXECUTE FUNCTION notify_pool_change();
