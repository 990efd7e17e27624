-- Call records: one row per inbound call, one per destination tried.

CREATE TABLE calls (
    id                   uuid PRIMARY KEY,
    client_id            uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    number_id            uuid REFERENCES numbers (id) ON DELETE SET NULL,
    tracking_number      text NOT NULL,
    -- Personal data: NULL when the caller withheld it, objected (suppression) or was erased.
    caller_number        text,
    sip_call_id          text NOT NULL,
    trunk                text,
    dialplan             text,
    session_id           uuid,
    attribution          jsonb NOT NULL DEFAULT '{}',
    state                text NOT NULL DEFAULT 'ringing'
                         CHECK (state IN ('ringing', 'active', 'ended')),
    disposition          text CHECK (disposition IN ('answered', 'busy', 'no_answer', 'failed',
                                     'cancelled', 'rejected', 'interrupted')),
    hangup_by            text CHECK (hangup_by IN ('caller', 'callee', 'system')),
    hangup_reason        text,
    record               boolean NOT NULL DEFAULT false,
    not_recorded_reason  text,
    started_at           timestamptz NOT NULL,
    ringing_at           timestamptz,
    answered_at          timestamptz,
    ended_at             timestamptz,
    CHECK ((state = 'ended') = (disposition IS NOT NULL AND ended_at IS NOT NULL))
);
CREATE INDEX calls_client ON calls (client_id, id);
CREATE INDEX calls_client_started ON calls (client_id, started_at);
CREATE INDEX calls_live ON calls (client_id) WHERE state <> 'ended';
CREATE INDEX calls_caller ON calls (caller_number) WHERE caller_number IS NOT NULL;

CREATE TABLE call_attempts (
    call_id      uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    destination  text NOT NULL,
    started_at   timestamptz NOT NULL,
    ringing_at   timestamptz,
    answered_at  timestamptz,
    ended_at     timestamptz,
    result       text CHECK (result IN ('answered', 'busy', 'no_answer', 'rejected', 'error',
                                'cancelled')),
    sip_status   integer,
    reason       text,
    PRIMARY KEY (call_id, seq)
);
