//! Runbooks: YAML files in `runbooks/` that say when they apply (label matchers and evidence
//! predicates), what context to gather, what they believe is wrong, and the plan that fixes it.
//!
//! The schema is strict (unknown keys are errors naming file, line and column) and published
//! as JSON Schema in `runbooks/schema.json` for editors; a test keeps it in step with these
//! types. Beyond the shape, [`Runbook::problems`] enforces the safety rules:
//! - a tier-5 runbook is human-led and has no plan; tiers 1–4 must have one;
//! - every action kind has a minimum tier ([`ActionKind::min_tier`]) the runbook must meet;
//! - a step that changes the world declares its rollback, or says why it is irreversible;
//! - every template compiles; every matcher and condition parses.

pub mod actions;
pub mod matcher;

use actions::{Am, Kube, KubeAction, SilenceAction};
use matcher::Matcher;
use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// One runbook file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    /// Stable identifier: lowercase letters, digits and dashes, unique across runbooks.
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Risk tier: 1 (routine, reversible) to 5 (human-led: evidence only, no plan).
    pub tier: u8,
    /// When this runbook applies.
    #[serde(rename = "match")]
    pub matches: Match,
    /// Named queries whose results become evidence and post-check inputs.
    #[serde(default)]
    pub context: Vec<ContextQuery>,
    /// What the runbook believes is wrong: a template over the incident and its evidence.
    pub hypothesis: String,
    /// Values the templates may use as `{{vars.NAME}}`, with their defaults.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The remediation; required for tiers 1–4, absent for tier 5.
    #[serde(default)]
    pub plan: Option<Plan>,
    #[serde(default)]
    pub approval: Approval,
    #[serde(default)]
    pub autonomy: Autonomy,
    /// At most `max` executions per alert fingerprint within `per`.
    #[serde(default)]
    pub attempt_budget: Option<Budget>,
    /// Plans of this runbook are "executed" as a log only (the global switch is
    /// `executor.dry_run`).
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Alertmanager-style matchers (`name="v"`, `!=`, `=~`, `!~`); the runbook applies when one
    /// alert of the incident satisfies all of them.
    #[schemars(length(min = 1))]
    pub alerts: Vec<MatcherText>,
    /// Further conditions on the evidence, all of which must hold.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
}

/// A label matcher as written, such as `alertname=~"High.*"`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct MatcherText(#[schemars(regex(pattern = r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)"))] pub String);

impl<'de> Deserialize<'de> for MatcherText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Matcher::parse(&s).map_err(de::Error::custom)?;
        Ok(MatcherText(s))
    }
}

impl MatcherText {
    pub fn matcher(&self) -> Matcher {
        Matcher::parse(&self.0).expect("checked when deserialised")
    }
}

/// One evidence predicate: exactly one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Evidence {
    /// A deploy of the incident's service within this long before the onset, e.g. `12h`.
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub deploy_within: Option<Duration>,
    /// Any change (deploy, config, flag) of the service within this long before the onset.
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub change_within: Option<Duration>,
    /// A pod of the service in one of these states, e.g. `[CrashLoopBackOff, OOMKilled]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_state: Option<Vec<String>>,
    /// A log line of the service matching this regex since the onset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_pattern: Option<String>,
    /// A context query's latest value meets a condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricPredicate>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricPredicate {
    /// The name of one of the runbook's context queries.
    pub query: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextQuery {
    /// How evidence and post-checks refer to this query.
    pub name: String,
    /// A PromQL template, e.g. `sum(rate(http_requests_total{service="{{service}}"}[5m]))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<String>,
    /// A LogQL template, e.g. `{service="{{service}}"} |= "error"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logql: Option<String>,
    /// How to show the value: `ratio` (as a percentage), `bytes`, `seconds` or `number`.
    #[serde(default)]
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    #[default]
    Number,
    Ratio,
    Bytes,
    Seconds,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Run in order; a failed post-check rolls back the steps done so far.
    #[schemars(length(min = 1))]
    pub steps: Vec<Step>,
    /// What the responder should expect while it runs, e.g. "~30 s of 503s during the rollback".
    #[serde(default)]
    pub expected_impact: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    pub action: Action,
    /// Must hold right before the action runs, or the plan stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precondition: Option<Check>,
    /// Must hold within its deadline after the action, or the steps done are rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_check: Option<Check>,
    /// Undoes this step. Required for actions that change the world, unless `irreversible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Action>,
    /// Why this step cannot be undone (shown to approvers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irreversible: Option<String>,
}

/// What a step does: exactly one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Action {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptAction>,
    /// Pause, e.g. `30s`.
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub wait: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// A Kubernetes operation on one workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubeAction>,
    /// An Alertmanager silence, created or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<SilenceAction>,
}

/// The kinds of action. A closed set: a new kind must decide its minimum tier, whether it
/// changes the world, how it is undone and what it can reach, each in one `match` below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Http,
    Script,
    Wait,
    Check,
    RolloutRestart,
    RolloutUndo,
    Scale,
    DeletePod,
    Silence,
    ExpireSilence,
}

/// How a step of a kind is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// The runbook says how (`rollback`), or why it cannot be (`irreversible`).
    Declared,
    /// The executor derives the undo from what it changed (the runbook must not declare one).
    Derived(&'static str),
    /// Nothing to undo, for this reason.
    Needless(&'static str),
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Http => "http",
            ActionKind::Script => "script",
            ActionKind::Wait => "wait",
            ActionKind::Check => "check",
            ActionKind::RolloutRestart => "kubernetes.rollout_restart",
            ActionKind::RolloutUndo => "kubernetes.rollout_undo",
            ActionKind::Scale => "kubernetes.scale",
            ActionKind::DeletePod => "kubernetes.delete_pod",
            ActionKind::Silence => "alertmanager.silence",
            ActionKind::ExpireSilence => "alertmanager.expire_silence",
        }
    }

    /// The lowest runbook tier allowed to use this action.
    pub fn min_tier(self) -> u8 {
        match self {
            ActionKind::Wait | ActionKind::Check | ActionKind::ExpireSilence => 1,
            ActionKind::Http | ActionKind::Script => 2,
            ActionKind::RolloutRestart | ActionKind::Scale | ActionKind::DeletePod | ActionKind::Silence => 2,
            // Puts an older release back: the one kind that changes what code runs.
            ActionKind::RolloutUndo => 3,
        }
    }

    /// Whether the action can change the world.
    pub fn mutates(self) -> bool {
        !matches!(self, ActionKind::Wait | ActionKind::Check)
    }

    /// How a step of this kind is undone.
    pub fn undo(self) -> Undo {
        match self {
            ActionKind::Http | ActionKind::Script => Undo::Declared,
            ActionKind::Wait | ActionKind::Check => Undo::Needless("it changes nothing"),
            ActionKind::RolloutRestart => {
                Undo::Needless("a restart leaves the same spec running: there is nothing to undo")
            }
            ActionKind::RolloutUndo => Undo::Derived("undo back to the revision it replaced"),
            ActionKind::Scale => Undo::Derived("scale back to the previous count"),
            ActionKind::DeletePod => Undo::Needless("the workload's controller replaces the pod"),
            ActionKind::Silence => Undo::Derived("expire the silence"),
            ActionKind::ExpireSilence => Undo::Needless("alerts are only shown again"),
        }
    }

    /// The most a step of this kind can touch (the plan shows what exactly, read from the
    /// cluster when it is proposed).
    pub fn reach(self) -> &'static str {
        match self {
            ActionKind::Http => "whatever the allow-listed host does with the request",
            ActionKind::Script => "whatever the script in the scripts directory does",
            ActionKind::Wait | ActionKind::Check => "nothing",
            ActionKind::RolloutRestart => "every pod of one workload, replaced by its own rolling update",
            ActionKind::RolloutUndo => "every pod of one Deployment, moved to an earlier revision",
            ActionKind::Scale => "one workload's replica count, within min/max and the per-step limit",
            ActionKind::DeletePod => "exactly one pod, never the workload's last ready one",
            ActionKind::Silence => "notifications of the alerts its matchers select, for its duration",
            ActionKind::ExpireSilence => "silences medic created for this incident",
        }
    }
}

impl Action {
    /// The action's kind, or why it has none or several.
    pub fn kind(&self) -> Result<ActionKind, String> {
        let kube = self.kubernetes.as_ref().map(|k| k.one()).transpose().map_err(|e| format!("kubernetes: {e}"))?;
        let am = self.alertmanager.as_ref().map(|a| a.one()).transpose().map_err(|e| format!("alertmanager: {e}"))?;
        let kinds: Vec<ActionKind> = [
            self.http.as_ref().map(|_| ActionKind::Http),
            self.script.as_ref().map(|_| ActionKind::Script),
            self.wait.map(|_| ActionKind::Wait),
            self.check.as_ref().map(|_| ActionKind::Check),
            kube.map(|k| match k {
                Kube::RolloutRestart(_) => ActionKind::RolloutRestart,
                Kube::RolloutUndo(_) => ActionKind::RolloutUndo,
                Kube::Scale(_) => ActionKind::Scale,
                Kube::DeletePod(_) => ActionKind::DeletePod,
            }),
            am.map(|a| match a {
                Am::Silence(_) => ActionKind::Silence,
                Am::ExpireSilence(_) => ActionKind::ExpireSilence,
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        match kinds.as_slice() {
            [one] => Ok(*one),
            [] => Err("expected one of `http`, `script`, `wait`, `check`, `kubernetes`, `alertmanager`".into()),
            _ => Err(format!(
                "expected exactly one action, got {}",
                kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" and ")
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpAction {
    #[serde(default)]
    pub method: HttpMethod,
    /// A template; the host must be on the executor's allow-list.
    pub url: String,
    /// Header templates. Secrets come from the config, never from runbooks.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body; string values are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Statuses that count as success (default: any 2xx).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    #[serde(default = "default_action_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptAction {
    /// `argv[0]` is a file name in the configured scripts directory (no path); the rest are
    /// argument templates. Run without a shell.
    #[schemars(length(min = 1))]
    pub argv: Vec<String>,
    #[serde(default = "default_action_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// The script's whole environment besides `PATH`, `LANG` and `HOME`: names and value
    /// templates. medic's own environment (its secrets among it) is never passed on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn default_action_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The name of a context query, or a PromQL template.
    pub query: String,
    pub condition: Condition,
    /// How long the condition may take to hold.
    #[serde(default = "default_within", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub within: Duration,
    /// How often to evaluate it.
    #[serde(default = "default_every", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub every: Duration,
}

fn default_within() -> Duration {
    Duration::from_secs(300)
}
fn default_every() -> Duration {
    Duration::from_secs(15)
}

/// A comparison with a number, written as text: `< 0.02`, `>= 3`, `== 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub op: CmpOp,
    pub value: f64,
}

impl JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A comparison with a number: `< 0.02`, `>= 3`, `== 0`.",
            "pattern": r"^\s*(<|<=|>|>=|==|!=)\s*-?[0-9.eE+-]+\s*$"
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

impl Condition {
    pub fn parse(s: &str) -> Result<Condition, String> {
        let t = s.trim();
        let (op, rest) = [
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ]
        .into_iter()
        .find_map(|(p, op)| t.strip_prefix(p).map(|r| (op, r)))
        .ok_or_else(|| format!("{s:?}: expected a comparison such as \"< 0.02\" (<, <=, >, >=, ==, !=)"))?;
        let value =
            rest.trim().parse::<f64>().map_err(|_| format!("{s:?}: expected a number after {}", op.as_str()))?;
        Ok(Condition { op, value })
    }

    pub fn holds(&self, x: f64) -> bool {
        match self.op {
            CmpOp::Lt => x < self.value,
            CmpOp::Le => x <= self.value,
            CmpOp::Gt => x > self.value,
            CmpOp::Ge => x >= self.value,
            CmpOp::Eq => x == self.value,
            CmpOp::Ne => x != self.value,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.value)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Condition::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Responder groups (from the config) whose members may approve. Empty: the config's
    /// default approvers.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Distinct people who must approve.
    #[serde(default = "one")]
    pub min_approvers: u32,
    /// Whether the person who asked for the plan may approve it.
    #[serde(default)]
    pub self_approval: bool,
    /// A proposed plan can no longer be approved after this long.
    #[serde(default = "default_expiry", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub expires_after: Duration,
}

fn one() -> u32 {
    1
}
fn default_expiry() -> Duration {
    Duration::from_secs(1800)
}

impl Default for Approval {
    fn default() -> Self {
        Approval { groups: Vec::new(), min_approvers: 1, self_approval: false, expires_after: default_expiry() }
    }
}

/// `suggest`: the plan is shown without an execute button. `approve`: it runs on approval.
/// `auto`: the ceiling it may earn — it runs by itself once [`crate::autonomy`] grants it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Autonomy {
    Suggest,
    #[default]
    Approve,
    Auto,
}

impl Autonomy {
    pub fn as_str(self) -> &'static str {
        match self {
            Autonomy::Suggest => "suggest",
            Autonomy::Approve => "approve",
            Autonomy::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max: u32,
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub per: Duration,
}

impl Default for Budget {
    /// Three executions per alert per hour (§3).
    fn default() -> Self {
        Budget { max: 3, per: Duration::from_secs(3600) }
    }
}

fn check_template(out: &mut Vec<String>, at: &str, text: &str) {
    if let Err(e) = handlebars::Template::compile(text) {
        out.push(format!("{at}: template does not compile: {}", e.reason()));
    }
}

fn check_json_templates(out: &mut Vec<String>, at: &str, v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => check_template(out, at, s),
        serde_json::Value::Array(a) => {
            a.iter().enumerate().for_each(|(i, x)| check_json_templates(out, &format!("{at}[{i}]"), x))
        }
        serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| check_json_templates(out, &format!("{at}.{k}"), x)),
        _ => {}
    }
}

impl Runbook {
    /// Everything that breaks the safety rules; empty when the runbook is sound.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            out.push(format!("id: expected 1-64 lowercase letters, digits or dashes, got {:?}", self.id));
        }
        if !(1..=5).contains(&self.tier) {
            out.push(format!("tier: expected 1 to 5, got {}", self.tier));
        }
        if self.autonomy == Autonomy::Auto && self.tier > crate::autonomy::MAX_AUTO_TIER {
            out.push(format!(
                "autonomy: a tier-{} runbook cannot run by itself; `auto` is for tiers 1-{}",
                self.tier,
                crate::autonomy::MAX_AUTO_TIER
            ));
        }
        check_template(&mut out, "hypothesis", &self.hypothesis);
        for (i, e) in self.matches.evidence.iter().enumerate() {
            let set = [
                e.deploy_within.is_some(),
                e.change_within.is_some(),
                e.pod_state.is_some(),
                e.log_pattern.is_some(),
                e.metric.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if set != 1 {
                out.push(format!(
                    "match.evidence[{i}]: expected exactly one of deploy_within, change_within, pod_state, log_pattern, metric"
                ));
            }
            if let Some(p) = &e.log_pattern
                && let Err(err) = regex::Regex::new(p)
            {
                out.push(format!("match.evidence[{i}].log_pattern: invalid regex: {err}"));
            }
        }
        let mut names = BTreeSet::new();
        for (i, q) in self.context.iter().enumerate() {
            if !names.insert(q.name.as_str()) {
                out.push(format!("context[{i}].name: {:?} is used twice", q.name));
            }
            match (&q.promql, &q.logql) {
                (Some(t), None) | (None, Some(t)) => check_template(&mut out, &format!("context[{i}]"), t),
                _ => out.push(format!("context[{i}]: expected exactly one of promql or logql")),
            }
        }
        for (i, e) in self.matches.evidence.iter().enumerate() {
            if let Some(m) = &e.metric
                && !names.contains(m.query.as_str())
            {
                out.push(format!("match.evidence[{i}].metric.query: no context query named {:?}", m.query));
            }
        }
        match (&self.plan, self.tier) {
            (Some(_), 5) => out.push("plan: a tier-5 runbook is human-led and must not have a plan".into()),
            (None, 1..=4) => out.push(format!("plan: a tier-{} runbook needs a plan (or make it tier 5)", self.tier)),
            _ => {}
        }
        if let Some(plan) = &self.plan {
            self.plan_problems(plan, &mut out);
        }
        if self.approval.min_approvers == 0 {
            out.push("approval.min_approvers: expected at least 1".into());
        }
        if let Some(b) = &self.attempt_budget
            && (b.max == 0 || b.per.is_zero())
        {
            out.push("attempt_budget: expected max >= 1 and a non-zero period".into());
        }
        out
    }

    fn plan_problems(&self, plan: &Plan, out: &mut Vec<String>) {
        let mut ids = BTreeSet::new();
        for (i, step) in plan.steps.iter().enumerate() {
            let at = format!("plan.steps[{i}]");
            if step.id.is_empty() || !ids.insert(step.id.as_str()) {
                out.push(format!("{at}.id: expected a unique, non-empty id"));
            }
            let kind = match step.action.kind() {
                Ok(k) => k,
                Err(e) => {
                    out.push(format!("{at}.action: {e}"));
                    continue;
                }
            };
            if self.tier < kind.min_tier() {
                out.push(format!(
                    "{at}.action: `{}` needs a runbook of tier {} or higher; this one is tier {}",
                    kind.as_str(),
                    kind.min_tier(),
                    self.tier
                ));
            }
            self.action_problems(&step.action, &format!("{at}.action"), out);
            match (kind.undo(), &step.rollback, &step.irreversible) {
                (Undo::Declared, None, None) => out.push(format!(
                    "{at}: `{}` changes the world: give it a `rollback`, or say why it is `irreversible`",
                    kind.as_str()
                )),
                (Undo::Declared, Some(_), Some(_)) => {
                    out.push(format!("{at}: a step with a rollback cannot also be irreversible"))
                }
                (Undo::Derived(how), Some(_), _) | (Undo::Derived(how), _, Some(_)) => out.push(format!(
                    "{at}: `{}` is undone by medic itself ({how}): remove `rollback` / `irreversible`",
                    kind.as_str()
                )),
                (Undo::Needless(why), Some(_), _) | (Undo::Needless(why), _, Some(_)) => {
                    out.push(format!("{at}: `{}` needs no `rollback` or `irreversible` ({why})", kind.as_str()))
                }
                _ => {}
            }
            if let Some(rb) = &step.rollback {
                match rb.kind() {
                    Ok(_) => self.action_problems(rb, &format!("{at}.rollback"), out),
                    Err(e) => out.push(format!("{at}.rollback: {e}")),
                }
            }
            for (name, c) in [("precondition", &step.precondition), ("post_check", &step.post_check)] {
                if let Some(c) = c {
                    self.check_problems(c, &format!("{at}.{name}"), out);
                }
            }
        }
    }

    fn action_problems(&self, a: &Action, at: &str, out: &mut Vec<String>) {
        if let Some(h) = &a.http {
            check_template(out, &format!("{at}.http.url"), &h.url);
            for (k, v) in &h.headers {
                check_template(out, &format!("{at}.http.headers.{k}"), v);
            }
            if let Some(b) = &h.body {
                check_json_templates(out, &format!("{at}.http.body"), b);
            }
            if let Some(s) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
                out.push(format!("{at}.http.expect_status: {s} is not an HTTP status"));
            }
        }
        if let Some(s) = &a.script {
            match s.argv.first() {
                None => out.push(format!("{at}.script.argv: expected the script's file name first")),
                Some(name)
                    if name.is_empty()
                        || name.contains(['/', '\\'])
                        || name.starts_with('.')
                        || name.contains("{{") =>
                {
                    out.push(format!(
                        "{at}.script.argv[0]: expected a plain file name in the scripts directory, got {name:?}"
                    ))
                }
                Some(_) => {}
            }
            for (i, arg) in s.argv.iter().enumerate().skip(1) {
                check_template(out, &format!("{at}.script.argv[{i}]"), arg);
            }
            for (name, value) in &s.env {
                let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    out.push(format!("{at}.script.env: {name:?} is not an environment variable name"));
                }
                check_template(out, &format!("{at}.script.env.{name}"), value);
            }
        }
        if let Some(c) = &a.check {
            self.check_problems(c, &format!("{at}.check"), out);
        }
        if let Some(Ok(k)) = a.kubernetes.as_ref().map(KubeAction::one) {
            let at = format!("{at}.kubernetes");
            let (name, namespace) = match k {
                Kube::RolloutRestart(w) => (&w.name, &w.namespace),
                Kube::RolloutUndo(u) => {
                    if let Some(r) = &u.to_revision {
                        check_template(out, &format!("{at}.rollout_undo.to_revision"), r);
                    }
                    (&u.name, &u.namespace)
                }
                Kube::Scale(s) => {
                    if s.by.is_some() == s.to.is_some() {
                        out.push(format!("{at}.scale: expected exactly one of `by` and `to`"));
                    }
                    if s.min < 0 || s.max < s.min.max(1) {
                        out.push(format!("{at}.scale: expected 0 <= min <= max and max >= 1"));
                    }
                    if let Some(to) = s.to
                        && (to < s.min || to > s.max)
                    {
                        out.push(format!("{at}.scale.to: {to} is outside min {} .. max {}", s.min, s.max));
                    }
                    if s.by == Some(0) {
                        out.push(format!("{at}.scale.by: 0 changes nothing"));
                    }
                    if s.kind == actions::WorkloadKind::DaemonSet {
                        out.push(format!("{at}.scale.kind: a DaemonSet has no replica count"));
                    }
                    (&s.name, &s.namespace)
                }
                Kube::DeletePod(d) => (&d.name, &d.namespace),
            };
            check_template(out, &format!("{at}.name"), name);
            check_template(out, &format!("{at}.namespace"), namespace);
        }
        if let Some(Ok(a)) = a.alertmanager.as_ref().map(SilenceAction::one) {
            let matchers = match a {
                Am::Silence(s) => {
                    check_template(out, &format!("{at}.alertmanager.silence.comment"), &s.comment);
                    if s.duration.is_zero() || s.duration > Duration::from_secs(7 * 86400) {
                        out.push(format!(
                            "{at}.alertmanager.silence.duration: expected more than 0 and at most 7 days"
                        ));
                    }
                    &s.matchers
                }
                Am::ExpireSilence(e) => &e.matchers,
            };
            for (i, m) in matchers.iter().enumerate() {
                check_template(out, &format!("{at}.alertmanager.matchers[{i}]"), m);
            }
        }
    }

    fn check_problems(&self, c: &Check, at: &str, out: &mut Vec<String>) {
        check_template(out, &format!("{at}.query"), &c.query);
        if c.every.is_zero() || c.every > c.within {
            out.push(format!("{at}: expected 0 < every <= within"));
        }
    }

    /// Whether one alert of the incident satisfies every label matcher.
    pub fn matches_labels<'a>(&self, mut alerts: impl Iterator<Item = &'a crate::alert::Labels>) -> bool {
        let matchers: Vec<Matcher> = self.matches.alerts.iter().map(MatcherText::matcher).collect();
        alerts.any(|l| matchers.iter().all(|m| m.matches(l)))
    }
}

/// [`load_dir`], with every problem in one error ("invalid runbooks: - …").
pub fn load(dir: &Path) -> anyhow::Result<Vec<Runbook>> {
    load_dir(dir).map_err(|errors| anyhow::anyhow!("invalid runbooks:\n  - {}", errors.join("\n  - ")))
}

/// Loads every `*.yaml` / `*.yml` file of `dir`, in name order. Errors name the file (and the
/// line, for parse errors); all problems of all files are reported at once.
pub fn load_dir(dir: &Path) -> Result<Vec<Runbook>, Vec<String>> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) => return Err(vec![format!("{}: cannot read the runbooks directory: {e}", dir.display())]),
    };
    files.sort();
    let mut runbooks = Vec::new();
    let mut errors = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for path in files {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        let parsed = serde_norway::from_str::<Runbook>(&text).or_else(|e| {
            // Every unknown key of the file in one run; the rest is checked when it parses.
            let (problems, rb) = crate::strict::unknown_keys::<Runbook>(&text, e.to_string());
            errors.extend(problems.iter().map(|p| format!("{name}: {p}")));
            rb.ok_or(())
        });
        match parsed {
            Err(()) => {}
            Ok(rb) => {
                errors.extend(rb.problems().into_iter().map(|p| format!("{name}: {p}")));
                if let Some(first) = seen.insert(rb.id.clone(), name.clone()) {
                    errors.push(format!("{name}: id {:?} is already used by {first}", rb.id));
                }
                runbooks.push(rb);
            }
        }
    }
    if errors.is_empty() { Ok(runbooks) } else { Err(errors) }
}

/// The JSON Schema of a runbook file, as published in `runbooks/schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Runbook);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Runbook, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
id: restart-it
title: Restart it
tier: 2
match:
  alerts: ['alertname="Crash"']
hypothesis: "{{service}} is stuck"
plan:
  steps:
    - id: restart
      action: {http: {url: "http://deploy/{{service}}/restart"}}
      irreversible: a restart cannot be undone, and needs no undoing
"#;

    #[test]
    fn a_sound_runbook_has_no_problems() {
        let rb = parse(GOOD).unwrap();
        assert_eq!(rb.problems(), Vec::<String>::new());
        assert_eq!(rb.plan.unwrap().steps[0].action.kind(), Ok(ActionKind::Http));
    }

    #[test]
    fn safety_rules_are_enforced() {
        let cases = [
            (
                GOOD.replace("      irreversible: a restart cannot be undone, and needs no undoing\n", ""),
                "give it a `rollback`",
            ),
            (GOOD.replace("tier: 2", "tier: 1"), "`http` needs a runbook of tier 2 or higher"),
            (GOOD.replace("tier: 2", "tier: 5"), "tier-5 runbook is human-led"),
            (GOOD.replace("{{service}} is stuck", "{{#if}} broken"), "hypothesis: template does not compile"),
            (GOOD.replace("id: restart-it", "id: Restart It"), "id: expected 1-64 lowercase"),
            (
                GOOD.replace(
                    "action: {http: {url: \"http://deploy/{{service}}/restart\"}}",
                    "action: {wait: 10s, check: {query: q, condition: '< 1'}}",
                ),
                "expected exactly one action, got wait and check",
            ),
        ];
        for (yaml, needle) in cases {
            let problems = parse(&yaml).unwrap().problems();
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle:?} not in {problems:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse(&GOOD.replace("tier: 2", "tier: 2\nteir: 3")).unwrap_err();
        assert!(e.contains("unknown field `teir`") && e.contains("line 5"), "{e}");
        let e = parse(&GOOD.replace(r#"'alertname="Crash"'"#, r#"'alertname>"Crash"'"#)).unwrap_err();
        assert!(e.contains("expected =, !=, =~ or !~"), "{e}");
    }

    #[test]
    fn conditions() {
        let c = Condition::parse("<= 0.5").unwrap();
        assert!(c.holds(0.5) && !c.holds(0.6));
        assert_eq!(c.to_string(), "<= 0.5");
        assert!(Condition::parse("about 3").unwrap_err().contains("expected a comparison"));
        assert!(Condition::parse("< x").unwrap_err().contains("expected a number"));
    }

    #[test]
    fn matches_any_alert_with_all_matchers() {
        let rb = parse(GOOD).unwrap();
        let a: crate::alert::Labels = [("alertname".to_string(), "Crash".to_string())].into();
        let b: crate::alert::Labels = [("alertname".to_string(), "Other".to_string())].into();
        assert!(rb.matches_labels([&b, &a].into_iter()));
        assert!(!rb.matches_labels([&b].into_iter()));
    }
}
