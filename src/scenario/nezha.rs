//! A recorded backend for data in the shape Nezha (Yu et al., FSE 2023) published for
//! TrainTicket and OnlineBoutique: per-pod metric CSVs at one-minute steps, application-log CSVs
//! and span CSVs in files named by UTC minute, and a fault list; OnlineBoutique's days add
//! call-edge latency files (as the caller and as the callee measured each call) and a
//! dependency list. [`Nezha::open`] reads a directory holding such days (`rca_data/<day>/…`,
//! `construct_data/<day>/…`, or one day's folder) and serves any time window through the same
//! traits as the live backends: [`Metrics`] (the golden signals of [`golden`], by service),
//! [`Logs`], [`Traces`], [`Pods`] and [`crate::context::Topology`]. A pod's service is its name
//! without the last two `-` parts. Log and span files are parsed when a window first needs them,
//! and kept; a window whose files are absent simply has no lines or spans.
//!
//! Times in the files are UTC; the clock printed inside a log message is not read.

use crate::context::{Edge, Golden, LogLine, Logs, MetricQuery, Metrics, Pod, Pods, Series, Span, Traces};
use crate::runbook::Unit;
use crate::time::Millis;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The metric columns served, by golden-signal name: the column, its unit, and the factor to
/// that unit.
const COLUMNS: [(&str, &str, Unit, f64); 4] = [
    ("cpu", "CpuUsageRate(%)", Unit::Ratio, 0.01),
    ("memory", "MemoryUsage(Mi)", Unit::Bytes, 1048576.0),
    ("latency_p90", "PodServerLatencyP90(s)", Unit::Seconds, 1.0),
    ("requests", "PodWorkload(Ops)", Unit::Number, 1.0),
];

/// The call-edge latency files (OnlineBoutique's days have them; TrainTicket's do not): one
/// column per `<caller>_<callee>` edge, seconds. Served per callee, as the mean over the edges
/// into it: `destination_50.csv` as the callee measured the calls, `source_50.csv` as its
/// callers did.
const EDGE_FILES: [(&str, &str); 2] =
    [("latency_p50_served", "destination_50.csv"), ("latency_p50_by_callers", "source_50.csv")];

/// The golden signals this data answers, written as the PromQL a Kubernetes cluster with
/// cAdvisor and Istio metrics would run for them.
pub fn golden() -> Vec<Golden> {
    let promql = [
        r#"sum(rate(container_cpu_usage_seconds_total{container!="",pod=~"{{service}}-.*"}[1m])) / sum(kube_pod_container_resource_limits{resource="cpu",pod=~"{{service}}-.*"})"#,
        r#"sum(container_memory_working_set_bytes{container!="",pod=~"{{service}}-.*"})"#,
        r#"histogram_quantile(0.9, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload="{{service}}"}[1m]))) / 1000"#,
        r#"sum(rate(istio_requests_total{reporter="destination",destination_workload="{{service}}"}[1m]))"#,
    ];
    let edge = |reporter: &str| {
        format!(
            r#"histogram_quantile(0.5, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{reporter="{reporter}",destination_workload="{{{{service}}}}"}}[1m]))) / 1000"#
        )
    };
    let mut out: Vec<Golden> = COLUMNS
        .iter()
        .zip(promql)
        .map(|((name, _, unit, _), q)| Golden {
            name: name.to_string(),
            promql: q.into(),
            unit: *unit,
            callers_view_of: None,
        })
        .collect();
    out.push(Golden {
        name: EDGE_FILES[0].0.into(),
        promql: edge("destination"),
        unit: Unit::Seconds,
        callers_view_of: None,
    });
    out.push(Golden {
        name: EDGE_FILES[1].0.into(),
        promql: edge("source"),
        unit: Unit::Seconds,
        callers_view_of: Some(EDGE_FILES[0].0.into()),
    });
    out
}

/// One injected fault of a fault list.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Millis,
    pub pod: String,
    pub service: String,
    pub kind: String,
}

/// The service of a pod: its name without the ReplicaSet and pod suffixes.
pub fn service_of(pod: &str) -> &str {
    let mut parts = pod.rsplitn(3, '-');
    let (_, _, rest) = (parts.next(), parts.next(), parts.next());
    rest.unwrap_or(pod)
}

/// A file of one kind covering about the minute before its name's minute (some cover up to
/// three); the range it is read for is wider.
#[derive(Debug, Clone)]
struct Window {
    path: PathBuf,
    from: Millis,
    to: Millis,
}

/// A pod's name and, per metric column, its points.
type PodMetrics = (String, Vec<Vec<(Millis, f64)>>);
/// A log file's lines by service.
type LogFile = Arc<HashMap<String, Vec<LogLine>>>;

pub struct Nezha {
    /// service → its pod's metrics.
    pods: BTreeMap<String, PodMetrics>,
    /// callee service → per [`EDGE_FILES`] entry, the mean latency of the calls into it.
    edge_latency: BTreeMap<String, [Vec<(Millis, f64)>; 2]>,
    /// The service → service calls of `dependency.csv` (its service → node rows left out).
    topology: Vec<Edge>,
    logs: Vec<Window>,
    traces: Vec<Window>,
    parsed_logs: Mutex<HashMap<PathBuf, LogFile>>,
    parsed_spans: Mutex<HashMap<PathBuf, Arc<Vec<Span>>>>,
}

fn day_of(dir: &Path) -> Option<Millis> {
    let name = dir.file_name()?.to_str()?;
    let d = chrono::NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The day folders under `dir` (itself, or up to two levels down).
fn days(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        if day_of(&d).is_some() {
            out.push(d);
            continue;
        }
        if depth < 2
            && let Ok(rd) = std::fs::read_dir(&d)
        {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| (e.path(), depth + 1)));
        }
    }
    out.sort();
    out
}

fn windows(day: &Path, kind: &str) -> Vec<Window> {
    let Some(base) = day_of(day) else { return Vec::new() };
    let Ok(rd) = std::fs::read_dir(day.join(kind)) else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let hhmm = name.strip_suffix(&format!("_{kind}.csv"))?;
            let (h, m) = hhmm.split_once('_')?;
            let t = base + (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?) * 60_000;
            Some(Window { path: e.path(), from: t - 4 * 60_000, to: t + 2 * 60_000 })
        })
        .collect()
}

/// A file parsed once: the kept result, or `parse`'s, kept.
fn cached<T>(
    cache: &Mutex<HashMap<PathBuf, Arc<T>>>,
    path: &Path,
    parse: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<Arc<T>, String> {
    if let Some(p) = cache.lock().unwrap().get(path) {
        return Ok(p.clone());
    }
    let parsed = Arc::new(parse(path)?);
    cache.lock().unwrap().insert(path.to_path_buf(), parsed.clone());
    Ok(parsed)
}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, String> {
    csv::ReaderBuilder::new().flexible(true).from_path(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_f64(s: &str) -> f64 {
    s.trim().parse().unwrap_or(f64::NAN)
}

/// A row's time from its `Time` column, a Go time string in UTC (`2022-08-22 03:51:19.799 +0000
/// UTC m=+0.3`), to the second; its `TimeStamp` (Unix seconds) only where `Time` does not read:
/// in one OnlineBoutique file `TimeStamp` is corrupt (the data's README).
fn row_time(time: &str, timestamp: Option<&str>) -> Option<Millis> {
    go_time(time).or_else(|| Some(timestamp?.trim().parse::<i64>().ok()? * 1000))
}

fn go_time(time: &str) -> Option<Millis> {
    let t = chrono::NaiveDateTime::parse_from_str(time.get(..19)?, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(t.and_utc().timestamp_millis())
}

/// Per callee, the mean over the edges into it of one `<caller>_<callee>` latency file.
fn edge_file(path: &Path, callees: &BTreeSet<String>) -> Result<BTreeMap<String, Vec<(Millis, f64)>>, String> {
    let mut r = reader(path)?;
    let header = r.headers().map_err(|e| format!("{}: {e}", path.display()))?.clone();
    // An edge column is `<caller>_<callee>`; service names hold no `_`, but match the callee
    // from the known services all the same.
    let callee_of: Vec<Option<&String>> = header
        .iter()
        .map(|h| callees.iter().find(|c| h.ends_with(&format!("_{c}")) && h.len() > c.len() + 1))
        .collect();
    let mut out: BTreeMap<String, Vec<(Millis, f64)>> = BTreeMap::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(t) = rec.get(0).and_then(|t| row_time(t, rec.get(1))) else { continue };
        let mut sums: BTreeMap<&String, (f64, usize)> = BTreeMap::new();
        for (v, callee) in rec.iter().zip(&callee_of) {
            let (Some(callee), v) = (callee, parse_f64(v)) else { continue };
            if v.is_finite() {
                let e = sums.entry(callee).or_default();
                (e.0, e.1) = (e.0 + v, e.1 + 1);
            }
        }
        for (callee, (sum, n)) in sums {
            out.entry(callee.clone()).or_default().push((t, sum / n as f64));
        }
    }
    Ok(out)
}

/// The service → service rows of a `dependency.csv` (`Source,Target,Weight`); rows whose target
/// is a node's address place a pod and are not calls.
fn dependencies(path: &Path) -> Result<Vec<Edge>, String> {
    let mut r = reader(path)?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        let (Some(from), Some(to)) = (rec.get(0), rec.get(1)) else { continue };
        if to.parse::<std::net::IpAddr>().is_err() && from != to {
            out.push(Edge { from: from.to_string(), to: to.to_string() });
        }
    }
    Ok(out)
}

impl Nezha {
    /// Reads the metric files under `dir` and indexes its log and trace files.
    pub fn open(dir: &Path) -> Result<Nezha, String> {
        let days = days(dir);
        if days.is_empty() {
            return Err(format!("{}: no day folder (YYYY-MM-DD) with metric, log or trace files", dir.display()));
        }
        let mut pods: BTreeMap<String, (String, BTreeMap<Millis, Vec<f64>>)> = BTreeMap::new();
        let (mut logs, mut traces) = (Vec::new(), Vec::new());
        for day in &days {
            logs.extend(windows(day, "log"));
            traces.extend(windows(day, "trace"));
            let Ok(rd) = std::fs::read_dir(day.join("metric")) else { continue };
            for e in rd.flatten() {
                let path = e.path();
                if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("_metric.csv")) {
                    continue;
                }
                let mut r = csv::Reader::from_path(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let header = r.headers().map_err(|e| format!("{}: {e}", path.display()))?.clone();
                let col = |name: &str| {
                    header.iter().position(|h| h == name).ok_or_else(|| format!("{}: no column {name}", path.display()))
                };
                let (time, ts, pod_col) = (col("Time")?, col("TimeStamp")?, col("PodName")?);
                let cols: Vec<usize> = COLUMNS.iter().map(|c| col(c.1)).collect::<Result<_, _>>()?;
                for rec in r.records() {
                    let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
                    let t = rec.get(time).and_then(|t| row_time(t, rec.get(ts)));
                    let (Some(t), Some(pod)) = (t, rec.get(pod_col)) else {
                        continue;
                    };
                    let values = cols.iter().zip(COLUMNS).map(|(i, c)| parse_f64(rec.get(*i).unwrap_or("")) * c.3);
                    let entry =
                        pods.entry(service_of(pod).to_string()).or_insert_with(|| (pod.to_string(), BTreeMap::new()));
                    entry.1.insert(t, values.collect());
                }
            }
        }
        let services: BTreeSet<String> = pods.keys().cloned().collect();
        let mut edge_latency: BTreeMap<String, [Vec<(Millis, f64)>; 2]> = BTreeMap::new();
        let mut topology = Vec::new();
        for day in &days {
            let metric = day.join("metric");
            for (i, (_, file)) in EDGE_FILES.iter().enumerate() {
                let path = metric.join(file);
                if path.exists() {
                    for (callee, points) in edge_file(&path, &services)? {
                        edge_latency.entry(callee).or_default()[i].extend(points);
                    }
                }
            }
            let path = metric.join("dependency.csv");
            if path.exists() {
                topology.extend(dependencies(&path)?);
            }
        }
        edge_latency.values_mut().flatten().for_each(|p| {
            p.sort_by_key(|x| x.0);
            p.dedup_by_key(|x| x.0);
        });
        topology.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        topology.dedup();
        let pods = pods
            .into_iter()
            .map(|(s, (pod, rows))| {
                let per: Vec<Vec<(Millis, f64)>> = (0..COLUMNS.len())
                    .map(|i| rows.iter().filter(|(_, v)| v[i].is_finite()).map(|(t, v)| (*t, v[i])).collect())
                    .collect();
                (s, (pod, per))
            })
            .collect();
        Ok(Nezha {
            pods,
            edge_latency,
            topology,
            logs,
            traces,
            parsed_logs: Default::default(),
            parsed_spans: Default::default(),
        })
    }

    /// Every service with metrics.
    pub fn services(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// A log file's lines by service, oldest first.
    fn log_file(&self, w: &Window) -> Result<LogFile, String> {
        cached(&self.parsed_logs, &w.path, Self::parse_logs)
    }

    fn parse_logs(path: &Path) -> Result<HashMap<String, Vec<LogLine>>, String> {
        let mut r = reader(path)?;
        let mut out = Vec::new();
        // A malformed row (a few have stray fields) is skipped, not the file.
        for rec in r.records().flatten() {
            let (Some(ns), Some(pod), Some(raw)) = (rec.get(1), rec.get(3), rec.get(7)) else { continue };
            let Ok(ns) = ns.parse::<i64>() else { continue };
            // The container runtime's JSON line; the message is its `log`.
            let line = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v["log"].as_str().map(|s| application_line(s.trim_end())))
                .unwrap_or_else(|| raw.trim_end().to_string());
            out.push(LogLine { at: ns / 1_000_000, service: service_of(pod).to_string(), line });
        }
        let mut by: HashMap<String, Vec<LogLine>> = HashMap::new();
        for l in out {
            by.entry(l.service.clone()).or_default().push(l);
        }
        by.values_mut().for_each(|v| v.sort_by_key(|l| l.at));
        Ok(by)
    }

    /// The data's topology: the call edges of `dependency.csv`, when the days have one.
    pub fn topology(&self) -> &[Edge] {
        &self.topology
    }

    fn span_file(&self, w: &Window) -> Result<Arc<Vec<Span>>, String> {
        cached(&self.parsed_spans, &w.path, Self::parse_spans)
    }

    fn parse_spans(path: &Path) -> Result<Vec<Span>, String> {
        let mut r = reader(path)?;
        let mut out = Vec::new();
        for rec in r.records().flatten() {
            let f = |i: usize| rec.get(i).unwrap_or("");
            let (Ok(start), Ok(us)) = (f(5).parse::<i64>(), f(7).parse::<u64>()) else { continue };
            out.push(Span {
                trace_id: f(0).to_string(),
                span_id: f(1).to_string(),
                parent: Some(f(2).to_string()).filter(|p| p != "root" && !p.is_empty()),
                service: service_of(f(3)).to_string(),
                operation: f(4).to_string(),
                start: start / 1_000_000,
                duration_us: us,
                error: false,
            });
        }
        Ok(out)
    }
}

/// A log line as the application wrote it: a structured (JSON) line is its level and message
/// (Go, Node.js and Python services write `{"severity": …, "message": …}`), any other line is
/// itself.
fn application_line(line: &str) -> String {
    let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let text = |k: &str| o.get(k).and_then(|v| v.as_str());
    match (text("message").or(text("msg")), text("severity").or(text("level"))) {
        (Some(m), Some(level)) => format!("{} {m}", level.to_uppercase()),
        (Some(m), None) => m.to_string(),
        _ => line.to_string(),
    }
}

/// The fault lists (`*fault_list.json`) of the days under `dir`, oldest first.
pub fn faults(dir: &Path) -> Result<Vec<Fault>, String> {
    let mut out = Vec::new();
    for day in days(dir) {
        let Ok(rd) = std::fs::read_dir(&day) else { continue };
        for e in rd.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with("fault_list.json"))) {
            let text = std::fs::read_to_string(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?;
            let by_hour: BTreeMap<String, Vec<serde_json::Value>> =
                serde_json::from_str(&text).map_err(|err| format!("{}: {err}", e.path().display()))?;
            for f in by_hour.into_values().flatten() {
                let (Some(at), Some(pod)) = (f["inject_time"].as_str(), f["inject_pod"].as_str()) else {
                    return Err(format!("{}: a fault without inject_time or inject_pod", e.path().display()));
                };
                // `inject_time` is UTC; `inject_timestamp` is not reliable (the data's README).
                let at = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S")
                    .map_err(|err| format!("{}: inject_time {at:?}: {err}", e.path().display()))?
                    .and_utc()
                    .timestamp_millis();
                out.push(Fault {
                    at,
                    pod: pod.to_string(),
                    service: service_of(pod).to_string(),
                    kind: f["inject_type"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }
    out.sort_by_key(|f| f.at);
    Ok(out)
}

#[async_trait]
impl Metrics for Nezha {
    fn name(&self) -> &str {
        "nezha"
    }

    async fn query_range(&self, q: &MetricQuery) -> Result<Vec<Series>, String> {
        let Some((pod, per)) = q.service.as_ref().and_then(|s| self.pods.get(s)) else { return Ok(Vec::new()) };
        // A query the data has no column or file for matches no series, as in Prometheus.
        let all = match COLUMNS.iter().position(|c| c.0 == q.name) {
            Some(i) => &per[i],
            None => match EDGE_FILES.iter().position(|e| e.0 == q.name) {
                Some(i) => match self.edge_latency.get(service_of(pod)) {
                    Some(edges) => &edges[i],
                    None => return Ok(Vec::new()),
                },
                None => return Ok(Vec::new()),
            },
        };
        let points: Vec<(Millis, f64)> = all.iter().copied().filter(|(t, _)| *t >= q.start && *t <= q.end).collect();
        if points.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Series {
            query: q.name.clone(),
            labels: [("pod".to_string(), pod.clone()), ("service".to_string(), service_of(pod).to_string())].into(),
            points,
        }])
    }
}

#[async_trait]
impl Logs for Nezha {
    fn name(&self) -> &str {
        "nezha"
    }

    async fn lines(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<LogLine>, String> {
        let mut out = Vec::new();
        for w in self.logs.iter().filter(|w| w.to >= start && w.from <= end) {
            let file = self.log_file(w)?;
            let lines = file.get(service).map_or(&[][..], Vec::as_slice);
            out.extend(lines.iter().filter(|l| l.at >= start && l.at <= end).cloned());
        }
        out.sort_by_key(|l| l.at);
        out.truncate(limit);
        Ok(out)
    }
}

#[async_trait]
impl Traces for Nezha {
    fn name(&self) -> &str {
        "nezha"
    }

    async fn spans(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<Span>, String> {
        let mut files = Vec::new();
        for w in self.traces.iter().filter(|w| w.to >= start && w.from <= end) {
            files.push(self.span_file(w)?);
        }
        // The traces with a span of `service` that started in the range, the first `limit`.
        let mut ids: Vec<(Millis, &str)> = files
            .iter()
            .flat_map(|f| f.iter())
            .filter(|s| s.service == service && s.start >= start && s.start <= end)
            .map(|s| (s.start, s.trace_id.as_str()))
            .collect();
        ids.sort();
        let mut chosen = BTreeSet::new();
        for (_, id) in ids {
            if chosen.len() >= limit {
                break;
            }
            chosen.insert(id);
        }
        Ok(files.iter().flat_map(|f| f.iter()).filter(|s| chosen.contains(s.trace_id.as_str())).cloned().collect())
    }
}

#[async_trait]
impl crate::context::Topology for Nezha {
    fn name(&self) -> &str {
        "nezha dependency.csv"
    }

    async fn edges(&self) -> Result<Vec<Edge>, String> {
        Ok(self.topology.clone())
    }
}

#[async_trait]
impl Pods for Nezha {
    fn name(&self) -> &str {
        "nezha"
    }

    async fn pods(&self, service: &str) -> Result<Vec<Pod>, String> {
        Ok(self
            .pods
            .get(service)
            .map(|(pod, _)| Pod {
                name: pod.clone(),
                service: service.to_string(),
                phase: "Running".into(),
                reason: None,
                restarts: 0,
                last_termination: None,
                events: Vec::new(),
            })
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OnlineBoutique's differences (the data's README): a corrupt `TimeStamp` (the `Time`
    /// column is right), call-edge latency files, a dependency list with node rows, and log
    /// lines that are themselves JSON.
    #[tokio::test]
    async fn an_onlineboutique_day_is_read_with_its_differences() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("2022-08-22");
        std::fs::create_dir_all(day.join("metric")).unwrap();
        std::fs::create_dir_all(day.join("log")).unwrap();
        let header = "Time,TimeStamp,PodName,CpuUsage(m),CpuUsageRate(%),MemoryUsage(Mi),MemoryUsageRate(%),SyscallRead,SyscallWrite,NetworkReceiveBytes,NetworkTransmitBytes,PodClientLatencyP90(s),PodServerLatencyP90(s),PodClientLatencyP95(s),PodServerLatencyP95(s),PodClientLatencyP99(s),PodServerLatencyP99(s),PodWorkload(Ops),PodSuccessRate(%),NodeCpuUsageRate(%),NodeMemoryUsageRate(%),NodeNetworkReceiveBytes";
        let row = |min: u32, stamp: &str, pod: &str, cpu: f64| {
            format!(
                "2022-08-22 03:{min:02}:19.607158889 +0000 UTC m=+0.1,{stamp},{pod},1,{cpu},10,1,0,0,0,0,0,0.01,0,0,0,0,5,0,0,0,0"
            )
        };
        let ad = "adservice-5f6585d649-fnmft";
        let metric = format!("{header}\n{}\n{}\n", row(51, "1861140279", ad, 20.0), row(52, "1861140339", ad, 90.0));
        std::fs::write(day.join("metric").join(format!("{ad}_metric.csv")), metric).unwrap();
        let cart = "cartservice-579f59597d-wc2lz";
        std::fs::write(
            day.join("metric").join(format!("{cart}_metric.csv")),
            format!("{header}\n{}\n", row(51, "1661140279", cart, 5.0)),
        )
        .unwrap();
        let edges = |v: f64| {
            format!(
                "time,timestamp,frontend_cartservice,checkoutservice_cartservice,frontend_adservice\n2022-08-22 03:51:20.02 +0000 UTC m=+0.5,1661140280,{v},0.004,\n"
            )
        };
        std::fs::write(day.join("metric/source_50.csv"), edges(0.24)).unwrap();
        std::fs::write(day.join("metric/destination_50.csv"), edges(0.002)).unwrap();
        std::fs::write(
            day.join("metric/dependency.csv"),
            "Source,Target,Weight\nfrontend,cartservice,1\ncartservice,33.33.33.80,1\n",
        )
        .unwrap();
        let line = serde_json::json!({"log": "{\"message\":\"TraceID: ab SpanID: cd Serving product page started\",\"severity\":\"info\"}\n", "stream": "stdout"});
        std::fs::write(
            day.join("log/03_52_log.csv"),
            format!("Timestamp,TimeUnixNano,Node,PodName,Container,TraceID,SpanID,Log\nx,1661140300000000000,n,frontend-579b9bff58-t2dbm,server,ab,cd,\"{}\"\n", line.to_string().replace('"', "\"\"")),
        )
        .unwrap();
        let data = Nezha::open(dir.path()).unwrap();
        let at = |min: i64| {
            chrono::DateTime::parse_from_rfc3339("2022-08-22T03:00:00Z").unwrap().timestamp_millis() + min * 60_000
        };
        let query = |name: &str, service: &str| MetricQuery {
            name: name.into(),
            promql: String::new(),
            service: Some(service.into()),
            start: at(50),
            end: at(53),
            step: 60_000,
        };
        let cpu = data.query_range(&query("cpu", "adservice")).await.unwrap();
        assert_eq!(
            cpu[0].points,
            vec![(at(51) + 19_000, 0.2), (at(52) + 19_000, 0.9)],
            "from Time, not the corrupt TimeStamp"
        );
        let callers = data.query_range(&query("latency_p50_by_callers", "cartservice")).await.unwrap();
        assert_eq!(callers[0].points, vec![(at(51) + 20_000, (0.24 + 0.004) / 2.0)]);
        let served = data.query_range(&query("latency_p50_served", "cartservice")).await.unwrap();
        assert_eq!(served[0].points, vec![(at(51) + 20_000, (0.002 + 0.004) / 2.0)]);
        assert!(
            data.query_range(&query("latency_p50_served", "adservice")).await.unwrap().is_empty(),
            "no calls that minute"
        );
        assert_eq!(
            data.topology(),
            &[Edge { from: "frontend".into(), to: "cartservice".into() }][..],
            "node rows are not calls"
        );
        let logs = data.lines("frontend", at(50), at(53), 10).await.unwrap();
        assert_eq!(logs[0].line, "INFO TraceID: ab SpanID: cd Serving product page started");
        assert!(golden().iter().any(|g| g.callers_view_of.as_deref() == Some("latency_p50_served")));
    }

    #[test]
    fn pods_map_to_services() {
        assert_eq!(service_of("ts-food-service-f5756978c-k8vqf"), "ts-food-service");
        assert_eq!(service_of("solo"), "solo");
    }
}
