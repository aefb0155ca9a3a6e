//! Alertmanager actions through its v2 API: `silence` (`POST /api/v2/silences`; undone by
//! expiring it) and `expire_silence` (`DELETE /api/v2/silence/{id}` for each active silence medic
//! made for the incident with exactly those matchers). Alertmanager has no dry run: in dry-run
//! mode the request is only described.

use super::Acted;
use crate::plan::{PlanAction, SilenceOp};
use crate::runbook::matcher::{Matcher, Op};
use crate::time::Millis;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The `executor.alertmanager` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
}

pub struct Silences {
    http: reqwest::Client,
    base: String,
}

/// Who medic's silences are created by (and how medic finds its own again).
const CREATED_BY: &str = "medic";

/// The v2 API's matcher object.
fn matcher(text: &str) -> Result<Value, String> {
    let m = Matcher::parse(text)?;
    Ok(json!({
        "name": m.name,
        "value": m.value,
        "isRegex": matches!(m.op, Op::Re | Op::NotRe),
        "isEqual": matches!(m.op, Op::Eq | Op::Re),
    }))
}

fn matchers(texts: &[String]) -> Result<Vec<Value>, String> {
    let mut v = texts.iter().map(|t| matcher(t)).collect::<Result<Vec<_>, _>>()?;
    v.sort_by_key(|m| m.to_string());
    Ok(v)
}

impl Silences {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<Silences, String> {
        let base = cfg.url.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).map_err(|e| format!("executor.alertmanager.url {base:?}: {e}"))?;
        let http = crate::telemetry::http_client_builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Silences { http, base })
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let resp = req.send().await.map_err(|e| format!("{what}: Alertmanager unreachable: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "{what}: Alertmanager answered HTTP {}: {}",
                status.as_u16(),
                crate::redact::redact_cut(text.trim(), 500)
            ));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn act(&self, op: &SilenceOp, dry_run: bool, now: Millis) -> Result<Acted, String> {
        let summary = PlanAction::Alertmanager(op.clone()).summary();
        if dry_run {
            return Ok(Acted::said(format!("dry run: would {summary} (Alertmanager has no dry run)")));
        }
        match op {
            SilenceOp::Silence { matchers: texts, duration_secs, comment } => {
                let ends = now + (*duration_secs as Millis) * 1000;
                let body = json!({
                    "matchers": matchers(texts)?,
                    "startsAt": crate::time::rfc3339(now),
                    "endsAt": crate::time::rfc3339(ends),
                    "createdBy": CREATED_BY,
                    "comment": comment,
                });
                let v =
                    self.send(self.http.post(format!("{}/api/v2/silences", self.base)).json(&body), &summary).await?;
                let id = v["silenceID"].as_str().ok_or_else(|| format!("{summary}: no silenceID in the answer"))?;
                Ok(Acted {
                    output: format!("silence {id} until {}", crate::time::rfc3339(ends)),
                    undo: Some(PlanAction::Alertmanager(SilenceOp::Expire { id: id.to_string() })),
                    failed: None,
                })
            }
            SilenceOp::ExpireSilence { matchers: texts, incident_id } => {
                let want = matchers(texts)?;
                let prefix = format!("medic incident #{incident_id}");
                let all = self.send(self.http.get(format!("{}/api/v2/silences", self.base)), &summary).await?;
                let mut expired = Vec::new();
                for s in all.as_array().into_iter().flatten() {
                    let mut got: Vec<Value> = s["matchers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| json!({"name": m["name"], "value": m["value"], "isRegex": m["isRegex"], "isEqual": m["isEqual"].as_bool().unwrap_or(true)}))
                        .collect();
                    got.sort_by_key(|m| m.to_string());
                    let comment = s["comment"].as_str().unwrap_or("");
                    let ours = s["createdBy"] == CREATED_BY
                        && (comment == prefix || comment.starts_with(&format!("{prefix}:")));
                    if s["status"]["state"] != "expired" && ours && got == want {
                        let id = s["id"].as_str().unwrap_or_default();
                        self.expire(id, &summary).await?;
                        expired.push(id.to_string());
                    }
                }
                Ok(Acted::said(match expired.len() {
                    0 => "no active silence of medic's for this incident matched; nothing to expire".into(),
                    _ => format!("expired {}", expired.join(", ")),
                }))
            }
            SilenceOp::Expire { id } => {
                self.expire(id, &summary).await?;
                Ok(Acted::said(format!("expired silence {id}")))
            }
        }
    }

    async fn expire(&self, id: &str, what: &str) -> Result<(), String> {
        let ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(format!("{what}: {id:?} is not a silence id"));
        }
        self.send(self.http.delete(format!("{}/api/v2/silence/{id}", self.base)), what).await.map(|_| ())
    }
}
