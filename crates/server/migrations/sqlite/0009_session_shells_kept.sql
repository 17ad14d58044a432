-- Shells that survive a lost node (issue 13): whether the agent keeps shells of the session, as
-- it last listed them (`Kept`), written by the node holding its link whenever that list
-- changes. A node that takes a lost node over detaches the running sessions marked here and
-- ends the others with `node lost` at once: their agent (one without kept shells, or a session
-- without an interactive shell) has nothing to come back to. 0 or 1.
ALTER TABLE sessions ADD COLUMN shells_kept INTEGER NOT NULL DEFAULT 0;
