-- Visits: a session lasts the whole visit, keeps its first and last touch and its page views.

-- Which touch a session's calls and forms are credited to when a visit (or a return visit)
-- brings a new campaign: the visitor's first, or the latest one that was not direct.
ALTER TABLE pools ADD COLUMN attribution_model text NOT NULL DEFAULT 'last_non_direct'
    CHECK (attribution_model IN ('first_touch', 'last_non_direct'));

-- touches: {"first": {...}, "last": {...}}, each the facts of one entry or campaign page view.
-- journey: the visit's page views, oldest first, at most the last 50 (url without query, title,
-- at).
ALTER TABLE sessions
    ADD COLUMN touches jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN journey jsonb NOT NULL DEFAULT '[]';

-- The read API lists a client's sessions newest first within a time range.
CREATE INDEX sessions_client_created ON sessions (client_id, created_at);

-- Reports keep counting visits removed by erasure or retention, like calls and forms.
ALTER TABLE call_aggregates ADD COLUMN visits bigint NOT NULL DEFAULT 0;
