//! Incidents and their alerts: intake's batches through correlation, the resolve tick, and the incident reads.

use super::*;

impl SqlStore {
    pub(super) async fn ingest(
        &self,
        alerts: &[Alert],
        changes: &[Change],
        now: Millis,
        policy: &Policy,
    ) -> Result<IngestResult> {
        let mut tx = self.begin_write().await?;
        let mut ws = WorkingSet::default();

        // Load the slice of state this batch can touch.
        let keys: BTreeSet<String> = alerts.iter().map(Alert::key).collect();
        let rows = self
            .select_in(
                &mut tx,
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE key IN"),
                keys.into_iter().map(Arg::Text).collect(),
            )
            .await?;
        for r in &rows {
            let row = alert_from(r)?;
            ws.alerts.insert(row.alert.key(), row);
        }
        let ids: BTreeSet<i64> = ws.alerts.values().filter_map(|r| r.incident_id).collect();
        let groups: BTreeSet<String> =
            alerts.iter().flat_map(|a| std::iter::once(policy.group_key(a)).chain(policy.related_keys(a))).collect();
        for r in self.load_incidents(&mut tx, ids.into_iter().collect(), groups.into_iter().collect()).await? {
            let inc = incident_from(&r)?;
            ws.incidents.insert(inc.id, inc);
        }
        let (max_id, head) = Self::heads(&mut tx).await?;
        ws.next_incident_id = max_id + 1;

        // Correlate (pure).
        let mut result = IngestResult::default();
        for alert in alerts {
            result.outcomes.push(ws.apply(alert, now, policy));
            result.incidents.push(ws.alerts.get(&alert.key()).and_then(|r| r.incident_id));
        }

        // Changes: new ones are stored and audited, known ids are no-ops.
        let change_ids: Vec<Arg> = changes.iter().map(|c| Arg::Text(c.id.clone())).collect();
        let known: HashSet<String> = self
            .select_in(&mut tx, "SELECT id FROM changes WHERE id IN", change_ids)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        let mut seen = HashSet::new();
        let mut new_changes = Vec::new();
        let mut change_audit = Vec::new();
        for c in changes {
            let is_new = !known.contains(&c.id) && seen.insert(c.id.clone());
            result.changes_new.push(is_new);
            if is_new {
                new_changes.push(change_args(c, now));
                change_audit.push(AuditEntry {
                    at: now,
                    kind: Kind::ChangeRecorded,
                    incident_id: None,
                    actor: "changes".into(),
                    data: serde_json::to_value(c)?,
                });
            }
        }
        self.insert_rows(
            &mut tx,
            "changes",
            "id, kind, service, summary, author, version, url, labels, at, received_at",
            10,
            "",
            new_changes,
        )
        .await?;

        self.write(tx, ws, change_audit, head).await?;
        Ok(result)
    }

    pub(super) async fn tick(&self, now: Millis, policy: &Policy) -> Result<usize> {
        // Cheap check first, outside the write lock: most ticks have nothing to do.
        let pending: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM incidents WHERE state = 'resolving' OR (state = 'open' AND n_firing = 0)",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        if pending == 0 {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {INCIDENT_COLS} FROM incidents WHERE state = 'resolving' OR (state = 'open' AND n_firing = 0)"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut ws = WorkingSet::default();
        for r in &rows {
            let inc = incident_from(r)?;
            ws.incidents.insert(inc.id, inc);
        }
        ws.evaluate_all(now, policy);
        let changed = ws.dirty_incidents.len();
        let (_, head) = Self::heads(&mut tx).await?;
        self.write(tx, ws, Vec::new(), head).await?;
        Ok(changed)
    }

    pub(super) async fn resolve_by_hand(
        &self,
        id: i64,
        resolve: bool,
        by: &Identity,
        via: &str,
        now: Millis,
    ) -> Result<std::result::Result<(), String>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(Err(format!("there is no incident #{id}"))) };
        let inc = incident_from(&row)?;
        let resolved = inc.state == IncidentState::Resolved;
        if resolve == resolved {
            return Ok(Err(format!(
                "incident #{id} is already {}",
                if resolved { "resolved" } else { inc.state.as_str() }
            )));
        }
        if !resolve {
            // One unresolved incident per group: a newer one of the group must be resolved first.
            let other =
                sqlx::query("SELECT id FROM incidents WHERE group_key = $1 AND state <> 'resolved' AND id <> $2")
                    .bind(inc.group_key.clone())
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(o) = other {
                let o: i64 = o.try_get("id")?;
                return Ok(Err(format!("incident #{o} of the same group is open; resolve it first or use it")));
            }
        }
        let (state, resolved_at, kind) = match resolve {
            true => ("resolved", Some(now), Kind::IncidentResolved),
            false => ("open", None, Kind::IncidentReopened),
        };
        sqlx::query(
            "UPDATE incidents SET state = $1, resolved_at = $2, resolve_at = NULL, quiet_at = NULL WHERE id = $3",
        )
        .bind(state)
        .bind(resolved_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let reason = if resolve { "resolved by hand" } else { "reopened by hand" };
        let entry = AuditEntry {
            at: now,
            kind,
            incident_id: Some(id),
            actor: by.0.clone(),
            data: serde_json::json!({"reason": reason, "via": via}),
        };
        self.append_audit(&mut tx, vec![entry]).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    pub(super) async fn incidents(&self, f: &IncidentFilter) -> Result<Vec<Incident>> {
        let sql = format!(
            "SELECT {INCIDENT_COLS} FROM incidents WHERE ($1 = '' OR state = $1) AND id < $2 \
             AND ($4 = '' OR group_key = $4) ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(f.state.map(|s| s.as_str()).unwrap_or("").to_string())
            .bind(f.before.unwrap_or(i64::MAX))
            .bind(f.limit.clamp(1, 1000))
            .bind(f.group_key.clone().unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(incident_from).collect()
    }

    pub(super) async fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<AlertRow>)>> {
        let Some(row) = sqlx::query(&format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let incident = incident_from(&row)?;
        let mut rows = self.alerts_of(id, "ASC", ALERTS_READ).await?;
        if rows.len() as i64 == ALERTS_READ && incident.n_alerts > ALERTS_READ {
            // A big incident: its first and its latest alerts.
            rows.truncate((ALERTS_READ / 2) as usize);
            let mut latest = self.alerts_of(id, "DESC", ALERTS_READ / 2).await?;
            latest.reverse();
            rows.extend(latest);
        }
        let mut alerts = rows.iter().map(alert_from).collect::<Result<Vec<_>>>()?;
        alerts.dedup_by(|a, b| a.alert.key() == b.alert.key());
        Ok(Some((incident, alerts)))
    }

    pub(super) async fn incident_alerts(
        &self,
        id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Option<(Incident, Vec<AlertRow>, i64)>> {
        let Some(row) = sqlx::query(&format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE incident_id = $1 AND key > $2 ORDER BY key LIMIT $3"
        ))
        .bind(id)
        .bind(after.unwrap_or("").to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM alerts WHERE incident_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(Some((incident_from(&row)?, rows.iter().map(alert_from).collect::<Result<_>>()?, total)))
    }

    /// Up to `limit` alerts of incident `id`, first seen first (`ASC`) or last (`DESC`).
    async fn alerts_of(&self, id: i64, order: &'static str, limit: i64) -> Result<Vec<AnyRow>> {
        let sql = format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE incident_id = $1 ORDER BY first_seen_at {order}, key {order} LIMIT $2"
        );
        Ok(sqlx::query(&sql).bind(id).bind(limit).fetch_all(&self.pool).await?)
    }

    pub(super) async fn unresolved_counts(&self) -> Result<(i64, i64)> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN state = 'open' THEN 1 ELSE 0 END), 0) AS o, \
             COALESCE(SUM(CASE WHEN state = 'resolving' THEN 1 ELSE 0 END), 0) AS r \
             FROM incidents WHERE state <> 'resolved'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get("o")?, r.try_get("r")?))
    }
}

pub(super) fn incident_args(i: &Incident) -> Vec<Arg> {
    vec![
        Arg::Int(i.id),
        Arg::Text(i.group_key.clone()),
        Arg::Text(i.title.clone()),
        Arg::OptText(i.severity.clone()),
        Arg::Text(i.state.as_str().into()),
        Arg::Int(i.opened_at),
        Arg::Int(i.last_fired_at),
        Arg::Int(i.n_alerts),
        Arg::Int(i.n_firing),
        Arg::OptInt(i.quiet_at),
        Arg::OptInt(i.resolve_at),
        Arg::OptInt(i.resolved_at),
    ]
}

pub(super) fn incident_from(r: &AnyRow) -> Result<Incident> {
    let state: String = r.try_get("state")?;
    Ok(Incident {
        id: r.try_get("id")?,
        group_key: r.try_get("group_key")?,
        title: r.try_get("title")?,
        severity: r.try_get("severity")?,
        state: IncidentState::parse(&state).ok_or_else(|| anyhow!("unknown incident state {state:?}"))?,
        opened_at: r.try_get("opened_at")?,
        last_fired_at: r.try_get("last_fired_at")?,
        n_alerts: r.try_get("n_alerts")?,
        n_firing: r.try_get("n_firing")?,
        quiet_at: r.try_get("quiet_at")?,
        resolve_at: r.try_get("resolve_at")?,
        resolved_at: r.try_get("resolved_at")?,
    })
}

pub(super) fn json_text(m: &Labels) -> String {
    serde_json::to_string(m).expect("a string map always serialises")
}

pub(super) fn alert_args(r: &AlertRow) -> Vec<Arg> {
    let a = &r.alert;
    vec![
        Arg::Text(a.key()),
        Arg::Text(a.source.as_str().into()),
        Arg::Text(a.fingerprint.clone()),
        Arg::Text(a.status.as_str().into()),
        Arg::Text(json_text(&a.labels)),
        Arg::Text(json_text(&a.annotations)),
        Arg::Text(json_text(&a.links)),
        Arg::Int(a.starts_at),
        Arg::OptInt(a.ends_at),
        Arg::OptInt(r.incident_id),
        Arg::Text(r.group_key.clone()),
        Arg::Int(r.first_seen_at),
        Arg::Int(r.last_change_at),
        Arg::Int(r.flap_window_start),
        Arg::Int(r.flap_count),
        Arg::Int(r.flapping as i64),
    ]
}

pub(super) fn alert_from(r: &AnyRow) -> Result<AlertRow> {
    let source: String = r.try_get("source")?;
    let status: String = r.try_get("status")?;
    let map = |col: &str| -> Result<Labels> {
        let s: String = r.try_get(col)?;
        serde_json::from_str(&s).with_context(|| format!("alerts.{col} is not a JSON string map"))
    };
    Ok(AlertRow {
        alert: Alert {
            source: Source::parse(&source).ok_or_else(|| anyhow!("unknown alert source {source:?}"))?,
            fingerprint: r.try_get("fingerprint")?,
            status: AlertStatus::parse(&status).ok_or_else(|| anyhow!("unknown alert status {status:?}"))?,
            labels: map("labels")?,
            annotations: map("annotations")?,
            links: map("links")?,
            starts_at: r.try_get("starts_at")?,
            ends_at: r.try_get("ends_at")?,
        },
        incident_id: r.try_get("incident_id")?,
        group_key: r.try_get("group_key")?,
        first_seen_at: r.try_get("first_seen_at")?,
        last_change_at: r.try_get("last_change_at")?,
        flap_window_start: r.try_get("flap_window_start")?,
        flap_count: r.try_get("flap_count")?,
        flapping: r.try_get::<i64, _>("flapping")? != 0,
    })
}
