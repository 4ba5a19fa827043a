-- Sessions of the operations console (`janitor serve`, at `/`). The browser
-- holds a random 32-byte id in the `janitor_session` cookie; the table holds
-- only its SHA-256, so that reading this table (a backup, a replica, a
-- leaked dump) gives no session to replay. `csrf` is the token every
-- console form that changes something must carry; it is no secret from the
-- session's own browser, only from other sites.
CREATE TABLE console_sessions (
    id_hash    bytea       PRIMARY KEY,
    -- The admin token's name: the actor of the session's audit rows.
    token_name text        NOT NULL,
    -- SHA-256 of the token's value: the session lives only while a token of
    -- that name and value is configured, so rotating a leaked token's value
    -- ends its sessions too.
    token_hash bytea       NOT NULL,
    read_only  bool        NOT NULL,
    csrf       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Expired sessions are deleted in bulk at each login.
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
