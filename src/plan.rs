//! Plans: a runbook's plan with the incident's values filled in. Templates render in strict
//! mode (a value the incident lacks is an error naming it, never an empty string in a URL). A
//! plan is immutable once proposed: its content hash covers everything an approver sees, so
//! anything that changes makes a new plan that needs its own approval.

use crate::render;
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
    },
    Wait {
        secs: u64,
    },
    Check(PlanCheck),
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
            return Ok(PlanAction::Script { argv, timeout_secs: s.timeout.as_secs() });
        }
        if let Some(w) = a.wait {
            return Ok(PlanAction::Wait { secs: w.as_secs() });
        }
        if let Some(c) = &a.check {
            return Ok(PlanAction::Check(self.check(rb, &format!("{at}.check"), c)?));
        }
        Err(format!("{at}: no action"))
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
