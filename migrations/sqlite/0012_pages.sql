-- Pages, tickets and the morning summary go through the outbox too: ops `trigger` and `resolve`
-- (PagerDuty, the page webhook), `ticket` (GitHub, Jira) and `message` (a chat message of its own).
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, rows and ids kept.
CREATE TABLE chat_outbox_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    platform    TEXT    NOT NULL,
    incident_id INTEGER NOT NULL,
    op          TEXT    NOT NULL CHECK (op IN ('post', 'update', 'thread', 'ephemeral', 'modal', 'message', 'trigger', 'resolve', 'ticket')),
    channel     TEXT    NOT NULL,
    target      TEXT,
    body        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    due_at      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    sent_at     INTEGER,
    result      TEXT,
    last_error  TEXT
);
INSERT INTO chat_outbox_new (id, platform, incident_id, op, channel, target, body, state, due_at, attempts, sent_at, result, last_error)
    SELECT id, platform, incident_id, op, channel, target, body, state, due_at, attempts, sent_at, result, last_error FROM chat_outbox;
DROP TABLE chat_outbox;
ALTER TABLE chat_outbox_new RENAME TO chat_outbox;
CREATE INDEX chat_outbox_due ON chat_outbox (platform, state, due_at);
CREATE INDEX chat_outbox_by_incident ON chat_outbox (platform, incident_id, op);
CREATE INDEX chat_outbox_by_message ON chat_outbox (platform, result);
