-- Placeholder for another branch's migration 0009 (branch media-faults needs 0011); delete it at merge.
SELECT 1;
