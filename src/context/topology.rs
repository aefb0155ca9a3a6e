//! Where the dependency graph comes from: a file people maintain ([`FileTopology`]), and the
//! service-graph metrics tracing and meshes already produce ([`ServiceGraph`]: Tempo's /
//! the OpenTelemetry collector's `traces_service_graph_request_total{client,server}`, Istio's
//! `istio_requests_total{source_workload,destination_workload}`). Both may be configured; the
//! edges are merged.

use super::prometheus::Prometheus;
use super::{Edge, Topology};
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A YAML file mapping each service to the services it calls:
///
/// ```yaml
/// checkout: [payments, postgres]
/// payments: [postgres]
/// ```
///
/// Read on every question, so edits apply without a restart; a broken file is an
/// "unavailable" line naming the problem, not a crash.
pub struct FileTopology {
    path: PathBuf,
}

impl FileTopology {
    pub fn new(path: &Path) -> FileTopology {
        FileTopology { path: path.to_path_buf() }
    }

    /// The edges of a topology file's text.
    pub fn parse(text: &str) -> Result<Vec<Edge>, String> {
        let map: BTreeMap<String, Vec<String>> = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        Ok(map
            .into_iter()
            .flat_map(|(from, tos)| tos.into_iter().map(move |to| Edge { from: from.clone(), to }))
            .collect())
    }
}

#[async_trait]
impl Topology for FileTopology {
    fn name(&self) -> &str {
        "topology file"
    }

    async fn edges(&self) -> Result<Vec<Edge>, String> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| format!("cannot read {}: {}", self.path.display(), e.kind()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Which service-graph metric to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceGraphKind {
    /// `traces_service_graph_request_total{client, server}` (Tempo, OpenTelemetry collector).
    Tempo,
    /// `istio_requests_total{source_workload, destination_workload}`.
    Istio,
}

impl ServiceGraphKind {
    /// The instant query medic runs, and the labels naming caller and callee.
    pub fn query(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ServiceGraphKind::Tempo => {
                ("sum by (client, server) (rate(traces_service_graph_request_total[1h])) > 0", "client", "server")
            }
            ServiceGraphKind::Istio => (
                "sum by (source_workload, destination_workload) (rate(istio_requests_total[1h])) > 0",
                "source_workload",
                "destination_workload",
            ),
        }
    }
}

pub struct ServiceGraph {
    prometheus: Arc<Prometheus>,
    kind: ServiceGraphKind,
}

impl ServiceGraph {
    pub fn new(prometheus: Arc<Prometheus>, kind: ServiceGraphKind) -> ServiceGraph {
        ServiceGraph { prometheus, kind }
    }
}

#[async_trait]
impl Topology for ServiceGraph {
    fn name(&self) -> &str {
        "service graph"
    }

    async fn edges(&self) -> Result<Vec<Edge>, String> {
        let (query, from, to) = self.kind.query();
        let samples = self.prometheus.query_instant(query).await?;
        Ok(samples
            .into_iter()
            .filter_map(|labels| {
                let (f, t) = (labels.get(from)?, labels.get(to)?);
                // Unknown ends ("unknown", empty) say nothing about who depends on whom.
                (!f.is_empty() && !t.is_empty() && f != "unknown" && t != "unknown" && f != t)
                    .then(|| Edge { from: f.clone(), to: t.clone() })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_topology_file() {
        let edges = FileTopology::parse("checkout: [payments, postgres]\npayments: [postgres]\n").unwrap();
        assert_eq!(edges.len(), 3);
        assert_eq!(edges[0], Edge { from: "checkout".into(), to: "payments".into() });
        assert!(FileTopology::parse("checkout: payments").unwrap_err().contains("invalid type"));
    }
}
