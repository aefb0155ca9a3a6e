-- An incident's alerts are read in the order they were first seen, the first and the latest
-- few hundred of them (an incident of 100,000 alerts is never read whole), and paged by key.
CREATE INDEX alerts_by_incident_first_seen ON alerts (incident_id, first_seen_at, key);
CREATE INDEX alerts_by_incident_key ON alerts (incident_id, key);
