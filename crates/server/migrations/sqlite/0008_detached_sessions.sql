-- Shells that survive (issue 13): a session whose path to the agent is broken while the agent
-- keeps its shells is `detached`, and still the user's one open session on that agent.
-- SQLite cannot change a CHECK constraint in place, and rebuilding `sessions` is refused once
-- `session_transitions` points at it (sqlx runs this file in a transaction, where foreign
-- keys cannot be switched off). So the state column alone is replaced: renamed aside, a new
-- one added with the wider CHECK (SQLite checks it, and NOT NULL, on every existing row), the
-- values copied, the old column dropped. Every row, id and foreign key stays as it was; the
-- DEFAULT exists only because ADD COLUMN requires one with NOT NULL, and every insert names
-- its state. The indexes on state go first (a column in an index cannot be renamed away or
-- dropped) and come back, the one-open index counting `detached` as open.
DROP INDEX sessions_agent;
DROP INDEX sessions_user;
DROP INDEX sessions_node;
DROP INDEX sessions_one_open;

ALTER TABLE sessions RENAME COLUMN state TO state_before_detached;
ALTER TABLE sessions ADD COLUMN state TEXT NOT NULL DEFAULT 'requested'
    CHECK (state IN ('requested', 'starting', 'running', 'detached', 'stopping', 'stopped', 'failed'));
UPDATE sessions SET state = state_before_detached;
ALTER TABLE sessions DROP COLUMN state_before_detached;

CREATE INDEX sessions_agent ON sessions (agent_id, state);
CREATE INDEX sessions_user ON sessions (user_id, state);
CREATE INDEX sessions_node ON sessions (node_id, state);
CREATE UNIQUE INDEX sessions_one_open ON sessions (user_id, agent_id)
    WHERE state IN ('requested', 'starting', 'running', 'detached');
