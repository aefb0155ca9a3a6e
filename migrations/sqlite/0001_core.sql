-- Core tables: incidents, alerts, change events and the hash-chained audit log.
-- Timestamps are UTC milliseconds since the epoch; label maps are JSON text.

CREATE TABLE incidents (
    id            INTEGER PRIMARY KEY,
    group_key     TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    severity      TEXT,
    state         TEXT    NOT NULL CHECK (state IN ('open', 'resolving', 'resolved')),
    opened_at     INTEGER NOT NULL,
    last_fired_at INTEGER NOT NULL,
    n_alerts      INTEGER NOT NULL,
    n_firing      INTEGER NOT NULL,
    quiet_at      INTEGER,
    resolve_at    INTEGER,
    resolved_at   INTEGER
);
CREATE INDEX incidents_unresolved_by_group ON incidents (group_key) WHERE state <> 'resolved';
CREATE INDEX incidents_by_state ON incidents (state, id);

CREATE TABLE alerts (
    key               TEXT    PRIMARY KEY,
    source            TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('firing', 'resolved')),
    labels            TEXT    NOT NULL,
    annotations       TEXT    NOT NULL,
    links             TEXT    NOT NULL,
    starts_at         INTEGER NOT NULL,
    ends_at           INTEGER,
    incident_id       INTEGER REFERENCES incidents (id),
    group_key         TEXT    NOT NULL,
    first_seen_at     INTEGER NOT NULL,
    last_change_at    INTEGER NOT NULL,
    flap_window_start INTEGER NOT NULL,
    flap_count        INTEGER NOT NULL,
    flapping          INTEGER NOT NULL
);
CREATE INDEX alerts_by_incident ON alerts (incident_id);

CREATE TABLE changes (
    id          TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    summary     TEXT    NOT NULL,
    author      TEXT,
    version     TEXT,
    url         TEXT,
    labels      TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX changes_by_service_time ON changes (service, at);

CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    incident_id INTEGER,
    actor       TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);
CREATE INDEX audit_by_incident ON audit_log (incident_id, seq);
