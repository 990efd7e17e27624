-- Clients, API keys, tracking numbers and pools.

CREATE TABLE clients (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A key with no client is an operator key. Only a SHA-256 of the secret is stored: the keys are
-- 240-bit random strings, so a fast hash is enough and lookups stay a single index probe.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    client_id    uuid REFERENCES clients (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    prefix       text NOT NULL,
    secret_hash  bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_client ON api_keys (client_id, id);

CREATE TABLE pools (
    id                  uuid PRIMARY KEY,
    client_id           uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    public_key          text NOT NULL UNIQUE,
    allowed_origins     text[] NOT NULL DEFAULT '{}',
    target_numbers      text[] NOT NULL DEFAULT '{}',
    lease_hold_seconds  integer NOT NULL DEFAULT 1800 CHECK (lease_hold_seconds BETWEEN 60 AND 86400),
    grace_seconds       integer NOT NULL DEFAULT 1800 CHECK (grace_seconds BETWEEN 0 AND 604800),
    exhaustion_policy   text NOT NULL DEFAULT 'reuse_oldest'
                        CHECK (exhaustion_policy IN ('reuse_oldest', 'default_number')),
    default_number_id   uuid,
    default_source      text NOT NULL DEFAULT 'direct',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, name),
    UNIQUE (client_id, id)
);

CREATE TABLE numbers (
    id               uuid PRIMARY KEY,
    client_id        uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    e164             text NOT NULL UNIQUE CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    pool_id          uuid,
    destination      text,
    dialplan         text NOT NULL DEFAULT 'default',
    dialplan_params  jsonb NOT NULL DEFAULT '{}',
    record           boolean NOT NULL DEFAULT false,
    label            text,
    source           text,
    medium           text,
    campaign         text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, id),
    -- A number can only sit in a pool of its own client.
    FOREIGN KEY (client_id, pool_id) REFERENCES pools (client_id, id) ON DELETE SET NULL (pool_id)
);
CREATE INDEX numbers_client ON numbers (client_id, id);
CREATE INDEX numbers_pool ON numbers (pool_id) WHERE pool_id IS NOT NULL;

ALTER TABLE pools ADD FOREIGN KEY (client_id, default_number_id)
    REFERENCES numbers (client_id, id) ON DELETE SET NULL (default_number_id);
