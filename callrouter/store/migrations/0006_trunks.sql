-- Trunks: each carrier's signalling networks and treatment, and the outbound trunks for E.164.

CREATE TABLE trunks (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    -- Inbound: INVITEs are taken only from these networks (an allowlist per carrier).
    networks           cidr[] NOT NULL DEFAULT '{}',
    -- Where the dialled number is read: the Request-URI user, falling back to To when the
    -- Request-URI is not a number; or always To (carriers that put a routing prefix there).
    number_from        text NOT NULL DEFAULT 'request_uri'
                       CHECK (number_from IN ('request_uri', 'to')),
    -- Region used to read national-format numbers (0151 ... -> +44151 ...).
    country            text NOT NULL DEFAULT 'GB' CHECK (country ~ '^[A-Z]{2}$'),
    -- Media from this carrier comes from behind NAT: latch RTP to the first source.
    nat                boolean NOT NULL DEFAULT false,
    -- Outbound: E.164 destinations are sent to this SIP URI (NULL: inbound only).
    uri                text,
    -- Caller ID presented on calls sent through this trunk.
    caller_id          text NOT NULL DEFAULT 'pass'
                       CHECK (caller_id IN ('pass', 'rewrite', 'withhold')),
    caller_id_number   text CHECK (caller_id_number ~ '^\+[1-9][0-9]{6,14}$'),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (caller_id <> 'rewrite' OR caller_id_number IS NOT NULL)
);

-- The router keeps trunks in memory and reloads them when this fires.
CREATE FUNCTION notify_trunks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trunks_changed', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER trunks_changed AFTER INSERT OR UPDATE OR DELETE ON trunks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_trunks_changed();
