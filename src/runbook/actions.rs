//! The runbook shapes of the Kubernetes and Alertmanager actions. What each does, its tier and
//! how it is undone are decided in [`super::ActionKind`]; the executor's `kubernetes` and
//! `alertmanager` modules run them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A Kubernetes operation on one workload: exactly one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct KubeAction {
    /// What `kubectl rollout restart` does: a new pod-template annotation, so every pod is
    /// replaced by the workload's own rolling update. Verified by the rollout completing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_restart: Option<Workload>,
    /// What `kubectl rollout undo` does (Deployments): the template of the previous revision
    /// (or `to_revision`) is put back. Refused while the Deployment is paused. Rolled back by
    /// undoing to the revision it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_undo: Option<Undo>,
    /// A new replica count, by a delta or to a count, within `min`/`max` and at most the
    /// executor's per-step increase. Rolled back to the previous count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    /// Deletes exactly one pod of the workload in one of `states`, never its last ready pod;
    /// its controller replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_pod: Option<DeletePod>,
}

/// The one operation a [`KubeAction`] names.
pub enum Kube<'a> {
    RolloutRestart(&'a Workload),
    RolloutUndo(&'a Undo),
    Scale(&'a Scale),
    DeletePod(&'a DeletePod),
}

/// The one value of a set of optional keys, or why there is not exactly one.
fn exactly_one<T>(keys: Vec<(&str, Option<T>)>) -> Result<T, String> {
    let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    let mut set: Vec<(&str, T)> = keys.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    match set.len() {
        1 => Ok(set.remove(0).1),
        0 => Err(format!("expected one of `{}`", names.join("`, `"))),
        _ => Err(format!(
            "expected exactly one of `{}`, got `{}`",
            names.join("`, `"),
            set.iter().map(|(k, _)| *k).collect::<Vec<_>>().join("` and `")
        )),
    }
}

impl KubeAction {
    pub fn one(&self) -> Result<Kube<'_>, String> {
        exactly_one(vec![
            ("rollout_restart", self.rollout_restart.as_ref().map(Kube::RolloutRestart)),
            ("rollout_undo", self.rollout_undo.as_ref().map(Kube::RolloutUndo)),
            ("scale", self.scale.as_ref().map(Kube::Scale)),
            ("delete_pod", self.delete_pod.as_ref().map(Kube::DeletePod)),
        ])
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// The API's resource name: `deployments`, `statefulsets`, `daemonsets`.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
        }
    }

    /// kubectl's spelling: `deployment`, `statefulset`, `daemonset`.
    pub fn lower(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
        }
    }
}

/// Which workload: `name` and `namespace` are templates, e.g. `{{service}}`,
/// `{{labels.namespace}}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Undo {
    /// The Deployment.
    pub name: String,
    pub namespace: String,
    /// A revision number (template); absent: the previous revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    #[serde(default)]
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    /// Change the count by this much (`1`, `-2`). Exactly one of `by` and `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<i32>,
    /// Set the count to this (`0` only where `executor.kubernetes.scale_to_zero_namespaces`
    /// allows it, and with `min: 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i32>,
    /// Never fewer replicas than this.
    #[serde(default = "one")]
    pub min: i32,
    /// Never more replicas than this.
    pub max: i32,
}

fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletePod {
    #[serde(default)]
    pub kind: WorkloadKind,
    /// The workload whose pod is deleted (its pods are found by its own selector).
    pub name: String,
    pub namespace: String,
    /// Pod states that qualify: a container's waiting reason (`CrashLoopBackOff`,
    /// `ImagePullBackOff`), its last termination reason (`OOMKilled`, `Error`), or the pod's
    /// phase (`Failed`, `Unknown`).
    #[schemars(length(min = 1))]
    pub state: Vec<String>,
}

/// An Alertmanager operation through its v2 API: exactly one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct SilenceAction {
    /// Creates a silence; its comment names the incident. Rolled back by expiring it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Silence>,
    /// Expires the silences (active or pending) medic created for this incident with exactly
    /// these matchers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_silence: Option<ExpireSilence>,
}

/// The one operation a [`SilenceAction`] names.
pub enum Am<'a> {
    Silence(&'a Silence),
    ExpireSilence(&'a ExpireSilence),
}

impl SilenceAction {
    pub fn one(&self) -> Result<Am<'_>, String> {
        exactly_one(vec![
            ("silence", self.silence.as_ref().map(Am::Silence)),
            ("expire_silence", self.expire_silence.as_ref().map(Am::ExpireSilence)),
        ])
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Alertmanager matchers (`name="v"`, `=~`, `!=`, `!~`); values are templates.
    #[schemars(length(min = 1))]
    pub matchers: Vec<String>,
    /// How long the silence lasts, e.g. `30m`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
    /// Why (a template); medic prefixes it with the incident.
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireSilence {
    #[schemars(length(min = 1))]
    pub matchers: Vec<String>,
}
