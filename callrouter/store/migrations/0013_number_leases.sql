-- Number leases in PostgreSQL: one row per pool number holds its lease, so several nodes share one pool.

-- A number's row names the session holding it while expires_at is ahead, and its last holder
-- after (a late call still finds the visit within the pool's grace). One row per number makes
-- two live sessions on one number impossible whatever the nodes race: a lease is an UPDATE of
-- the row, and PostgreSQL serialises updates of one row. ``version`` orders the changes a node
-- hears about, so an older notification never overwrites a newer state in its memory.
CREATE TABLE number_leases (
    number        text PRIMARY KEY REFERENCES numbers (e164) ON DELETE CASCADE,
    client_id     uuid NOT NULL,
    pool_id       uuid NOT NULL,
    session_id    uuid,
    visitor_id    text,
    leased_at     timestamptz,
    last_seen_at  timestamptz,
    expires_at    timestamptz,
    ended         boolean NOT NULL DEFAULT false,
    version       bigint NOT NULL DEFAULT 0,
    FOREIGN KEY (client_id, pool_id) REFERENCES pools (client_id, id) ON DELETE CASCADE
);
-- A lease takes the first row of its pool in this order (store/leases.py): O(1), not a sort.
CREATE INDEX number_leases_pool ON number_leases (pool_id, expires_at NULLS FIRST);
CREATE INDEX number_leases_session ON number_leases (session_id) WHERE session_id IS NOT NULL;

-- A number joins a pool: it gets a free row; it leaves (or moves): its row and lease go.
CREATE FUNCTION keep_number_lease_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.pool_id IS NOT DISTINCT FROM NEW.pool_id THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM number_leases WHERE number = OLD.e164;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.pool_id IS NOT NULL THEN
        INSERT INTO number_leases (number, client_id, pool_id)
        VALUES (NEW.e164, NEW.client_id, NEW.pool_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER number_lease_row AFTER INSERT OR UPDATE OF pool_id, e164 OR DELETE ON numbers
    FOR EACH ROW EXECUTE FUNCTION keep_number_lease_row();

-- Every node keeps an index of the leases in memory; each change reaches it as a NOTIFY with
-- the whole row (well under NOTIFY's 8000-byte payload: a visitor id is at most 100 chars).
CREATE FUNCTION notify_lease_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lease_changed', row_to_json(NEW)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER number_lease_changed AFTER UPDATE ON number_leases
    FOR EACH ROW EXECUTE FUNCTION notify_lease_change();

-- A session erased (privacy request, retention purge) frees its number at once, on every node;
-- a session whose attribution changed is read again by the nodes that hold it in memory.
CREATE FUNCTION notify_session_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE number_leases
           SET session_id = NULL, visitor_id = NULL, leased_at = NULL, last_seen_at = NULL,
               expires_at = NULL, ended = false, version = version + 1
         WHERE session_id = OLD.id;
    END IF;
    PERFORM pg_notify('session_changed', coalesce(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER session_changed AFTER UPDATE OF attribution OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION notify_session_change();

-- The numbers already in pools, with the leases the sessions table says still live or in grace
-- (the latest per number), so an upgrade loses none.
INSERT INTO number_leases (number, client_id, pool_id)
SELECT e164, client_id, pool_id FROM numbers WHERE pool_id IS NOT NULL;

UPDATE number_leases l
   SET session_id = s.id, visitor_id = s.visitor_id, leased_at = s.created_at,
       last_seen_at = s.last_seen_at, expires_at = s.lease_expires_at, ended = s.ended
  FROM (SELECT DISTINCT ON (number) number, pool_id, id, visitor_id, created_at, last_seen_at,
               lease_expires_at, ended
          FROM sessions
         WHERE number IS NOT NULL AND lease_expires_at IS NOT NULL
         ORDER BY number, lease_expires_at DESC) s
 WHERE l.number = s.number AND l.pool_id = s.pool_id;
