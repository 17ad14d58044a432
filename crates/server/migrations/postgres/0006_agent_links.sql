-- Several nodes (issue 12): which node holds each agent's link (as SQLite's 0006). Written when
-- a link comes up or goes down and when its liveness changes — never per heartbeat. A row whose
-- node stopped heartbeating is not the truth: readers ignore it, and the node that takes the
-- dead node over deletes it.
CREATE TABLE agent_links (
    agent_id TEXT COLLATE "C" PRIMARY KEY,
    node_id TEXT COLLATE "C" NOT NULL,
    connected_at BIGINT NOT NULL,
    liveness TEXT NOT NULL
);
CREATE INDEX agent_links_node ON agent_links (node_id);
