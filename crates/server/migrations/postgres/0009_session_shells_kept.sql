-- Shells that survive a lost node (issue 13), as SQLite's 0009: whether the agent keeps shells
-- of the session, as it last listed them (`Kept`). 0 or 1 (a 64-bit integer, as every number
-- the stores read).
ALTER TABLE sessions ADD COLUMN shells_kept BIGINT NOT NULL DEFAULT 0;
