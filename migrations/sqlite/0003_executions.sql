-- Executions of approved plans. The plan hash is the key: a plan is claimed for execution once.

CREATE TABLE executions (
    plan_hash   TEXT    PRIMARY KEY REFERENCES plans (hash),
    incident_id INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'succeeded', 'rolled_back', 'failed', 'interrupted')),
    step        INTEGER NOT NULL,
    owner       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX executions_running ON executions (owner) WHERE state = 'running';
