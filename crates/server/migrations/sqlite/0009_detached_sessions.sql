-- no-transaction
-- Shells that survive (issue 13): a session whose path to the agent is broken while the agent
-- keeps its shells is `detached`, and still the user's one open session on that agent.
-- SQLite cannot change a CHECK constraint: the table is rebuilt with every row and column,
-- with foreign keys off meanwhile (SQLite's own recipe: otherwise dropping the old table
-- counts every transition as orphaned). sqlx runs this file in a transaction of its own.
PRAGMA foreign_keys = OFF;

CREATE TABLE sessions_detached (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    user_id    TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('requested', 'starting', 'running', 'detached', 'stopping', 'stopped', 'failed')),
    port       INTEGER,
    reason     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    ended_at   INTEGER,
    node_id    TEXT
);
INSERT INTO sessions_detached (id, agent_id, user_id, user_name, state, port, reason, created_at, updated_at, ended_at, node_id)
SELECT id, agent_id, user_id, user_name, state, port, reason, created_at, updated_at, ended_at, node_id FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_detached RENAME TO sessions;

CREATE INDEX sessions_agent ON sessions (agent_id, state);
CREATE INDEX sessions_user ON sessions (user_id, state);
CREATE INDEX sessions_node ON sessions (node_id, state);
CREATE UNIQUE INDEX sessions_one_open ON sessions (user_id, agent_id)
    WHERE state IN ('requested', 'starting', 'running', 'detached');
PRAGMA foreign_keys = ON;
