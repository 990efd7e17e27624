-- Placeholder for console-auth's 0011 (removed when that branch is merged).
SELECT 1;
