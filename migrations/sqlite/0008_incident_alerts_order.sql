-- An incident's alerts are read in the order they were first seen: the first and the latest
-- few hundred of them (an incident of 100,000 alerts is never read whole). The index replaces
-- the one on incident_id alone, so an insert still updates the same number of indexes.
DROP INDEX alerts_by_incident;
CREATE INDEX alerts_by_incident ON alerts (incident_id, first_seen_at, key);
