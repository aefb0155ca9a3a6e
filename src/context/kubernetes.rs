//! Kubernetes, read-only: the pods of a service's workloads (phase, restarts, why a container is
//! not running, how its last run ended, recent warning events) and its rollout history
//! (ReplicaSet revisions with their images and creation times) as change events.
//!
//! A service's pods and ReplicaSets are found by a label selector template (default
//! `app.kubernetes.io/name={{service}}`). In-cluster config, a kubeconfig file, or an API URL
//! (tests) — see `deploy/kubernetes/` for the namespace, the ServiceAccount and the read-only Role / ClusterRole.

use super::{Changes, Pod, Pods};
use crate::alert::{Change, ChangeKind};
use crate::time::Millis;
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Event, Pod as KubePod};
use kube::api::{Api, ListParams};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name={{service}}";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Look in this namespace only (a Role suffices); absent: every namespace (a ClusterRole).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector of a service's pods and ReplicaSets, with `{{service}}`.
    #[serde(default)]
    pub selector: Option<String>,
    /// A kubeconfig file (default: in-cluster config, else `$KUBECONFIG` / `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// The API server's URL, without credentials (a local proxy such as `kubectl proxy`, tests).
    #[serde(default)]
    pub url: Option<String>,
}

/// A client for the cluster a config names: `url` (no credentials: a local proxy, tests),
/// else `kubeconfig` (and its `context`), else in-cluster config or `$KUBECONFIG`.
pub async fn client(
    url: Option<&str>,
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
    timeout: Duration,
) -> Result<kube::Client, String> {
    crate::telemetry::install_crypto();
    let mut config = if let Some(url) = url {
        kube::Config::new(url.parse().map_err(|e| format!("kubernetes url {url:?}: {e}"))?)
    } else if let Some(path) = kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let opts = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
        kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        kube::Config::infer().await.map_err(|e| format!("no in-cluster config and no kubeconfig: {e}"))?
    };
    config.read_timeout = Some(timeout);
    config.connect_timeout = Some(timeout);
    // kube's own retry layer retries 429/503/504 with backoff for many minutes: a browned-out
    // API server would stall every investigation. Each call is one try within `timeout`; what
    // is worth retrying, medic retries itself (a 409 once, the outbox, the next trigger).
    config.default_retry = false;
    // The cluster's audit log names medic and its version.
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(concat!("medic/", env!("CARGO_PKG_VERSION"))),
    ));
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

pub struct Kubernetes {
    client: kube::Client,
    namespace: Option<String>,
    selector: String,
}

pub(crate) fn err(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {}: {} ({})", s.code, s.message, s.reason),
        other => other.to_string(),
    }
}

fn millis(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Millis {
    t.0.as_millisecond()
}

impl Kubernetes {
    pub async fn connect(cfg: &KubernetesConfig, timeout: Duration) -> Result<Kubernetes, String> {
        let selector = cfg.selector.clone().unwrap_or_else(|| DEFAULT_SELECTOR.to_string());
        if !selector.contains("{{service}}") {
            return Err(format!("kubernetes.selector {selector:?} does not mention {{{{service}}}}"));
        }
        let client = client(cfg.url.as_deref(), cfg.kubeconfig.as_deref(), cfg.context.as_deref(), timeout).await?;
        Ok(Kubernetes { client, namespace: cfg.namespace.clone(), selector })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The selector for `service`; a service name that is not a valid label value is refused
    /// (it would otherwise add terms to the selector).
    fn selector_for(&self, service: &str) -> Result<String, String> {
        let valid = !service.is_empty()
            && service.len() <= 63
            && service.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(format!("service {service:?} is not a Kubernetes label value"));
        }
        Ok(self.selector.replace("{{service}}", service))
    }
}

fn describe_termination(t: &ContainerStateTerminated) -> String {
    format!(
        "{} (exit {}){}",
        t.reason.clone().unwrap_or_else(|| "Terminated".into()),
        t.exit_code,
        t.finished_at.as_ref().map(|f| format!(" at {}", crate::time::rfc3339(millis(f)))).unwrap_or_default()
    )
}

#[async_trait]
impl Pods for Kubernetes {
    fn name(&self) -> &str {
        "kubernetes"
    }

    async fn pods(&self, service: &str) -> Result<Vec<Pod>, String> {
        let sel = self.selector_for(service)?;
        let pods = self.api::<KubePod>().list(&ListParams::default().labels(&sel).limit(200)).await.map_err(err)?;
        let events =
            self.api::<Event>().list(&ListParams::default().fields("type=Warning").limit(500)).await.map_err(err)?;
        let mut out = Vec::new();
        for p in pods.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let status = p.status.unwrap_or_default();
            let containers = status.container_statuses.unwrap_or_default();
            let waiting = containers.iter().find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
            let terminated = containers.iter().find_map(|c| c.state.as_ref()?.terminated.as_ref()?.reason.clone());
            let last = containers
                .iter()
                .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref())
                .max_by_key(|t| t.finished_at.as_ref().map(millis));
            let mut pod_events: Vec<(Millis, String)> = events
                .items
                .iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
                .map(|e| {
                    let at =
                        e.last_timestamp.as_ref().map(millis).or(e.event_time.as_ref().map(|t| t.0.as_millisecond()));
                    let count = e.count.filter(|n| *n > 1).map(|n| format!(" (×{n})")).unwrap_or_default();
                    (
                        at.unwrap_or(0),
                        format!(
                            "{}: {}{count}",
                            e.reason.clone().unwrap_or_default(),
                            e.message.clone().unwrap_or_default().trim()
                        ),
                    )
                })
                .collect();
            pod_events.sort();
            let skip = pod_events.len().saturating_sub(5);
            out.push(Pod {
                name,
                service: service.to_string(),
                phase: status.phase.unwrap_or_else(|| "Unknown".into()),
                reason: waiting.or(terminated).or(status.reason),
                restarts: containers.iter().map(|c| c.restart_count.max(0) as u32).sum(),
                last_termination: last.map(describe_termination),
                events: pod_events.into_iter().skip(skip).map(|(_, e)| e).collect(),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl Changes for Kubernetes {
    fn name(&self) -> &str {
        "kubernetes"
    }

    /// Each ReplicaSet revision created in the window is a rollout. (A rollback re-uses an old
    /// ReplicaSet, whose creation time is the original rollout's: it shows as that rollout.)
    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>, String> {
        let sel = self.selector_for(service)?;
        let sets = self.api::<ReplicaSet>().list(&ListParams::default().labels(&sel).limit(200)).await.map_err(err)?;
        let mut out = Vec::new();
        for rs in sets.items {
            let Some(at) = rs.metadata.creation_timestamp.as_ref().map(millis) else { continue };
            if at < start || at > end {
                continue;
            }
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned())
                .unwrap_or_else(|| "?".into());
            let owner = rs
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.first())
                .map(|o| format!("{}/{}", o.kind.to_lowercase(), o.name))
                .unwrap_or_else(|| format!("replicaset/{}", rs.metadata.name.clone().unwrap_or_default()));
            let images: Vec<(String, String)> = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .map(|s| s.containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect())
                .unwrap_or_default();
            let version = images.first().map(|(_, image)| image_tag(image).to_string());
            out.push(Change {
                id: format!("k8s-replicaset-{}-{revision}", rs.metadata.uid.clone().unwrap_or_default()),
                kind: ChangeKind::Deploy,
                service: service.to_string(),
                summary: format!(
                    "rollout of {owner} to revision {revision}: {}",
                    images.iter().map(|(n, i)| format!("{n}={i}")).collect::<Vec<_>>().join(", ")
                ),
                author: None,
                version,
                url: None,
                labels: rs.metadata.namespace.iter().map(|ns| ("namespace".to_string(), ns.clone())).collect(),
                at,
            });
        }
        Ok(out)
    }
}

/// `registry:5000/team/app:1.4.2` → `1.4.2`; an untagged image → the whole reference.
pub fn image_tag(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag,
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::image_tag;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("registry:5000/team/app:1.4.2"), "1.4.2");
        assert_eq!(image_tag("registry:5000/team/app"), "registry:5000/team/app");
        assert_eq!(image_tag("app:v2@sha256:abc"), "v2");
    }
}
