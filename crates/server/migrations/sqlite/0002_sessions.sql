-- SSH sessions and every state each went through.

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    user_id    TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('requested', 'starting', 'running', 'stopping', 'stopped', 'failed')),
    port       INTEGER,
    reason     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE INDEX sessions_agent ON sessions (agent_id, state);
CREATE INDEX sessions_user ON sessions (user_id, state);

CREATE TABLE session_transitions (
    session_id TEXT NOT NULL REFERENCES sessions (id),
    seq        INTEGER NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT,
    time       INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);

ALTER TABLE events ADD COLUMN session_id TEXT;
ALTER TABLE events ADD COLUMN session_state TEXT;
