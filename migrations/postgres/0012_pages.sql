-- Pages, tickets and the morning summary go through the outbox too: ops `trigger` and `resolve`
-- (PagerDuty, the page webhook), `ticket` (GitHub, Jira) and `message` (a chat message of its own).
ALTER TABLE chat_outbox DROP CONSTRAINT chat_outbox_op_check;
ALTER TABLE chat_outbox ADD CONSTRAINT chat_outbox_op_check
    CHECK (op IN ('post', 'update', 'thread', 'ephemeral', 'modal', 'message', 'trigger', 'resolve', 'ticket'));
