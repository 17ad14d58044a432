-- Shells that survive (issue 13): a session whose path to the agent is broken while the agent
-- keeps its shells is `detached`, and still the user's one open session on that agent.
ALTER TABLE sessions DROP CONSTRAINT sessions_state_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_state_check
    CHECK (state IN ('requested', 'starting', 'running', 'detached', 'stopping', 'stopped', 'failed'));
DROP INDEX IF EXISTS sessions_one_open;
CREATE UNIQUE INDEX sessions_one_open ON sessions (user_id, agent_id)
    WHERE state IN ('requested', 'starting', 'running', 'detached');
