//! The `medic` command line. Each command parses its arguments here and calls into the library;
//! `demo` is the one command with a module of its own.

pub mod ask;
pub mod demo;

use crate::audit;
use crate::config::{Config, mask_url};
use crate::store::{self, Store};
use crate::time::SystemClock;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "medic", version, about = "ChatOps incident response with a human in the loop")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which store a command acts on (the one `medic serve` uses).
#[derive(clap::Args)]
struct StoreArgs {
    /// Config file; its `database.url` names the store [default: sqlite://medic.db in this directory]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Store URL (sqlite://PATH or postgres://…); overrides the config's `database.url`
    #[arg(long, env = "MEDIC_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bot: intake webhooks, correlation, the incident API.
    Serve {
        /// Config file; without one, embedded defaults (SQLite medic.db, loopback, no auth)
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on; overrides `listen` in the config
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Store URL (sqlite://PATH or postgres://…); overrides the config's `database.url`
        #[arg(long, env = "MEDIC_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Validate a config file and the runbooks; exits non-zero with every problem found.
    Check {
        /// The config file to validate
        #[arg(long)]
        config: PathBuf,
        /// Runbooks directory to validate [default: ./runbooks when it exists]
        #[arg(long)]
        runbooks: Option<PathBuf>,
        /// Store URL to check instead of the config's `database.url`
        #[arg(long, env = "MEDIC_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// The whole loop locally on a bundled scenario: no accounts, no services.
    Demo {
        /// Answer Approve without asking (scripts, CI)
        #[arg(long)]
        yes: bool,
    },
    /// Diagnose a recorded scenario and print the diagnosis and plan, executing nothing.
    Replay {
        /// The scenario file (YAML: alerts, series in promtool notation, logs, changes)
        scenario: PathBuf,
        /// Runbooks directory
        #[arg(long, default_value = "runbooks")]
        runbooks: PathBuf,
    },
    /// Run scenario tests: each PATH is a scenario file or a runbooks directory (its tests/ are run).
    Test {
        /// Scenario files, or runbooks directories whose tests/ scenarios are run
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Runbooks for scenario files given directly
        #[arg(long, default_value = "runbooks")]
        runbooks: PathBuf,
    },
    /// Ask a question: of a running medic (`POST /v1/ask`), or offline about a scenario's incident.
    Ask {
        /// The question, in plain language ("what changed before the errors started?")
        question: String,
        /// The incident the question is about [default: the newest open one]
        #[arg(long)]
        incident: Option<i64>,
        /// Answer offline about this scenario's incident (no server, no services)
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Runbooks for --scenario
        #[arg(long, default_value = "runbooks")]
        runbooks: PathBuf,
        /// The medic to ask
        #[arg(long, env = "MEDIC_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token of `api.bearer`
        #[arg(long, env = "MEDIC_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// `text` (the answer) or `json` ({"intent", "slots", "answer", "evidence"})
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// The kill switch: stop all automation (approvals are refused) until `medic resume`.
    Pause {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Undo `medic pause`.
    Resume {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Each runbook's autonomy: level, streak, outcomes, time to fix, shadow record; or grant / revoke `auto`.
    #[command(args_conflicts_with_subcommands = true)]
    Runbooks {
        #[command(subcommand)]
        command: Option<RunbooksCommand>,
        #[command(flatten)]
        args: RunbooksArgs,
    },
    /// Ask a running medic whether it is alive (`/healthz`); exit 0 if so. For container
    /// health checks in images with no shell or curl.
    Health {
        /// The medic to ask
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Verify or export the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(clap::Args)]
struct RunbooksArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Runbooks directory
    #[arg(long, default_value = "runbooks")]
    runbooks: PathBuf,
    /// `text` (a line per runbook) or `json` (as `GET /v1/runbooks`)
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

#[derive(Subcommand)]
enum RunbooksCommand {
    /// Let a runbook that declares `autonomy: auto` run by itself where policy allows, without
    /// waiting for its streak (audited with who).
    Grant {
        /// The runbook's id
        runbook: String,
        #[command(flatten)]
        args: RunbooksArgs,
    },
    /// Take `auto` away: the runbook's plans need approval again and its streak restarts.
    Revoke {
        /// The runbook's id
        runbook: String,
        #[command(flatten)]
        args: RunbooksArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 0 if intact, 1 at the first bad record, 2 if it cannot run.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// Fail unless the chain still holds this `SEQ:HASH` (a head printed by an earlier
        /// verify); records written after it are counted, not refused
        #[arg(long)]
        expect_head: Option<String>,
    },
    /// Write an incident's timeline as JSON and Markdown for the postmortem.
    Export {
        /// The incident's id (as in `GET /v1/incidents`)
        #[arg(long)]
        incident: i64,
        #[command(flatten)]
        store: StoreArgs,
        /// Directory to write incident-ID.json and incident-ID.md into
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::install_crypto();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<&Path>) -> Result<Config> {
    match config {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

async fn open_store(config: &Config, overridden: Option<&str>) -> Result<Arc<dyn Store>> {
    let url = config.database_url(overridden).map_err(anyhow::Error::msg).context("database.url")?;
    store::open(&url, config.database.max_connections).await
}

/// An exclusive lock beside the SQLite file `db`, held while the returned file lives: a second
/// `medic serve` on the same file is refused, naming it, instead of starting beside the first.
fn only_server(db: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let mut name = db.as_os_str().to_owned();
    name.push(".serve-lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .with_context(|| format!("cannot create {}", Path::new(&name).display()))?;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another `medic serve` is using the SQLite store {} (its lock {} is held): one server per SQLite \
             file; several replicas need PostgreSQL",
            db.display(),
            Path::new(&name).display()
        );
    }
    Ok(lock)
}

/// How long the commands that act on an existing store wait for it.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The store `serve` uses, for a command that changes or vouches for it: it must exist (never
/// created here), and the command says on stderr which one it is.
async fn existing_store(args: &StoreArgs) -> Result<Arc<dyn Store>> {
    let config = load(args.config.as_deref())?;
    let url = config.database_url(args.database_url.as_deref()).map_err(anyhow::Error::msg).context("database.url")?;
    let shown = match store::sqlite_path(&url) {
        Some(p) => std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p).display().to_string(),
        None => mask_url(&url),
    };
    eprintln!("store: {shown}");
    store::open_existing(&url, config.database.max_connections, CONNECT_TIMEOUT).await
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config, listen, database_url } => {
            let db = database_url.as_deref();
            let mut cfg = load(config.as_deref())?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            cfg.runbooks = cfg.runbooks_dir();
            crate::telemetry::init(cfg.log.format, cfg.log.level.as_deref());
            if let Some(p) = cfg.open_sources_problem(cfg.listen) {
                bail!("{p}");
            }
            let (url, source) = cfg.store(db).map_err(anyhow::Error::msg)?;
            tracing::info!(store = %mask_url(&url), from = source, "opening store");
            // One `serve` per SQLite file: several replicas need PostgreSQL.
            let _only = match store::sqlite_path(&url) {
                Some(path) => Some(only_server(&path)?),
                None => None,
            };
            let store = open_store(&cfg, db).await?;
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.listen))?;
            let result =
                crate::server::run(listener, &cfg, store.clone(), Arc::new(SystemClock), shutdown_signal()).await;
            store.close().await;
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::Check { config, runbooks, database_url } => {
            // Every problem in one run: the config's, then the runbooks', whatever failed first.
            let mut problems: Vec<String> = Vec::new();
            let cfg = match Config::load(&config) {
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            };
            if let Some(cfg) = &cfg {
                let url = cfg.store(database_url.as_deref()).map_err(anyhow::Error::msg);
                match url.and_then(|(u, from)| store::Backend::of_url(&u).map(|_| (u, from))) {
                    Ok((url, from)) => {
                        if !cfg.has_chat() {
                            eprintln!(
                                "warning: no chat platform is configured (slack, discord, mattermost): incidents are shown only \
                                 through the API, and nobody can approve a plan"
                            );
                        }
                        let enabled = cfg.intake.sources().iter().filter(|(_, s)| s.enabled).count();
                        println!(
                            "{}: OK (listen {}, store {} from {from}, {enabled} intake sources enabled)",
                            config.display(),
                            cfg.listen,
                            mask_url(&url)
                        );
                    }
                    Err(e) => problems.push(format!("{}: {e:#}", config.display())),
                }
            }
            let dir = runbooks.or_else(|| Some(PathBuf::from("runbooks")).filter(|d| d.is_dir()));
            if let Some(dir) = dir {
                match crate::runbook::load_dir(&dir) {
                    Ok(list) => {
                        let missing: Vec<String> = cfg.iter().flat_map(|c| c.runbook_problems(&list)).collect();
                        if missing.is_empty() {
                            println!("{}: OK ({} runbooks)", dir.display(), list.len());
                        } else {
                            problems.push(format!("runbooks and config disagree:\n  - {}", missing.join("\n  - ")));
                        }
                    }
                    Err(errors) => problems.push(format!("invalid runbooks:\n  - {}", errors.join("\n  - "))),
                }
            }
            if problems.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                eprintln!("error: {p}");
            }
            Ok(ExitCode::from(1))
        }
        Command::Demo { yes } => demo::run(yes).await.map(|()| ExitCode::SUCCESS),
        Command::Replay { scenario, runbooks } => {
            let runbooks = crate::runbook::load(&runbooks)?;
            let world = crate::scenario::Scenario::load(&scenario)
                .and_then(|s| s.world().map_err(|e| format!("{}: {e}", scenario.display())))
                .map_err(anyhow::Error::msg)?;
            let outcome = crate::scenario::run::run(&world, &runbooks).await?;
            print!("{}", crate::scenario::run::report(&world, &outcome));
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { paths, runbooks } => scenario_tests(&paths, &runbooks).await,
        Command::Ask { question, incident, scenario, runbooks, url, token, format } => {
            let answer = match &scenario {
                Some(s) if incident.is_some() => {
                    bail!("--incident and --scenario exclude each other ({})", s.display())
                }
                Some(s) => ask::offline(s, &runbooks, &question).await?,
                None => ask::remote(&url, token.as_deref(), &question, incident).await?,
            };
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&answer)?),
                _ => println!("{}", crate::chat::display(&answer["answer"])),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runbooks { command: None, args } => list_runbooks(&args).await,
        Command::Runbooks { command: Some(RunbooksCommand::Grant { runbook, args }), .. } => {
            set_autonomy(&args, &runbook, true).await
        }
        Command::Runbooks { command: Some(RunbooksCommand::Revoke { runbook, args }), .. } => {
            set_autonomy(&args, &runbook, false).await
        }
        Command::Health { url } => health(&url).await,
        Command::Pause { store } => set_paused(&store, true).await,
        Command::Resume { store } => set_paused(&store, false).await,
        Command::Audit { command: AuditCommand::Verify { store, expect_head } } => {
            // Exit 2 when it cannot run (no store, unreachable, unreadable), as documented.
            let opened = existing_store(&store);
            let store = match opened.await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: audit verify could not run: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            };
            let code = verify(store.as_ref(), expect_head.as_deref()).await;
            store.close().await;
            code.or_else(|e| {
                eprintln!("error: audit verify could not run: {e:#}");
                Ok(ExitCode::from(2))
            })
        }
        Command::Audit { command: AuditCommand::Export { incident, store, out } } => {
            let store = existing_store(&store).await?;
            let paths = export(store.as_ref(), incident, &out).await;
            store.close().await;
            for p in paths? {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `medic pause` / `medic resume`, as the console user.
async fn set_paused(args: &StoreArgs, pause: bool) -> Result<ExitCode> {
    let store = existing_store(args).await?;
    let who = crate::chat::console::identity();
    let r = async {
        // Already so: said, and nothing written.
        match (store.paused().await?, pause) {
            (Some((by, since)), true) => {
                return Ok(Some(format!(
                    "automation is already paused (by {by} since {}); nothing changed",
                    crate::time::rfc3339(since)
                )));
            }
            (None, false) => return Ok(Some("automation was not paused; nothing changed".to_string())),
            _ => {}
        }
        store.set_paused(&who, "cli", pause, crate::time::Clock::now(&SystemClock)).await.map(|()| None)
    };
    let r = r.await;
    store.close().await;
    if let Some(said) = r? {
        println!("{said}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} by {who} (the OS user); every replica on this store sees it at its next click",
        if pause { "automation paused" } else { "automation resumed" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `medic health`: GET /healthz within 5 s.
async fn health(url: &str) -> Result<ExitCode> {
    let client = crate::telemetry::http_client_builder().timeout(std::time::Duration::from_secs(5)).build()?;
    let target = format!("{}/healthz", url.trim_end_matches('/'));
    match client.get(&target).send().await {
        Ok(r) if r.status().is_success() => {
            println!("{target}: {}", r.status());
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            eprintln!("error: {target}: {}", r.status());
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("error: {target}: {}", e.without_url());
            Ok(ExitCode::from(1))
        }
    }
}

/// `medic runbooks`: one line per runbook (or the JSON of `GET /v1/runbooks`).
async fn list_runbooks(args: &RunbooksArgs) -> Result<ExitCode> {
    let config = load(args.store.config.as_deref())?;
    let runbooks = if args.runbooks.is_dir() { crate::runbook::load(&args.runbooks)? } else { Vec::new() };
    let store = existing_store(&args.store).await?;
    let stats = store.runbook_stats(true).await;
    store.close().await;
    let view = crate::api::runbooks_json(&stats?, &runbooks, config.autonomy.grant_after);
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        [
            "RUNBOOK",
            "CEILING",
            "LEVEL",
            "STREAK",
            "VERIFIED",
            "FAILED",
            "MEDIAN FIX",
            "LAST OUTCOMES",
            "SHADOW (handled by people / resolved alone)",
        ]
        .map(String::from),
    ];
    let mut notes = Vec::new();
    for r in view["runbooks"].as_array().into_iter().flatten() {
        let fix = r["median_fix_secs"].as_f64().map(|s| format!("{:.0}s", s)).unwrap_or_else(|| "-".into());
        let last: Vec<&str> = r["last_outcomes"].as_array().into_iter().flatten().filter_map(|o| o.as_str()).collect();
        let text = |v: &serde_json::Value| crate::chat::display(v);
        rows.push([
            text(&r["runbook"]),
            r["ceiling"].as_str().unwrap_or("-").to_string(),
            text(&r["level"]),
            format!("{}/{}", r["streak"], r["grant_after"]),
            r["verified"].to_string(),
            r["failed"].to_string(),
            fix,
            if last.is_empty() { "-".to_string() } else { last.join(", ") },
            format!("{} / {}", r["shadow"]["handled_by_people"], r["shadow"]["resolved_alone"]),
        ]);
        notes.push(r["level_changed_because"].as_str().map(str::to_string));
    }
    // Columns as wide as their widest cell; counts right-aligned.
    let widths: Vec<usize> = (0..9).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match c {
                8 => cell.clone(),
                3..=6 => format!("{cell:>w$}", w = widths[c]),
                _ => format!("{cell:<w$}", w = widths[c]),
            })
            .collect();
        println!("{}", cells.join("  "));
        if let Some(Some(why)) = i.checked_sub(1).and_then(|n| notes.get(n)) {
            println!("{:w$}  level changed: {why}", "", w = widths[0]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `medic runbooks grant|revoke ID`, as the OS user.
async fn set_autonomy(args: &RunbooksArgs, id: &str, grant: bool) -> Result<ExitCode> {
    let runbooks = crate::runbook::load(&args.runbooks)?;
    let Some(rb) = runbooks.iter().find(|r| r.id == id) else {
        eprintln!("error: no runbook {id} in {}", args.runbooks.display());
        return Ok(ExitCode::from(1));
    };
    let store = existing_store(&args.store).await?;
    let who = crate::chat::console::identity();
    let target = store::RunbookRef { id, autonomy: rb.autonomy, tier: rb.tier };
    let r = store.set_autonomy(&target, grant, &who, "cli", crate::time::Clock::now(&SystemClock)).await;
    store.close().await;
    match r? {
        Ok(said) => {
            println!("{said} (by {who}, the OS user; audited)");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("error: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `medic test`: every scenario, every expectation; exit 1 if any failed.
async fn scenario_tests(paths: &[PathBuf], default_runbooks: &Path) -> Result<ExitCode> {
    let mut jobs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in paths {
        if p.is_dir() {
            let tests = p.join("tests");
            let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
                .with_context(|| format!("{}: no tests/ directory of scenarios", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            jobs.extend(files.into_iter().map(|f| (f, p.clone())));
        } else {
            jobs.push((p.clone(), default_runbooks.to_path_buf()));
        }
    }
    let (mut passed, mut failed) = (0, 0);
    let mut cache: std::collections::BTreeMap<PathBuf, Vec<crate::runbook::Runbook>> = Default::default();
    for (file, dir) in jobs {
        if !cache.contains_key(&dir) {
            cache.insert(dir.clone(), crate::runbook::load(&dir)?);
        }
        let runbooks = &cache[&dir];
        let world = match crate::scenario::Scenario::load(&file)
            .and_then(|s| s.world().map_err(|e| format!("{}: {e}", file.display())))
        {
            Ok(w) => w,
            Err(e) => {
                println!("FAIL {}: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        let outcome = match crate::scenario::run::run(&world, runbooks).await {
            Ok(o) => o,
            Err(e) => {
                println!("FAIL {}: {e:#}", file.display());
                failed += 1;
                continue;
            }
        };
        let verdicts = crate::scenario::run::check(&world, &outcome).await;
        if verdicts.is_empty() {
            println!("FAIL {}: the scenario expects nothing (add `expect:`)", file.display());
            failed += 1;
            continue;
        }
        let bad: Vec<_> = verdicts.iter().filter(|v| !v.ok).collect();
        if bad.is_empty() {
            passed += 1;
            println!("ok   {} ({})", file.display(), world.name);
            for v in verdicts.iter().filter(|v| v.what == "verification") {
                println!("       {}: {}", v.what, v.detail);
            }
        } else {
            failed += 1;
            println!("FAIL {} ({})", file.display(), world.name);
            for v in bad {
                println!("       {}: {}", v.what, v.detail);
            }
            print!(
                "{}",
                crate::scenario::run::report(&world, &outcome)
                    .lines()
                    .map(|l| format!("       | {l}\n"))
                    .collect::<String>()
            );
        }
    }
    println!("\n{passed} passed, {failed} failed");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Walks the whole chain page by page. Prints OK with the head, or the first bad record.
pub async fn verify(store: &dyn Store, expect_head: Option<&str>) -> Result<ExitCode> {
    let v = match store::verify_audit(store).await? {
        Ok(v) => v,
        Err(broken) => {
            println!("FAILED: {broken}");
            return Ok(ExitCode::from(1));
        }
    };
    let (seq, hash) = (&v.head.0, &v.head.1);
    if v.checked == 0 {
        println!(
            "FAILED: the audit log is empty: there is nothing to vouch for (is this the store `medic serve` uses?)"
        );
        return Ok(ExitCode::from(1));
    }
    // A head kept elsewhere must still be in the chain, with the same hash; records after it
    // are the system going on, not tampering.
    let mut after = None;
    if let Some(expected) = expect_head {
        let Some((want_seq, want_hash)) = expected.split_once(':').and_then(|(s, h)| Some((s.parse::<i64>().ok()?, h)))
        else {
            bail!("--expect-head: expected SEQ:HASH as `medic audit verify` prints it, got {expected:?}");
        };
        let kept = store.audit_page(want_seq - 1, 1).await?.into_iter().find(|r| r.seq == want_seq);
        let failed = match kept {
            _ if want_seq > *seq => Some(format!(
                "the chain is intact up to {seq}:{hash} but ends before record {want_seq}, which {expected} vouches for \
                 (records removed from the end)"
            )),
            None if v.from.is_some_and(|cp| want_seq <= cp) => Some(format!(
                "record {want_seq} was removed by retention (checkpoint at record {}): an older head cannot be vouched for",
                v.from.unwrap_or_default()
            )),
            None => Some(format!("record {want_seq}, which {expected} vouches for, is missing from the chain")),
            Some(r) if r.hash != want_hash => {
                Some(format!("record {want_seq} now has hash {} where {expected} was kept (altered)", r.hash))
            }
            Some(_) => None,
        };
        if let Some(why) = failed {
            println!("FAILED: {why}");
            return Ok(ExitCode::from(1));
        }
        after = Some((expected, seq - want_seq));
    }
    if let Some((expected, n)) = after {
        println!("OK: the chain still holds {expected}; {n} record(s) came after it");
    }
    match v.from {
        Some(cp) => {
            println!("OK: {} records after the retention checkpoint at record {cp}, head {seq}:{hash}", v.checked)
        }
        None => println!("OK: {} records, head {seq}:{hash}", v.checked),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `incident-ID.json` and `incident-ID.md` into `dir`.
pub async fn export(store: &dyn Store, id: i64, dir: &Path) -> Result<Vec<PathBuf>> {
    let Some((inc, alerts)) = store.incident(id).await? else { bail!("no incident {id}") };
    let records = store.audit_for_incident(id).await?;
    let summary = inc.to_json();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json_path = dir.join(format!("incident-{id}.json"));
    let md_path = dir.join(format!("incident-{id}.md"));
    // Written item by item: a storm's incident is not built as one value in memory first.
    let write_json = || -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&json_path)?);
        write!(out, "{{\"incident\": {summary},\n\"alerts\": [")?;
        for (i, a) in alerts.iter().enumerate() {
            write!(out, "{}\n  {}", if i == 0 { "" } else { "," }, crate::api::alert_json(a))?;
        }
        write!(out, "\n],\n\"timeline\": [")?;
        for (i, r) in records.iter().enumerate() {
            write!(out, "{}\n  {}", if i == 0 { "" } else { "," }, crate::api::record_json(r))?;
        }
        writeln!(out, "\n]}}")?;
        out.flush()
    };
    write_json().with_context(|| format!("cannot write {}", json_path.display()))?;
    std::fs::write(&md_path, audit::timeline_markdown(&summary, &records))
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    Ok(vec![json_path, md_path])
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
