-- The kill switch (a setting), and the attempts of each alert (for attempt budgets).

CREATE TABLE settings (
    key    TEXT    PRIMARY KEY,
    value  TEXT    NOT NULL,
    set_by TEXT    NOT NULL,
    set_at INTEGER NOT NULL
);

CREATE TABLE attempts (
    alert_key TEXT    NOT NULL,
    plan_hash TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (alert_key, plan_hash)
);
CREATE INDEX attempts_by_time ON attempts (alert_key, at);
