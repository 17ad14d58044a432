-- Several nodes (issue 12): what every node of one database shares (as SQLite's 0005).

-- Keys every node must hold the same (the gateway's host key, the user CA, the nodes' shared
-- secret); the first node to start makes each one, every later node reads it.
CREATE TABLE cluster_keys (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The server nodes on this database. `address` is where other nodes reach this one (NULL
-- when it takes no node-to-node connections); `heartbeat_at` shows that it is alive.
CREATE TABLE nodes (
    id TEXT COLLATE "C" PRIMARY KEY,
    address TEXT,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
