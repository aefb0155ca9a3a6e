//! Kubernetes actions: `rollout_restart`, `rollout_undo`, `scale` and `delete_pod`, through the
//! API server's own API with the write Role of `deploy/kubernetes/write-namespace.yaml`.
//!
//! Every step passes the same gates before it changes anything:
//! 1. the namespace is on `executor.kubernetes.namespaces`;
//! 2. the workload exists and is what the plan was proposed against: the same pod template (a
//!    restart, an undo, a pod deletion) or the same replica count (a scale step); a person who
//!    changed it since stops the step;
//! 3. the step's own limits (paused Deployment, revision, min/max and per-step scale, the last
//!    ready pod, scale to zero only in allowed namespaces);
//! 4. a server-side dry run (`dryRun=All`) of the exact request succeeds.
//!
//! Writes do not carry the `resourceVersion` they read (a busy Deployment's status updates
//! would fail them where kubectl succeeds): each JSON patch tests what it was computed from —
//! the generation for a restart or an undo, the replica count for a scale — so only a spec
//! change between medic's read and its write fails it (a 422 on the `test`, or a 409); it is
//! retried once from a fresh read, which passes every gate again and refuses the step with the
//! reason when the spec changed. Patches name `fieldManager=medic`, requests `medic/VERSION`.
//! A rollout is waited for as `kubectl rollout status` does: conditions count only once the
//! controller has observed the new generation. Pod templates stay raw JSON end to end. [`Cluster::survey`] runs gates 1–4 when a plan is proposed, so the approver sees
//! what the step will touch ("checkout (Deployment, namespace shop): 4 → 5 replicas") or why it
//! would be refused.

use super::{Acted, Sleep};
use crate::plan::{KubeOp, KubeVerb, PlanAction, Seen, Target};
use crate::runbook::actions::WorkloadKind;
use crate::time::Clock;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The `executor.kubernetes` section: where and how far medic may change the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Namespaces medic may change; a step elsewhere is refused.
    pub namespaces: Vec<String>,
    /// The most a scale step may add, in percent of the current count (at least one replica).
    #[serde(default = "quarter")]
    pub max_scale_step_percent: u32,
    /// Namespaces where a workload may be scaled to zero (and only by a runbook with `min: 0`).
    #[serde(default)]
    pub scale_to_zero_namespaces: Vec<String>,
    /// How long a restart or undo may take to roll out before the step fails.
    #[serde(default = "ten_minutes", with = "humantime_serde")]
    pub rollout_timeout: Duration,
    /// The cluster: as `context.kubernetes` (a kubeconfig and its context, or an API URL
    /// without credentials); absent: in-cluster config.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespaces: Vec::new(),
            max_scale_step_percent: quarter(),
            scale_to_zero_namespaces: Vec::new(),
            rollout_timeout: ten_minutes(),
            kubeconfig: None,
            context: None,
            url: None,
        }
    }
}

fn quarter() -> u32 {
    25
}
fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

pub struct Cluster {
    client: kube::Client,
    cfg: Config,
    /// Each API call's bound; a step's survey gets twice this.
    timeout: Duration,
}

const REVISION: &str = "deployment.kubernetes.io/revision";

/// A workload as read.
struct Workload {
    obj: DynamicObject,
    generation: i64,
    /// A hash of `spec.template`.
    template: String,
    replicas: Option<i32>,
    revision: Option<i64>,
}

/// What a step will send.
enum Request {
    Patch(Patch<Value>),
    Scale(Patch<Value>),
    DeletePod { name: String, uid: String },
}

/// A step worked out against the workload as read: the request, and what it touches.
struct Prepared {
    request: Request,
    touches: String,
    seen: Seen,
    /// What undoes it, once it has run.
    undo: Option<PlanAction>,
    /// What it did, in the past tense.
    done: String,
    /// Wait for the rollout to complete afterwards.
    rolls_out: bool,
}

fn resource(kind: WorkloadKind) -> ApiResource {
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
    }
}

/// `checkout (Deployment, namespace shop)`
fn who(t: &Target) -> String {
    format!("{} ({}, namespace {})", t.name, t.kind.as_str(), t.namespace)
}

/// An API error for people: a 403 names the verb and resource medic lacks.
fn api_error(e: kube::Error, verb: &str, resource: &str, t: &Target) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 409 => Error::Conflict(s.message),
        // A JSON patch's `test` failed: what the write was computed from changed meanwhile.
        kube::Error::Api(s) if s.code == 422 && s.message.contains("test") && s.message.contains("fail") => {
            Error::Conflict(s.message)
        }
        kube::Error::Api(s) if s.code == 403 => Error::Refused(format!(
            "forbidden: medic may not {verb} {resource} in namespace {} (grant it in its Role, see \
             deploy/kubernetes/write-namespace.yaml): {}",
            t.namespace, s.message
        )),
        kube::Error::Api(s) if s.code == 404 => {
            Error::Refused(format!("{resource} {}/{}: not found ({})", t.namespace, t.name, s.message))
        }
        kube::Error::Api(s) if s.code == 422 => {
            Error::Refused(format!("the API server rejected the {verb} of {resource} as invalid: {}", s.message))
        }
        kube::Error::Api(s) if s.code >= 500 || s.code == 429 => {
            Error::Unavailable(format!("the {verb} of {resource} got HTTP {}: {}", s.code, s.message))
        }
        kube::Error::Api(s) => {
            Error::Refused(format!("{verb} {resource}: {}", crate::context::kubernetes::err(kube::Error::Api(s))))
        }
        other => Error::Unavailable(format!("the {verb} of {resource}: {}", crate::context::kubernetes::err(other))),
    }
}

enum Error {
    /// The object changed between medic's read and its write (409).
    Conflict(String),
    Refused(String),
    /// The API server did not answer, or answered that it cannot now (5xx, 429, a timeout).
    Unavailable(String),
}

/// How a survey that could not read the cluster starts: `executor::survey` stops asking.
pub const UNREADABLE: &str = "could not read the cluster: ";

impl Error {
    fn text(self) -> String {
        match self {
            Error::Conflict(m) => format!("conflict: the object changed while medic acted, twice: {m}"),
            Error::Refused(m) => m,
            Error::Unavailable(m) => format!("the Kubernetes API server did not answer: {m}"),
        }
    }
}

fn refused<T>(s: String) -> Result<T, Error> {
    Err(Error::Refused(s))
}

impl Cluster {
    pub async fn connect(cfg: &Config, timeout: Duration) -> Result<Cluster, String> {
        let client = crate::context::kubernetes::client(
            cfg.url.as_deref(),
            cfg.kubeconfig.as_deref(),
            cfg.context.as_deref(),
            timeout,
        )
        .await?;
        Ok(Cluster { client, cfg: cfg.clone(), timeout })
    }

    fn api(&self, t: &Target) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &t.namespace, &resource(t.kind))
    }

    async fn read(&self, t: &Target) -> Result<Workload, Error> {
        let obj = self.api(t).get(&t.name).await.map_err(|e| api_error(e, "get", t.kind.plural(), t))?;
        let revision = obj.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok());
        Ok(Workload {
            generation: obj.metadata.generation.unwrap_or(0),
            template: {
                use sha2::Digest;
                hex::encode(&sha2::Sha256::digest(obj.data["spec"]["template"].to_string().as_bytes())[..8])
            },
            replicas: obj.data["spec"]["replicas"].as_i64().map(|r| r as i32),
            revision,
            obj,
        })
    }

    /// What the step would touch now, and what it was read as; or why it would be refused.
    /// Bounded: a cluster that does not answer within twice the call timeout is a refusal
    /// starting with [`UNREADABLE`], never a stalled investigation.
    pub async fn survey(&self, op: &KubeOp, clock: &dyn Clock) -> Result<(String, Seen), String> {
        self.allowed(&op.target).map_err(Error::text)?;
        let read = async {
            let w = self.read(&op.target).await?;
            let p = self.prepare(op, &w, clock).await?;
            self.send(&op.target, &p.request, true).await?;
            Ok((p.touches, p.seen))
        };
        match tokio::time::timeout(self.timeout * 2, read).await {
            Ok(Ok(surveyed)) => Ok(surveyed),
            Ok(Err(Error::Unavailable(m))) => Err(format!("{UNREADABLE}{m}")),
            Ok(Err(e)) => Err(e.text()),
            Err(_) => Err(format!("{UNREADABLE}no answer within {}", humantime::format_duration(self.timeout * 2))),
        }
    }

    /// Gate 1: only an allowed namespace, checked before anything is read there.
    fn allowed(&self, t: &Target) -> Result<(), Error> {
        if self.cfg.namespaces.iter().any(|n| n == &t.namespace) {
            return Ok(());
        }
        refused(format!(
            "namespace {} is not one medic may change (executor.kubernetes.namespaces: {})",
            t.namespace,
            if self.cfg.namespaces.is_empty() { "none".to_string() } else { self.cfg.namespaces.join(", ") }
        ))
    }

    /// Runs the step (a server-side dry run only, with `dry_run`), then waits for its rollout.
    pub async fn act(&self, op: &KubeOp, dry_run: bool, sleep: &dyn Sleep, clock: &dyn Clock) -> Result<Acted, String> {
        let mut conflicts = 0;
        loop {
            match self.attempt(op, dry_run, sleep, clock).await {
                Err(Error::Conflict(m)) if conflicts == 0 => {
                    conflicts += 1;
                    tracing::info!(target = %op.target, message = %m, "409 conflict: reading the object again");
                }
                other => return other.map_err(Error::text),
            }
        }
    }

    async fn attempt(&self, op: &KubeOp, dry_run: bool, sleep: &dyn Sleep, clock: &dyn Clock) -> Result<Acted, Error> {
        let t = &op.target;
        self.allowed(t)?;
        let w = self.read(t).await?;
        if let Some(seen) = op.seen.as_ref().filter(|_| !op.restore) {
            let changed = match op.verb {
                KubeVerb::Scale { .. } => (seen.replicas != w.replicas).then(|| {
                    format!(
                        "its replica count changed since the plan was proposed ({} → {}): someone, or an autoscaler, \
                         scaled it",
                        seen.replicas.unwrap_or(0),
                        w.replicas.unwrap_or(0)
                    )
                }),
                _ => (seen.template != w.template).then(|| {
                    format!(
                        "its pod template changed since the plan was proposed (generation {} → {}): someone deployed \
                         or edited it",
                        seen.generation, w.generation
                    )
                }),
            };
            if let Some(what) = changed {
                return refused(format!("{}: {what}, so medic stops rather than act on what was not approved", who(t)));
            }
        }
        let p = self.prepare(op, &w, clock).await?;
        if let Some(seen) = op.seen.as_ref().filter(|_| !op.restore)
            && (seen.to_replicas, seen.to_revision) != (p.seen.to_replicas, p.seen.to_revision)
        {
            return refused(format!(
                "{} would now be changed differently from what was approved ({} instead of {})",
                who(t),
                p.touches,
                op.summary()
            ));
        }
        // The exact request, dry run first: nothing changes unless the server accepts it.
        self.send(t, &p.request, true).await?;
        if dry_run {
            return Ok(Acted::said(format!(
                "dry run: the API server accepted `{}` ({}); nothing changed",
                op.summary(),
                p.touches
            )));
        }
        self.send(t, &p.request, false).await?;
        let mut acted = Acted { output: p.done, undo: p.undo, failed: None };
        let waited = match &p.request {
            _ if p.rolls_out => Some(self.wait_for_rollout(t, sleep, clock).await),
            Request::DeletePod { name, uid } => Some(self.wait_for_pod(t, name, uid, sleep, clock).await),
            _ => None,
        };
        match waited {
            Some(Ok(status)) => acted.output = format!("{}; {status}", acted.output),
            Some(Err(why)) => acted.failed = Some(why),
            None => {}
        }
        Ok(acted)
    }

    async fn send(&self, t: &Target, r: &Request, dry_run: bool) -> Result<(), Error> {
        // `fieldManager`: the cluster's managed fields and audit log name medic.
        let pp = PatchParams { dry_run, field_manager: Some("medic".into()), ..Default::default() };
        match r {
            Request::Patch(patch) => {
                self.api(t).patch(&t.name, &pp, patch).await.map_err(|e| api_error(e, "patch", t.kind.plural(), t))?;
            }
            Request::Scale(patch) => {
                self.api(t)
                    .patch_scale(&t.name, &pp, patch)
                    .await
                    .map_err(|e| api_error(e, "patch", &format!("{}/scale", t.kind.plural()), t))?;
            }
            Request::DeletePod { name, uid } => {
                // As `kubectl delete pod`: background propagation; and only this pod (its uid).
                let dp = DeleteParams {
                    dry_run,
                    preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                    propagation_policy: Some(kube::api::PropagationPolicy::Background),
                    ..Default::default()
                };
                Api::<Pod>::namespaced(self.client.clone(), &t.namespace)
                    .delete(name, &dp)
                    .await
                    .map_err(|e| api_error(e, "delete", "pods", t))?;
            }
        }
        Ok(())
    }

    /// Gates 1 and 3, and the request.
    async fn prepare(&self, op: &KubeOp, w: &Workload, clock: &dyn Clock) -> Result<Prepared, Error> {
        let t = &op.target;
        self.allowed(t)?;
        let paused = w.obj.data["spec"]["paused"].as_bool().unwrap_or(false);
        let seen = |to_replicas, to_revision| Seen {
            generation: w.generation,
            template: w.template.clone(),
            replicas: w.replicas,
            revision: w.revision,
            to_replicas,
            to_revision,
        };
        // Each write tests what it was computed from, not the `resourceVersion`: a status-only
        // update in between (any busy Deployment) changes nothing that matters, a spec change
        // (a new generation) fails the test and the step reads again.
        let generation = json!({"op": "test", "path": "/metadata/generation", "value": w.generation});
        match &op.verb {
            KubeVerb::RolloutRestart => {
                if paused {
                    return refused(format!("{} is paused: a restart would not roll out until it is resumed", who(t)));
                }
                let at = crate::time::rfc3339(clock.now());
                // The annotation kubectl's restart sets, added to the template's annotations (or
                // as them, when it has none).
                let annotations = &w.obj.data["spec"]["template"]["metadata"]["annotations"];
                let set = if annotations.is_object() {
                    json!({"op": "add", "path": "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt", "value": at})
                } else if w.obj.data["spec"]["template"]["metadata"].is_object() {
                    json!({"op": "add", "path": "/spec/template/metadata/annotations", "value": {"kubectl.kubernetes.io/restartedAt": at}})
                } else {
                    json!({"op": "add", "path": "/spec/template/metadata", "value": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}})
                };
                let patch: json_patch::Patch = serde_json::from_value(json!([generation, set])).expect("a JSON patch");
                let pods = w.replicas.map(|r| format!("its {r} pods")).unwrap_or_else(|| "its pods".into());
                Ok(Prepared {
                    request: Request::Patch(Patch::Json(patch)),
                    touches: format!("{}: {pods} replaced by a rolling update", who(t)),
                    seen: seen(None, None),
                    undo: None,
                    done: format!("restarted {}", op.target),
                    rolls_out: true,
                })
            }
            KubeVerb::RolloutUndo { to_revision } => self.prepare_undo(op, w, *to_revision, paused, generation).await,
            KubeVerb::Scale { by, to, min, max } => {
                let Some(from) = w.replicas else {
                    return refused(format!("{} has no replica count", who(t)));
                };
                let target = match (to, by) {
                    (Some(to), _) => *to,
                    (None, Some(by)) => from + by,
                    (None, None) => from,
                };
                if !op.restore {
                    if target == from {
                        return refused(format!("{} already has {from} replicas", who(t)));
                    }
                    if target < *min || target > *max {
                        return refused(format!(
                            "{}: {from} → {target} replicas is outside the runbook's min {min} .. max {max}",
                            who(t)
                        ));
                    }
                    let step = ((from as i64 * self.cfg.max_scale_step_percent as i64 + 99) / 100).max(1) as i32;
                    if target > from + step {
                        return refused(format!(
                            "{}: {from} → {target} replicas is +{}, above the limit of +{step} per step (+{}% of {from}, \
                             executor.kubernetes.max_scale_step_percent)",
                            who(t),
                            target - from,
                            self.cfg.max_scale_step_percent
                        ));
                    }
                    if target == 0 && !self.cfg.scale_to_zero_namespaces.iter().any(|n| n == &t.namespace) {
                        return refused(format!(
                            "{}: scaling to zero is not allowed in namespace {} (executor.kubernetes.scale_to_zero_namespaces)",
                            who(t),
                            t.namespace
                        ));
                    }
                }
                // The count it was computed from, tested on the scale subresource.
                let patch: json_patch::Patch = serde_json::from_value(json!([
                    {"op": "test", "path": "/spec/replicas", "value": from},
                    {"op": "replace", "path": "/spec/replicas", "value": target},
                ]))
                .expect("a JSON patch");
                let undo = KubeOp {
                    target: t.clone(),
                    verb: KubeVerb::Scale { by: None, to: Some(from), min: 0, max: from.max(target) },
                    seen: None,
                    restore: true,
                };
                Ok(Prepared {
                    request: Request::Scale(Patch::Json(patch)),
                    touches: format!("{}: {from} → {target} replicas", who(t)),
                    seen: seen(Some(target), None),
                    undo: Some(PlanAction::Kubernetes(undo)),
                    done: format!("scaled {} from {from} to {target} replicas", op.target),
                    rolls_out: false,
                })
            }
            KubeVerb::DeletePod { states } => self.prepare_delete(op, w, states).await,
        }
    }

    async fn prepare_undo(
        &self,
        op: &KubeOp,
        w: &Workload,
        to_revision: Option<i64>,
        paused: bool,
        generation: Value,
    ) -> Result<Prepared, Error> {
        let t = &op.target;
        if paused {
            return refused(format!(
                "{} is paused: medic does not roll back a paused Deployment (someone may be mid-change; resume it \
                 or act by hand)",
                who(t)
            ));
        }
        let Some(current) = w.revision else {
            return refused(format!("{} has no {REVISION} annotation: it has never rolled out", who(t)));
        };
        let uid = w.obj.metadata.uid.clone().unwrap_or_default();
        // Read as raw JSON: a typed ReplicaSet would drop template fields newer than this
        // client's Kubernetes version, and the undo would silently lose them.
        let sets = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            &t.namespace,
            &ApiResource::erase::<ReplicaSet>(&()),
        )
        .list(&ListParams::default().labels(&selector(&w.obj)))
        .await
        .map_err(|e| api_error(e, "list", "replicasets", t))?;
        let mut revisions: Vec<(i64, DynamicObject)> = sets
            .items
            .into_iter()
            .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| o.uid == uid))
            .filter_map(|rs| {
                let r = rs.metadata.annotations.as_ref()?.get(REVISION)?.parse().ok()?;
                Some((r, rs))
            })
            .collect();
        revisions.sort_by_key(|(r, _)| *r);
        let pick = match to_revision {
            Some(r) if r == current => return refused(format!("{} is already at revision {r}", who(t))),
            Some(r) => revisions.iter().find(|(x, _)| *x == r),
            None => revisions.iter().rev().find(|(x, _)| *x < current),
        };
        let Some((to, rs)) = pick else {
            let known: Vec<String> = revisions.iter().map(|(r, _)| r.to_string()).collect();
            return refused(format!(
                "{}: no {} to roll back to (revisions kept: {})",
                who(t),
                to_revision.map(|r| format!("revision {r}")).unwrap_or_else(|| "earlier revision".into()),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        };
        let mut template = rs.data["spec"]["template"].clone();
        if !template.is_object() {
            return refused(format!("{}: the ReplicaSet of revision {to} has no pod template", who(t)));
        }
        if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
            labels.remove("pod-template-hash");
        }
        // The annotations as `kubectl rollout undo` leaves them: the Deployment's own
        // bookkeeping kept, the rest from the revision's ReplicaSet (its change-cause among them).
        const KEPT: [&str; 6] = [
            "kubectl.kubernetes.io/last-applied-configuration",
            REVISION,
            "deployment.kubernetes.io/revision-history",
            "deployment.kubernetes.io/desired-replicas",
            "deployment.kubernetes.io/max-replicas",
            "deprecated.deployment.rollback.to",
        ];
        let mut annotations = serde_json::Map::new();
        for (k, v) in w.obj.metadata.annotations.iter().flatten().filter(|(k, _)| KEPT.contains(&k.as_str())) {
            annotations.insert(k.clone(), json!(v));
        }
        for (k, v) in rs.metadata.annotations.iter().flatten().filter(|(k, _)| !KEPT.contains(&k.as_str())) {
            annotations.insert(k.clone(), json!(v));
        }
        let images = |v: &Value| -> String {
            v["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}={}", c["name"].as_str().unwrap_or(""), c["image"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let from_images = images(&w.obj.data["spec"]["template"]);
        let to_images = images(&template);
        let patch: json_patch::Patch = serde_json::from_value(json!([
            generation,
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ]))
        .expect("a JSON patch");
        let undo = KubeOp {
            target: t.clone(),
            verb: KubeVerb::RolloutUndo { to_revision: Some(current) },
            seen: None,
            restore: true,
        };
        Ok(Prepared {
            request: Request::Patch(Patch::Json(patch)),
            touches: format!("{}: revision {current} ({from_images}) → revision {to} ({to_images})", who(t)),
            seen: Seen {
                generation: w.generation,
                template: w.template.clone(),
                replicas: w.replicas,
                revision: Some(current),
                to_replicas: None,
                to_revision: Some(*to),
            },
            undo: Some(PlanAction::Kubernetes(undo)),
            done: format!(
                "rolled back {} from revision {current} to the template of revision {to} ({to_images})",
                op.target
            ),
            rolls_out: true,
        })
    }

    async fn prepare_delete(&self, op: &KubeOp, w: &Workload, states: &[String]) -> Result<Prepared, Error> {
        let t = &op.target;
        let labels = selector(&w.obj);
        // Its pods: selected by its whole selector and owned by it (a Deployment's through its
        // ReplicaSets), so a look-alike pod of another workload is never counted or deleted.
        let uid = w.obj.metadata.uid.clone().unwrap_or_default();
        let controller_of = |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone())
        };
        let mut owners = vec![uid.clone()];
        if t.kind == WorkloadKind::Deployment {
            let sets = Api::<ReplicaSet>::namespaced(self.client.clone(), &t.namespace)
                .list(&ListParams::default().labels(&labels))
                .await
                .map_err(|e| api_error(e, "list", "replicasets", t))?;
            owners = sets
                .items
                .into_iter()
                .filter(|rs| controller_of(&rs.metadata.owner_references).is_some_and(|u| u == uid))
                .filter_map(|rs| rs.metadata.uid)
                .collect();
        }
        let pods: Vec<Pod> = Api::<Pod>::namespaced(self.client.clone(), &t.namespace)
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| api_error(e, "list", "pods", t))?
            .items
            .into_iter()
            .filter(|p| controller_of(&p.metadata.owner_references).is_some_and(|u| owners.contains(&u)))
            .collect();
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        };
        let ready_count = pods.iter().filter(|p| ready(p)).count();
        let mut candidates: Vec<(&Pod, String)> =
            pods.iter().filter_map(|p| pod_state(p, states).map(|s| (p, s))).collect();
        // Not-ready pods first: deleting one takes no capacity away.
        candidates.sort_by_key(|(p, _)| (ready(p), p.metadata.name.clone()));
        let states_text = states.join(" or ");
        let Some((pod, state)) = candidates.first() else {
            return refused(format!("no pod of {} is in {states_text} now", who(t)));
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        if ready(pod) && ready_count <= 1 {
            return refused(format!(
                "pod {name} ({state}) is the last ready pod of {}: medic never deletes it",
                who(t)
            ));
        }
        Ok(Prepared {
            request: Request::DeletePod { name: name.clone(), uid: pod.metadata.uid.clone().unwrap_or_default() },
            touches: format!(
                "one pod of {} in {states_text} (never its last ready pod; {} of {} ready now)",
                who(t),
                ready_count,
                pods.len()
            ),
            seen: Seen {
                generation: w.generation,
                template: w.template.clone(),
                replicas: w.replicas,
                revision: w.revision,
                to_replicas: None,
                to_revision: None,
            },
            undo: None,
            done: format!("deleted pod {name} ({state}) of {}; its controller replaces it", op.target),
            rolls_out: false,
        })
    }

    /// Polls until the deleted pod is gone (or replaced: a new uid under its name, as a
    /// StatefulSet does), or `rollout_timeout` passes.
    async fn wait_for_pod(
        &self,
        t: &Target,
        name: &str,
        uid: &str,
        sleep: &dyn Sleep,
        clock: &dyn Clock,
    ) -> Result<String, String> {
        let deadline = clock.now() + self.cfg.rollout_timeout.as_millis() as i64;
        let pods = Api::<Pod>::namespaced(self.client.clone(), &t.namespace);
        loop {
            match pods.get_opt(name).await.map_err(|e| api_error(e, "get", "pods", t).text())? {
                None => return Ok(format!("pod {name} is gone")),
                Some(p) if p.metadata.uid.as_deref() != Some(uid) => return Ok(format!("pod {name} was replaced")),
                Some(_) if clock.now() >= deadline => {
                    return Err(format!(
                        "pod {name} was still there {} after its deletion (a finalizer?)",
                        humantime::format_duration(self.cfg.rollout_timeout)
                    ));
                }
                Some(_) => sleep.sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Polls the workload until its rollout completes, fails, or `rollout_timeout` passes.
    async fn wait_for_rollout(&self, t: &Target, sleep: &dyn Sleep, clock: &dyn Clock) -> Result<String, String> {
        let deadline = clock.now() + self.cfg.rollout_timeout.as_millis() as i64;
        loop {
            let w = self.read(t).await.map_err(Error::text)?;
            let (done, status) = rollout_status(t.kind, &w.obj);
            if done {
                let now = match (t.kind, w.revision) {
                    (WorkloadKind::Deployment, Some(r)) => format!(" (now revision {r})"),
                    _ => String::new(),
                };
                return Ok(format!("rollout complete{now}: {status}"));
            }
            // As `kubectl rollout status`: the conditions speak of this spec only once the
            // controller has observed it; before, a "progress deadline exceeded" is the old
            // rollout's.
            if let Some(why) = progress_failed(&w.obj).filter(|_| observed(&w.obj)) {
                return Err(format!("the rollout of {} failed: {why} ({status})", t));
            }
            if clock.now() >= deadline {
                return Err(format!(
                    "the rollout of {t} did not complete within {} ({status})",
                    humantime::format_duration(self.cfg.rollout_timeout)
                ));
            }
            sleep.sleep(Duration::from_secs(2)).await;
        }
    }
}

/// The workload's whole pod selector as a label selector: `matchLabels` and
/// `matchExpressions` (`In`, `NotIn`, `Exists`, `DoesNotExist`), as kubectl writes it.
fn selector(obj: &DynamicObject) -> String {
    let sel = &obj.data["spec"]["selector"];
    let mut terms: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        terms.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "DoesNotExist" => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    terms.join(",")
}

/// Which of `states` the pod is in: a container's waiting reason, its last termination reason,
/// or the pod's phase.
fn pod_state(p: &Pod, states: &[String]) -> Option<String> {
    let status = p.status.as_ref()?;
    let containers = status.container_statuses.iter().flatten();
    let mut seen: Vec<String> = Vec::new();
    for c in containers {
        seen.extend(c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone()));
        seen.extend(c.state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|w| w.reason.clone()));
        seen.extend(c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|w| w.reason.clone()));
    }
    seen.extend(status.phase.clone());
    seen.into_iter().find(|s| states.iter().any(|x| x.eq_ignore_ascii_case(s)))
}

/// Whether the controller has observed the workload's current spec.
fn observed(obj: &DynamicObject) -> bool {
    obj.data["status"]["observedGeneration"].as_i64().unwrap_or(0) >= obj.metadata.generation.unwrap_or(0)
}

/// Whether the rollout is complete, and its counts for people (what `kubectl rollout status`
/// checks).
fn rollout_status(kind: WorkloadKind, obj: &DynamicObject) -> (bool, String) {
    let (spec, st) = (&obj.data["spec"], &obj.data["status"]);
    let observed = observed(obj);
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    match kind {
        WorkloadKind::Deployment => {
            let want = spec["replicas"].as_i64().unwrap_or(1);
            let (updated, available, total) =
                (n(&st["updatedReplicas"]), n(&st["availableReplicas"]), n(&st["replicas"]));
            let done = observed && updated >= want && total <= updated && available >= updated;
            (done, format!("{updated}/{want} updated, {available} available"))
        }
        WorkloadKind::StatefulSet => {
            let want = spec["replicas"].as_i64().unwrap_or(1);
            let (updated, ready) = (n(&st["updatedReplicas"]), n(&st["readyReplicas"]));
            let done = observed && updated >= want && ready >= want;
            (done, format!("{updated}/{want} updated, {ready} ready"))
        }
        WorkloadKind::DaemonSet => {
            let want = n(&st["desiredNumberScheduled"]);
            let (updated, available) = (n(&st["updatedNumberScheduled"]), n(&st["numberAvailable"]));
            let done = observed && updated >= want && available >= want;
            (done, format!("{updated}/{want} updated, {available} available"))
        }
    }
}

/// A Deployment past its progress deadline.
fn progress_failed(obj: &DynamicObject) -> Option<String> {
    obj.data["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Progressing" && c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded")
            .then(|| c["message"].as_str().unwrap_or("progress deadline exceeded").to_string())
    })
}
