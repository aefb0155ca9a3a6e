//! Storage: one trait, [`Store`], and its SQL implementation for SQLite and PostgreSQL.
//!
//! Both backends run the same statements through sqlx's `Any` driver (timestamps are integer
//! milliseconds and maps are JSON text, so nothing backend-specific crosses the trait). They
//! differ only in what [`Backend`] decides: connection setup (SQLite: WAL, `synchronous=FULL`,
//! busy timeout), the migrations directory, and how a write batch excludes other writers
//! (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock, which is what lets
//! several replicas share one database and one audit chain).
//!
//! The SQL lives beside the aggregate it serves, one file each: `incidents` (alerts,
//! correlation, the resolve tick), `audit_log`, `plans` (proposals, approvals, the kill switch,
//! attempts), `executions`, `autonomy` (runbook records, plans that run by themselves, Stop,
//! per-runbook figures), `leases` (one holder among replicas), `retention` (old rows, the audit
//! prefix behind a checkpoint), `outbox`, `changes`. Each holds `SqlStore`'s methods for its
//! aggregate; the one `impl Store for SqlStore` here delegates to them, and the helpers every
//! aggregate shares (the write lock, the audit append, row binding) stay here.

mod audit_log;
mod autonomy;
mod changes;
mod executions;
mod incidents;
mod leases;
mod outbox;
mod plans;
pub mod retention;

use audit_log::audit_args;
pub use autonomy::{RunbookRef, RunbookStats};
pub use changes::StoredChanges;
use changes::change_args;
use incidents::{alert_args, incident_args, json_text};
pub use retention::{Verified, verify_audit};

use crate::alert::{Alert, AlertStatus, Change, Labels, Source};
use crate::approval::{self, ApprovedPlan, Click, Decision, Facts, Groups, Identity, PlanState, StoredPlan, Verdict};
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
    /// When a plan that runs by itself starts, while it still will (cleared once it was
    /// approved, rejected, or declined by the auto runner).
    pub auto_at: Option<Millis>,
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
    /// An incident and its alerts in the order they were first seen: all of them up to
    /// [`ALERTS_READ`], else the first and the latest `ALERTS_READ / 2` (the incident's
    /// `n_alerts` and `n_firing` count them all). Memory and time stay bounded in a storm.
    async fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<AlertRow>)>>;
    /// Incident `id` with a page of its alerts by key, after `after`, and how many it has in all.
    async fn incident_alerts(
        &self,
        id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Option<(Incident, Vec<AlertRow>, i64)>>;
    /// A person resolves (`resolve`) or reopens incident `id`, audited with who and where; the
    /// refusal worded for them (no such incident, already so, another of its group open).
    async fn resolve_by_hand(
        &self,
        id: i64,
        resolve: bool,
        by: &Identity,
        via: &str,
        now: Millis,
    ) -> Result<std::result::Result<(), String>>;
    /// Number of incidents in each unresolved state: (open, resolving).
    async fn unresolved_counts(&self) -> Result<(i64, i64)>;
    /// Audit records with `seq > after`, in order, at most `limit`.
    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>>;
    async fn audit_for_incident(&self, id: i64) -> Result<Vec<AuditRecord>>;
    /// The newest audit record's sequence number (0 for none).
    async fn audit_head(&self) -> Result<i64>;
    /// Whether the outbox ever held an `op` of `platform` for the incident (a page raised).
    async fn outbox_has(&self, platform: &str, incident: i64, op: &str) -> Result<bool>;
    /// The newest `limit` deliveries of `op` on `platform` that were sent with a result:
    /// (row id, incident, result) — a created ticket's address.
    async fn outbox_sent(&self, platform: &str, op: &str, limit: i64) -> Result<Vec<(i64, i64, String)>>;
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
    /// Records the execution's progress (`state`, `step`) and its audit entry, together. An
    /// ending state updates the runbook's autonomy record in the same transaction: verified (not
    /// a dry run, whose entry says `"dry_run": true`) grants `auto` at `grant_after` in a row;
    /// a rollback or failure takes it away (a stopped run already lost it).
    ///
    /// Fenced: only `owner`, while the execution is still running, moves it. Anyone else (a
    /// replica that lost its lease and was marked interrupted) gets its entry audited, with
    /// `"fenced": true` and its owner, and changes nothing else; the answer is false then.
    async fn execution_event(
        &self,
        hash: &str,
        owner: &str,
        step: i64,
        state: ExecState,
        entry: AuditEntry,
        grant_after: u32,
    ) -> Result<bool>;
    /// Who asked the running plan `hash` to stop, if anyone has.
    async fn stop_requested(&self, hash: &str) -> Result<Option<String>>;
    /// A runbook's autonomy record (an empty one if it never ran).
    async fn autonomy(&self, runbook: &str) -> Result<crate::autonomy::Record>;
    /// A person grants (within `crate::autonomy::may_grant`) or revokes `auto`; audited. The
    /// reply worded for them, or why not.
    async fn set_autonomy(
        &self,
        runbook: &RunbookRef<'_>,
        grant: bool,
        by: &Identity,
        via: &str,
        now: Millis,
    ) -> Result<std::result::Result<String, String>>;
    /// Plans that run by themselves and whose delay has passed: (hash, incident).
    async fn due_auto_plans(&self, now: Millis) -> Result<Vec<(String, i64)>>;
    /// Approves a plan that runs by itself, by `approval::decide_auto` under the write lock,
    /// exactly once; a refusal is audited and leaves the plan waiting for a person.
    async fn auto_approve(
        &self,
        hash: &str,
        guardrail: Option<String>,
        now: Millis,
    ) -> Result<(Verdict, Option<ApprovedPlan>)>;
    /// Every runbook with a record or an execution (or, with `shadow`, a shadow incident), with
    /// its figures. `/metrics` asks without `shadow`: that count reads the audit trail of every
    /// resolved incident, too much for every scrape.
    async fn runbook_stats(&self, shadow: bool) -> Result<Vec<RunbookStats>>;
    /// Takes or renews the lease `name` for `holder` until `now + ttl`: true when `holder`
    /// holds it (it was free, lapsed, or already its own), false while another holds it.
    async fn lease(&self, name: &str, holder: &str, now: Millis, ttl: Millis) -> Result<bool>;
    /// Gives the lease up, if `holder` holds it (another replica may take it at once).
    async fn release(&self, name: &str, holder: &str) -> Result<()>;
    /// Removes what `retention` says is old enough, the audit prefix behind a checkpoint.
    async fn prune(&self, now: Millis, retention: &retention::Config) -> Result<retention::Pruned>;
    /// Where the audit chain starts after retention: the last removed record's (seq, hash).
    async fn audit_checkpoint(&self) -> Result<Option<(i64, String)>>;
    /// Renews the lease of `owner`'s running execution, unless it lapsed (no renewal within
    /// `lease`: another replica may be marking it interrupted). True: `owner` still holds the
    /// execution, for another `lease` from `now`; the executor asks before every action.
    async fn execution_heartbeat(&self, hash: &str, owner: &str, now: Millis, lease: Millis) -> Result<bool>;
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
    async fn set_paused(&self, by: &Identity, via: &str, paused: bool, now: Millis) -> Result<()>;
    /// Who paused automation and when, if it is paused.
    async fn paused(&self) -> Result<Option<(String, Millis)>>;
    /// Executions since `since` of plans for any alert of incident `id` (across incidents).
    async fn attempts(&self, incident_id: i64, since: Millis) -> Result<u32>;
    /// Queues a chat delivery. A `post` for an incident that has one becomes an `update`; a
    /// pending `update` of the same incident on the same platform is replaced rather than
    /// queued again: only the newest state is worth sending.
    async fn outbox_push(&self, item: &OutboxItem, now: Millis) -> Result<()>;
    /// Records a delivery that could not even be built (its template failed on this view) as
    /// failed for good, so `/readyz` and `/metrics` show it like any refused delivery.
    async fn outbox_refused(&self, item: &OutboxItem, error: &str, now: Millis) -> Result<()>;
    /// Claims up to `limit` due deliveries of `platform` for `lease` ms (another replica does
    /// not take them meanwhile). Replies and updates wait for their root message; an update
    /// waits until a second has passed since the last one of its message.
    async fn outbox_claim(&self, platform: &str, now: Millis, lease: Millis, limit: i64) -> Result<Vec<OutboxRow>>;
    /// Records how a claimed delivery went.
    async fn outbox_finish(&self, id: i64, outcome: &Delivery, now: Millis) -> Result<()>;
    /// Per platform: deliveries waiting, those waiting after a failed attempt, those refused
    /// for good since `since`, and the newest error. A chat outage shows here.
    async fn outbox_health(&self, since: Millis) -> Result<Vec<OutboxHealth>>;
    /// True the first time a delivery `event` of `platform` is seen (by any replica); records it
    /// (for a day).
    async fn first_delivery(&self, platform: &str, event: &str, now: Millis) -> Result<bool>;
    /// Whether `who` may do one more thing of `kind` now: fewer than `per_minute` in the last
    /// minute, counted across replicas; if so, it is counted.
    async fn within_rate(&self, kind: &str, who: &str, per_minute: u32, now: Millis) -> Result<bool>;
    /// The incident whose root message on `platform` is `message` in `channel` (in any channel
    /// when `None`: a Discord thread's id is its root message's), if any.
    async fn incident_for_message(&self, platform: &str, channel: Option<&str>, message: &str) -> Result<Option<i64>>;
    /// The incident's latest plan with its approvers and its execution, if it has a plan.
    async fn plan_status(&self, incident_id: i64) -> Result<Option<PlanStatus>>;
    /// Appends audit entries that go with no other state change (a diagnosis).
    async fn record(&self, entries: Vec<AuditEntry>) -> Result<()>;
    /// Changes received on `/v1/changes` for `service` in `[start, end]`, oldest first.
    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>>;
    async fn close(&self);
}

/// The guardrails for a plan of `runbook` on incident `incident_id` (whose service is
/// `service`) now: [`guardrails_now`] with the service's changes of the last day and the
/// runbook's attempt budget.
pub async fn guardrails_for(
    store: &dyn Store,
    cfg: &crate::guardrails::GuardrailConfig,
    runbooks: &[crate::runbook::Runbook],
    incident_id: i64,
    runbook: &str,
    service: Option<&str>,
    now: Millis,
) -> Result<crate::guardrails::Assessment> {
    let changes = match service {
        Some(s) => store.changes(s, now - 24 * 3_600_000, now).await?,
        None => Vec::new(),
    };
    let budget = runbooks.iter().find(|r| r.id == runbook).and_then(|r| r.attempt_budget);
    guardrails_now(store, cfg, incident_id, service, &changes, budget, now).await
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

/// Most alerts of one incident read at once (see [`Store::incident`]).
pub const ALERTS_READ: i64 = 1000;

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
            out.extend(bind_all(sqlx::query(&sql).persistent(false), chunk).fetch_all(&mut **tx).await?);
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
            // Not kept in the connection's statement cache: a statement of each row count would
            // stay prepared (hundreds of KiB each for thousands of placeholders), and a storm
            // meets every count.
            bind_all(sqlx::query(&sql).persistent(false), chunk.into_iter().flatten().collect())
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
        SqlStore::ingest(self, alerts, changes, now, policy).await
    }

    async fn tick(&self, now: Millis, policy: &Policy) -> Result<usize> {
        SqlStore::tick(self, now, policy).await
    }

    async fn incidents(&self, f: &IncidentFilter) -> Result<Vec<Incident>> {
        SqlStore::incidents(self, f).await
    }

    async fn resolve_by_hand(
        &self,
        id: i64,
        resolve: bool,
        by: &Identity,
        via: &str,
        now: Millis,
    ) -> Result<std::result::Result<(), String>> {
        SqlStore::resolve_by_hand(self, id, resolve, by, via, now).await
    }

    async fn incident(&self, id: i64) -> Result<Option<(Incident, Vec<AlertRow>)>> {
        SqlStore::incident(self, id).await
    }

    async fn incident_alerts(
        &self,
        id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Option<(Incident, Vec<AlertRow>, i64)>> {
        SqlStore::incident_alerts(self, id, after, limit).await
    }

    async fn unresolved_counts(&self) -> Result<(i64, i64)> {
        SqlStore::unresolved_counts(self).await
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        SqlStore::audit_page(self, after, limit).await
    }

    async fn audit_head(&self) -> Result<i64> {
        SqlStore::audit_head(self).await
    }

    async fn outbox_has(&self, platform: &str, incident: i64, op: &str) -> Result<bool> {
        SqlStore::outbox_has(self, platform, incident, op).await
    }

    async fn outbox_sent(&self, platform: &str, op: &str, limit: i64) -> Result<Vec<(i64, i64, String)>> {
        SqlStore::outbox_sent(self, platform, op, limit).await
    }

    async fn audit_for_incident(&self, id: i64) -> Result<Vec<AuditRecord>> {
        SqlStore::audit_for_incident(self, id).await
    }

    async fn outbox_push(&self, item: &OutboxItem, now: Millis) -> Result<()> {
        SqlStore::outbox_push(self, item, now).await
    }

    async fn outbox_refused(&self, item: &OutboxItem, error: &str, now: Millis) -> Result<()> {
        SqlStore::outbox_refused(self, item, error, now).await
    }

    async fn outbox_claim(&self, platform: &str, now: Millis, lease: Millis, limit: i64) -> Result<Vec<OutboxRow>> {
        SqlStore::outbox_claim(self, platform, now, lease, limit).await
    }

    async fn outbox_finish(&self, id: i64, outcome: &Delivery, now: Millis) -> Result<()> {
        SqlStore::outbox_finish(self, id, outcome, now).await
    }

    async fn outbox_health(&self, since: Millis) -> Result<Vec<OutboxHealth>> {
        SqlStore::outbox_health(self, since).await
    }

    async fn within_rate(&self, kind: &str, who: &str, per_minute: u32, now: Millis) -> Result<bool> {
        SqlStore::within_rate(self, kind, who, per_minute, now).await
    }

    async fn first_delivery(&self, platform: &str, event: &str, now: Millis) -> Result<bool> {
        SqlStore::first_delivery(self, platform, event, now).await
    }

    async fn incident_for_message(&self, platform: &str, channel: Option<&str>, message: &str) -> Result<Option<i64>> {
        SqlStore::incident_for_message(self, platform, channel, message).await
    }

    async fn plan_status(&self, incident_id: i64) -> Result<Option<PlanStatus>> {
        SqlStore::plan_status(self, incident_id).await
    }

    async fn record(&self, entries: Vec<AuditEntry>) -> Result<()> {
        SqlStore::record(self, entries).await
    }

    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>> {
        SqlStore::changes(self, service, start, end).await
    }

    async fn propose(&self, plan: &ProposedPlan, requested_by: &Identity, now: Millis) -> Result<()> {
        SqlStore::propose(self, plan, requested_by, now).await
    }

    async fn plan(&self, hash: &str) -> Result<Option<StoredPlan>> {
        SqlStore::plan(self, hash).await
    }

    async fn decide(
        &self,
        hash: &str,
        click: &Click,
        groups: &Groups,
        guardrail: Option<String>,
    ) -> Result<(Verdict, Option<ApprovedPlan>)> {
        SqlStore::decide(self, hash, click, groups, guardrail).await
    }

    async fn claim_execution(&self, approved: &ApprovedPlan, owner: &str, now: Millis) -> Result<bool> {
        SqlStore::claim_execution(self, approved, owner, now).await
    }

    async fn execution_event(
        &self,
        hash: &str,
        owner: &str,
        step: i64,
        state: ExecState,
        entry: AuditEntry,
        grant_after: u32,
    ) -> Result<bool> {
        SqlStore::execution_event(self, hash, owner, step, state, entry, grant_after).await
    }

    async fn stop_requested(&self, hash: &str) -> Result<Option<String>> {
        SqlStore::stop_requested(self, hash).await
    }

    async fn autonomy(&self, runbook: &str) -> Result<crate::autonomy::Record> {
        SqlStore::autonomy(self, runbook).await
    }

    async fn set_autonomy(
        &self,
        runbook: &RunbookRef<'_>,
        grant: bool,
        by: &Identity,
        via: &str,
        now: Millis,
    ) -> Result<std::result::Result<String, String>> {
        SqlStore::set_autonomy(self, runbook, grant, by, via, now).await
    }

    async fn due_auto_plans(&self, now: Millis) -> Result<Vec<(String, i64)>> {
        SqlStore::due_auto_plans(self, now).await
    }

    async fn auto_approve(
        &self,
        hash: &str,
        guardrail: Option<String>,
        now: Millis,
    ) -> Result<(Verdict, Option<ApprovedPlan>)> {
        SqlStore::auto_approve(self, hash, guardrail, now).await
    }

    async fn runbook_stats(&self, shadow: bool) -> Result<Vec<RunbookStats>> {
        SqlStore::runbook_stats(self, shadow).await
    }

    async fn lease(&self, name: &str, holder: &str, now: Millis, ttl: Millis) -> Result<bool> {
        SqlStore::lease(self, name, holder, now, ttl).await
    }

    async fn release(&self, name: &str, holder: &str) -> Result<()> {
        SqlStore::release(self, name, holder).await
    }

    async fn prune(&self, now: Millis, retention: &retention::Config) -> Result<retention::Pruned> {
        SqlStore::prune(self, now, retention).await
    }

    async fn audit_checkpoint(&self) -> Result<Option<(i64, String)>> {
        SqlStore::audit_checkpoint(self).await
    }

    async fn execution_heartbeat(&self, hash: &str, owner: &str, now: Millis, lease: Millis) -> Result<bool> {
        SqlStore::execution_heartbeat(self, hash, owner, now, lease).await
    }

    async fn interrupt_running(
        &self,
        owner: &str,
        own: bool,
        stale_before: Millis,
        now: Millis,
    ) -> Result<Vec<(String, i64)>> {
        SqlStore::interrupt_running(self, owner, own, stale_before, now).await
    }

    async fn set_paused(&self, by: &Identity, via: &str, paused: bool, now: Millis) -> Result<()> {
        SqlStore::set_paused(self, by, via, paused, now).await
    }

    async fn paused(&self) -> Result<Option<(String, Millis)>> {
        SqlStore::paused(self).await
    }

    async fn attempts(&self, incident_id: i64, since: Millis) -> Result<u32> {
        SqlStore::attempts(self, incident_id, since).await
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
