"""The hot number pool, visitor sessions, dialplans and the B2BUA call logic."""
