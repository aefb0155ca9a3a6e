//! medic's own metrics, rendered in the Prometheus text exposition format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ =
                writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", self.buckets[i].load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

type ContextKey = (&'static str, String, bool);

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    alerts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<(String, u16), std::sync::Arc<Histogram>>>,
    commit: Histogram,
    committed_submissions: AtomicU64,
    /// By (kind, backend, succeeded).
    context: Mutex<BTreeMap<ContextKey, std::sync::Arc<Histogram>>>,
    gather: Histogram,
    diagnose: Histogram,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// One intake request and how it ended (`stored`, `unauthorized`, `invalid`, …).
    pub fn intake_request(&self, source: &'static str, result: &'static str) {
        *self.requests.lock().unwrap().entry((source, result)).or_default() += 1;
    }

    /// A submission's alerts by what correlation made of them (`new`, `updated`, …): one lock.
    pub fn alerts(&self, source: &'static str, by_outcome: &[(&'static str, u64)]) {
        let mut alerts = self.alerts.lock().unwrap();
        for (outcome, n) in by_outcome.iter().filter(|(_, n)| *n > 0) {
            *alerts.entry((source, *outcome)).or_default() += n;
        }
    }

    pub fn observe_request(&self, route: &str, status: u16, d: Duration) {
        let h = self.latency.lock().unwrap().entry((route.to_string(), status)).or_default().clone();
        h.observe(d);
    }

    pub fn observe_commit(&self, d: Duration, submissions: usize) {
        self.commit.observe(d);
        self.committed_submissions.fetch_add(submissions as u64, Ordering::Relaxed);
    }

    /// One call to a context source: its kind (`metrics`, `logs`, …), backend and outcome.
    pub fn observe_context_query(&self, kind: &'static str, source: &str, ok: bool, d: Duration) {
        let h = self.context.lock().unwrap().entry((kind, source.to_string(), ok)).or_default().clone();
        h.observe(d);
    }

    /// One investigation: gathering the context, then diagnosing.
    pub fn observe_investigation(&self, gather: Duration, diagnose: Duration) {
        self.gather.observe(gather);
        self.diagnose.observe(diagnose);
    }

    /// The exposition text; `open` and `resolving` are read from the store by the caller.
    /// `chat`: (platform, state, deliveries) for the `medic_chat_deliveries` gauge; `runbooks`:
    /// each runbook's autonomy record.
    pub fn render(
        &self,
        open: i64,
        resolving: i64,
        chat: &[(&str, &str, i64)],
        runbooks: &[crate::store::RunbookStats],
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP medic_intake_requests_total Intake requests by source and result.\n# TYPE medic_intake_requests_total counter\n");
        for ((s, r), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(out, "medic_intake_requests_total{{source=\"{s}\",result=\"{r}\"}} {n}");
        }
        out.push_str("# HELP medic_alerts_received_total Alerts received by source and what correlation made of them.\n# TYPE medic_alerts_received_total counter\n");
        for ((s, r), n) in self.alerts.lock().unwrap().iter() {
            let _ = writeln!(out, "medic_alerts_received_total{{source=\"{s}\",result=\"{r}\"}} {n}");
        }
        out.push_str("# HELP medic_incidents Unresolved incidents by state.\n# TYPE medic_incidents gauge\n");
        let _ = writeln!(
            out,
            "medic_incidents{{state=\"open\"}} {open}\nmedic_incidents{{state=\"resolving\"}} {resolving}"
        );
        out.push_str("# HELP medic_chat_deliveries Chat deliveries waiting (pending), waiting after a failed attempt (failing: an outage or refused credentials), and refused for good in the last 24 h (failed).\n# TYPE medic_chat_deliveries gauge\n");
        for (platform, state, n) in chat {
            let _ = writeln!(out, "medic_chat_deliveries{{platform=\"{}\",state=\"{state}\"}} {n}", label(platform));
        }
        out.push_str("# HELP medic_http_request_duration_seconds HTTP request latency by route and status.\n# TYPE medic_http_request_duration_seconds histogram\n");
        for ((route, status), h) in self.latency.lock().unwrap().iter() {
            h.render(
                &mut out,
                "medic_http_request_duration_seconds",
                &format!("route=\"{}\",status=\"{status}\"", label(route)),
            );
        }
        out.push_str("# HELP medic_store_commit_duration_seconds Time to commit one intake batch.\n# TYPE medic_store_commit_duration_seconds histogram\n");
        self.commit.render(&mut out, "medic_store_commit_duration_seconds", "");
        out.push_str("# HELP medic_store_committed_submissions_total Intake submissions committed.\n# TYPE medic_store_committed_submissions_total counter\n");
        let _ = writeln!(
            out,
            "medic_store_committed_submissions_total {}",
            self.committed_submissions.load(Ordering::Relaxed)
        );
        out.push_str("# HELP medic_context_query_duration_seconds Calls to context sources by kind, backend and outcome.\n# TYPE medic_context_query_duration_seconds histogram\n");
        for ((kind, source, ok), h) in self.context.lock().unwrap().iter() {
            let outcome = if *ok { "ok" } else { "failed" };
            h.render(
                &mut out,
                "medic_context_query_duration_seconds",
                &format!("kind=\"{kind}\",source=\"{}\",outcome=\"{outcome}\"", label(source)),
            );
        }
        out.push_str("# HELP medic_investigation_duration_seconds Time from trigger to diagnosis, by phase.\n# TYPE medic_investigation_duration_seconds histogram\n");
        self.gather.render(&mut out, "medic_investigation_duration_seconds", "phase=\"gather\"");
        self.diagnose.render(&mut out, "medic_investigation_duration_seconds", "phase=\"diagnose\"");
        out.push_str("# HELP medic_runbook_auto Whether the runbook has earned (or was granted) running by itself: 1, else 0.\n# TYPE medic_runbook_auto gauge\n");
        for r in runbooks {
            let _ =
                writeln!(out, "medic_runbook_auto{{runbook=\"{}\"}} {}", label(&r.record.runbook), r.record.auto as u8);
        }
        out.push_str("# HELP medic_runbook_streak Verified executions in a row since the runbook's last failure, stop or revocation.\n# TYPE medic_runbook_streak gauge\n");
        for r in runbooks {
            let _ =
                writeln!(out, "medic_runbook_streak{{runbook=\"{}\"}} {}", label(&r.record.runbook), r.record.streak);
        }
        out.push_str("# HELP medic_runbook_executions_total Executions of the runbook's plans by result (verified, failed: rolled back, failed or interrupted).\n# TYPE medic_runbook_executions_total counter\n");
        for r in runbooks {
            let rb = label(&r.record.runbook);
            let _ = writeln!(
                out,
                "medic_runbook_executions_total{{runbook=\"{rb}\",result=\"verified\"}} {}",
                r.record.verified
            );
            let _ = writeln!(
                out,
                "medic_runbook_executions_total{{runbook=\"{rb}\",result=\"failed\"}} {}",
                r.record.failed
            );
        }
        out.push_str("# HELP medic_runbook_median_fix_seconds Median time from an incident's first alert to the verified end of the runbook's plan.\n# TYPE medic_runbook_median_fix_seconds gauge\n");
        for r in runbooks {
            if let Some(m) = r.median_fix_secs {
                let _ =
                    writeln!(out, "medic_runbook_median_fix_seconds{{runbook=\"{}\"}} {m}", label(&r.record.runbook));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.intake_request("alertmanager", "stored");
        m.alerts("alertmanager", &[("new", 1), ("stale", 0)]);
        m.observe_request("/v1/alerts/alertmanager", 200, Duration::from_millis(3));
        let rb = crate::store::RunbookStats {
            record: crate::autonomy::Record {
                runbook: "restart".into(),
                auto: true,
                streak: 5,
                verified: 6,
                ..Default::default()
            },
            ..Default::default()
        };
        let text = m.render(2, 1, &[], &[rb]);
        assert!(text.contains("medic_runbook_auto{runbook=\"restart\"} 1"));
        assert!(text.contains("medic_runbook_executions_total{runbook=\"restart\",result=\"verified\"} 6"));
        assert!(text.contains("medic_intake_requests_total{source=\"alertmanager\",result=\"stored\"} 1"));
        assert!(text.contains("medic_incidents{state=\"open\"} 2"));
        assert!(text.contains("route=\"/v1/alerts/alertmanager\",status=\"200\",le=\"0.005\"} 1"));
        assert!(text.contains("route=\"/v1/alerts/alertmanager\",status=\"200\",le=\"0.0025\"} 0"));
    }
}
