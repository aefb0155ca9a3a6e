-- Retention removes a prefix of the audit log behind a checkpoint: the seq and hash of the last
-- record removed (its hash commits to every record before it). `medic audit verify` starts
-- there, and the chain itself attests the checkpoint (an `audit_pruned` record).
CREATE TABLE audit_checkpoint (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    seq     BIGINT NOT NULL,
    hash    TEXT NOT NULL,
    removed BIGINT NOT NULL,
    at      BIGINT NOT NULL
);
