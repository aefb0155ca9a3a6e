//! The recorded backend: serves a scenario's world through the same traits as the real
//! backends. [`Recorded::act`] switches it to the scenario's `after` world from a given moment,
//! so a post-check that runs after an action sees the effect of that action (or its absence).

use super::World;
use crate::alert::Change;
use crate::context::{Changes, Edge, LogLine, Logs, MetricQuery, Metrics, Pod, Pods, Series, Span, Topology, Traces};
use crate::time::Millis;
use async_trait::async_trait;
use std::sync::atomic::{AtomicI64, Ordering};

pub struct Recorded {
    world: World,
    acted_at: AtomicI64,
}

impl Recorded {
    pub fn new(world: World) -> Recorded {
        Recorded { world, acted_at: AtomicI64::new(Millis::MAX) }
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// From `at` on, the world is the scenario's `after` world.
    pub fn act(&self, at: Millis) {
        self.acted_at.fetch_min(at, Ordering::SeqCst);
    }

    fn acted(&self) -> Option<Millis> {
        Some(self.acted_at.load(Ordering::SeqCst)).filter(|t| *t != Millis::MAX)
    }

    /// The series answering `query`: recorded points before the action, then the `after`
    /// series of the same labels (shifted to the action's time), if the scenario has one.
    fn series(&self, query: &str) -> Vec<Series> {
        let acted = self.acted();
        self.world
            .series
            .iter()
            .filter(|s| s.query == query)
            .map(|s| {
                let Some(t) = acted else { return s.clone() };
                let Some(after) = self.world.after_series.iter().find(|a| a.query == s.query && a.labels == s.labels)
                else {
                    return s.clone();
                };
                let mut points: Vec<(Millis, f64)> = s.points.iter().copied().filter(|(at, _)| *at < t).collect();
                points.extend(after.points.iter().map(|(dt, v)| (t + dt, *v)));
                Series { query: s.query.clone(), labels: s.labels.clone(), points }
            })
            .collect()
    }
}

#[async_trait]
impl Metrics for Recorded {
    fn name(&self) -> &str {
        "recorded"
    }

    async fn query_range(&self, q: &MetricQuery) -> Result<Vec<Series>, String> {
        Ok(self
            .series(&q.name)
            .into_iter()
            // A golden signal asked for one service answers that service's series.
            .filter(|s| q.service.as_ref().is_none_or(|want| s.labels.get("service") == Some(want)))
            .map(|mut s| {
                s.points.retain(|(t, _)| *t >= q.start && *t <= q.end);
                s
            })
            .collect())
    }
}

#[async_trait]
impl Logs for Recorded {
    fn name(&self) -> &str {
        "recorded"
    }

    async fn lines(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<LogLine>, String> {
        Ok(self
            .world
            .logs
            .iter()
            .filter(|l| l.service == service && l.at >= start && l.at <= end)
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl Traces for Recorded {
    fn name(&self) -> &str {
        "recorded"
    }

    async fn spans(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<Span>, String> {
        let mut ids: Vec<&str> = Vec::new();
        for s in self.world.spans.iter().filter(|s| s.service == service && s.start >= start && s.start <= end) {
            if ids.len() < limit && !ids.contains(&s.trace_id.as_str()) {
                ids.push(&s.trace_id);
            }
        }
        Ok(self.world.spans.iter().filter(|s| ids.contains(&s.trace_id.as_str())).cloned().collect())
    }
}

#[async_trait]
impl Changes for Recorded {
    fn name(&self) -> &str {
        "recorded"
    }

    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>, String> {
        Ok(self
            .world
            .changes
            .iter()
            .filter(|c| c.service == service && c.at >= start && c.at <= end)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl Pods for Recorded {
    fn name(&self) -> &str {
        "recorded"
    }

    async fn pods(&self, service: &str) -> Result<Vec<Pod>, String> {
        let pods = match (self.acted(), &self.world.after_pods) {
            (Some(_), Some(after)) => after,
            _ => &self.world.pods,
        };
        Ok(pods.iter().filter(|p| p.service == service).cloned().collect())
    }
}

#[async_trait]
impl Topology for Recorded {
    fn name(&self) -> &str {
        "recorded"
    }

    async fn edges(&self) -> Result<Vec<Edge>, String> {
        Ok(self.world.topology.clone())
    }
}

impl crate::executor::Simulate for Recorded {
    fn act(&self, at: Millis) {
        Recorded::act(self, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Request, Sources, gather};
    use crate::scenario::Scenario;
    use std::sync::Arc;
    use std::time::Duration;

    fn world() -> World {
        let yaml = "name: t\nnow: 2026-11-21T15:00:00Z\nalerts:\n  - labels: {alertname: A, service: s}\n    starts: -5m\n\
                    series:\n  - {query: q, labels: {service: s}, start: -4m, interval: 1m, values: '9x4'}\n\
                    changes:\n  - {kind: deploy, service: s, summary: d, at: -10m}\n  - {kind: deploy, service: t, summary: other, at: -10m}\n\
                    pods:\n  - {name: s-1, service: s, reason: CrashLoopBackOff, restarts: 7}\n\
                    after:\n  series:\n    - {query: q, labels: {service: s}, start: 0, interval: 1m, values: '1x3'}\n  pods:\n    - {name: s-2, service: s}\n";
        serde_norway::from_str::<Scenario>(yaml).unwrap().world().unwrap()
    }

    fn request(now: Millis) -> Request {
        let q = MetricQuery {
            name: "q".into(),
            promql: "q".into(),
            start: now - 3_600_000,
            end: now + 3_600_000,
            step: 60_000,
            service: None,
        };
        Request {
            services: vec!["s".into()],
            start: now - 3_600_000,
            end: now + 3_600_000,
            changes_start: now - 3_600_000,
            queries: vec![q],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn serves_the_world_and_switches_after_the_action() {
        let r = Arc::new(Recorded::new(world()));
        let now = r.world().now;
        let sources = Sources::all(r.clone(), Duration::from_secs(1));
        let ctx = gather(&sources, &request(now)).await;
        assert_eq!(ctx.series[0].points.len(), 5);
        assert_eq!(ctx.changes.len(), 1, "only the incident's service");
        assert_eq!(ctx.pods[0].reason.as_deref(), Some("CrashLoopBackOff"));
        assert!(ctx.unavailable.is_empty());

        r.act(now - 120_000);
        let ctx = gather(&sources, &request(now)).await;
        let values: Vec<f64> = ctx.series[0].points.iter().map(|p| p.1).collect();
        assert_eq!(values, [9.0, 9.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(ctx.pods[0].name, "s-2");
    }

    struct Slow;

    #[async_trait]
    impl Metrics for Slow {
        fn name(&self) -> &str {
            "prometheus"
        }
        async fn query_range(&self, _: &MetricQuery) -> Result<Vec<Series>, String> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Vec::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_source_becomes_a_visible_line() {
        let r = Arc::new(Recorded::new(world()));
        let now = r.world().now;
        let mut sources = Sources::all(r, Duration::from_secs(5));
        sources.metrics = Some(Arc::new(Slow));
        let ctx = gather(&sources, &request(now)).await;
        assert_eq!(ctx.unavailable, ["metrics: prometheus timed out after 5s"]);
        assert_eq!(ctx.changes.len(), 1, "the other sources still answer");
    }
}
