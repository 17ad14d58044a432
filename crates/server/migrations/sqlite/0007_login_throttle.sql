-- Login throttling shared by every node of one database (issue 12): a password guesser
-- spreading attempts over nodes is held back as if it used one. One row per user name
-- ('user:NAME') or source address ('source:ADDR'); `version` makes every change a
-- compare-and-set, so nodes racing on one row never lose a count.
CREATE TABLE login_throttle (
    key           TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    last_failure  INTEGER NOT NULL,
    blocked_until INTEGER,
    version       INTEGER NOT NULL
);
CREATE INDEX login_throttle_quiet ON login_throttle (last_failure);
