-- Questions asked in an incident's thread find the incident by its root message.
CREATE INDEX chat_outbox_by_message ON chat_outbox (platform, result);
