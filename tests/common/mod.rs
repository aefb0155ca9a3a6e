//! Test helpers: a fresh database per test on either backend, and medic spawned on port 0.
//!
//! PostgreSQL tests read the server URL from `MEDIC_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`) and create a database of their own. Under
//! `CI=true` a missing or unreachable PostgreSQL fails the test; elsewhere it is skipped with a
//! printed reason.
#![allow(dead_code)]

pub mod chat;
pub mod stack;

use medic::config::Config;
use medic::store::{self, Store};
use medic::time::SystemClock;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates one test per backend from `async fn name(db: Db)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name($crate::common::Db::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name($crate::common::Db::Postgres).await }
        }
    )*};
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Fails under CI, skips (with the reason on stderr) elsewhere.
pub fn unavailable(what: &str) -> Option<std::convert::Infallible> {
    if in_ci() {
        panic!("CI=true and {what}: this test needs it");
    }
    eprintln!("SKIPPED: {what}");
    None
}

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database to drop when the test ends.
    pg: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else { return };
        // Drop cannot await; a thread with its own runtime can, whatever runtime the test uses.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub async fn fresh_db(kind: Db) -> Option<TestDb> {
    match kind {
        Db::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("medic.db").display());
            Some(TestDb { url, _dir: Some(dir), pg: None })
        }
        Db::Postgres => {
            let Ok(admin) = std::env::var("MEDIC_TEST_POSTGRES_URL") else {
                unavailable("MEDIC_TEST_POSTGRES_URL is not set")?;
                unreachable!()
            };
            let mut conn = match sqlx::PgConnection::connect(&admin).await {
                Ok(c) => c,
                Err(e) => {
                    unavailable(&format!("PostgreSQL at MEDIC_TEST_POSTGRES_URL is unreachable: {e}"))?;
                    unreachable!()
                }
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            drop_stale_databases(&mut conn, now).await;
            let name = format!("medic_test_{now}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
            sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
            let _ = conn.close().await;
            Some(TestDb { url: with_database(&admin, &name), _dir: None, pg: Some((admin, name)) })
        }
    }
}

/// Test databases older than an hour are left-overs of earlier runs.
async fn drop_stale_databases(conn: &mut sqlx::PgConnection, now: u64) {
    let names: Vec<(String,)> = sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'medic_test_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    for (name,) in names {
        let created: u64 = name.split('_').nth(2).and_then(|s| s.parse().ok()).unwrap_or(now);
        if created + 3600 < now {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut *conn).await;
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

/// A raw connection pool to a test database, for tampering and inspection.
pub async fn raw_pool(db: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&db.url).await.expect("raw pool")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// medic on 127.0.0.1:0 with `config` and a fresh database; `None` if the backend is skipped.
    pub async fn spawn(kind: Db, config: Config) -> Option<TestApp> {
        let db = fresh_db(kind).await?;
        Some(TestApp::start(db, config).await)
    }

    /// medic on 127.0.0.1:0 with `config`, on `db`.
    async fn start(db: TestDb, config: Config) -> TestApp {
        let store = store::open(&db.url, 8).await.expect("open store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let s = store.clone();
        let server = tokio::spawn(async move {
            medic::server::run(listener, &config, s, Arc::new(SystemClock), async {
                let _ = stopped.await;
            })
            .await
        });
        TestApp {
            base,
            http: medic::telemetry::http_client_builder().build().unwrap(),
            store,
            db,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Another replica of this medic: `config`, on the same database (which the first
    /// replica's handle drops).
    pub async fn replica(&self, config: Config) -> TestApp {
        TestApp::start(TestDb { url: self.db.url.clone(), _dir: None, pg: None }, config).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        let mut has_ct = false;
        for (k, v) in headers {
            has_ct |= k.eq_ignore_ascii_case("content-type");
            req = req.header(*k, *v);
        }
        if !has_ct {
            req = req.header("content-type", "application/json");
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Audit records written by intake and correlation. The responder's `diagnosed` records
    /// are left out: they follow each new alert asynchronously, and intake tests count what
    /// intake itself wrote.
    pub async fn audit_len(&self) -> i64 {
        self.store.audit_page(0, 1_000_000).await.unwrap().iter().filter(|r| r.kind != "diagnosed").count() as i64
    }

    pub async fn incident_count(&self) -> usize {
        self.store.incidents(&store::IncidentFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
    }

    /// Graceful shutdown. Fails if `server::run` did; gives back the database for inspection.
    pub async fn stop(mut self) -> anyhow::Result<TestDb> {
        let _ = self.stop.take().unwrap().send(());
        let r = self.server.take().unwrap().await.expect("server task");
        self.store.close().await;
        r.map(|()| self.db)
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll_until(secs, f).await {
        Some(v) => v,
        None => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// Polls `f` every 100 ms until it returns `Some`; `None` after `secs`.
pub async fn poll_until<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Proposes `plan` (asked for by `requester`) and has console:bob, of sre-oncall, approve it.
pub async fn approve_as_bob(
    store: &dyn Store,
    plan: &medic::plan::ProposedPlan,
    requester: &str,
    now: i64,
) -> medic::approval::ApprovedPlan {
    use medic::approval::{Click, Decision, Groups, Identity};
    store.propose(plan, &Identity(requester.into()), now).await.unwrap();
    let groups = Groups {
        members: [("sre-oncall".to_string(), vec![Identity("console:bob".into())])].into(),
        default_approvers: vec![],
    };
    let click = Click {
        who: Identity("console:bob".into()),
        decision: Decision::Approve,
        via: "console".into(),
        at: now,
        reason: None,
    };
    store.decide(&plan.hash, &click, &groups, None).await.unwrap().1.expect("approved")
}
