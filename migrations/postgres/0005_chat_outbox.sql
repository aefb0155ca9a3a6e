-- Chat deliveries waiting, in flight or done. A platform outage or a 429 delays a message; it
-- is never lost. `result` holds the platform's id of a posted root message (Slack's ts).

CREATE TABLE chat_outbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform    TEXT    NOT NULL,
    incident_id BIGINT NOT NULL,
    op          TEXT    NOT NULL CHECK (op IN ('post', 'update', 'thread', 'ephemeral', 'modal')),
    channel     TEXT    NOT NULL,
    target      TEXT,
    body        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    due_at      BIGINT NOT NULL,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    sent_at     BIGINT,
    result      TEXT,
    last_error  TEXT
);
CREATE INDEX chat_outbox_due ON chat_outbox (platform, state, due_at);
CREATE INDEX chat_outbox_by_incident ON chat_outbox (platform, incident_id, op);
