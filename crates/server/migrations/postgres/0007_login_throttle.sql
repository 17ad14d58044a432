-- Login throttling shared by every node of one database (as SQLite's 0007): one row per user
-- name ('user:NAME') or source address ('source:ADDR'); `version` makes every change a
-- compare-and-set, so nodes racing on one row never lose a count.
CREATE TABLE login_throttle (
    key           TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    last_failure  BIGINT NOT NULL,
    blocked_until BIGINT,
    version       BIGINT NOT NULL
);
CREATE INDEX login_throttle_quiet ON login_throttle (last_failure);
