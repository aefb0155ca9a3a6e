//! Plans: a runbook's plan with the incident's values filled in. Templates render in strict
//! mode (a value the incident lacks is an error naming it, never an empty string in a URL). A
//! plan is immutable once proposed: its content hash covers everything an approver sees, so
//! anything that changes makes a new plan that needs its own approval.

use crate::render;
use crate::runbook::actions::{Am, Kube, KubeAction, WorkloadKind};
use crate::runbook::{Action, Autonomy, Check, HttpMethod, Runbook};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedPlan {
    pub runbook: String,
    pub tier: u8,
    pub incident_id: i64,
    pub steps: Vec<PlanStep>,
    pub expected_impact: String,
    pub approval: ApprovalRule,
    pub autonomy: Autonomy,
    /// Actions are logged, not run (the runbook's `dry_run`).
    #[serde(default)]
    pub dry_run: bool,
    /// For a runbook whose ceiling is `auto`: whether this plan runs by itself, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<crate::autonomy::AutoNote>,
    /// SHA-256 of everything above (hex).
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRule {
    pub groups: Vec<String>,
    pub min_approvers: u32,
    pub self_approval: bool,
    pub expires_after_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub id: String,
    pub action: PlanAction,
    pub precondition: Option<PlanCheck>,
    pub post_check: Option<PlanCheck>,
    pub rollback: Option<PlanAction>,
    pub irreversible: Option<String>,
    /// What the step will touch, read from the cluster when the plan was proposed, e.g.
    /// "checkout (Deployment, namespace shop): 4 → 5 replicas".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touches: Option<String>,
    /// Why the executor would refuse the step, as read when the plan was proposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PlanAction {
    Http {
        method: HttpMethod,
        url: String,
        headers: BTreeMap<String, String>,
        body: Option<Value>,
        expect_status: Vec<u16>,
        timeout_secs: u64,
    },
    Script {
        argv: Vec<String>,
        timeout_secs: u64,
        /// The environment the runbook names (rendered); nothing of medic's own.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    Wait {
        secs: u64,
    },
    Check(PlanCheck),
    Kubernetes(KubeOp),
    Alertmanager(SilenceOp),
}

/// One workload in one namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Target {
    /// kubectl's way: `deployment/checkout -n shop`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} -n {}", self.kind.lower(), self.name, self.namespace)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeOp {
    pub target: Target,
    pub verb: KubeVerb,
    /// The workload as read when the plan was proposed; the step stops if its spec changed
    /// since. Absent: not read (the executor acts on what it reads then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Seen>,
    /// A rollback medic derived: it puts back what the step replaced, so the per-step scale
    /// limit and the "unchanged since proposed" check do not apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum KubeVerb {
    RolloutRestart,
    RolloutUndo { to_revision: Option<i64> },
    Scale { by: Option<i32>, to: Option<i32>, min: i32, max: i32 },
    DeletePod { states: Vec<String> },
}

/// A workload as read when the plan was proposed, and what the step would make of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// `metadata.generation`: bumped by every change of the spec.
    pub generation: i64,
    /// A hash of the pod template: what a restart, an undo or a pod deletion was approved
    /// against (a scale step is checked against `replicas` instead, so an autoscaler's change
    /// of the count does not stop a restart).
    #[serde(default)]
    pub template: String,
    pub replicas: Option<i32>,
    /// The Deployment's current revision.
    pub revision: Option<i64>,
    /// The count a scale step sets.
    pub to_replicas: Option<i32>,
    /// The revision an undo puts back.
    pub to_revision: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SilenceOp {
    Silence {
        matchers: Vec<String>,
        duration_secs: u64,
        comment: String,
    },
    /// The active silences medic made for `incident_id` with exactly these matchers.
    ExpireSilence {
        matchers: Vec<String>,
        incident_id: i64,
    },
    /// One silence, by id (the rollback of a silence step).
    Expire {
        id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanCheck {
    /// The runbook context query it uses, if any.
    pub query_name: Option<String>,
    pub promql: String,
    pub condition: String,
    pub within_secs: u64,
    pub every_secs: u64,
}

impl PlanAction {
    /// One line for people: `POST http://…/rollback`, `script cleanup-disk --path /var`, …
    pub fn summary(&self) -> String {
        match self {
            PlanAction::Http { method, url, .. } => {
                format!("{} {url}", serde_json::to_value(method).unwrap().as_str().unwrap_or(""))
            }
            PlanAction::Script { argv, .. } => format!("script {}", argv.join(" ")),
            PlanAction::Wait { secs } => format!("wait {secs}s"),
            PlanAction::Check(c) => format!("check {}", c.summary()),
            PlanAction::Kubernetes(k) => k.summary(),
            PlanAction::Alertmanager(a) => match a {
                SilenceOp::Silence { matchers, duration_secs, .. } => {
                    format!(
                        "silence {} for {}",
                        matchers.join(", "),
                        humantime::format_duration(std::time::Duration::from_secs(*duration_secs))
                    )
                }
                SilenceOp::ExpireSilence { matchers, .. } => {
                    format!("expire medic's silences of {} for this incident", matchers.join(", "))
                }
                SilenceOp::Expire { id } => format!("expire silence {id}"),
            },
        }
    }
}

impl PlanStep {
    /// How the step is undone, for people: the runbook's rollback, why it cannot be, or the
    /// undo medic derives for the kind.
    pub fn rollback_text(&self) -> Option<String> {
        if let Some(r) = &self.rollback {
            return Some(r.summary());
        }
        if let Some(w) = &self.irreversible {
            return Some(format!("none (irreversible: {w})"));
        }
        match &self.action {
            PlanAction::Kubernetes(k) => Some(match (&k.verb, &k.seen) {
                (KubeVerb::Scale { .. }, Some(Seen { replicas: Some(n), .. })) => format!("scale back to {n} replicas"),
                (KubeVerb::Scale { .. }, _) => "scale back to the previous count".into(),
                (KubeVerb::RolloutUndo { .. }, Some(Seen { revision: Some(r), .. })) => {
                    format!("rollout undo back to revision {r}")
                }
                (KubeVerb::RolloutUndo { .. }, _) => "rollout undo back to the revision it replaced".into(),
                (KubeVerb::RolloutRestart, _) => "none needed (a restart leaves the same spec running)".into(),
                (KubeVerb::DeletePod { .. }, _) => "none needed (the controller replaces the pod)".into(),
            }),
            PlanAction::Alertmanager(SilenceOp::Silence { .. }) => Some("expire the silence".into()),
            _ => None,
        }
    }
}

impl KubeOp {
    /// kubectl's words: `rollout undo deployment/checkout -n shop to revision 41`.
    pub fn summary(&self) -> String {
        let t = &self.target;
        let seen = self.seen.as_ref();
        match &self.verb {
            KubeVerb::RolloutRestart => format!("rollout restart {t}"),
            KubeVerb::RolloutUndo { to_revision } => match to_revision.or(seen.and_then(|s| s.to_revision)) {
                Some(r) => format!("rollout undo {t} to revision {r}"),
                None => format!("rollout undo {t} to the previous revision"),
            },
            KubeVerb::Scale { by, to, min, max } => match (seen.and_then(|s| s.replicas.zip(s.to_replicas)), by, to) {
                (Some((from, to)), _, _) => format!("scale {t} from {from} to {to} replicas"),
                (None, _, Some(to)) => format!("scale {t} to {to} replicas"),
                (None, Some(by), None) => format!("scale {t} by {by:+} replicas (min {min}, max {max})"),
                (None, None, None) => format!("scale {t}"),
            },
            KubeVerb::DeletePod { states } => {
                format!("delete one pod of {t} in {}", states.join(" or "))
            }
        }
    }
}

impl PlanCheck {
    pub fn summary(&self) -> String {
        format!(
            "{} {} within {}s",
            self.query_name.as_deref().unwrap_or(&self.promql),
            self.condition,
            self.within_secs
        )
    }
}

/// Renders each template for where its text goes (see [`crate::render`]): queries, URLs and
/// arguments escape or refuse the incident's values; errors name the template.
struct Renderer<'a> {
    ctx: &'a Value,
}

impl Renderer<'_> {
    fn text(&self, at: &str, template: &str) -> Result<String, String> {
        render::text(template, self.ctx, true).map_err(|e| format!("{at}: {e}"))
    }

    fn query(&self, at: &str, template: &str) -> Result<String, String> {
        render::query(template, self.ctx, true).map_err(|e| format!("{at}: {e}"))
    }

    fn json(&self, at: &str, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(self.text(at, s)?),
            Value::Array(a) => Value::Array(
                a.iter().enumerate().map(|(i, x)| self.json(&format!("{at}[{i}]"), x)).collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), self.json(&format!("{at}.{k}"), x)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn check(&self, rb: &Runbook, at: &str, c: &Check) -> Result<PlanCheck, String> {
        let named = rb.context.iter().find(|q| q.name == c.query);
        let promql = match named.and_then(|q| q.promql.as_ref()) {
            Some(t) => self.query(&format!("{at}.query ({})", c.query), t)?,
            None => self.query(&format!("{at}.query"), &c.query)?,
        };
        Ok(PlanCheck {
            query_name: named.map(|q| q.name.clone()),
            promql,
            condition: c.condition.to_string(),
            within_secs: c.within.as_secs(),
            every_secs: c.every.as_secs(),
        })
    }

    fn action(&self, rb: &Runbook, at: &str, a: &Action) -> Result<PlanAction, String> {
        if let Some(h) = &a.http {
            let headers = h
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.text(&format!("{at}.headers.{k}"), v)?)))
                .collect::<Result<_, String>>()?;
            return Ok(PlanAction::Http {
                method: h.method,
                url: render::url(&h.url, self.ctx).map_err(|e| format!("{at}.url: {e}"))?,
                headers,
                body: h.body.as_ref().map(|b| self.json(&format!("{at}.body"), b)).transpose()?,
                expect_status: h.expect_status.clone(),
                timeout_secs: h.timeout.as_secs(),
            });
        }
        if let Some(s) = &a.script {
            let argv = s
                .argv
                .iter()
                .enumerate()
                .map(|(i, x)| render::arg(x, self.ctx).map_err(|e| format!("{at}.argv[{i}]: {e}")))
                .collect::<Result<_, _>>()?;
            let env = s
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), render::arg(v, self.ctx).map_err(|e| format!("{at}.env.{k}: {e}"))?)))
                .collect::<Result<_, String>>()?;
            return Ok(PlanAction::Script { argv, timeout_secs: s.timeout.as_secs(), env });
        }
        if let Some(w) = a.wait {
            return Ok(PlanAction::Wait { secs: w.as_secs() });
        }
        if let Some(c) = &a.check {
            return Ok(PlanAction::Check(self.check(rb, &format!("{at}.check"), c)?));
        }
        if let Some(k) = &a.kubernetes {
            return self.kubernetes(&format!("{at}.kubernetes"), k).map(PlanAction::Kubernetes);
        }
        if let Some(s) = &a.alertmanager {
            let at = format!("{at}.alertmanager");
            let s = s.one().map_err(|e| format!("{at}: {e}"))?;
            let matchers = |ms: &[String]| {
                ms.iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let at = format!("{at}.matchers[{i}]");
                        // Values are escaped as PromQL strings are, which is how matchers quote.
                        let text = self.query(&at, m)?;
                        crate::runbook::matcher::Matcher::parse(&text).map_err(|e| format!("{at}: {e}"))?;
                        Ok(text)
                    })
                    .collect::<Result<Vec<_>, String>>()
            };
            let incident = self.ctx["incident"]["id"].as_i64().unwrap_or_default();
            return Ok(PlanAction::Alertmanager(match s {
                Am::Silence(x) => SilenceOp::Silence {
                    matchers: matchers(&x.matchers)?,
                    duration_secs: x.duration.as_secs(),
                    comment: format!(
                        "medic incident #{incident}: {}",
                        self.text(&format!("{at}.comment"), &x.comment)?
                    )
                    .trim_end_matches([' ', ':'])
                    .to_string(),
                },
                Am::ExpireSilence(x) => {
                    SilenceOp::ExpireSilence { matchers: matchers(&x.matchers)?, incident_id: incident }
                }
            }));
        }
        Err(format!("{at}: no action"))
    }

    /// A Kubernetes object name (RFC 1123 subdomain; a namespace is a label): lowercase
    /// letters, digits, `-` and `.`, so an incident's value cannot widen the request.
    fn object_name(&self, at: &str, template: &str, label: bool) -> Result<String, String> {
        let v = self.text(at, template)?;
        let max = if label { 63 } else { 253 };
        let ok = !v.is_empty()
            && v.len() <= max
            && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (c == '.' && !label))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric());
        if ok {
            Ok(v)
        } else {
            Err(format!("{at}: {v:?} is not a Kubernetes {}", if label { "namespace" } else { "name" }))
        }
    }

    fn kubernetes(&self, at: &str, k: &KubeAction) -> Result<KubeOp, String> {
        let target = |kind, name: &str, namespace: &str| -> Result<Target, String> {
            Ok(Target {
                kind,
                name: self.object_name(&format!("{at}.name"), name, false)?,
                namespace: self.object_name(&format!("{at}.namespace"), namespace, true)?,
            })
        };
        let (target, verb) = match k.one().map_err(|e| format!("{at}: {e}"))? {
            Kube::RolloutRestart(w) => (target(w.kind, &w.name, &w.namespace)?, KubeVerb::RolloutRestart),
            Kube::RolloutUndo(u) => {
                let to_revision = match &u.to_revision {
                    None => None,
                    Some(t) => {
                        let v = self.text(&format!("{at}.to_revision"), t)?;
                        Some(
                            v.trim()
                                .parse::<i64>()
                                .ok()
                                .filter(|r| *r > 0)
                                .ok_or_else(|| format!("{at}.to_revision: {v:?} is not a revision number"))?,
                        )
                    }
                };
                (target(WorkloadKind::Deployment, &u.name, &u.namespace)?, KubeVerb::RolloutUndo { to_revision })
            }
            Kube::Scale(s) => {
                (target(s.kind, &s.name, &s.namespace)?, KubeVerb::Scale { by: s.by, to: s.to, min: s.min, max: s.max })
            }
            Kube::DeletePod(d) => {
                (target(d.kind, &d.name, &d.namespace)?, KubeVerb::DeletePod { states: d.state.clone() })
            }
        };
        Ok(KubeOp { target, verb, seen: None, restore: false })
    }
}

/// A handlebars registry for plain text: no HTML escaping (chat adapters escape for their
/// platform), strict when asked.
pub fn handlebars(strict: bool) -> handlebars::Handlebars<'static> {
    let mut hb = handlebars::Handlebars::new();
    hb.register_escape_fn(handlebars::no_escape);
    hb.set_strict_mode(strict);
    hb
}

/// Fills `rb`'s plan with the incident's values (`ctx`, see `diagnosis::template_context`).
/// Errors name the template that needs a value the incident does not have.
pub fn build(rb: &Runbook, ctx: &Value, incident_id: i64) -> Result<ProposedPlan, String> {
    let Some(plan) = &rb.plan else {
        return Err(format!("runbook {} is tier {} and has no plan: people lead", rb.id, rb.tier));
    };
    let r = Renderer { ctx };
    let mut steps = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let at = format!("plan.steps[{i}] ({})", s.id);
        steps.push(PlanStep {
            id: s.id.clone(),
            action: r.action(rb, &format!("{at}.action"), &s.action)?,
            precondition: s.precondition.as_ref().map(|c| r.check(rb, &format!("{at}.precondition"), c)).transpose()?,
            post_check: s.post_check.as_ref().map(|c| r.check(rb, &format!("{at}.post_check"), c)).transpose()?,
            rollback: s.rollback.as_ref().map(|a| r.action(rb, &format!("{at}.rollback"), a)).transpose()?,
            irreversible: s.irreversible.clone(),
            touches: None,
            refused: None,
        });
    }
    let mut p = ProposedPlan {
        runbook: rb.id.clone(),
        tier: rb.tier,
        incident_id,
        steps,
        expected_impact: r.text("plan.expected_impact", &plan.expected_impact)?.trim().to_string(),
        approval: ApprovalRule {
            groups: rb.approval.groups.clone(),
            min_approvers: rb.approval.min_approvers,
            self_approval: rb.approval.self_approval,
            expires_after_secs: rb.approval.expires_after.as_secs(),
        },
        autonomy: rb.autonomy,
        dry_run: rb.dry_run,
        auto: None,
        hash: String::new(),
    };
    p.hash = p.content_hash();
    Ok(p)
}

impl ProposedPlan {
    /// SHA-256 of the plan's canonical JSON without its hash.
    pub fn content_hash(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a plan serialises");
        v.as_object_mut().expect("an object").remove("hash");
        hex::encode(Sha256::digest(v.to_string().as_bytes()))
    }

    /// Whether the plan is exactly what was proposed.
    pub fn is_intact(&self) -> bool {
        self.hash == self.content_hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runbook() -> Runbook {
        let yaml = r#"
id: rb
title: t
tier: 3
match: {alerts: ['alertname="A"']}
context:
  - {name: errors, promql: 'rate(errors{service="{{service}}"}[5m])'}
hypothesis: h
vars: {api: "http://deploy"}
plan:
  expected_impact: "{{service}} restarts"
  steps:
    - id: roll-back
      action: {http: {url: "{{vars.api}}/{{service}}/rollback?a=1&b=2", body: {v: "{{change.version}}", n: 3}}}
      rollback: {http: {url: "{{vars.api}}/{{service}}/rollout"}}
      post_check: {query: errors, condition: "< 1"}
"#;
        serde_norway::from_str(yaml).unwrap()
    }

    fn ctx() -> Value {
        json!({"service": "checkout", "change": {"version": "v2"}, "vars": {"api": "http://deploy"}})
    }

    #[test]
    fn fills_values_and_hashes_the_content() {
        let p = build(&runbook(), &ctx(), 7).unwrap();
        let PlanAction::Http { url, body, .. } = &p.steps[0].action else { panic!() };
        assert_eq!(url, "http://deploy/checkout/rollback?a=1&b=2", "no HTML escaping");
        assert_eq!(body.as_ref().unwrap(), &json!({"v": "v2", "n": 3}));
        let check = p.steps[0].post_check.as_ref().unwrap();
        assert_eq!(check.promql, r#"rate(errors{service="checkout"}[5m])"#);
        assert_eq!(check.query_name.as_deref(), Some("errors"));
        assert!(p.is_intact());
        assert_eq!(p.hash.len(), 64);

        let same = build(&runbook(), &ctx(), 7).unwrap();
        assert_eq!(p.hash, same.hash, "deterministic");
        let mut other = ctx();
        other["change"]["version"] = json!("v3");
        assert_ne!(build(&runbook(), &other, 7).unwrap().hash, p.hash, "a changed value is a new plan");
        let mut tampered = p.clone();
        tampered.steps[0].irreversible = Some("x".into());
        assert!(!tampered.is_intact());
    }

    #[test]
    fn a_missing_value_names_the_template() {
        let e = build(&runbook(), &json!({"service": "checkout", "vars": {"api": "http://x"}}), 7).unwrap_err();
        assert!(e.starts_with("plan.steps[0] (roll-back).action.body.v:"), "{e}");
        assert!(e.contains("change.version"), "{e}");
    }

    #[test]
    fn hostile_values_cannot_rewrite_the_check_or_the_url() {
        let mut ctx = ctx();
        ctx["service"] = json!(r#"../../admin/drop-all?x="} * 0 or vector(0) #"#);
        let p = build(&runbook(), &ctx, 7).unwrap();
        let PlanAction::Http { url, .. } = &p.steps[0].action else { panic!() };
        assert_eq!(
            url,
            "http://deploy/..%2F..%2Fadmin%2Fdrop-all%3Fx%3D%22%7D%20%2A%200%20or%20vector%280%29%20%23/rollback?a=1&b=2"
        );
        assert!(p.steps[0].action.summary().ends_with(url.as_str()), "approval shows the URL called");
        let check = p.steps[0].post_check.as_ref().unwrap();
        assert_eq!(check.promql, r#"rate(errors{service="../../admin/drop-all?x=\"} * 0 or vector(0) #"}[5m])"#);
        ctx["service"] = json!("..");
        let e = build(&runbook(), &ctx, 7).unwrap_err();
        assert!(e.starts_with("plan.steps[0] (roll-back).action.url:") && e.contains("dot segment"), "{e}");
    }
}
