-- Proposed plans and their approvals. One current (proposed) plan per incident; one approval
-- per (plan, approver), so a repeated click cannot count twice.

CREATE TABLE plans (
    hash         TEXT    PRIMARY KEY,
    incident_id  BIGINT  NOT NULL REFERENCES incidents (id),
    runbook      TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('proposed', 'approved', 'rejected', 'superseded')),
    requested_by TEXT    NOT NULL,
    proposed_at  BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    decided_at   BIGINT
);
CREATE UNIQUE INDEX plans_one_current_per_incident ON plans (incident_id) WHERE state = 'proposed';

CREATE TABLE approvals (
    plan_hash TEXT    NOT NULL REFERENCES plans (hash),
    approver  TEXT    NOT NULL,
    at        BIGINT  NOT NULL,
    via       TEXT    NOT NULL,
    PRIMARY KEY (plan_hash, approver)
);
