-- Pages and tickets go through the outbox too: ops `trigger` and `resolve` (PagerDuty, the page
-- webhook) and `ticket` (GitHub, Jira).
ALTER TABLE chat_outbox DROP CONSTRAINT chat_outbox_op_check;
ALTER TABLE chat_outbox ADD CONSTRAINT chat_outbox_op_check
    CHECK (op IN ('post', 'update', 'thread', 'ephemeral', 'modal', 'trigger', 'resolve', 'ticket'));
