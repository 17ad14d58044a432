-- Ids are text and times are integers (unix milliseconds) so that the same queries run on
-- SQLite and PostgreSQL.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

-- Logged-in sessions of users (API tokens). Only the SHA-256 of the token is kept.
CREATE TABLE logins (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX logins_user ON logins (user_id);

CREATE TABLE agents (
    id             TEXT PRIMARY KEY,
    did            TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL UNIQUE,
    ssh_public_key TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'revoked')),
    facts          TEXT NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    decided_at     INTEGER,
    decided_by     TEXT,
    last_seen      INTEGER,
    -- Shown to administrators only; never copied into events.
    remote_addr    TEXT
);

CREATE TABLE enrollment_tokens (
    id         TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    max_uses   INTEGER NOT NULL,
    uses       INTEGER NOT NULL DEFAULT 0,
    revoked_at INTEGER
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time       INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    agent_id   TEXT,
    agent_name TEXT,
    agent_did  TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX events_agent ON events (agent_id, id);
