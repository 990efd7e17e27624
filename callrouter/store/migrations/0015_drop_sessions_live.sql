-- Sessions lose an index no query reads, which every new visit and every renewal paid for.

-- Live leases are found in number_leases since migration 0013; nothing selects sessions by
-- lease_expires_at any more, yet the index took an entry on each insert and each renewal
-- (a renewal moves lease_expires_at, so it is never a HOT update).
DROP INDEX sessions_live;
