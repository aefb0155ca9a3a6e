//! A crash between steps: the process running a plan is killed (SIGKILL) after its first step;
//! `medic serve`, restarted with the same executor owner, marks the plan interrupted and
//! escalates it — and never runs the second step. On both stores.

mod common;

use common::{Db, fresh_db, poll_until, raw_pool};
use std::process::{Command, Stdio};

fn example(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/crash-… → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} not built: run the whole `cargo test` (it builds the examples)", path.display());
    path
}

async fn kinds(pool: &sqlx::AnyPool) -> Vec<String> {
    sqlx::query_scalar::<_, String>("SELECT kind FROM audit_log ORDER BY seq").fetch_all(pool).await.unwrap_or_default()
}

async fn killed_between_steps(db: Db) {
    let Some(tdb) = fresh_db(db).await else { return };
    // Migrations first, so the victim and the test agree on the schema.
    medic::store::open(&tdb.url, 2).await.unwrap().close().await;
    let mut victim = Command::new(example("crash_victim"))
        .args([&tdb.url, "medic-crash-test"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pool = raw_pool(&tdb).await;
    let started = poll_until(30, || {
        let pool = pool.clone();
        async move { kinds(&pool).await.contains(&"step_succeeded".to_string()).then_some(()) }
    })
    .await;
    if started.is_none() {
        let _ = victim.kill();
        panic!("the plan's first step never completed: {:?}", kinds(&pool).await);
    }
    assert!(Command::new("kill").args(["-KILL", &victim.id().to_string()]).status().unwrap().success());
    victim.wait().unwrap();

    // Restart: `medic serve` with the same executor owner recovers at start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("medic.yaml"), "executor: {owner: medic-crash-test}\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["serve", "--config", "medic.yaml", "--listen", &format!("127.0.0.1:{port}"), "--database-url", &tdb.url])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = medic::telemetry::http_client_builder().build().unwrap();
    let ready = poll_until(30, || {
        let req = http.get(format!("http://127.0.0.1:{port}/readyz")).send();
        async move { req.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;
    let _ = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    let _ = serve.wait();
    assert!(ready.is_some(), "medic serve did not start");

    let k = kinds(&pool).await;
    let tail: Vec<&str> = k.iter().map(String::as_str).skip_while(|k| *k != "execution_started").collect();
    assert_eq!(tail, ["execution_started", "step_succeeded", "execution_interrupted", "escalated"], "{k:?}");
    let state: String = sqlx::query_scalar("SELECT state FROM executions").fetch_one(&pool).await.unwrap();
    assert_eq!(state, "interrupted");
    pool.close().await;
}

both_stores!(killed_between_steps);
