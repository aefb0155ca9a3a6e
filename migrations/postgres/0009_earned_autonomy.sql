-- Earned autonomy (§2.10): each runbook's record and level, changed in the transaction that
-- records the outcome that changes it; when a plan may run by itself; Stop on a running plan.

CREATE TABLE runbook_autonomy (
    runbook       TEXT    PRIMARY KEY,
    auto          BIGINT NOT NULL,
    streak        BIGINT NOT NULL,
    verified      BIGINT NOT NULL,
    failed        BIGINT NOT NULL,
    last_incident BIGINT,
    last_by       TEXT,
    reason        TEXT,
    changed_at    BIGINT NOT NULL
);

-- A proposed plan with auto_at runs by itself from then on, unless stopped or rejected.
ALTER TABLE plans ADD COLUMN auto_at BIGINT;
CREATE INDEX plans_due_auto ON plans (auto_at) WHERE state = 'proposed' AND auto_at IS NOT NULL;

-- Who asked a running plan to stop: the executor halts before its next step and rolls back.
ALTER TABLE executions ADD COLUMN stop_by TEXT;
