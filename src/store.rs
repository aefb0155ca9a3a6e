//! Storage: one trait, [`Store`], and its SQL implementation for SQLite and PostgreSQL.
//!
//! Both backends run the same statements through sqlx's `Any` driver (timestamps are integer
//! milliseconds and maps are JSON text, so nothing backend-specific crosses the trait). They
//! differ only in what [`Backend`] decides: connection setup (SQLite: WAL, `synchronous=FULL`,
//! busy timeout), the migrations directory, and how a write batch excludes other writers
//! (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock, which is what lets
//! several replicas share one database and one audit chain).

use crate::alert::{Alert, AlertStatus, Change, Labels, Source};
use crate::approval::{self, ApprovedPlan, Click, Facts, Groups, Identity, PlanState, StoredPlan, Verdict};
use crate::audit::{self, AuditEntry, AuditRecord, Kind};
use crate::incident::{AlertRow, Incident, IncidentState, Outcome, Policy, WorkingSet};
use crate::plan::ProposedPlan;
use crate::time::Millis;
use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor, Row};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// What one committed batch did, in the order the alerts and changes were given.
#[derive(Debug, Default)]
pub struct IngestResult {
    pub outcomes: Vec<Outcome>,
    /// The incident each alert belongs to after the batch (none for a resolved alert never seen firing).
    pub incidents: Vec<Option<i64>>,
    /// For each change: true if new, false if already recorded.
    pub changes_new: Vec<bool>,
}

/// A chat delivery to make: `op` is `post` (the incident's root message), `update` (of the
/// root), `thread` (a reply under it), `ephemeral` (to `target` only) or `modal` (`target` is
/// the trigger).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub platform: String,
    pub incident_id: i64,
    pub op: String,
    pub channel: String,
    pub target: Option<String>,
    /// The platform's request body, JSON.
    pub body: String,
}

/// A claimed delivery, with the root message's id once it is posted.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub item: OutboxItem,
    pub attempts: i64,
    pub root: Option<String>,
}

/// How a delivery went.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Sent; `result` is the posted message's id (root posts).
    Sent { result: Option<String> },
    /// Try again after `after_ms` (a 429's Retry-After, or backoff after an outage).
    Retry { after_ms: Millis, error: String },
    /// The platform refused it for good (invalid request); kept for inspection.
    Failed { error: String },
}

/// How a platform's deliveries stand (see [`Store::outbox_health`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OutboxHealth {
    pub platform: String,
    pub pending: i64,
    /// Pending after at least one failed attempt (an outage, a rate limit, refused credentials).
    pub failing: i64,
    /// Refused for good, since the time asked about.
    pub failed: i64,
    pub last_error: Option<String>,
}

/// An incident's latest plan as chat shows it.
#[derive(Debug, Clone)]
pub struct PlanStatus {
    pub plan: StoredPlan,
    pub approvers: Vec<Identity>,
    /// The execution's state (`running`, `succeeded`, `rolled_back`, `failed`, `interrupted`)
    /// and its current step (0-based), once claimed.
    pub execution: Option<(String, i64)>,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub state: Option<IncidentState>,
    /// Only incidents with an id below this (pagination, newest first).
    pub before: Option<i64>,
    /// Only incidents of this group (the same signature).
    pub group_key: Option<String>,
    pub limit: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    /// The database answers and every migration this binary knows is applied.
    async fn ready(&self) -> Result<()>;
    /// Correlates and stores alerts and change events in one transaction, with their audit records.
    async fn ingest(&self, alerts: &[Alert], changes: &[Change], now: Millis, policy: &Policy) -> Result<IngestResult>;
    /// Moves incidents whose grace period or flap hold has passed; returns how many changed.
    async fn tick(&self, now: Millis, policy: &Policy) -> Result<usize>;
    async fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>>;
    async fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<AlertRow>)>>;
    /// Number of incidents in each unresolved state: (open, resolving).
    async fn unresolved_counts(&self) -> Result<(i64, i64)>;
    /// Audit records with `seq > after`, in order, at most `limit`.
    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>>;
    async fn audit_for_incident(&self, id: i64) -> Result<Vec<AuditRecord>>;
    /// Makes `plan` its incident's current plan, superseding any other proposed one. Proposing
    /// a plan already stored (same hash) changes nothing.
    async fn propose(&self, plan: &ProposedPlan, requested_by: &Identity, now: Millis) -> Result<()>;
    async fn plan(&self, hash: &str) -> Result<Option<StoredPlan>>;
    /// Applies a click exactly once: the rules of `approval::decide` over the facts read in the
    /// same locked transaction that records the outcome. The approved plan is returned to the one
    /// call whose click completed the approval, and to no other.
    async fn decide(
        &self,
        hash: &str,
        click: &Click,
        groups: &Groups,
        guardrail: Option<String>,
    ) -> Result<(Verdict, Option<ApprovedPlan>)>;
    /// Claims an approved plan for execution by `owner`; false if it was already claimed.
    async fn claim_execution(&self, plan: &ApprovedPlan, owner: &str, now: Millis) -> Result<bool>;
    /// Records the execution's progress (`state`, `step`) and its audit entry, together.
    async fn execution_event(&self, hash: &str, step: i64, state: ExecState, entry: AuditEntry) -> Result<()>;
    /// Renews the lease of a running execution.
    async fn execution_heartbeat(&self, hash: &str, now: Millis) -> Result<()>;
    /// Marks running executions interrupted and audits an escalation for each; returns their
    /// plan hashes and incidents. Nothing is re-run. Marked are the executions of other owners
    /// whose lease has lapsed (last heartbeat before `stale_before`: their replica is gone),
    /// and, with `own`, every one of `owner`'s (at start: this replica crashed mid-plan).
    async fn interrupt_running(
        &self,
        owner: &str,
        own: bool,
        stale_before: Millis,
        now: Millis,
    ) -> Result<Vec<(String, i64)>>;
    /// The kill switch: `paused` stops all automation until resumed; `by` is audited as the actor.
    async fn set_paused(&self, by: &Identity, paused: bool, now: Millis) -> Result<()>;
    /// Who paused automation and when, if it is paused.
    async fn paused(&self) -> Result<Option<(String, Millis)>>;
    /// Executions since `since` of plans for any alert of incident `id` (across incidents).
    async fn attempts(&self, incident_id: i64, since: Millis) -> Result<u32>;
    /// Queues a chat delivery. A `post` for an incident that has one becomes an `update`; a
    /// pending `update` of the same incident on the same platform is replaced rather than
    /// queued again: only the newest state is worth sending.
    async fn outbox_push(&self, item: &OutboxItem, now: Millis) -> Result<()>;
    /// Claims up to `limit` due deliveries of `platform` for `lease` ms (another replica does
    /// not take them meanwhile). Replies and updates wait for their root message; an update
    /// waits until a second has passed since the last one of its message.
    async fn outbox_claim(&self, platform: &str, now: Millis, lease: Millis, limit: i64) -> Result<Vec<OutboxRow>>;
    /// Records how a claimed delivery went.
    async fn outbox_finish(&self, id: i64, outcome: &Delivery, now: Millis) -> Result<()>;
    /// Per platform: deliveries waiting, those waiting after a failed attempt, those refused
    /// for good since `since`, and the newest error. A chat outage shows here.
    async fn outbox_health(&self, since: Millis) -> Result<Vec<OutboxHealth>>;
    /// The incident's latest plan with its approvers and its execution, if it has a plan.
    async fn plan_status(&self, incident_id: i64) -> Result<Option<PlanStatus>>;
    /// Appends audit entries that go with no other state change (a diagnosis).
    async fn record(&self, entries: Vec<AuditEntry>) -> Result<()>;
    /// Changes received on `/v1/changes` for `service` in `[start, end]`, oldest first.
    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>>;
    async fn close(&self);
}

/// The guardrails as they stand now for incident `incident_id`: the kill switch and the attempt
/// budget read from the store, freezes and deploys from `cfg` and `recent_changes`.
pub async fn guardrails_now(
    store: &dyn Store,
    cfg: &crate::guardrails::GuardrailConfig,
    incident_id: i64,
    service: Option<&str>,
    recent_changes: &[Change],
    budget: Option<crate::runbook::Budget>,
    now: Millis,
) -> Result<crate::guardrails::Assessment> {
    let per = budget.unwrap_or(cfg.attempt_budget).per.as_millis() as Millis;
    let paused = store.paused().await?;
    let situation = crate::guardrails::Situation {
        service,
        now,
        paused: paused.as_ref().map(|(by, at)| (by.as_str(), *at)),
        recent_changes,
        attempts: store.attempts(incident_id, now - per).await?,
        budget,
    };
    Ok(crate::guardrails::assess(cfg, &situation))
}

/// Where an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    Running,
    Succeeded,
    RolledBack,
    Failed,
    Interrupted,
}

impl ExecState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecState::Running => "running",
            ExecState::Succeeded => "succeeded",
            ExecState::RolledBack => "rolled_back",
            ExecState::Failed => "failed",
            ExecState::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            bail!("unsupported database URL {}: expected sqlite://PATH or postgres://…", crate::secret::mask_url(url))
        }
    }

    fn migrator(self) -> &'static sqlx::migrate::Migrator {
        static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
        static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
        match self {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }
}

/// Opens the store at `url`, creating the SQLite file if needed, and applies migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>> {
    open_with(url, max_connections, true, std::time::Duration::from_secs(30)).await
}

/// The file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH`); `None` for PostgreSQL and
/// in-memory databases.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| std::path::PathBuf::from(path))
}

/// Opens a store that must already exist, for the commands that change or vouch for one
/// (`pause`, `resume`, `audit`): a SQLite file that is not there is an error naming it, never
/// a new empty store, and an unreachable server fails within `timeout`.
pub async fn open_existing(url: &str, max_connections: u32, timeout: std::time::Duration) -> Result<Arc<dyn Store>> {
    if let Some(path) = sqlite_path(url)
        && !path.is_file()
    {
        let full = std::env::current_dir().map(|d| d.join(&path)).unwrap_or(path);
        bail!(
            "no store at {}: only `medic serve` and `medic demo` create one. Run this where the server runs, \
             or name its store with --database-url or --config",
            full.display()
        );
    }
    open_with(url, max_connections, false, timeout).await
}

async fn open_with(
    url: &str,
    max_connections: u32,
    create: bool,
    timeout: std::time::Duration,
) -> Result<Arc<dyn Store>> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    let masked = crate::secret::mask_url(url);
    let mut url = url.to_string();
    let mut options = AnyPoolOptions::new().max_connections(max_connections.max(2)).acquire_timeout(timeout);
    if backend == Backend::Sqlite {
        if !url.contains("mode=") {
            let mode = if create { "mode=rwc" } else { "mode=rw" };
            url.push_str(if url.contains('?') { "&" } else { "?" });
            url.push_str(mode);
        }
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                    .await?;
                Ok(())
            })
        });
    }
    let pool = options.connect(&url).await.with_context(|| format!("cannot connect to {masked}"))?;
    backend.migrator().run(&pool).await.with_context(|| format!("cannot apply migrations to {masked}"))?;
    Ok(Arc::new(SqlStore { pool, backend }))
}

pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

/// A bind value; lets one helper build multi-row statements of mixed column types.
enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
}

fn bind_all<'q>(mut q: Query<'q, Any, AnyArguments<'q>>, args: Vec<Arg>) -> Query<'q, Any, AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
        };
    }
    q
}

/// `($1,$2),($3,$4)…` (PostgreSQL) or `(?,?),(?,?)…` (SQLite) for `rows` rows of `cols` columns.
/// SQLite resolves a named parameter like `$7` by a linear scan, which makes binding a
/// thousands-of-parameters statement quadratic; anonymous `?` binds in order at no cost.
fn placeholders(backend: Backend, rows: usize, cols: usize) -> String {
    (0..rows).map(|r| format!("({})", list(backend, r * cols + 1, cols))).collect::<Vec<_>>().join(",")
}

/// `n` comma-separated placeholders, numbered from `first` where the backend numbers them.
fn list(backend: Backend, first: usize, n: usize) -> String {
    let one = |i: usize| match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => format!("${i}"),
    };
    (first..first + n).map(one).collect::<Vec<_>>().join(",")
}

/// Rows per multi-row statement: stays under SQLite's 32766 bind parameters.
const CHUNK: usize = 500;

const INCIDENT_COLS: &str = "id, group_key, title, severity, state, opened_at, last_fired_at, n_alerts, n_firing, quiet_at, resolve_at, resolved_at";
const ALERT_COLS: &str = "key, source, fingerprint, status, labels, annotations, links, starts_at, ends_at, incident_id, \
     group_key, first_seen_at, last_change_at, flap_window_start, flap_count, flapping";
const AUDIT_COLS: &str = "seq, at, kind, incident_id, actor, data, prev_hash, hash";

fn incident_args(i: &Incident) -> Vec<Arg> {
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

fn incident_from(r: &AnyRow) -> Result<Incident> {
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

fn json_text(m: &Labels) -> String {
    serde_json::to_string(m).expect("a string map always serialises")
}

fn alert_args(r: &AlertRow) -> Vec<Arg> {
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

fn alert_from(r: &AnyRow) -> Result<AlertRow> {
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

fn audit_args(r: AuditRecord) -> Vec<Arg> {
    vec![
        Arg::Int(r.seq),
        Arg::Int(r.at),
        Arg::Text(r.kind),
        Arg::OptInt(r.incident_id),
        Arg::Text(r.actor),
        Arg::Text(r.data),
        Arg::Text(r.prev_hash),
        Arg::Text(r.hash),
    ]
}

fn audit_from(r: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        incident_id: r.try_get("incident_id")?,
        actor: r.try_get("actor")?,
        data: r.try_get("data")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

fn change_args(c: &Change, now: Millis) -> Vec<Arg> {
    vec![
        Arg::Text(c.id.clone()),
        Arg::Text(c.kind.as_str().into()),
        Arg::Text(c.service.clone()),
        Arg::Text(c.summary.clone()),
        Arg::OptText(c.author.clone()),
        Arg::OptText(c.version.clone()),
        Arg::OptText(c.url.clone()),
        Arg::Text(json_text(&c.labels)),
        Arg::Int(c.at),
        Arg::Int(now),
    ]
}

fn change_from(r: &AnyRow) -> Result<Change> {
    let kind: String = r.try_get("kind")?;
    let labels: String = r.try_get("labels")?;
    Ok(Change {
        id: r.try_get("id")?,
        kind: serde_json::from_value(serde_json::Value::String(kind.clone()))
            .map_err(|_| anyhow!("unknown change kind {kind:?}"))?,
        service: r.try_get("service")?,
        summary: r.try_get("summary")?,
        author: r.try_get("author")?,
        version: r.try_get("version")?,
        url: r.try_get("url")?,
        labels: serde_json::from_str(&labels).context("changes.labels is not a JSON string map")?,
        at: r.try_get("at")?,
    })
}

/// The changes medic received on `/v1/changes`, as a context source.
pub struct StoredChanges(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl crate::context::Changes for StoredChanges {
    fn name(&self) -> &str {
        "medic"
    }

    async fn changes(&self, service: &str, start: Millis, end: Millis) -> std::result::Result<Vec<Change>, String> {
        self.0.changes(service, start, end).await.map_err(|e| format!("{e:#}"))
    }
}

type Tx = sqlx::Transaction<'static, Any>;

impl SqlStore {
    /// Starts a write transaction that excludes every other writer of this database.
    async fn begin_write(&self) -> Result<Tx> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                // One key for the whole writer side: batches are small and short.
                sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(7305162391)) AS locked")
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// Runs `SELECT … WHERE col IN (…)` over `keys` in chunks.
    async fn select_in(&self, tx: &mut Tx, sql_prefix: &str, keys: Vec<Arg>) -> Result<Vec<AnyRow>> {
        let mut out = Vec::new();
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            let chunk: Vec<Arg> = keys.by_ref().take(CHUNK).collect();
            let sql = format!("{sql_prefix} ({})", list(self.backend, 1, chunk.len()));
            out.extend(bind_all(sqlx::query(&sql), chunk).fetch_all(&mut **tx).await?);
        }
        Ok(out)
    }

    async fn insert_rows(
        &self,
        tx: &mut Tx,
        table: &str,
        cols: &str,
        ncols: usize,
        conflict: &str,
        rows: Vec<Vec<Arg>>,
    ) -> Result<()> {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Arg>> = rows.by_ref().take(CHUNK).collect();
            let sql = format!(
                "INSERT INTO {table} ({cols}) VALUES {} {conflict}",
                placeholders(self.backend, chunk.len(), ncols)
            );
            bind_all(sqlx::query(&sql), chunk.into_iter().flatten().collect())
                .execute(&mut **tx)
                .await
                .with_context(|| format!("writing {table}"))?;
        }
        Ok(())
    }

    fn upsert_clause(key: &str, cols: &str) -> String {
        let sets: Vec<String> =
            cols.split(',').map(str::trim).filter(|c| *c != key).map(|c| format!("{c} = excluded.{c}")).collect();
        format!("ON CONFLICT ({key}) DO UPDATE SET {}", sets.join(", "))
    }

    /// Writes what the working set changed, chains its audit entries, and commits.
    /// The highest incident id and the audit chain's head `(seq, hash)`, in one round trip.
    async fn heads(tx: &mut Tx) -> Result<(i64, (i64, String))> {
        let r = sqlx::query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM incidents) AS max_id, \
             (SELECT COALESCE(MAX(seq), 0) FROM audit_log) AS seq, \
             (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS hash",
        )
        .fetch_one(&mut **tx)
        .await?;
        let hash: Option<String> = r.try_get("hash")?;
        Ok((r.try_get("max_id")?, (r.try_get("seq")?, hash.unwrap_or_else(|| audit::GENESIS.to_string()))))
    }

    /// Loads the incidents a batch can touch: those its alerts belong to and the unresolved ones
    /// of its group keys. One query when the lists are short, which is the usual case.
    async fn load_incidents(&self, tx: &mut Tx, ids: Vec<i64>, groups: Vec<String>) -> Result<Vec<AnyRow>> {
        let unresolved = format!("SELECT {INCIDENT_COLS} FROM incidents WHERE state <> 'resolved' AND group_key IN");
        if ids.len() + groups.len() > CHUNK || groups.is_empty() {
            let mut rows = self
                .select_in(
                    tx,
                    &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id IN"),
                    ids.into_iter().map(Arg::Int).collect(),
                )
                .await?;
            rows.extend(self.select_in(tx, &unresolved, groups.into_iter().map(Arg::Text).collect()).await?);
            return Ok(rows);
        }
        let by_group = format!("{unresolved} ({})", list(self.backend, 1, groups.len()));
        let sql = if ids.is_empty() {
            by_group
        } else {
            format!("{by_group} OR id IN ({})", list(self.backend, groups.len() + 1, ids.len()))
        };
        let args = groups.into_iter().map(Arg::Text).chain(ids.into_iter().map(Arg::Int)).collect();
        Ok(bind_all(sqlx::query(&sql), args).fetch_all(&mut **tx).await?)
    }

    /// Chains `entries` onto the audit log inside `tx`.
    async fn append_audit(&self, tx: &mut Tx, entries: Vec<AuditEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (_, head) = Self::heads(tx).await?;
        self.chain_onto(tx, entries, head).await
    }

    /// Chains `entries` onto the audit head `(seq, hash)` read earlier in `tx`.
    async fn chain_onto(&self, tx: &mut Tx, entries: Vec<AuditEntry>, head: (i64, String)) -> Result<()> {
        let records = audit::chain(head.0, &head.1, entries).into_iter().map(audit_args).collect();
        self.insert_rows(tx, "audit_log", AUDIT_COLS, 8, "", records).await
    }

    /// The text column `col` of the first row `sql` returns for the incident `id`, if any.
    async fn text_for(tx: &mut Tx, sql: &'static str, col: &str, id: i64) -> Result<Option<String>> {
        Ok(sqlx::query(sql).bind(id).fetch_optional(&mut **tx).await?.map(|r| r.try_get(col)).transpose()?)
    }

    const CURRENT_PLAN: &'static str = "SELECT hash FROM plans WHERE incident_id = $1 AND state = 'proposed'";

    async fn load_plan(tx: &mut Tx, hash: &str) -> Result<Option<StoredPlan>> {
        let Some(r) =
            sqlx::query("SELECT body, state, requested_by, proposed_at, expires_at FROM plans WHERE hash = $1")
                .bind(hash.to_string())
                .fetch_optional(&mut **tx)
                .await?
        else {
            return Ok(None);
        };
        let body: String = r.try_get("body")?;
        let state: String = r.try_get("state")?;
        Ok(Some(StoredPlan {
            plan: serde_json::from_str(&body).context("plans.body is not a plan")?,
            state: PlanState::parse(&state).ok_or_else(|| anyhow!("unknown plan state {state:?}"))?,
            requested_by: Identity(r.try_get("requested_by")?),
            proposed_at: r.try_get("proposed_at")?,
            expires_at: r.try_get("expires_at")?,
        }))
    }

    async fn write(&self, mut tx: Tx, ws: WorkingSet, extra_audit: Vec<AuditEntry>, head: (i64, String)) -> Result<()> {
        let incidents: Vec<Vec<Arg>> = ws.dirty_incidents.iter().map(|id| incident_args(&ws.incidents[id])).collect();
        self.insert_rows(&mut tx, "incidents", INCIDENT_COLS, 12, &Self::upsert_clause("id", INCIDENT_COLS), incidents)
            .await?;
        let alerts: Vec<Vec<Arg>> = ws.dirty_alerts.iter().map(|k| alert_args(&ws.alerts[k])).collect();
        self.insert_rows(&mut tx, "alerts", ALERT_COLS, 16, &Self::upsert_clause("key", ALERT_COLS), alerts).await?;

        let mut entries = ws.audit;
        entries.extend(extra_audit);
        if !entries.is_empty() {
            self.chain_onto(&mut tx, entries, head).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    async fn ready(&self) -> Result<()> {
        let applied: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("version"))
            .collect::<Result<_, _>>()?;
        let missing: Vec<i64> =
            self.backend.migrator().iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect();
        if !missing.is_empty() {
            bail!("migrations not applied: {missing:?}");
        }
        Ok(())
    }

    async fn ingest(&self, alerts: &[Alert], changes: &[Change], now: Millis, policy: &Policy) -> Result<IngestResult> {
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

    async fn tick(&self, now: Millis, policy: &Policy) -> Result<usize> {
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

    async fn incidents(&self, f: &IncidentFilter) -> Result<Vec<Incident>> {
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

    async fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<AlertRow>)>> {
        let Some(row) = sqlx::query(&format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let alerts =
            sqlx::query(&format!("SELECT {ALERT_COLS} FROM alerts WHERE incident_id = $1 ORDER BY first_seen_at, key"))
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(Some((incident_from(&row)?, alerts.iter().map(alert_from).collect::<Result<_>>()?)))
    }

    async fn unresolved_counts(&self) -> Result<(i64, i64)> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN state = 'open' THEN 1 ELSE 0 END), 0) AS o, \
             COALESCE(SUM(CASE WHEN state = 'resolving' THEN 1 ELSE 0 END), 0) AS r \
             FROM incidents WHERE state <> 'resolved'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get("o")?, r.try_get("r")?))
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn audit_for_incident(&self, id: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLS} FROM audit_log WHERE incident_id = $1 ORDER BY seq"))
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn outbox_push(&self, item: &OutboxItem, now: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // A second root post of one incident is an update of the first.
        let mut op = item.op.clone();
        if op == "post"
            && sqlx::query("SELECT id FROM chat_outbox WHERE platform = $1 AND incident_id = $2 AND op = 'post'")
                .bind(item.platform.clone())
                .bind(item.incident_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some()
        {
            op = "update".into();
        }
        let replaced = if op == "update" {
            sqlx::query(
                "UPDATE chat_outbox SET body = $1 WHERE platform = $2 AND incident_id = $3 AND op = 'update' \
                 AND state = 'pending'",
            )
            .bind(item.body.clone())
            .bind(item.platform.clone())
            .bind(item.incident_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            0
        };
        if replaced == 0 {
            sqlx::query(
                "INSERT INTO chat_outbox (platform, incident_id, op, channel, target, body, state, due_at, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, 0)",
            )
            .bind(item.platform.clone())
            .bind(item.incident_id)
            .bind(op)
            .bind(item.channel.clone())
            .bind(item.target.clone())
            .bind(item.body.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_claim(&self, platform: &str, now: Millis, lease: Millis, limit: i64) -> Result<Vec<OutboxRow>> {
        // The worker asks several times a second; the write lock (which intake commits wait
        // for) is taken only when something is due.
        let due = sqlx::query(
            "SELECT id FROM chat_outbox WHERE platform = $1 AND state = 'pending' AND due_at <= $2 LIMIT 1",
        )
        .bind(platform.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT id, incident_id, op, channel, target, body, attempts FROM chat_outbox \
             WHERE platform = $1 AND state = 'pending' AND due_at <= $2 ORDER BY id LIMIT $3",
        )
        .bind(platform.to_string())
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let (id, incident_id, op): (i64, i64, String) =
                (r.try_get("id")?, r.try_get("incident_id")?, r.try_get("op")?);
            // The root message and when it, or an update of it, was last sent.
            let sent = sqlx::query(
                "SELECT op, result, sent_at FROM chat_outbox WHERE platform = $1 AND incident_id = $2 \
                 AND op IN ('post', 'update') AND state = 'sent' ORDER BY sent_at DESC, id DESC",
            )
            .bind(platform.to_string())
            .bind(incident_id)
            .fetch_all(&mut *tx)
            .await?;
            let root: Option<String> = sent
                .iter()
                .find(|s| s.try_get::<String, _>("op").is_ok_and(|o| o == "post"))
                .map(|s| s.try_get("result"))
                .transpose()?
                .flatten();
            let last_sent: Option<Millis> = sent.first().map(|s| s.try_get("sent_at")).transpose()?.flatten();
            if op == "post" && root.is_some() {
                // Already posted (a second post for one incident would be a duplicate message).
                sqlx::query("UPDATE chat_outbox SET state = 'sent', last_error = 'duplicate post' WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let blocked = matches!(op.as_str(), "update" | "thread") && root.is_none();
            if blocked {
                continue;
            }
            if op == "update"
                && let Some(t) = last_sent
                && now - t < 1000
            {
                sqlx::query("UPDATE chat_outbox SET due_at = $1 WHERE id = $2")
                    .bind(t + 1000)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            sqlx::query("UPDATE chat_outbox SET due_at = $1, attempts = attempts + 1 WHERE id = $2")
                .bind(now + lease)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            out.push(OutboxRow {
                id,
                item: OutboxItem {
                    platform: platform.to_string(),
                    incident_id,
                    op,
                    channel: r.try_get("channel")?,
                    target: r.try_get("target")?,
                    body: r.try_get("body")?,
                },
                attempts: r.try_get::<i64, _>("attempts")? + 1,
                root,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn outbox_finish(&self, id: i64, outcome: &Delivery, now: Millis) -> Result<()> {
        let q = match outcome {
            Delivery::Sent { result } => sqlx::query(
                "UPDATE chat_outbox SET state = 'sent', sent_at = $1, result = $2, last_error = NULL WHERE id = $3",
            )
            .bind(now)
            .bind(result.clone()),
            Delivery::Retry { after_ms, error } => {
                sqlx::query("UPDATE chat_outbox SET due_at = $1, last_error = $2 WHERE id = $3")
                    .bind(now + after_ms)
                    .bind(error.clone())
            }
            Delivery::Failed { error } => {
                sqlx::query("UPDATE chat_outbox SET state = 'failed', sent_at = $1, last_error = $2 WHERE id = $3")
                    .bind(now)
                    .bind(error.clone())
            }
        };
        q.bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn outbox_health(&self, since: Millis) -> Result<Vec<OutboxHealth>> {
        let rows = sqlx::query(
            "SELECT platform, state, CAST(CASE WHEN last_error IS NULL THEN 0 ELSE 1 END AS BIGINT) AS erred, \
             COUNT(*) AS n, MAX(id) AS newest \
             FROM chat_outbox WHERE state = 'pending' OR (state = 'failed' AND sent_at >= $1) \
             GROUP BY platform, state, erred",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<OutboxHealth> = Vec::new();
        let mut newest_error: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows {
            let (platform, state): (String, String) = (r.try_get("platform")?, r.try_get("state")?);
            let (erred, n, newest): (i64, i64, i64) = (r.try_get("erred")?, r.try_get("n")?, r.try_get("newest")?);
            let erred = erred == 1;
            let i = match out.iter().position(|h| h.platform == platform) {
                Some(i) => i,
                None => {
                    out.push(OutboxHealth { platform: platform.clone(), ..Default::default() });
                    out.len() - 1
                }
            };
            let h = &mut out[i];
            match state.as_str() {
                "pending" => {
                    h.pending += n;
                    if erred {
                        h.failing += n;
                    }
                }
                _ => h.failed += n,
            }
            if erred {
                let e = newest_error.entry(platform).or_insert(newest);
                *e = (*e).max(newest);
            }
        }
        for h in &mut out {
            if let Some(id) = newest_error.get(&h.platform) {
                h.last_error = sqlx::query("SELECT last_error FROM chat_outbox WHERE id = $1")
                    .bind(*id)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("last_error")?;
            }
        }
        out.sort_by(|a, b| a.platform.cmp(&b.platform));
        Ok(out)
    }

    async fn plan_status(&self, incident_id: i64) -> Result<Option<PlanStatus>> {
        let mut tx = self.pool.begin().await?;
        let hash = Self::text_for(
            &mut tx,
            "SELECT hash FROM plans WHERE incident_id = $1 ORDER BY proposed_at DESC, hash LIMIT 1",
            "hash",
            incident_id,
        )
        .await?;
        let Some(hash) = hash else {
            tx.commit().await?;
            return Ok(None);
        };
        let Some(plan) = Self::load_plan(&mut tx, &hash).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let approvers = sqlx::query("SELECT approver FROM approvals WHERE plan_hash = $1 ORDER BY at, approver")
            .bind(hash.clone())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("approver").map(Identity))
            .collect::<Result<Vec<_>, _>>()?;
        let execution = sqlx::query("SELECT state, step FROM executions WHERE plan_hash = $1")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get("state")?, r.try_get("step")?)))
            .transpose()?;
        tx.commit().await?;
        Ok(Some(PlanStatus { plan, approvers, execution }))
    }

    async fn record(&self, entries: Vec<AuditEntry>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        self.append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT id, kind, service, summary, author, version, url, labels, at FROM changes \
             WHERE service = $1 AND at >= $2 AND at <= $3 ORDER BY at, id LIMIT 500",
        )
        .bind(service.to_string())
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from).collect()
    }

    async fn propose(&self, plan: &ProposedPlan, requested_by: &Identity, now: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if Self::load_plan(&mut tx, &plan.hash).await?.is_some() {
            tx.commit().await?;
            return Ok(());
        }
        let current = Self::text_for(&mut tx, Self::CURRENT_PLAN, "hash", plan.incident_id).await?;
        let mut entries = Vec::new();
        if let Some(old) = current {
            sqlx::query("UPDATE plans SET state = 'superseded', decided_at = $1 WHERE hash = $2")
                .bind(now)
                .bind(old.clone())
                .execute(&mut *tx)
                .await?;
            entries.push(AuditEntry {
                at: now,
                kind: Kind::PlanSuperseded,
                incident_id: Some(plan.incident_id),
                actor: "medic".into(),
                data: serde_json::json!({"plan": old, "by": plan.hash}),
            });
        }
        let expires_at = now + (plan.approval.expires_after_secs as i64) * 1000;
        sqlx::query(
            "INSERT INTO plans (hash, incident_id, runbook, body, state, requested_by, proposed_at, expires_at) \
             VALUES ($1, $2, $3, $4, 'proposed', $5, $6, $7)",
        )
        .bind(plan.hash.clone())
        .bind(plan.incident_id)
        .bind(plan.runbook.clone())
        .bind(serde_json::to_string(plan)?)
        .bind(requested_by.0.clone())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        entries.push(AuditEntry {
            at: now,
            kind: Kind::PlanProposed,
            incident_id: Some(plan.incident_id),
            actor: requested_by.0.clone(),
            data: serde_json::json!({
                "plan": plan.hash, "runbook": plan.runbook, "tier": plan.tier,
                "steps": plan.steps.iter().map(|s| crate::redact::redact(&format!("{}: {}", s.id, s.action.summary()))).collect::<Vec<_>>(),
                "expires_at": crate::time::rfc3339(expires_at),
            }),
        });
        self.append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn plan(&self, hash: &str) -> Result<Option<StoredPlan>> {
        let mut tx = self.pool.begin().await?;
        let p = Self::load_plan(&mut tx, hash).await?;
        tx.commit().await?;
        Ok(p)
    }

    async fn decide(
        &self,
        hash: &str,
        click: &Click,
        groups: &Groups,
        guardrail: Option<String>,
    ) -> Result<(Verdict, Option<ApprovedPlan>)> {
        let mut tx = self.begin_write().await?;
        let Some(sp) = Self::load_plan(&mut tx, hash).await? else {
            tx.commit().await?;
            let short = &hash[..12.min(hash.len())];
            return Ok((Verdict::Refused { reason: format!("there is no plan {short}") }, None));
        };
        let incident = sp.plan.incident_id;
        let state = Self::text_for(&mut tx, "SELECT state FROM incidents WHERE id = $1", "state", incident).await?;
        let current = Self::text_for(&mut tx, Self::CURRENT_PLAN, "hash", incident).await?;
        let approvers: Vec<Identity> =
            sqlx::query("SELECT approver FROM approvals WHERE plan_hash = $1 ORDER BY at, approver")
                .bind(hash.to_string())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("approver").map(Identity))
                .collect::<Result<_, _>>()?;
        let facts = Facts {
            plan: &sp,
            incident_open: state.as_deref().is_some_and(|s| s != "resolved"),
            superseded_by: current.as_deref().filter(|h| *h != hash),
            approvers: &approvers,
            guardrail,
        };
        let verdict = approval::decide(&facts, groups, &click.who, click.decision, click.at);
        let record = |kind: Kind, data: serde_json::Value| AuditEntry {
            at: click.at,
            kind,
            incident_id: Some(incident),
            actor: click.who.0.clone(),
            data,
        };
        let mut approved = None;
        match &verdict {
            Verdict::Recorded { .. } | Verdict::Approved { .. } => {
                sqlx::query("INSERT INTO approvals (plan_hash, approver, at, via) VALUES ($1, $2, $3, $4)")
                    .bind(hash.to_string())
                    .bind(click.who.0.clone())
                    .bind(click.at)
                    .bind(click.via.clone())
                    .execute(&mut *tx)
                    .await?;
                let mut entries =
                    vec![record(Kind::ApprovalRecorded, serde_json::json!({"plan": hash, "via": click.via}))];
                if let Verdict::Approved { approvers } = &verdict {
                    let moved = sqlx::query(
                        "UPDATE plans SET state = 'approved', decided_at = $1 WHERE hash = $2 AND state = 'proposed'",
                    )
                    .bind(click.at)
                    .bind(hash.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if moved != 1 {
                        bail!("plan {hash} left the proposed state under the write lock");
                    }
                    entries.push(record(
                        Kind::PlanApproved,
                        serde_json::json!({"plan": hash, "approvers": approvers, "runbook": sp.plan.runbook}),
                    ));
                    approved = Some(approval::approved(sp.plan.clone(), approvers.clone(), click.at));
                }
                self.append_audit(&mut tx, entries).await?;
            }
            Verdict::Rejected => {
                sqlx::query(
                    "UPDATE plans SET state = 'rejected', decided_at = $1 WHERE hash = $2 AND state = 'proposed'",
                )
                .bind(click.at)
                .bind(hash.to_string())
                .execute(&mut *tx)
                .await?;
                self.append_audit(
                    &mut tx,
                    vec![record(
                        Kind::PlanRejected,
                        serde_json::json!({"plan": hash, "via": click.via,
                                           "reason": click.reason.as_deref().map(crate::redact::redact)}),
                    )],
                )
                .await?;
            }
            Verdict::Refused { reason } => {
                tracing::info!(plan = %hash, who = %click.who, via = %click.via, reason = %reason, "approval refused");
            }
            Verdict::AlreadyCounted { .. } => {}
        }
        tx.commit().await?;
        Ok((verdict, approved))
    }

    async fn claim_execution(&self, approved: &ApprovedPlan, owner: &str, now: Millis) -> Result<bool> {
        let p = approved.plan();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO executions (plan_hash, incident_id, state, step, owner, started_at, heartbeat_at) \
             VALUES ($1, $2, 'running', 0, $3, $4, $4) ON CONFLICT (plan_hash) DO NOTHING",
        )
        .bind(p.hash.clone())
        .bind(p.incident_id)
        .bind(owner.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            sqlx::query(
                "INSERT INTO attempts (alert_key, plan_hash, at) SELECT key, $1, $2 FROM alerts WHERE incident_id = $3 \
                 ON CONFLICT (alert_key, plan_hash) DO NOTHING",
            )
            .bind(p.hash.clone())
            .bind(now)
            .bind(p.incident_id)
            .execute(&mut *tx)
            .await?;
            let entry = AuditEntry {
                at: now,
                kind: Kind::ExecutionStarted,
                incident_id: Some(p.incident_id),
                actor: "medic".into(),
                data: serde_json::json!({"plan": p.hash, "runbook": p.runbook, "approvers": approved.approvers(), "owner": owner}),
            };
            self.append_audit(&mut tx, vec![entry]).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn execution_event(&self, hash: &str, step: i64, state: ExecState, entry: AuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let finished = (state != ExecState::Running).then_some(entry.at);
        sqlx::query(
            "UPDATE executions SET state = $1, step = $2, finished_at = $3, heartbeat_at = $4 WHERE plan_hash = $5",
        )
        .bind(state.as_str())
        .bind(step)
        .bind(finished)
        .bind(entry.at)
        .bind(hash.to_string())
        .execute(&mut *tx)
        .await?;
        self.append_audit(&mut tx, vec![entry]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn execution_heartbeat(&self, hash: &str, now: Millis) -> Result<()> {
        // No write lock: one row, and only while it runs; an ended execution keeps its state.
        sqlx::query("UPDATE executions SET heartbeat_at = $1 WHERE plan_hash = $2 AND state = 'running'")
            .bind(now)
            .bind(hash.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn interrupt_running(
        &self,
        owner: &str,
        own: bool,
        stale_before: Millis,
        now: Millis,
    ) -> Result<Vec<(String, i64)>> {
        // Looked for first without the write lock: every replica asks every few seconds.
        let orphans = "SELECT plan_hash, incident_id, step, owner FROM executions WHERE state = 'running' \
             AND ((owner = $1 AND $2 = 1) OR (owner <> $1 AND COALESCE(heartbeat_at, started_at) < $3))";
        let any = sqlx::query(orphans)
            .bind(owner.to_string())
            .bind(own as i64)
            .bind(stale_before)
            .fetch_optional(&self.pool)
            .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(orphans)
            .bind(owner.to_string())
            .bind(own as i64)
            .bind(stale_before)
            .fetch_all(&mut *tx)
            .await?;
        let mut hashes = Vec::new();
        let mut entries = Vec::new();
        for r in &rows {
            let (hash, incident, step, ran_by): (String, i64, i64, String) =
                (r.try_get("plan_hash")?, r.try_get("incident_id")?, r.try_get("step")?, r.try_get("owner")?);
            sqlx::query("UPDATE executions SET state = 'interrupted', finished_at = $1 WHERE plan_hash = $2")
                .bind(now)
                .bind(hash.clone())
                .execute(&mut *tx)
                .await?;
            let data = serde_json::json!({"plan": hash, "step": step, "owner": ran_by,
                "reason": "medic stopped while this plan ran; it is not re-run: a person must check the state of each step"});
            entries.push(AuditEntry {
                at: now,
                kind: Kind::ExecutionInterrupted,
                incident_id: Some(incident),
                actor: "medic".into(),
                data: data.clone(),
            });
            entries.push(AuditEntry {
                at: now,
                kind: Kind::Escalated,
                incident_id: Some(incident),
                actor: "medic".into(),
                data,
            });
            hashes.push((hash, incident));
        }
        self.append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(hashes)
    }

    async fn set_paused(&self, by: &Identity, paused: bool, now: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let was =
            sqlx::query("SELECT set_by FROM settings WHERE key = 'paused'").fetch_optional(&mut *tx).await?.is_some();
        if was != paused {
            if paused {
                sqlx::query("INSERT INTO settings (key, value, set_by, set_at) VALUES ('paused', 'true', $1, $2)")
                    .bind(by.0.clone())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("DELETE FROM settings WHERE key = 'paused'").execute(&mut *tx).await?;
            }
            let kind = if paused { Kind::AutomationPaused } else { Kind::AutomationResumed };
            let entry =
                AuditEntry { at: now, kind, incident_id: None, actor: by.0.clone(), data: serde_json::json!({}) };
            self.append_audit(&mut tx, vec![entry]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn paused(&self) -> Result<Option<(String, Millis)>> {
        let r =
            sqlx::query("SELECT set_by, set_at FROM settings WHERE key = 'paused'").fetch_optional(&self.pool).await?;
        r.map(|r| Ok((r.try_get("set_by")?, r.try_get("set_at")?))).transpose()
    }

    async fn attempts(&self, incident_id: i64, since: Millis) -> Result<u32> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(DISTINCT plan_hash) AS n FROM attempts \
             WHERE at >= $1 AND alert_key IN (SELECT key FROM alerts WHERE incident_id = $2)",
        )
        .bind(since)
        .bind(incident_id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n as u32)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_across_rows() {
        assert_eq!(placeholders(Backend::Postgres, 2, 3), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(placeholders(Backend::Sqlite, 2, 2), "(?,?),(?,?)");
    }

    #[test]
    fn upsert_updates_every_column_but_the_key() {
        assert_eq!(
            SqlStore::upsert_clause("id", "id, a, b"),
            "ON CONFLICT (id) DO UPDATE SET a = excluded.a, b = excluded.b"
        );
    }

    #[test]
    fn rejects_unknown_url_without_leaking_password() {
        let e = Backend::of_url("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(e.contains("mysql://u:****@h/db"), "{e}");
        assert!(!e.contains("secret"));
    }
}
