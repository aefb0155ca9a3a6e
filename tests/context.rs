//! The context backends against local fakes that speak their real wire formats (fixtures
//! captured from Alertmanager 0.25, or taken from the GitHub and Kubernetes API references),
//! including refused credentials, rate limits, errors, oversized answers and slowness; and
//! `gather` over them: topology widening the question, one budget, every call recorded.

use axum::http::{HeaderMap, StatusCode, Uri};
use medic::context::alertmanager::Alertmanager;
use medic::context::github::{GitHub, Repo};
use medic::context::http::Auth;
use medic::context::kubernetes::{Kubernetes, KubernetesConfig};
use medic::context::prometheus::Prometheus;
use medic::context::topology::{FileTopology, ServiceGraph, ServiceGraphKind};
use medic::context::{Alerts, Cache, Changes, Golden, Pods, Request, Sources, Topology, gather};
use medic::secret::Secret;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;
type Answer = (StatusCode, Vec<(&'static str, String)>, String);

/// A server answering every GET with `answer(path_and_query)`, recording what it was asked.
async fn fake(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let (s, answer) = (seen.clone(), Arc::new(answer));
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let (s, answer) = (s.clone(), answer.clone());
        async move {
            let pq = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            s.lock().unwrap().push((pq.clone(), headers));
            if pq.contains("slow") {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let (status, headers, body) = answer(&pq);
            let mut resp = axum::response::Response::new(axum::body::Body::from(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
            for (k, v) in headers {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn ok(body: String) -> Answer {
    (StatusCode::OK, vec![], body)
}

fn decode(pq: &str) -> String {
    url::form_urlencoded::parse(pq.split_once('?').map(|x| x.1).unwrap_or("").as_bytes())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------- Alertmanager

#[tokio::test]
async fn alertmanager_active_alerts_and_silences() {
    let (base, seen) = fake(|pq| {
        if pq.starts_with("/api/v2/alerts") {
            ok(fixture("alertmanager-0.25-api-v2-alerts.json"))
        } else {
            ok(fixture("alertmanager-0.25-api-v2-silences.json"))
        }
    })
    .await;
    let am = Alertmanager::new(&base, Auth::Bearer(Secret::new("am-token")), vec![], T).unwrap();
    let alerts = am.active().await.unwrap();
    assert_eq!(alerts.len(), 3);
    let payments = alerts.iter().find(|a| a.name() == "HighLatency").unwrap();
    assert_eq!(payments.state, "suppressed");
    assert_eq!(payments.fingerprint, "158b4cbced280641");
    assert_eq!(payments.summary.as_deref(), Some("p99 latency of payments above 1s"));
    let silences = am.silences().await.unwrap();
    assert_eq!(silences.len(), 2);
    let bob = silences.iter().find(|s| s.created_by == "bob").unwrap();
    assert!(bob.matchers.contains(&"service=\"payments\"".to_string()), "{:?}", bob.matchers);
    assert!(bob.matchers.contains(&"alertname=~\"High.*\"".to_string()), "{:?}", bob.matchers);
    assert!(bob.concerns("payments") && !bob.concerns("checkout"));
    let carol = silences.iter().find(|s| s.created_by == "carol").unwrap();
    assert_eq!(carol.matchers, ["service!=\"search\""]);
    assert!(!carol.concerns("search") && !carol.concerns("checkout"), "a negative matcher names no service");

    let seen = seen.lock().unwrap();
    assert_eq!(decode(&seen[0].0), "active=true&silenced=true&inhibited=true");
    assert_eq!(seen[0].1["authorization"], "Bearer am-token");
}

#[tokio::test]
async fn alertmanager_failures_are_worded() {
    let (base, _) = fake(|pq| {
        if pq.contains("alerts") {
            (StatusCode::UNAUTHORIZED, vec![], "Unauthorized".into())
        } else {
            ok("{\"not\": \"a list\"}".into())
        }
    })
    .await;
    let am = Alertmanager::new(&base, Auth::None, vec![], T).unwrap();
    assert_eq!(am.active().await.unwrap_err(), "HTTP 401: credentials refused");
    assert!(am.silences().await.unwrap_err().starts_with("not a Alertmanager response"));
}

// ---------------------------------------------------------------- GitHub

fn millis(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_millis()
}

#[tokio::test]
async fn github_deployments_and_releases_become_changes() {
    let (base, seen) = fake(|pq| {
        if pq.contains("/deployments") {
            ok(fixture("github/deployments.json"))
        } else {
            ok(fixture("github/releases.json"))
        }
    })
    .await;
    let repos = vec![Repo { repo: "example/checkout".into(), service: "checkout".into(), environment: None }];
    let gh = GitHub::new(&base, Some(Secret::new("ghp_x")), repos, T).unwrap();
    let (start, end) = (millis("2026-11-21T00:00:00Z"), millis("2026-11-22T00:00:00Z"));
    let mut changes = gh.changes("checkout", start, end).await.unwrap();
    changes.sort_by_key(|c| c.at);
    let summaries: Vec<&str> = changes.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [
            "GitHub deployment of 0f3b2c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c (0f3b2c1) to staging",
            "release v2.14.0 of example/checkout published: v2.14.0: smaller connection pool",
            "GitHub deployment of v2.14.0 (a84d88e) to production: Deploy v2.14.0 (pool size 50 -> 10)",
        ],
        "the old deployment is outside the window; the draft release is left out"
    );
    assert_eq!(changes[0].version.as_deref(), Some("0f3b2c1"));
    assert_eq!(changes[2].author.as_deref(), Some("alice"));
    assert_eq!(changes[2].kind, medic::alert::ChangeKind::Deploy);
    assert_eq!(changes[1].kind, medic::alert::ChangeKind::Release);
    assert!(gh.changes("payments", start, end).await.unwrap().is_empty(), "no repository for payments");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].1["authorization"], "Bearer ghp_x");
    assert_eq!(seen[0].1["x-github-api-version"], "2022-11-28");
    assert!(seen[0].1["user-agent"].to_str().unwrap().starts_with("medic/"));
}

#[tokio::test]
async fn github_rate_limit_and_environment_filter() {
    let (base, seen) = fake(|pq| {
        if pq.contains("limited") {
            (
                StatusCode::FORBIDDEN,
                vec![("x-ratelimit-remaining", "0".into())],
                "{\"message\":\"API rate limit exceeded\"}".into(),
            )
        } else {
            ok("[]".into())
        }
    })
    .await;
    let repos = vec![
        Repo { repo: "example/checkout".into(), service: "checkout".into(), environment: Some("production".into()) },
        Repo { repo: "example/limited".into(), service: "search".into(), environment: None },
    ];
    let gh = GitHub::new(&base, None, repos, T).unwrap();
    assert!(gh.changes("checkout", 0, i64::MAX).await.unwrap().is_empty());
    assert!(decode(&seen.lock().unwrap()[0].0).contains("environment=production"));
    assert!(seen.lock().unwrap()[0].1.get("authorization").is_none(), "no token, no header");
    assert_eq!(
        gh.changes("search", 0, i64::MAX).await.unwrap_err(),
        "example/limited: HTTP 403: rate limited; try again later"
    );
    assert!(
        GitHub::new(&base, None, vec![Repo { repo: "nope".into(), service: "x".into(), environment: None }], T)
            .is_err()
    );
}

// ---------------------------------------------------------------- Kubernetes

async fn kube_fake() -> (String, Seen) {
    fake(|pq| {
        let path = pq.split('?').next().unwrap();
        match path {
            "/api/v1/namespaces/shop/pods" => ok(fixture("kubernetes/pods.json")),
            "/api/v1/namespaces/shop/events" => ok(fixture("kubernetes/events.json")),
            "/apis/apps/v1/namespaces/shop/replicasets" => ok(fixture("kubernetes/replicasets.json")),
            _ => (
                StatusCode::FORBIDDEN,
                vec![],
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:medic:medic\" cannot list resource \"pods\" in API group \"\" in the namespace \"kube-system\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#.into(),
            ),
        }
    })
    .await
}

#[tokio::test]
async fn kubernetes_pods_events_and_rollouts() {
    let (base, seen) = kube_fake().await;
    let cfg = KubernetesConfig { namespace: Some("shop".into()), url: Some(base.clone()), ..Default::default() };
    let k = Kubernetes::connect(&cfg, T).await.unwrap();
    let pods = k.pods("checkout").await.unwrap();
    assert_eq!(pods.len(), 2);
    let bad = &pods[0];
    assert_eq!(bad.name, "checkout-7c9f8d6b5-x2kqp");
    assert_eq!(bad.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(bad.restarts, 6);
    assert_eq!(bad.last_termination.as_deref(), Some("OOMKilled (exit 137) at 2026-11-21T14:21:39.000Z"));
    assert_eq!(bad.events.len(), 2, "only this pod's warnings: {:?}", bad.events);
    assert!(
        bad.events[1].starts_with("BackOff: Back-off restarting failed container checkout")
            && bad.events[1].ends_with("(×23)")
    );
    assert_eq!(pods[1].reason, None);
    assert!(pods[1].events.is_empty());
    {
        let seen = seen.lock().unwrap();
        assert!(decode(&seen[0].0).contains("labelSelector=app.kubernetes.io/name=checkout"), "{}", seen[0].0);
        assert!(seen.iter().any(|(pq, _)| decode(pq).contains("fieldSelector=type=Warning")));
    }

    let changes = k.changes("checkout", millis("2026-11-21T00:00:00Z"), millis("2026-11-22T00:00:00Z")).await.unwrap();
    assert_eq!(changes.len(), 1, "revision 13 is older than the window");
    assert_eq!(
        changes[0].summary,
        "rollout of deployment/checkout to revision 14: checkout=registry.example.com/shop/checkout:2.14.0, envoy=envoyproxy/envoy:v1.31.2"
    );
    assert_eq!(changes[0].version.as_deref(), Some("2.14.0"));
    assert_eq!(changes[0].at, millis("2026-11-21T13:58:01Z"));

    assert!(k.pods("a,b=c").await.unwrap_err().contains("not a Kubernetes label value"), "no selector injection");
    let cfg = KubernetesConfig { namespace: Some("kube-system".into()), url: Some(base), ..Default::default() };
    let other = Kubernetes::connect(&cfg, T).await.unwrap();
    let e = other.pods("checkout").await.unwrap_err();
    assert!(e.starts_with("HTTP 403: pods is forbidden"), "{e}");
}

// ---------------------------------------------------------------- topology and gather

#[tokio::test]
async fn service_graph_topology_from_prometheus() {
    let (base, seen) = fake(|_| {
        ok(r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"client":"checkout","server":"payments"},"value":[1700000000,"3.2"]},
            {"metric":{"client":"payments","server":"postgres"},"value":[1700000000,"9"]},
            {"metric":{"client":"user","server":"checkout"},"value":[1700000000,"1"]},
            {"metric":{"client":"unknown","server":"checkout"},"value":[1700000000,"1"]}]}}"#
            .into())
    })
    .await;
    let p = Arc::new(Prometheus::new(&base, Auth::None, vec![], T).unwrap());
    let edges = ServiceGraph::new(p, ServiceGraphKind::Tempo).edges().await.unwrap();
    assert_eq!(edges.len(), 3, "{edges:?}");
    assert!(decode(&seen.lock().unwrap()[0].0).contains("traces_service_graph_request_total"));
}

#[tokio::test]
async fn gather_widens_to_dependencies_and_records_every_call() {
    // Prometheus: every golden query answers one series; "slow" ones never in time.
    let (prom, prom_seen) = fake(|pq| {
        let q = decode(pq);
        if q.contains("slow") {
            return ok(String::new());
        }
        ok(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"],[1700000060,"2"]]}]}}"#.into())
    })
    .await;
    let (am, _) = fake(|pq| {
        if pq.starts_with("/api/v2/alerts") {
            ok(fixture("alertmanager-0.25-api-v2-alerts.json"))
        } else {
            ok(fixture("alertmanager-0.25-api-v2-silences.json"))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("topology.yaml");
    std::fs::write(&topo, "checkout: [payments]\npayments: [postgres]\n").unwrap();
    let sources = Sources {
        metrics: Some(Arc::new(Prometheus::new(&prom, Auth::None, vec![], T).unwrap())),
        alerts: Some(Arc::new(Alertmanager::new(&am, Auth::None, vec![], T).unwrap())),
        topology: vec![Arc::new(FileTopology::new(&topo))],
        timeout: Duration::from_secs(2),
        budget: Duration::from_secs(4),
        ..Default::default()
    };
    let golden = vec![
        Golden {
            name: "errors".into(),
            promql: r#"errors{service="{{service}}"}"#.into(),
            unit: Default::default(),
            callers_view_of: None,
        },
        Golden {
            name: "slow".into(),
            promql: r#"slow{service="{{service}}"}"#.into(),
            unit: Default::default(),
            callers_view_of: None,
        },
    ];
    let req = Request { services: vec!["checkout".into()], start: 0, end: 3_600_000, golden, ..Default::default() };
    let started = std::time::Instant::now();
    let ctx = gather(&sources, &req).await;
    assert!(started.elapsed() < Duration::from_secs(3), "slow calls are cut at their timeout");
    assert_eq!(ctx.dependencies, ["payments", "postgres"], "nearest first, two hops down too");
    let asked: Vec<String> = prom_seen.lock().unwrap().iter().map(|(pq, _)| decode(pq)).collect();
    assert!(asked.iter().any(|q| q.contains(r#"errors{service="payments"}"#)), "{asked:?}");
    assert!(asked.iter().any(|q| q.contains(r#"errors{service="postgres"}"#)), "two hops down is asked");
    let errors: Vec<_> = ctx.series.iter().filter(|s| s.query == "errors").collect();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0].labels["service"], "checkout", "a golden series names its service");
    let names: Vec<&str> = ctx.other_alerts.iter().map(|a| a.name()).collect();
    assert_eq!(names.len(), 2, "search's alert is not about checkout or its dependencies: {names:?}");
    assert_eq!(ctx.silences.len(), 1, "bob's silence names payments");
    assert_eq!(ctx.unavailable, ["metrics: prometheus timed out after 2s"]);
    // Every call is recorded: topology, 3 services × 2 golden queries, alerts, silences.
    assert_eq!(ctx.queries.len(), 1 + 6 + 2, "{:?}", ctx.queries);
    assert_eq!(ctx.queries.iter().filter(|q| q.error.is_some()).count(), 3);
    assert!(ctx.queries.iter().any(|q| q.what == "errors of payments" && q.error.is_none()));

    // One budget for everything: a budget shorter than the timeout cuts the slow calls.
    let tight = Sources { budget: Duration::from_millis(500), ..sources.clone() };
    let ctx = gather(&tight, &req).await;
    assert_eq!(ctx.unavailable, ["metrics: prometheus cut off by the gathering budget"]);

    // The cache answers the same question for the same incident without asking again.
    let cache = Cache::new(Duration::from_secs(60));
    let before = prom_seen.lock().unwrap().len();
    let (_, cached) = cache.gather(7, &sources, &req).await;
    assert!(!cached);
    let (again, cached) = cache.gather(7, &sources, &req).await;
    assert!(cached && again.series.len() == 3);
    assert_eq!(prom_seen.lock().unwrap().len(), before + 6, "asked once");
}

#[tokio::test]
async fn a_broken_topology_file_is_an_unavailable_line() {
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("t.yaml");
    std::fs::write(&topo, "checkout: payments\n").unwrap();
    let sources = Sources { topology: vec![Arc::new(FileTopology::new(&topo))], ..Default::default() };
    let ctx = gather(&sources, &Request { services: vec!["checkout".into()], ..Default::default() }).await;
    assert_eq!(ctx.unavailable.len(), 1);
    assert!(ctx.unavailable[0].starts_with("topology: topology file failed: "), "{:?}", ctx.unavailable);
}
