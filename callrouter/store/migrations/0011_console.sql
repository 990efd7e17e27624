-- The web console: staff logins of clients (and of the operator), their sessions, invitations,
-- and an audit log of what they change.

-- An owner may make two-factor logins mandatory for everyone of the client.
ALTER TABLE clients ADD COLUMN console_requires_2fa boolean NOT NULL DEFAULT false;

-- client_id NULL is an operator user (every client). The password is an argon2id PHC string;
-- NULL until an invitation is accepted. The TOTP secret is NULL while 2FA is off;
-- totp_last_step refuses a code that was used already (RFC 6238 §5.2).
CREATE TABLE console_users (
    id               uuid PRIMARY KEY,
    client_id        uuid REFERENCES clients (id) ON DELETE CASCADE,
    email            text NOT NULL CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(email)),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role             text NOT NULL
                     CHECK (role IN ('owner', 'manager', 'analyst', 'listener', 'operator')),
    password_hash    text,
    disabled_at      timestamptz,
    totp_secret      text,
    totp_last_step   bigint,
    failed_logins    integer NOT NULL DEFAULT 0,
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'operator') = (client_id IS NULL)),
    UNIQUE (email)
);
CREATE INDEX console_users_client ON console_users (client_id, id);

-- Recovery codes are 80 random bits each, so SHA-256 of the code is enough (as for API keys).
CREATE TABLE console_recovery_codes (
    user_id    uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL CHECK (length(code_hash) = 32),
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- Server-side sessions: the cookie holds a random token, the table only its SHA-256.
-- A session waiting for the second factor is 'pending' and opens nothing but that form.
CREATE TABLE console_sessions (
    token_hash    bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id       uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    pending       boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    csrf_secret   bytea NOT NULL,
    address       text
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- One-time links: an invitation (set the first password) or a password reset.
CREATE TABLE console_invitations (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id     uuid NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('invite', 'reset')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX console_invitations_user ON console_invitations (user_id);

-- Who did what in the console (and the `users` commands). No passwords, codes or tokens here.
CREATE TABLE console_audit (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    client_id   uuid REFERENCES clients (id) ON DELETE CASCADE,
    -- 'user:<console user id>' or 'cli'.
    actor       text NOT NULL,
    action      text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.]*$'),
    target      text NOT NULL DEFAULT '',
    details     jsonb NOT NULL DEFAULT '{}',
    address     text
);
CREATE INDEX console_audit_client ON console_audit (client_id, id);
