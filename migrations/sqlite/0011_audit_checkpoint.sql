-- Retention removes a prefix of the audit log behind a checkpoint: the seq and hash of the last
-- record removed (its hash commits to every record before it). `medic audit verify` starts
-- there, and the chain itself attests the checkpoint (an `audit_pruned` record).
CREATE TABLE audit_checkpoint (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL,
    hash    TEXT NOT NULL,
    removed INTEGER NOT NULL,
    at      INTEGER NOT NULL
);
