-- Trunks: whether the carrier's leg of a call gets dialog keepalives (in-dialog OPTIONS).
-- A carrier that wrongly answers 481 to them would have every call cut after one interval.
ALTER TABLE trunks ADD COLUMN keepalives boolean NOT NULL DEFAULT true;
