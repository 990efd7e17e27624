-- Privacy: request register, suppression list, audit log, anonymous call counts, retention periods.

-- A subject (a phone number, a call, a session) is never stored in plaintext here: only its
-- keyed hash, HMAC-SHA256 with the server secret over the client id, the kind and the value,
-- so one subject hashes differently for each client and nobody without the secret can test a
-- guess against the table.

-- Per-client retention; NULL: the [privacy] defaults of the configuration.
ALTER TABLE clients
    ADD COLUMN recordings_retention_days integer
        CHECK (recordings_retention_days BETWEEN 1 AND 36500),
    ADD COLUMN data_retention_days integer CHECK (data_retention_days BETWEEN 1 AND 36500);

-- Every request of a data subject, answered within 30 days of receipt (GDPR art. 12(3)).
CREATE TABLE privacy_requests (
    id            uuid PRIMARY KEY,
    client_id     uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('access', 'erasure', 'objection',
                                                'rectification', 'consent_withdrawal')),
    subject_kind  text NOT NULL CHECK (subject_kind IN ('phone', 'call', 'session')),
    subject_hash  bytea NOT NULL CHECK (length(subject_hash) = 32),
    received_at   timestamptz NOT NULL,
    due_at        timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    -- What was done: counts and notices, never personal data.
    outcome       jsonb,
    completed_at  timestamptz,
    -- Who filed it: 'key:<api key id>' or 'cli'.
    requested_by  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'done') = (completed_at IS NOT NULL)),
    UNIQUE (client_id, id)
);
CREATE INDEX privacy_requests_client ON privacy_requests (client_id, id);
CREATE INDEX privacy_requests_open ON privacy_requests (due_at) WHERE status = 'open';
CREATE INDEX privacy_requests_subject ON privacy_requests (client_id, subject_hash);

-- Numbers whose calls are connected but not recorded (both reasons) and, after an objection,
-- neither attributed nor stored with their caller number.
CREATE TABLE suppressions (
    id            uuid PRIMARY KEY,
    client_id     uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    subject_hash  bytea NOT NULL CHECK (length(subject_hash) = 32),
    reason        text NOT NULL CHECK (reason IN ('objection', 'recording_consent_withdrawn')),
    request_id    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, subject_hash, reason),
    UNIQUE (client_id, id)
);

-- The router keeps the list in memory; each change reaches every process as a delta:
-- '+<reason>:<hex hash>' or '-<reason>:<hex hash>' (the hash is keyed: no personal data).
CREATE FUNCTION notify_suppression_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM pg_notify('suppression_changed',
                          '-' || OLD.reason || ':' || encode(OLD.subject_hash, 'hex'));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('suppression_changed',
                          '+' || NEW.reason || ':' || encode(NEW.subject_hash, 'hex'));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER suppressions_changed AFTER INSERT OR UPDATE OR DELETE ON suppressions
    FOR EACH ROW EXECUTE FUNCTION notify_suppression_change();

-- Who did what to personal data, when and to how many items. No client foreign key: the
-- record outlives a deleted client. No personal data: the subject is its keyed hash.
CREATE TABLE privacy_audit (
    id            uuid PRIMARY KEY,
    at            timestamptz NOT NULL,
    -- 'key:<api key id>', 'cli' or 'retention'.
    actor         text NOT NULL,
    action        text NOT NULL CHECK (action ~ '^[a-z][a-z_.]*$'),
    client_id     uuid,
    subject_kind  text,
    subject_hash  bytea,
    request_id    uuid,
    counts        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX privacy_audit_client ON privacy_audit (client_id, id);

-- What reports keep of erased and expired calls and forms: counts per UTC day and channel.
CREATE TABLE call_aggregates (
    client_id     uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    day           date NOT NULL,
    source        text,
    medium        text,
    campaign      text,
    landing_page  text,
    disposition   text,
    calls         bigint NOT NULL DEFAULT 0,
    answered      bigint NOT NULL DEFAULT 0,
    first_time    bigint NOT NULL DEFAULT 0,
    repeat        bigint NOT NULL DEFAULT 0,
    forms         bigint NOT NULL DEFAULT 0,
    CONSTRAINT call_aggregates_group UNIQUE NULLS NOT DISTINCT
        (client_id, day, source, medium, campaign, landing_page, disposition)
);

-- Retention looks for old rows per client.
CREATE INDEX sessions_client_seen ON sessions (client_id, last_seen_at);
CREATE INDEX forms_client_submitted ON forms (client_id, submitted_at);
CREATE INDEX forms_session ON forms (client_id, session_id);
CREATE INDEX webhook_deliveries_client_created ON webhook_deliveries (client_id, created_at);
-- A subject's calls and visits are found by session and by first-party visitor id.
CREATE INDEX calls_session ON calls (client_id, session_id) WHERE session_id IS NOT NULL;
CREATE INDEX sessions_visitor ON sessions (client_id, visitor_id) WHERE visitor_id IS NOT NULL;
