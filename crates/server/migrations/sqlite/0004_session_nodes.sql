-- Several nodes (issue 12). Additive: existing stores keep every row.

-- The node that holds a session (created it, then bound its tunnel), so that recovery after
-- a crash ends that node's sessions only. NULL on sessions from before: the one node of such
-- a store adopts them at its next start.
ALTER TABLE sessions ADD COLUMN node_id TEXT;

-- "One open session per user and agent" is held by the database, not by a lock in one
-- process. A store from before cannot hold two (one process decided under a lock), but should
-- one anyway, all but the newest end as a restart would end them, so that the index builds.
INSERT INTO session_transitions (session_id, seq, state, reason, time)
SELECT s.id,
       (SELECT COALESCE(MAX(t.seq), -1) + 1 FROM session_transitions t WHERE t.session_id = s.id),
       'stopped', 'server restarted', s.updated_at
FROM sessions s
WHERE s.state IN ('requested', 'starting', 'running')
  AND EXISTS (SELECT 1 FROM sessions n
              WHERE n.user_id = s.user_id AND n.agent_id = s.agent_id
                AND n.state IN ('requested', 'starting', 'running')
                AND (n.created_at > s.created_at OR (n.created_at = s.created_at AND n.id > s.id)));
UPDATE sessions
SET state = 'stopped', reason = 'server restarted', ended_at = updated_at
WHERE state IN ('requested', 'starting', 'running')
  AND EXISTS (SELECT 1 FROM sessions n
              WHERE n.user_id = sessions.user_id AND n.agent_id = sessions.agent_id
                AND n.state IN ('requested', 'starting', 'running')
                AND (n.created_at > sessions.created_at
                     OR (n.created_at = sessions.created_at AND n.id > sessions.id)));

CREATE UNIQUE INDEX sessions_one_open ON sessions (user_id, agent_id)
    WHERE state IN ('requested', 'starting', 'running');
CREATE INDEX sessions_node ON sessions (node_id, state);
