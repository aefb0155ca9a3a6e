//! Kubernetes actions through medic's real client against a local API server speaking
//! Kubernetes' wire format (`medic::scenario::cluster::LocalCluster`: k8s-openapi shapes,
//! `Status` objects, `dryRun=All`, `resourceVersion` conflicts): restart, undo and its rollback,
//! scale within and beyond the per-step limit, deleting one pod and never the last ready one, a
//! spec changed since the plan was proposed, a paused Deployment, a namespace outside the
//! allow-list, RBAC refusals, conflicts retried once, and the server-side dry run. Then the
//! Alertmanager silence, created and expired by the rollback, against the real Alertmanager.

mod common;

use medic::executor::{Executor, Limits, Outcome};
use medic::plan::ProposedPlan;
use medic::scenario::cluster::{LocalCluster, Workload};
use medic::scenario::recorded::Recorded;
use medic::store::Store;
use medic::time::{Clock, ManualClock};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const NOW: &str = "2026-11-21T15:00:00Z";

/// A world whose error ratio is `before` until an action, then `after`.
fn world(after: &str, pods: &str) -> medic::scenario::World {
    let yaml = format!(
        "name: t\nnow: {NOW}\nalerts:\n  - labels: {{alertname: HighErrorRate, service: checkout, namespace: shop}}\n    starts: -15m\n\
         series:\n  - {{query: error_ratio, labels: {{service: checkout}}, start: -60m, values: '0.004x35 0.004+0.006x24'}}\n\
         {pods}after:\n  series:\n    - {{query: error_ratio, labels: {{service: checkout}}, start: 0, values: '{after}'}}\n"
    );
    serde_norway::from_str::<medic::scenario::Scenario>(&yaml).unwrap().world().unwrap()
}

fn checkout(replicas: i32) -> Workload {
    serde_norway::from_str(&format!(
        "{{kind: Deployment, namespace: shop, name: checkout, replicas: {replicas}, revisions: \
         [{{revision: 41, image: 'shop/checkout:v2.13.2'}}, {{revision: 42, image: 'shop/checkout:v2.14.0'}}]}}"
    ))
    .unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    cluster: LocalCluster,
    recorded: Arc<Recorded>,
    clock: Arc<ManualClock>,
    limits: Limits,
}

/// A store with the world's incident, the cluster with `workloads`, and the executor's client
/// for it allowed to change namespace `shop` (and scale to zero nowhere).
async fn setup(w: medic::scenario::World, workloads: &[Workload], namespaces: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = medic::store::open(&format!("sqlite://{}", dir.path().join("k.db").display()), 4).await.unwrap();
    store.ingest(&w.alerts, &[], w.now, &Default::default()).await.unwrap();
    let clock = Arc::new(ManualClock::new(w.now));
    let cluster = LocalCluster::start(workloads, &w.pods).await.unwrap();
    let recorded = Arc::new(Recorded::new(w));
    let (r, c) = (recorded.clone(), clock.clone());
    cluster.on_change(move || r.act(c.now()));
    let cfg = medic::executor::kubernetes::Config {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        url: Some(cluster.url.clone()),
        rollout_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let client = medic::executor::kubernetes::Cluster::connect(&cfg, Duration::from_secs(5)).await.unwrap();
    let limits = Limits { kubernetes: Some(Arc::new(client)), ..Default::default() };
    Setup { _dir: dir, store, cluster, recorded, clock, limits }
}

/// A plan of one step, `action` (YAML), with a post-check on the error ratio; surveyed.
async fn plan(s: &Setup, action: &str, dry_run: bool) -> ProposedPlan {
    let yaml = format!(
        "id: k\ntitle: t\ntier: 3\nmatch: {{alerts: ['alertname=\"HighErrorRate\"']}}\n\
         context: [{{name: error_ratio, promql: 'x'}}]\nhypothesis: h\ndry_run: {dry_run}\n\
         plan:\n  steps:\n    - id: act\n      action: {{kubernetes: {action}}}\n      post_check: {{query: error_ratio, condition: '< 0.02', within: 2m, every: 30s}}\n\
         approval: {{groups: [sre-oncall]}}\n"
    );
    let rb: medic::runbook::Runbook = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(rb.problems(), Vec::<String>::new());
    let ctx = json!({"service": "checkout", "labels": {"namespace": "shop"}, "incident": {"id": 1, "title": "t"}});
    let mut p = medic::plan::build(&rb, &ctx, 1).unwrap();
    medic::executor::survey(&s.limits, s.clock.as_ref(), &mut p).await;
    assert!(p.is_intact(), "the survey is covered by the hash");
    p
}

async fn run(s: &Setup, plan: &ProposedPlan) -> Outcome {
    let approved = common::approve_as_bob(s.store.as_ref(), plan, "medic", s.clock.now()).await;
    let mut ex = Executor::new(s.store.clone(), s.recorded.clone(), s.clock.clone(), s.limits.clone(), "medic-test");
    ex.sleep = Arc::new(medic::executor::VirtualSleep(s.clock.clone()));
    ex.execute(approved).await.unwrap()
}

/// The audit data of the execution's step records, as text.
async fn steps(s: &Setup) -> String {
    let records = s.store.audit_for_incident(1).await.unwrap();
    records.into_iter().filter(|r| r.kind.starts_with("step_")).map(|r| format!("{}: {}\n", r.kind, r.data)).collect()
}

fn deployment(s: &Setup) -> Value {
    s.cluster.object("deployments", "shop", "checkout").unwrap()
}

fn writes(s: &Setup) -> Vec<String> {
    s.cluster.requests().into_iter().filter(|r| !r.starts_with("GET")).collect()
}

#[tokio::test]
async fn the_wire_format_is_kubernetes_own() {
    let s = setup(world("0.004x10", ""), &[checkout(2)], &["shop"]).await;
    let http = medic::telemetry::http_client_builder().build().unwrap();
    let get = |path: &str| {
        let req = http.get(format!("{}{path}", s.cluster.url));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use k8s_openapi::api::autoscaling::v1::Scale;
    use k8s_openapi::api::core::v1::Pod;
    let (_, d) = get("/apis/apps/v1/namespaces/shop/deployments/checkout").await;
    let d: Deployment = serde_json::from_value(d).unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    let (_, sc) = get("/apis/apps/v1/namespaces/shop/deployments/checkout/scale").await;
    assert_eq!(serde_json::from_value::<Scale>(sc).unwrap().spec.unwrap().replicas, Some(2));
    let (_, rs) =
        get("/apis/apps/v1/namespaces/shop/replicasets?labelSelector=app.kubernetes.io%2Fname%3Dcheckout").await;
    let rs: k8s_openapi::List<ReplicaSet> = serde_json::from_value(rs).unwrap();
    assert_eq!(rs.items.len(), 2);
    let (_, pods) = get("/api/v1/namespaces/shop/pods").await;
    assert_eq!(serde_json::from_value::<k8s_openapi::List<Pod>>(pods).unwrap().items.len(), 2);
    let (code, status) = get("/apis/apps/v1/namespaces/shop/deployments/nope").await;
    assert_eq!(code, 404);
    let status: kube::core::Status = serde_json::from_value(status).unwrap();
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    // 422, 409 and 403 are Status objects too.
    let patch = |body: Value| {
        let req = http
            .patch(format!("{}/apis/apps/v1/namespaces/shop/deployments/checkout/scale", s.cluster.url))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string());
        async move {
            let text = req.send().await.unwrap().text().await.unwrap();
            let status: kube::core::Status = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            (status.code, status.reason)
        }
    };
    assert_eq!(patch(json!({"spec": {"replicas": -1}})).await, (422, "Invalid".to_string()));
    assert_eq!(
        patch(json!({"metadata": {"resourceVersion": "0"}, "spec": {"replicas": 3}})).await,
        (409, "Conflict".into())
    );
    s.cluster.forbid("patch", "deployments/scale");
    assert_eq!(patch(json!({"spec": {"replicas": 3}})).await, (403, "Forbidden".into()));
}

#[tokio::test]
async fn restart_rolls_out_through_a_dry_run_first() {
    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_restart: {name: '{{service}}', namespace: '{{labels.namespace}}'}}", false).await;
    let step = &p.steps[0];
    assert_eq!(step.refused, None);
    assert_eq!(
        step.touches.as_deref(),
        Some("checkout (Deployment, namespace shop): its 4 pods replaced by a rolling update")
    );
    assert_eq!(step.action.summary(), "rollout restart deployment/checkout -n shop");
    assert_eq!(run(&s, &p).await, Outcome::Succeeded);
    let d = deployment(&s);
    assert!(d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(), "{d}");
    assert_eq!(d["metadata"]["generation"], 2);
    let w = writes(&s);
    let real = w.iter().position(|r| r.contains("deployments/checkout?") && !r.contains("dryRun")).unwrap();
    assert!(w[real].contains("fieldManager=medic"), "the cluster's managed fields name medic: {w:?}");
    assert!(w[..real].iter().any(|r| r.contains("deployments/checkout?") && r.contains("dryRun=All")), "{w:?}");
    assert!(steps(&s).await.contains("rollout complete (now revision 43): 4/4 updated, 4 available"));
}

#[tokio::test]
async fn undo_puts_the_previous_revision_back_and_its_rollback_undoes_it() {
    // The error ratio stays high after the undo: the post-check fails and the undo is undone.
    let s = setup(world("0.2x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_undo: {name: '{{service}}', namespace: '{{labels.namespace}}'}}", false).await;
    assert_eq!(p.steps[0].action.summary(), "rollout undo deployment/checkout -n shop to revision 41");
    assert_eq!(
        p.steps[0].touches.as_deref(),
        Some(
            "checkout (Deployment, namespace shop): revision 42 (checkout=shop/checkout:v2.14.0) → revision 41 \
             (checkout=shop/checkout:v2.13.2)"
        )
    );
    assert_eq!(p.steps[0].rollback_text().as_deref(), Some("rollout undo back to revision 42"));
    let out = run(&s, &p).await;
    assert!(matches!(&out, Outcome::RolledBack { reason, .. } if reason.contains("post-check failed")), "{out:?}");
    let log = steps(&s).await;
    assert!(log.contains("from revision 42 to the template of revision 41 (checkout=shop/checkout:v2.13.2); rollout complete (now revision 43)"), "{log}");
    assert!(log.contains(r#""rollback":"rollout undo deployment/checkout -n shop to revision 42","#), "{log}");
    assert!(log.contains(r#""result":"done""#), "{log}");
    let d = deployment(&s);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "shop/checkout:v2.14.0", "back where it was");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "44", "41 became 43, 42 became 44");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"].get("pod-template-hash"), None);
}

/// Rolling back a Deployment whose bad rollout already passed its progress deadline, with a
/// controller that observes the new spec 5 ms, 50 ms or 1 s later: the old
/// "ProgressDeadlineExceeded" is not this rollout's, so the step waits and verifies, and the
/// bad template is never put back.
#[tokio::test]
async fn a_rollback_past_the_deadline_is_verified_whatever_the_controller_delay() {
    for delay in [5, 50, 1000] {
        let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
        s.cluster.deadline_exceeded("shop", "checkout");
        s.cluster.controller_delay(Duration::from_millis(delay), s.clock.clone());
        let p = plan(&s, "{rollout_undo: {name: checkout, namespace: shop}}", false).await;
        assert_eq!(run(&s, &p).await, Outcome::Succeeded, "delay {delay} ms: {}", steps(&s).await);
        let d = deployment(&s);
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "shop/checkout:v2.13.2", "{delay} ms");
    }
}

fn with_causes(replicas: i32) -> Workload {
    serde_norway::from_str(&format!(
        "{{kind: Deployment, namespace: shop, name: checkout, replicas: {replicas}, revisions: \
         [{{revision: 41, image: 'shop/checkout:v2.13.2', change_cause: 'deploy v2.13.2'}}, \
          {{revision: 42, image: 'shop/checkout:v2.14.0', change_cause: 'deploy v2.14.0'}}]}}"
    ))
    .unwrap()
}

/// The ReplicaSet of revision `r`, as the stand-in holds it.
fn replicaset(s: &Setup, r: &str) -> Value {
    let names: Vec<String> = s.cluster.names("replicasets", "shop");
    names
        .iter()
        .filter_map(|n| s.cluster.object("replicasets", "shop", n))
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == r)
        .unwrap_or_else(|| panic!("no ReplicaSet of revision {r} among {names:?}"))
}

/// Undo puts back the revision's annotations as kubectl does (its change-cause), so the
/// history names the good deploy for the new revision; and a template field this client's
/// Kubernetes version does not know survives (the template is never a typed object).
#[tokio::test]
async fn undo_restores_the_annotations_and_every_field_of_the_template() {
    let s = setup(world("0.004x10", ""), &[with_causes(4)], &["shop"]).await;
    let old = replicaset(&s, "41");
    let name = old["metadata"]["name"].as_str().unwrap().to_string();
    s.cluster.edit("replicasets", "shop", &name, |rs| {
        rs["spec"]["template"]["spec"]["futureSchedulingHint"] = json!({"zone": "eu-west-1a"});
    });
    let p = plan(&s, "{rollout_undo: {name: checkout, namespace: shop}}", false).await;
    assert_eq!(run(&s, &p).await, Outcome::Succeeded, "{}", steps(&s).await);
    let d = deployment(&s);
    assert_eq!(d["metadata"]["annotations"]["kubernetes.io/change-cause"], "deploy v2.13.2", "{d:#}");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "43");
    assert_eq!(d["spec"]["template"]["spec"]["futureSchedulingHint"], json!({"zone": "eu-west-1a"}), "{d:#}");
    assert_eq!(replicaset(&s, "43")["metadata"]["annotations"]["kubernetes.io/change-cause"], "deploy v2.13.2");
    assert!(steps(&s).await.contains(
        "to the template of revision 41 (checkout=shop/checkout:v2.13.2); rollout complete (now revision 43)"
    ));
}

#[tokio::test]
async fn scale_within_the_limit_and_back_on_rollback() {
    let s = setup(world("0.2x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{scale: {name: checkout, namespace: shop, by: 1, min: 2, max: 10}}", false).await;
    assert_eq!(p.steps[0].touches.as_deref(), Some("checkout (Deployment, namespace shop): 4 → 5 replicas"));
    assert_eq!(p.steps[0].action.summary(), "scale deployment/checkout -n shop from 4 to 5 replicas");
    let out = run(&s, &p).await;
    assert!(matches!(out, Outcome::RolledBack { .. }), "{out:?}");
    let log = steps(&s).await;
    assert!(log.contains("scaled deployment/checkout -n shop from 4 to 5 replicas"), "{log}");
    assert!(log.contains("scaled deployment/checkout -n shop from 5 to 4 replicas"), "rolled back: {log}");
    assert_eq!(deployment(&s)["spec"]["replicas"], 4);
    assert!(writes(&s).iter().any(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/shop/deployments/checkout/scale")));
}

#[tokio::test]
async fn scale_beyond_the_limit_is_refused_with_the_limit() {
    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{scale: {name: checkout, namespace: shop, by: 3, min: 2, max: 10}}", false).await;
    let refused = p.steps[0].refused.clone().unwrap();
    assert!(refused.contains("4 → 7 replicas is +3, above the limit of +1 per step (+25% of 4"), "{refused}");
    let out = run(&s, &p).await;
    assert!(matches!(&out, Outcome::RolledBack { reason, .. } if reason.contains("above the limit")), "{out:?}");
    assert_eq!(deployment(&s)["spec"]["replicas"], 4);
    assert!(writes(&s).is_empty(), "not even a dry run: {:?}", writes(&s));
    let zero = plan(&s, "{scale: {name: checkout, namespace: shop, to: 0, min: 0, max: 10}}", false).await;
    assert!(zero.steps[0].refused.as_deref().unwrap().contains("scaling to zero is not allowed in namespace shop"));
}

#[tokio::test]
async fn deletes_one_crashing_pod_and_never_the_last_ready_one() {
    let pods = "pods:\n  - {name: checkout-a, service: checkout, reason: CrashLoopBackOff, restarts: 7}\n  - {name: checkout-b, service: checkout}\n";
    let s = setup(world("0.004x10", pods), &[checkout(2)], &["shop"]).await;
    let p =
        plan(&s, "{delete_pod: {name: checkout, namespace: shop, state: [CrashLoopBackOff, OOMKilled]}}", false).await;
    assert_eq!(
        p.steps[0].touches.as_deref(),
        Some(
            "one pod of checkout (Deployment, namespace shop) in CrashLoopBackOff or OOMKilled (never its last ready pod; 1 of 2 ready now)"
        )
    );
    assert_eq!(run(&s, &p).await, Outcome::Succeeded);
    let left = s.cluster.pods("shop");
    assert!(!left.contains(&"checkout-a".to_string()) && left.contains(&"checkout-b".to_string()), "{left:?}");
    assert_eq!(left.len(), 2, "replaced by its controller");
    assert!(steps(&s).await.contains("deleted pod checkout-a (CrashLoopBackOff)"));
    // checkout-b is Running and the only ready pod left? No: the replacement is ready too.
    // A workload with one ready pod: refused.
    let one = "pods:\n  - {name: checkout-only, service: checkout}\n";
    let s = setup(world("0.004x10", one), &[checkout(1)], &["shop"]).await;
    let p = plan(&s, "{delete_pod: {name: checkout, namespace: shop, state: [Running]}}", false).await;
    let refused = p.steps[0].refused.clone().unwrap();
    assert!(refused.contains("pod checkout-only (Running) is the last ready pod"), "{refused}");
    assert!(matches!(run(&s, &p).await, Outcome::RolledBack { .. }));
    assert_eq!(s.cluster.pods("shop"), ["checkout-only"]);
}

/// A canary Deployment's pod shares the app label; the stable Deployment's selector leaves it
/// out with a `matchExpressions` term. medic chooses, counts and deletes only the stable
/// Deployment's own pods (selected by the whole selector and owned through its ReplicaSet),
/// proves the deletion by a dry run at proposal, and waits until the pod is gone.
#[tokio::test]
async fn delete_pod_touches_only_the_workloads_own_pods() {
    let pods = "pods:\n  - {name: checkout-a, service: checkout}\n  - {name: checkout-b, service: checkout}\n";
    let s = setup(world("0.004x10", pods), &[checkout(2)], &["shop"]).await;
    s.cluster.edit("deployments", "shop", "checkout", |d| {
        d["spec"]["selector"]["matchExpressions"] =
            json!([{"key": "track", "operator": "NotIn", "values": ["canary"]}]);
    });
    // A crash-looping canary pod with the app label, owned by another ReplicaSet.
    s.cluster.add_pod(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "checkout-canary-x", "namespace": "shop", "uid": "canary-uid", "resourceVersion": "900",
            "labels": {"app.kubernetes.io/name": "checkout", "track": "canary"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-canary-1",
                                 "uid": "another-replicaset", "controller": true}]},
        "spec": {"containers": [{"name": "checkout"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "checkout", "ready": false, "restartCount": 9, "image": "", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}));
    let p = plan(&s, "{delete_pod: {name: checkout, namespace: shop, state: [CrashLoopBackOff]}}", false).await;
    assert_eq!(
        p.steps[0].refused.as_deref(),
        Some("no pod of checkout (Deployment, namespace shop) is in CrashLoopBackOff now"),
        "the canary's pod is not checkout's: {:?}",
        p.steps[0].touches
    );
    let p = plan(&s, "{delete_pod: {name: checkout, namespace: shop, state: [Running]}}", false).await;
    assert_eq!(
        p.steps[0].touches.as_deref(),
        Some(
            "one pod of checkout (Deployment, namespace shop) in Running (never its last ready pod; 2 of 2 ready now)"
        )
    );
    let requests = s.cluster.requests();
    assert!(requests.iter().any(|r| r.starts_with("DELETE /api/v1/namespaces/shop/pods/checkout-a")), "{requests:?}");
    assert_eq!(s.cluster.pods("shop").len(), 3, "the survey's delete was a dry run");
    assert_eq!(run(&s, &p).await, Outcome::Succeeded, "{}", steps(&s).await);
    let left = s.cluster.pods("shop");
    assert!(left.contains(&"checkout-canary-x".to_string()) && !left.contains(&"checkout-a".to_string()), "{left:?}");
    assert!(steps(&s).await.contains("pod checkout-a is gone"), "{}", steps(&s).await);
}

#[tokio::test]
async fn a_spec_changed_since_the_plan_stops_the_step() {
    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{scale: {name: checkout, namespace: shop, by: 1, min: 2, max: 10}}", false).await;
    // Someone scales the Deployment between proposal and approval.
    s.cluster.edit("deployments", "shop", "checkout", |d| d["spec"]["replicas"] = json!(6));
    let out = run(&s, &p).await;
    assert!(
        matches!(&out, Outcome::RolledBack { reason, .. } if reason.contains("its replica count changed since the plan was proposed (4 → 6)")),
        "{out:?}"
    );
    assert_eq!(deployment(&s)["spec"]["replicas"], 6);
    assert!(writes(&s).iter().all(|w| w.contains("dryRun=All")), "nothing changed: {:?}", writes(&s));

    // Someone deploys between proposal and approval: the undo stops.
    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_undo: {name: checkout, namespace: shop}}", false).await;
    s.cluster.edit("deployments", "shop", "checkout", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("shop/checkout:hotfix")
    });
    let out = run(&s, &p).await;
    assert!(
        matches!(&out, Outcome::RolledBack { reason, .. } if reason.contains("its pod template changed since the plan was proposed (generation 1 → 2)")),
        "{out:?}"
    );
    // An autoscaler changing the count does not stop a restart.
    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_restart: {name: checkout, namespace: shop}}", false).await;
    s.cluster.edit("deployments", "shop", "checkout", |d| d["spec"]["replicas"] = json!(5));
    assert_eq!(run(&s, &p).await, Outcome::Succeeded);
}

/// A busy Deployment's status changes between medic's read and its write: as with kubectl, the
/// scale and the restart go through (a write that carried the `resourceVersion` it read failed
/// there). A person's spec change in between is a refusal that says so.
#[tokio::test]
async fn status_writes_in_between_change_nothing_and_a_spec_change_stops_the_step() {
    let scale = "{scale: {name: checkout, namespace: shop, by: 1, min: 2, max: 10}}";
    let restart = "{rollout_restart: {name: checkout, namespace: shop}}";
    for action in [scale, restart] {
        let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
        let p = plan(&s, action, false).await;
        s.cluster.status_writes_before_next_writes(2);
        assert_eq!(run(&s, &p).await, Outcome::Succeeded, "{action}: {}", steps(&s).await);
    }
    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, scale, false).await;
    s.cluster.edit_before_next_write("deployments", "shop", "checkout", |d| d["spec"]["replicas"] = json!(6));
    let out = run(&s, &p).await;
    assert!(
        matches!(&out, Outcome::RolledBack { reason, .. } if reason.contains("its replica count changed since the plan was proposed (4 → 6)")),
        "{out:?}"
    );
    assert_eq!(deployment(&s)["spec"]["replicas"], 6, "the person's count stands");

    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, restart, false).await;
    s.cluster.edit_before_next_write("deployments", "shop", "checkout", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("shop/checkout:v2.15.0")
    });
    let out = run(&s, &p).await;
    assert!(
        matches!(&out, Outcome::RolledBack { reason, .. } if reason.contains("its pod template changed since the plan was proposed")),
        "{out:?}"
    );
    assert!(
        deployment(&s)["spec"]["template"]["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/restartedAt")
            .is_none()
    );
}

#[tokio::test]
async fn paused_namespaces_and_rbac_refusals_name_the_reason() {
    let mut paused = checkout(4);
    paused.paused = true;
    let s = setup(world("0.004x10", ""), &[paused], &["shop"]).await;
    let p = plan(&s, "{rollout_undo: {name: checkout, namespace: shop}}", false).await;
    assert!(p.steps[0].refused.as_deref().unwrap().contains("is paused: medic does not roll back a paused Deployment"));
    assert!(matches!(run(&s, &p).await, Outcome::RolledBack { reason, .. } if reason.contains("is paused")));

    let s = setup(world("0.004x10", ""), &[checkout(4)], &["payments"]).await;
    let p = plan(&s, "{rollout_restart: {name: checkout, namespace: shop}}", false).await;
    assert_eq!(
        p.steps[0].refused.as_deref(),
        Some("namespace shop is not one medic may change (executor.kubernetes.namespaces: payments)")
    );
    assert!(
        matches!(run(&s, &p).await, Outcome::RolledBack { reason, .. } if reason.contains("namespace shop is not"))
    );
    assert!(writes(&s).is_empty());
    assert!(s.cluster.requests().is_empty(), "nothing is read outside the allow-list: {:?}", s.cluster.requests());

    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    s.cluster.forbid("patch", "deployments/scale");
    let p = plan(&s, "{scale: {name: checkout, namespace: shop, by: 1, min: 2, max: 10}}", false).await;
    let refused = p.steps[0].refused.clone().unwrap();
    assert!(refused.starts_with("forbidden: medic may not patch deployments/scale in namespace shop"), "{refused}");

    let p = plan(&s, "{rollout_restart: {name: cart, namespace: shop}}", false).await;
    assert!(
        p.steps[0].refused.as_deref().unwrap().contains("deployments shop/cart: not found"),
        "{:?}",
        p.steps[0].refused
    );
}

/// An API server in a brownout answers 503 to everything (as kube-apiserver does under
/// overload, with `Retry-After`). The survey asks once, says it could not read the cluster,
/// and does not ask again for the plan's next step: kube's own retry layer (15 tries, backoff
/// up to minutes) stalled every investigation.
#[tokio::test]
async fn a_cluster_in_a_brownout_is_a_refusal_within_the_bound() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    let app = axum::Router::new().fallback(move || {
        let a = a.clone();
        async move {
            a.fetch_add(1, Ordering::SeqCst);
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server is currently unable to handle the request", "reason": "ServiceUnavailable",
                "code": 503});
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], axum::Json(status))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg =
        medic::executor::kubernetes::Config { namespaces: vec!["shop".into()], url: Some(url), ..Default::default() };
    let client = medic::executor::kubernetes::Cluster::connect(&cfg, Duration::from_secs(2)).await.unwrap();
    let limits = Limits { kubernetes: Some(Arc::new(client)), ..Default::default() };
    let yaml = "id: k\ntitle: t\ntier: 3\nmatch: {alerts: ['alertname=\"A\"']}\nhypothesis: h\n\
        plan:\n  steps:\n    - {id: one, action: {kubernetes: {rollout_restart: {name: checkout, namespace: shop}}}}\n\
        \x20   - {id: two, action: {kubernetes: {scale: {name: cart, namespace: shop, by: 1, min: 1, max: 5}}}}\n\
        approval: {groups: [sre]}\n";
    let rb: medic::runbook::Runbook = serde_norway::from_str(yaml).unwrap();
    let mut p = medic::plan::build(&rb, &json!({"incident": {"id": 1, "title": "t"}}), 1).unwrap();
    let started = std::time::Instant::now();
    medic::executor::survey(&limits, &ManualClock::new(0), &mut p).await;
    let took = started.elapsed();
    for step in &p.steps {
        let why = step.refused.as_deref().unwrap_or("");
        assert!(why.starts_with("could not read the cluster: the get of deployments got HTTP 503"), "{why}");
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1, "one request, no retries, and none for the second step");
    assert!(took < Duration::from_secs(4), "the survey took {took:?}");
}

/// A step refused at proposal (its Deployment did not exist) never runs: the Deployment that
/// appeared later, with a template nobody saw, is not restarted.
#[tokio::test]
async fn a_step_not_surveyed_does_not_run() {
    let s = setup(world("0.004x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_restart: {name: cart, namespace: shop}}", false).await;
    assert!(p.steps[0].refused.as_deref().unwrap().contains("not found"), "{:?}", p.steps[0].refused);
    let mut cart = checkout(2);
    cart.name = "cart".into();
    s.cluster.add(&cart);
    let out = run(&s, &p).await;
    assert!(
        matches!(&out, Outcome::RolledBack { reason, .. } if reason.contains("was not read when the plan was proposed")),
        "{out:?}"
    );
    assert!(writes(&s).is_empty(), "{:?}", writes(&s));
}

#[tokio::test]
async fn dry_run_mode_asks_the_server_and_changes_nothing() {
    let s = setup(world("0.2x10", ""), &[checkout(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_undo: {name: checkout, namespace: shop}}", true).await;
    assert_eq!(run(&s, &p).await, Outcome::Succeeded);
    let log = steps(&s).await;
    assert!(
        log.contains("dry run: the API server accepted `rollout undo deployment/checkout -n shop to revision 41`"),
        "{log}"
    );
    assert_eq!(deployment(&s)["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "42");
    assert!(writes(&s).iter().all(|w| w.contains("dryRun=All")), "{:?}", writes(&s));
}

/// A silence step, then a check that fails: the rollback expires the silence. Against the real
/// Alertmanager from Debian's package.
#[tokio::test]
async fn a_silence_is_created_and_expired_by_the_rollback() {
    if let Some(why) = common::stack::missing(&["prometheus-alertmanager"]) {
        common::unavailable(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::stack::free_port();
    let _am = common::stack::alertmanager(dir.path(), port, "http://127.0.0.1:9/hook", "t");
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        common::stack::ready(&format!("{base}/-/ready"), 30).await,
        "{}",
        common::stack::logs(dir.path(), &["prometheus-alertmanager"])
    );

    let mut s = setup(world("0.2x10", ""), &[], &["shop"]).await;
    // Alertmanager refuses a silence that ends in the past: act at the real time (the check
    // then finds no data of the recorded world, and fails, as this test wants).
    s.clock.set(medic::time::SystemClock.now());
    let cfg = medic::executor::alertmanager::Config { url: base.clone() };
    s.limits.alertmanager =
        Some(Arc::new(medic::executor::alertmanager::Silences::new(&cfg, Duration::from_secs(5)).unwrap()));
    let yaml = "id: k\ntitle: t\ntier: 2\nmatch: {alerts: ['alertname=\"HighErrorRate\"']}\n\
         context: [{name: error_ratio, promql: 'x'}]\nhypothesis: h\n\
         plan:\n  steps:\n    - id: quiet\n      action: {alertmanager: {silence: {matchers: ['alertname=\"{{labels.alertname}}\"', 'service=~\"check.*\"'], duration: 30m, comment: the fix drains}}}\n\
         \x20   - id: verify\n      action: {check: {query: error_ratio, condition: '< 0.02', within: 1m, every: 30s}}\n\
         approval: {groups: [sre-oncall]}\n";
    let rb: medic::runbook::Runbook = serde_norway::from_str(yaml).unwrap();
    assert_eq!(rb.problems(), Vec::<String>::new());
    let ctx =
        json!({"service": "checkout", "labels": {"alertname": "HighErrorRate"}, "incident": {"id": 1, "title": "t"}});
    let mut p = medic::plan::build(&rb, &ctx, 1).unwrap();
    medic::executor::survey(&s.limits, s.clock.as_ref(), &mut p).await;
    assert_eq!(p.steps[0].rollback_text().as_deref(), Some("expire the silence"));
    assert!(
        p.steps[0].touches.as_deref().unwrap().contains(r#"alertname="HighErrorRate", service=~"check.*" for 30m"#)
    );

    let silences = || async {
        let http = medic::telemetry::http_client_builder().build().unwrap();
        http.get(format!("{base}/api/v2/silences")).send().await.unwrap().json::<Vec<Value>>().await.unwrap()
    };
    let out = run(&s, &p).await;
    assert!(matches!(out, Outcome::RolledBack { .. }), "{out:?}");
    let all = silences().await;
    assert_eq!(all.len(), 1, "{all:?}");
    let sil = &all[0];
    assert_eq!(sil["createdBy"], "medic");
    assert_eq!(sil["comment"], "medic incident #1: the fix drains");
    assert_eq!(sil["status"]["state"], "expired", "the rollback expired it: {sil}");
    let m: Vec<(String, bool)> = sil["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m["isRegex"].as_bool().unwrap()))
        .collect();
    assert!(m.contains(&("alertname".into(), false)) && m.contains(&("service".into(), true)), "{m:?}");
    let log = steps(&s).await;
    assert!(log.contains(r#""result":"done""#) && log.contains("expired silence"), "{log}");

    // expire_silence finds medic's own silence for the incident by its matchers.
    let silence = medic::plan::SilenceOp::Silence {
        matchers: vec![r#"alertname="X""#.into()],
        duration_secs: 600,
        comment: "medic incident #7: drain".into(),
    };
    let am = s.limits.alertmanager.clone().unwrap();
    am.act(&silence, false, s.clock.now()).await.unwrap();
    let expire = medic::plan::SilenceOp::ExpireSilence { matchers: vec![r#"alertname="X""#.into()], incident_id: 7 };
    let other = medic::plan::SilenceOp::ExpireSilence { matchers: vec![r#"alertname="X""#.into()], incident_id: 8 };
    assert!(am.act(&other, false, s.clock.now()).await.unwrap().output.contains("nothing to expire"));
    let expired = am.act(&expire, false, s.clock.now()).await.unwrap().output;
    assert!(expired.starts_with("expired "), "{expired}: {:?}", silences().await);
    assert!(silences().await.iter().all(|s| s["status"]["state"] == "expired"));
}

/// kubectl, the real client, against the stand-in: whether it succeeded, and its output. Under
/// CI=true a missing kubectl fails the test (`.ci/test` installs it); elsewhere it is skipped.
async fn kubectl(s: &Setup, args: &[&str]) -> Option<(bool, String)> {
    if !common::stack::on_path("kubectl") {
        common::unavailable("kubectl is not installed (.ci/test installs Debian's kubernetes-client)");
        return None;
    }
    let out = tokio::process::Command::new("kubectl")
        .args(args)
        .arg(format!("--server={}", s.cluster.url))
        .arg("--request-timeout=10s")
        .env("KUBECONFIG", "/dev/null")
        .output()
        .await
        .expect("kubectl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

/// After medic's undo, kubectl sees what medic said: the good template at revision 43, the
/// good deploy's change-cause in the history, the rollout complete.
#[tokio::test]
async fn kubectl_sees_what_medic_did() {
    let s = setup(world("0.004x10", ""), &[with_causes(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_undo: {name: checkout, namespace: shop}}", false).await;
    assert_eq!(run(&s, &p).await, Outcome::Succeeded);
    assert!(steps(&s).await.contains("(now revision 43)"));
    let Some((ok, history)) = kubectl(&s, &["rollout", "history", "deployment/checkout", "-n", "shop"]).await else {
        return;
    };
    assert!(ok, "{history}");
    let rows: Vec<Vec<&str>> =
        history.lines().map(|l| l.split_whitespace().collect()).filter(|w: &Vec<&str>| w.len() >= 2).collect();
    assert!(rows.iter().any(|r| r[0] == "43" && r[1..].join(" ") == "deploy v2.13.2"), "{history}");
    assert!(rows.iter().any(|r| r[0] == "42" && r[1..].join(" ") == "deploy v2.14.0"), "{history}");
    assert!(!rows.iter().any(|r| r[0] == "41"), "41 became 43: {history}");
    let (ok, status) =
        kubectl(&s, &["rollout", "status", "deployment/checkout", "-n", "shop", "--watch=false"]).await.unwrap();
    assert!(ok && status.contains("successfully rolled out"), "{status}");
    let jsonpath = "-o=jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations}";
    let (ok, got) = kubectl(&s, &["get", "deployment", "checkout", "-n", "shop", jsonpath]).await.unwrap();
    assert!(ok && got.starts_with("shop/checkout:v2.13.2 ") && got.contains("deploy v2.13.2"), "{got}");
}

/// The undo medic sends is the one kubectl sends (its template and annotations), plus the
/// `test` of the generation it was computed from; both as server-side dry runs.
#[tokio::test]
async fn medic_sends_the_undo_kubectl_sends() {
    let s = setup(world("0.004x10", ""), &[with_causes(4)], &["shop"]).await;
    let p = plan(&s, "{rollout_undo: {name: checkout, namespace: shop, to_revision: '41'}}", true).await;
    assert_eq!(p.steps[0].refused, None);
    let medic = s.cluster.bodies().pop().expect("medic's dry run");
    let args = ["rollout", "undo", "deployment/checkout", "-n", "shop", "--to-revision=41", "--dry-run=server"];
    let Some((ok, said)) = kubectl(&s, &args).await else { return };
    assert!(ok, "{said}");
    let kubectl = s.cluster.bodies().pop().expect("kubectl's dry run");
    assert!(medic.0.contains("dryRun=All") && kubectl.0.contains("dryRun=All"), "{medic:?} {kubectl:?}");
    let op = |patch: &Value, path: &str| {
        let mut v = patch.as_array().unwrap().iter().find(|o| o["path"] == path).unwrap()["value"].clone();
        // kubectl marshals a typed template: an empty creationTimestamp comes out as null.
        if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.retain(|k, v| !(k == "creationTimestamp" && v.is_null()));
        }
        v
    };
    for path in ["/spec/template", "/metadata/annotations"] {
        assert_eq!(op(&medic.1, path), op(&kubectl.1, path), "{path}: medic {} vs kubectl {}", medic.1, kubectl.1);
    }
    let first = &medic.1[0];
    assert_eq!((first["op"].as_str(), first["path"].as_str()), (Some("test"), Some("/metadata/generation")));
    assert_eq!(deployment(&s)["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "42", "nothing changed");
}

/// A scale and a pod deletion, medic's and kubectl's, both as server-side dry runs: the same
/// count, and the same pod deleted the same way (background propagation).
#[tokio::test]
async fn medic_scales_and_deletes_as_kubectl_does() {
    let pods = "pods:\n  - {name: checkout-a, service: checkout, reason: CrashLoopBackOff}\n  - {name: checkout-b, service: checkout}\n";
    let s = setup(world("0.004x10", pods), &[checkout(4)], &["shop"]).await;
    plan(&s, "{scale: {name: checkout, namespace: shop, to: 5, min: 2, max: 10}}", true).await;
    let medic = s.cluster.bodies().pop().unwrap();
    let args = ["scale", "deployment/checkout", "-n", "shop", "--replicas=5", "--dry-run=server"];
    let Some((ok, said)) = kubectl(&s, &args).await else { return };
    assert!(ok, "{said}");
    let theirs = s.cluster.bodies().pop().unwrap();
    assert!(medic.0.contains("/deployments/checkout/scale?") && theirs.0.contains("/deployments/checkout/scale?"));
    let replaced = medic.1.as_array().unwrap().iter().find(|o| o["op"] == "replace").unwrap()["value"].clone();
    assert_eq!(replaced, theirs.1["spec"]["replicas"], "medic {} vs kubectl {}", medic.1, theirs.1);

    plan(&s, "{delete_pod: {name: checkout, namespace: shop, state: [CrashLoopBackOff]}}", true).await;
    let medic = s.cluster.bodies().pop().unwrap();
    let (ok, said) = kubectl(&s, &["delete", "pod", "checkout-a", "-n", "shop", "--dry-run=server"]).await.unwrap();
    assert!(ok, "{said}");
    let theirs = s.cluster.bodies().pop().unwrap();
    assert_eq!(medic.0.split('?').next(), theirs.0.split('?').next(), "the same pod");
    assert_eq!(
        medic.1["propagationPolicy"], theirs.1["propagationPolicy"],
        "medic {} vs kubectl {}",
        medic.1, theirs.1
    );
    assert_eq!(s.cluster.pods("shop").len(), 2, "dry runs change nothing");
}
