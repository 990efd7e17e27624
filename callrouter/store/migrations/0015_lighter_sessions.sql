-- Sessions lose an index and a foreign key that every new visit (and renewal) paid for and nothing needs.

-- Live leases are found in number_leases since migration 0013; nothing selects sessions by
-- lease_expires_at any more, yet this index took an entry on each insert and each renewal
-- (a renewal moves lease_expires_at, so it is never a HOT update).
DROP INDEX sessions_live;

-- (client_id, pool_id) already references pools (client_id, id), and a pool references its
-- client with ON DELETE CASCADE: the session's client is checked, and its deletion cascades,
-- through its pool. The second check cost about 0.1 ms of each new visit's INSERT.
ALTER TABLE sessions DROP CONSTRAINT sessions_client_id_fkey;
