-- Several nodes (issue 12). A PostgreSQL store starts with this schema, so unlike SQLite's
-- 0004 there are no sessions from before to repair.

-- The node that holds a session (created it, then bound its tunnel), so that recovery after
-- a crash ends that node's sessions only.
ALTER TABLE sessions ADD COLUMN node_id TEXT;

-- "One open session per user and agent" is held by the database: of two transactions
-- inserting the same pair, the second waits for the first and fails if it commits.
CREATE UNIQUE INDEX sessions_one_open ON sessions (user_id, agent_id)
    WHERE state IN ('requested', 'starting', 'running');
CREATE INDEX sessions_node ON sessions (node_id, state);
