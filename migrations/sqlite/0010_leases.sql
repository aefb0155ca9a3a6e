-- Named leases among replicas: one holder at a time (the Slack Socket Mode connection), taken
-- over by another replica once its holder stops renewing it.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
