-- SSH sessions and every state each went through.

CREATE TABLE sessions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    agent_id   TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    user_id    TEXT COLLATE "C" NOT NULL,
    user_name  TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('requested', 'starting', 'running', 'stopping', 'stopped', 'failed')),
    port       BIGINT,
    reason     TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX sessions_agent ON sessions (agent_id, state);
CREATE INDEX sessions_user ON sessions (user_id, state);

CREATE TABLE session_transitions (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    seq        BIGINT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT,
    time       BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

ALTER TABLE events ADD COLUMN session_id TEXT;
ALTER TABLE events ADD COLUMN session_state TEXT;
