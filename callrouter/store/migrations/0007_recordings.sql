-- Recordings: encrypted audio of recorded calls; a deleted row queues its key and file for shredding.

-- A row exists only once its file is durable. Deleting a row in any way (DELETE, erasure, a
-- client deleted with everything it owns) queues the recording in recording_disposals in the
-- same transaction, so its wrapped data key and file are destroyed even after a crash.
CREATE TABLE recordings (
    id                uuid PRIMARY KEY,
    client_id         uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    call_id           uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    number_id         uuid REFERENCES numbers (id) ON DELETE SET NULL,
    format            text NOT NULL CHECK (format IN ('flac', 'wav')),
    -- The encrypted file, relative to recordings_dir.
    path              text NOT NULL,
    -- Size of the decrypted audio file, in bytes.
    bytes             bigint NOT NULL,
    duration_seconds  double precision NOT NULL,
    -- Waveform summary for players: per channel, min/max per bucket in -1..1.
    peaks             jsonb NOT NULL,
    -- Finalised at start-up from what an interrupted worker had written.
    interrupted       boolean NOT NULL DEFAULT false,
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, id)
);
CREATE INDEX recordings_client ON recordings (client_id, id);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_client_started ON recordings (client_id, started_at);

CREATE TABLE recording_disposals (
    recording_id  uuid PRIMARY KEY,
    path          text NOT NULL,
    queued_at     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION queue_recording_disposal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recording_disposals (recording_id, path) VALUES (OLD.id, OLD.path)
        ON CONFLICT DO NOTHING;
    PERFORM pg_notify('recording_disposed', OLD.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER recordings_disposed AFTER DELETE ON recordings
    FOR EACH ROW EXECUTE FUNCTION queue_recording_disposal();

-- Why a call asked to be recorded was not, or what went wrong with its media.
ALTER TABLE calls ADD COLUMN media_note text;
