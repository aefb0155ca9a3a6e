//! medic — a self-hosted ChatOps bot for incident response with a human in the loop.
//!
//! # Code map, in the order one incident flows through it
//!
//! ```text
//! intake ─► pipeline ─► incident ─► store ─────────────────────────────────────────► audit
//!                                     │                                               ▲
//!           context ─► diagnosis ─► plan ─► chat ─► approval ─► executor ─► verify ───┘
//!           └──────── responder (on each incident that opens or grows) ───┘
//! ```
//!
//! - [`intake`] — one module per source (`alertmanager`, `grafana`, `generic`, `pagerduty`,
//!   `changes`). Each turns an authenticated HTTP body into validated [`alert::Alert`]s or
//!   [`alert::Change`]s, or a 4xx naming the field at fault. Only this module knows wire formats.
//! - [`pipeline`] — the single writer of this process. Handlers hand it a submission and wait;
//!   it commits many submissions in one transaction (group commit) and only then answers, so a
//!   2xx means durably stored. It also runs the periodic tick that resolves incidents.
//! - [`incident`] — correlation as pure code: dedup by fingerprint, grouping by key inside a
//!   window, resolve after a grace period, reopen on re-fire, flap damping. It works on a
//!   [`incident::WorkingSet`] loaded by the store and emits the audit entries for what changed.
//! - [`runbook`] — runbook files: when they apply (label matchers, evidence predicates), what
//!   to gather, the hypothesis, and the plan; strict schema, published as JSON Schema, with the
//!   safety rules (tier per action kind, rollback or a reason per mutating step) checked on load.
//! - [`context`] — what the observability stack says, one small trait per kind of source and one
//!   module per backend (Prometheus, Loki, Alertmanager, Kubernetes, GitHub, Tempo, Jaeger,
//!   topology; `context::traces` holds spans and what is read from them: call edges, per-edge
//!   stats, own time), a parallel fan-out with per-call timeouts under one budget (failures become "unavailable"
//!   evidence, every call is recorded with its duration) and a per-incident cache. Its config
//!   section is `context::Config`. [`scenario`] holds the format of recorded incidents
//!   (promtool series notation), the recorded backend that serves one through the same traits,
//!   and `scenario::cluster`, a local Kubernetes API server for its workloads, for `medic test`,
//!   `medic replay` and the demo (plans act on it through the executor's real client);
//!   `scenario::nezha` serves data in the shape of Nezha's TrainTicket and OnlineBoutique corpora
//!   (per-pod metric, log and span CSVs, call-edge latencies, a dependency list) through the same
//!   traits, for a scenario's `nezha:` and `examples/bench_rca.rs`.
//! - [`responder`] — what `serve` does when an incident opens or grows: gather, read similar
//!   past incidents from the store, diagnose, survey and propose the plan, audit the diagnosis.
//!   Intake triggers it after the commit; it never delays an acknowledgement. Triggers
//!   coalesce: a new incident at once, then at most once per `context.rediagnose_every` and only
//!   when what diagnosis reads changed, so a storm costs a few investigations, not one per batch.
//! - [`diagnosis`] — pure: incident + context + runbooks + history → ranked hypotheses, each
//!   with evidence items a person can check (metric findings in robust σ, preceding changes, new
//!   or jumped log patterns, pods, healthy or anomalous dependencies, what traces show, similar
//!   past incidents) and the weighted reasons for its confidence (log-odds). Topology ranking puts an anomalous
//!   service with healthy dependencies above its callers; `rca` ranks every service the context
//!   saw by what changed at the incident's start, looking for each fault class where it must show
//!   (own work and resource series; the network into it; its code path and logs; its pods),
//!   halving a likely symptom (scored on Nezha's faults of both systems by
//!   `examples/bench_rca.rs`). "No runbook matches" is a valid, tier-5 outcome. One file per
//!   method over shared `Facts`: `topology` (series anomalies and the downstream-cause
//!   hypothesis), `rca` (root cause across services), `changes`, `patterns` (log evidence), `situation` (pods,
//!   alerts, silences, what could not be seen), `history`, `signatures` (runbook hypotheses);
//!   `diagnose` composes and ranks them. `diagnosis::anomaly` is the window analysis the diagnosis
//!   runs on every series, confirmed by the streaming detector of `diagnosis::novelty` (context
//!   novelty, the flatline record and the level detector combined, set up as NAB scores it by
//!   `examples/bench_nab.rs`); `diagnosis::logs` is the online
//!   log template miner (scored on Loghub by `examples/bench_loghub.rs`).
//! - [`plan`] — a runbook plan with the incident's values rendered strictly through [`render`]
//!   (queries, URLs and arguments escaped for where each value lands); immutable and
//!   content-hashed (a changed plan is a new plan).
//! - [`approval`] — pure rules for a click (group, distinct approvers, self-approval, expiry,
//!   open incident, current plan, guardrails; Stop of a plan that runs by itself), each refusal
//!   worded for the clicker; the store applies an accepted click exactly once. Only this module
//!   builds an `ApprovedPlan` (`decide_auto` for a plan that runs by itself).
//! - [`autonomy`] — earned autonomy, pure: a runbook's record (streak, verified, failed) and
//!   whether it holds `auto` (`learn`), and whether a plan runs by itself for an incident
//!   (`assess`: ceiling and tier, record, environment policy, guardrails). The store applies
//!   `learn` in the transaction that records each outcome; the responder marks a plan with
//!   `assess`; `chat::clicks::Clicks::run_due` starts a plan whose delay passed, through
//!   `approval::decide_auto` under the write lock; Stop halts a running one.
//! - [`executor`] — runs an `ApprovedPlan` only: per step precondition → action → post-check,
//!   rollback of the steps done when one fails, escalation; claimed once and held by a lease
//!   it renews; a crash mid-plan is marked interrupted at start, an orphan whose lease lapsed by
//!   any replica, and never re-run. [`redact`] scrubs everything it records. One module per
//!   action kind: `http` (allow-listed webhooks, credentials from the config), `script`,
//!   `kubernetes` (restart, undo, scale, delete one pod; namespace allow-list, unchanged-spec
//!   check, limits, server-side dry run, 409 retried once) and `alertmanager` (silences);
//!   kinds whose undo medic derives return it with their result. `executor::survey` reads what
//!   each step will touch when the responder proposes a plan, so the approver sees it.
//! - [`guardrails`] — pure assessment at the moment of a click: blocks (paused, attempt budget
//!   spent) refuse the approval; warnings (change freeze, deploy in progress) are shown.
//! - [`store`] — the one storage trait ([`store::Store`]) and its SQL implementation for SQLite
//!   (WAL, the default) and PostgreSQL, with `migrations/sqlite` and `migrations/postgres`; one
//!   file per aggregate (incidents, audit log, plans, executions, autonomy, outbox, changes). Intake reads
//!   only the alerts of a batch (by key) and their incidents, whose counts live on the row; an
//!   incident's alerts are read in bounded slices (first and latest, or a page by key). Named
//!   leases give one replica the Slack Socket Mode connection, the Discord Gateway and the
//!   Mattermost WebSocket (`chat::lease`, whose `Lease::hold` runs each); retention removes old rows and
//!   the audit prefix behind a checkpoint that `verify_audit` starts from.
//! - [`audit`] — the hash chain: each record carries the hash of the previous one;
//!   `verify` finds the first altered, removed or reordered record; `export` writes an
//!   incident's timeline as JSON and Markdown.
//! - [`server`] — axum: intake routes, `/healthz`, `/readyz`, `/metrics`; graceful shutdown
//!   through a `shutdown` future passed in by the caller. [`serve`] is its accept loop
//!   (connection cap, header and request timeouts, accept errors never stop it). [`api`] is the read-only incident API
//!   (and the JSON views `audit export` shares); [`metrics`] is medic's own exposition.
//! - [`config`] — composes and validates the strict YAML config; each section's type lives
//!   beside the code it configures (`context::Config`, `intake::Config`, `executor::Config`,
//!   `chat::slack::Config`, `chat::discord::Config`, `chat::mattermost::Config`, `serve::Config`, `telemetry::Config`,
//!   `approval::Responders`). [`secret`] is the ground floor every module takes secrets from:
//!   only by `{env: NAME}` / `{file: PATH}`, never printed. [`strict`] reports every unknown
//!   key of a YAML file (the config, a runbook) in one run.
//! - [`chat`] — one shared view of an incident (`view_for`) rendered per platform from
//!   `templates/<platform>/`; Slack, Discord (`chat::discord`, a folder: REST and the
//!   interactions endpoint, and its own Gateway client in `chat::discord::gateway`),
//!   Mattermost (`chat::mattermost`, a folder: REST, the routes Mattermost calls in
//!   `inbound`, its WebSocket in `websocket`) and the console behind the `Platform` trait, fed by
//!   a durable outbox (retries, `Retry-After`, merged updates) and answering clicks through
//!   `chat::clicks`, the one place a click becomes a decision and an execution (the console's
//!   clicks are typed at the terminal).
//! - [`page`] — when medic cannot help, a person hears it: pages (PagerDuty Events API v2, a
//!   signed webhook) for escalations, lost autonomy, incidents no runbook matches, plans left
//!   waiting and spent budgets, resolved with the incident; [`ticket`] opens GitHub and Jira
//!   issues carrying the incident's timeline. Each destination sits behind a small trait
//!   (`page::Pager`, `ticket::Tracker`) and is delivered by the chat outbox
//!   (`chat::outbox::Destination`); `page::watch` reads the audit log for all of them.
//!   `chat::summary` posts the morning summary to every incident channel.
//! - [`ask`] — questions in plain language: a pure intent parser (`ask::parse`: intents and
//!   slots, no IO), the answers from the store and the context sources with their evidence
//!   (`ask::answer::Asker`), PNG charts (`ask::chart`), and the optional OpenAI-compatible
//!   model whose tools are the read-only intents (`ask::llm`). It sits above [`chat`], which
//!   reaches it only through `chat::asking::Answers`; Slack, Discord, Mattermost, `POST /v1/ask`,
//!   `medic ask` and the demo's prompt all feed it.
//! - [`cli`] — the `medic` command line; `main.rs` only calls [`cli::main`]. [`cli::demo`]
//!   runs `serve`'s pipeline ([`server::run_with`]) with the recorded context backend and
//!   the console as its chat platform: no second pipeline.
//!
//! # Invariants
//!
//! - **Ack means durable.** An intake handler answers 2xx only after the transaction holding
//!   its alerts has committed. A rejected request stores nothing.
//! - **One write lock.** Every mutation takes the store's write lock (SQLite `BEGIN IMMEDIATE`;
//!   PostgreSQL a transaction-scoped advisory lock), so several replicas still form one audit
//!   chain, one incident per group, and one approval and one execution per plan. Intake
//!   mutations are batched through [`pipeline`].
//! - **Decisions do no IO.** [`incident`], [`diagnosis`], [`approval`] and [`guardrails`] never
//!   touch the database, the clock or the network; callers load the facts and pass `now` in.
//!   (The topology that grouping uses is a graph the server refreshes, passed in the policy.)
//! - **A context source never stops a diagnosis.** Each call is bounded; a failure is a line of
//!   evidence naming the source.
//! - **The executor runs only an `ApprovedPlan`**, which only [`approval`] can build, and
//!   only after the approval committed; a plan runs at most once and is never re-run after a
//!   crash; before every action the executor confirms in the store that it still holds the
//!   execution (fencing), so a replica that lost its lease acts no more. A Kubernetes step
//!   changes only an allowed namespace, only a workload the survey read and whose spec is still
//!   the one the plan was proposed against, and only after the API server accepted the same
//!   request as a dry run.
//! - **Every state change is audited in the same transaction** that makes it; a duplicate
//!   delivery changes nothing and writes nothing.
//! - **Secrets never print.** [`secret::Secret`] has no `Display`, redacts its `Debug`, and is
//!   compared in constant time; database URLs are shown with their password masked.
//! - **Nothing secret is shown or recorded:** intake redacts labels, annotations and links
//!   before they are stored; evidence, everything chat shows and everything the executor
//!   records pass [`redact`], before any cut.
//! - **A value is data.** Label values and other incident values reach PromQL/LogQL, URLs and
//!   script arguments only through [`render`], escaped for their position or refused; text
//!   sent to Slack is escaped, Discord messages mention no one, and Mattermost text is escaped
//!   with no `@` that can mention.
//! - **A chat request is verified before it is read.** Slack's and Discord's by their
//!   signatures; Mattermost's, which are not signed, by a context medic sealed (or the
//!   command's token), the server's addresses, the incident's own post and the channel's
//!   members (`chat::mattermost::inbound`).
//! - **Words never act by themselves.** Only an order addressed to medic (a mention, a DM, a
//!   slash command, the API, the CLI; its verb first) can pause or resume automation, grant or
//!   revoke a runbook's autonomy, or resolve or reopen an incident, only for
//!   `ask.control_groups`, from exact words; never a question, a negation, a statement or a
//!   message medic overheard, never through the LLM (whose tools are read-only); plans are approved by a
//!   person's button, or by `approval::decide_auto` for a runbook that earned `auto` (never
//!   above tier 3, only where the environment policy allows, never while a guardrail objects).
//! - **Losing autonomy is never lost.** A failure, rollback, interruption, Stop or Reject that
//!   takes a runbook's `auto` away is recorded in the same transaction as the outcome itself.
//! - **Only [`intake`] knows payload formats; only [`chat`] adapters know platform formats;
//!   only [`store`] knows SQL.**

pub mod alert;
pub mod api;
pub mod approval;
pub mod ask;
pub mod audit;
pub mod autonomy;
pub mod chat;
pub mod cli;
pub mod config;
pub mod context;
pub mod diagnosis;
pub mod executor;
pub mod guardrails;
pub mod incident;
pub mod intake;
pub mod metrics;
pub mod page;
pub mod pipeline;
pub mod plan;
pub mod redact;
pub mod render;
pub mod responder;
pub mod runbook;
pub mod scenario;
pub mod secret;
pub mod serve;
pub mod server;
pub mod store;
pub mod strict;
pub mod telemetry;
pub mod ticket;
pub mod time;
