-- Questions asked in an incident's thread find the incident by its root message.
CREATE INDEX chat_outbox_by_message ON chat_outbox (platform, result);
-- Chat deliveries already handled (Slack's event_id), so a retry is never answered twice,
-- whichever replica it reaches. Kept a day.
CREATE TABLE chat_events (
    platform TEXT   NOT NULL,
    event_id TEXT   NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (platform, event_id)
);
