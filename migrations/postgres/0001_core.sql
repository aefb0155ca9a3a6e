-- Core tables: incidents, alerts, change events and the hash-chained audit log.
-- Timestamps are UTC milliseconds since the epoch; label maps are JSON text.

CREATE TABLE incidents (
    id            BIGINT PRIMARY KEY,
    group_key     TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    severity      TEXT,
    state         TEXT    NOT NULL CHECK (state IN ('open', 'resolving', 'resolved')),
    opened_at     BIGINT  NOT NULL,
    last_fired_at BIGINT  NOT NULL,
    n_alerts      BIGINT  NOT NULL,
    n_firing      BIGINT  NOT NULL,
    quiet_at      BIGINT,
    resolve_at    BIGINT,
    resolved_at   BIGINT
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
    starts_at         BIGINT  NOT NULL,
    ends_at           BIGINT,
    incident_id       BIGINT  REFERENCES incidents (id),
    group_key         TEXT    NOT NULL,
    first_seen_at     BIGINT  NOT NULL,
    last_change_at    BIGINT  NOT NULL,
    flap_window_start BIGINT  NOT NULL,
    flap_count        BIGINT  NOT NULL,
    flapping          BIGINT  NOT NULL
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
    at          BIGINT  NOT NULL,
    received_at BIGINT  NOT NULL
);
CREATE INDEX changes_by_service_time ON changes (service, at);

CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    incident_id BIGINT,
    actor       TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);
CREATE INDEX audit_by_incident ON audit_log (incident_id, seq);
