-- An execution is held by a lease its executor renews: when the heartbeat is older than the
-- lease, the replica that ran it is gone, and any replica marks it interrupted (never re-runs it).

ALTER TABLE executions ADD COLUMN heartbeat_at INTEGER;
