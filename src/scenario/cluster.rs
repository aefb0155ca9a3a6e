//! A local stand-in for a Kubernetes API server plus the Deployment controller, speaking the
//! wire format for the part medic's actions use, and enough of the rest that real `kubectl`
//! talks to it (the tests use kubectl as the referee): discovery (`/version`, `/api`, `/apis`,
//! the group versions), Deployments, StatefulSets and DaemonSets (get, list, watch, patch —
//! JSON with `test`, merge and strategic merge — and the `scale` subresource), ReplicaSets and
//! Pods (list and watch by label selector, set-based terms included, and by field selector;
//! delete with preconditions), `dryRun=All`, `resourceVersion` conflicts for a patch that names
//! one, `creationTimestamp`, and `Status` objects for 403/404/409/422. A Deployment's template
//! change rolls out as the controller would: a ReplicaSet revision is created or reused and
//! takes the Deployment's annotations (its change-cause); the controller observes a new spec
//! at once or after a delay on a clock (`observedGeneration`, `Available`/`Progressing`).
//!
//! The demo and `medic test` run a scenario's workloads (its `kubernetes:` list) on it, so
//! plans act through medic's real Kubernetes client; the first change switches the recorded
//! world to its "after" state. Tests use its knobs (forbid a verb, a concurrent writer,
//! status-only updates or a person's edit before the next write, a controller delay, a rollout
//! past its deadline) for the paths a real cluster takes rarely.

use crate::context::Pod as ScenarioPod;
use crate::runbook::actions::WorkloadKind;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One workload of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    #[serde(default = "one")]
    pub replicas: i32,
    /// Rollout history, oldest first; the last is current (Deployments).
    #[serde(default)]
    pub revisions: Vec<Revision>,
    #[serde(default)]
    pub paused: bool,
}

fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub revision: i64,
    pub image: String,
    /// `kubernetes.io/change-cause`, as `kubectl rollout history` shows it.
    #[serde(default)]
    pub change_cause: Option<String>,
}

type Key = (String, String, String); // (resource, namespace, name)

/// When every object of the stand-in was created.
const CREATED: &str = "2026-01-01T00:00:00Z";

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    uid: u64,
    forbidden: Vec<(String, String)>,
    conflicts: u32,
    /// Status-only updates (a controller's) that land before the next write.
    status_writes: u32,
    /// A person's edit that lands just before the next write.
    edit_next_write: Option<(Key, Edit)>,
    /// The Deployment controller's delay, on a clock: until it passes, a new spec is not yet
    /// observed (status and conditions are the old rollout's).
    controller: Option<(std::time::Duration, Arc<dyn crate::time::Clock>)>,
    /// Workloads whose new spec the controller has yet to observe, and when it will.
    pending: Vec<(Key, crate::time::Millis)>,
    requests: Vec<String>,
    /// Every PATCH and DELETE: its method, path and query, and its body.
    bodies: Vec<(String, Value)>,
    on_change: Option<Arc<dyn Fn() + Send + Sync>>,
}

type Edit = Box<dyn FnOnce(&mut Value) + Send>;

impl State {
    fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        format!("00000000-0000-4000-8000-{:012}", self.uid)
    }
}

/// The server: its URL, and knobs for tests. It stops when the last clone is dropped.
#[derive(Clone)]
pub struct LocalCluster {
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: Arc<Server>,
}

struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Which namespaces a scenario lets medic change (default: those of its workloads) and where
/// it may scale to zero.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub scale_to_zero_namespaces: Vec<String>,
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
}

fn group(resource: &str) -> &'static str {
    if resource == "pods" { "" } else { "apps" }
}

fn qualified(resource: &str) -> String {
    match group(resource) {
        "" => resource.to_string(),
        g => format!("{resource}.{g}"),
    }
}

fn template_hash(template: &Value) -> String {
    use sha2::Digest;
    let mut t = template.clone();
    if let Some(l) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        l.remove("pod-template-hash");
    }
    hex::encode(&sha2::Sha256::digest(t.to_string().as_bytes())[..5])
}

/// A label selector as the API server reads one: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`, joined by commas (commas inside parentheses belong to a set).
fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).all(|term| {
        let value = |k: &str| labels[k.trim()].as_str();
        let set = |rest: &str| -> Vec<String> {
            rest.trim().trim_start_matches('(').trim_end_matches(')').split(',').map(|v| v.trim().to_string()).collect()
        };
        if let Some((k, rest)) = term.split_once(" notin ") {
            return value(k).is_none_or(|v| !set(rest).iter().any(|x| x == v));
        }
        if let Some((k, rest)) = term.split_once(" in ") {
            return value(k).is_some_and(|v| set(rest).iter().any(|x| x == v));
        }
        if let Some((k, v)) = term.split_once("!=") {
            return value(k) != Some(v.trim());
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return value(k) == Some(v.trim());
        }
        match term.strip_prefix('!') {
            Some(k) => value(k).is_none(),
            None => value(term).is_some(),
        }
    })
}

/// `metadata.name=x` / `metadata.namespace=x` (the field selectors kubectl uses).
fn fields_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((f, v)) => obj.pointer(&format!("/{}", f.replace('.', "/"))).and_then(Value::as_str) == Some(v),
        None => false,
    })
}

/// What the Deployment controller writes once it has observed the spec: the rollout complete.
fn observe(o: &mut Value) {
    let g = o["metadata"]["generation"].clone();
    let r = o["spec"]["replicas"].clone();
    let s = &mut o["status"];
    s["observedGeneration"] = g;
    for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
        if s.get(k).is_some() {
            s[k] = r.clone();
        }
    }
    if o["kind"] == "Deployment" {
        let rs = format!("{}-{}", o["metadata"]["name"].as_str().unwrap_or(""), template_hash(&o["spec"]["template"]));
        o["status"]["conditions"] = json!([
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{rs}\" has successfully progressed.")},
        ]);
    }
}

/// `Deployment` for `deployments`…
fn kind_of(resource: &str) -> &'static str {
    match resource {
        "pods" => "Pod",
        "replicasets" => "ReplicaSet",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        _ => "DaemonSet",
    }
}

/// A watch (`?watch=true`): the objects the selectors match, as `ADDED` events, then each
/// change as `MODIFIED` (or `DELETED`), one JSON object a line, until the request's
/// `timeoutSeconds` (at most 60 s here) passes.
fn watch(state: Arc<Mutex<State>>, uri: Uri) -> Response {
    let query: BTreeMap<String, String> =
        uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let Some((resource, ns, None, false)) = route(uri.path()) else {
        return status(405, "MethodNotAllowed", format!("watch is not supported on {}", uri.path()));
    };
    state.lock().unwrap().requests.push(format!("GET {}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("")));
    let labels = query.get("labelSelector").cloned().unwrap_or_default();
    let fields = query.get("fieldSelector").cloned().unwrap_or_default();
    let secs = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(60).min(60);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    // What the client has seen: name → resourceVersion.
    let seen: BTreeMap<String, String> = BTreeMap::new();
    let events = futures_util::stream::unfold((state, seen, true), move |(state, mut seen, first)| {
        let (resource, ns, labels, fields) = (resource.clone(), ns.clone(), labels.clone(), fields.clone());
        async move {
            loop {
                if !first {
                    if tokio::time::Instant::now() >= until {
                        return None;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                let mut out = String::new();
                {
                    let mut st = state.lock().unwrap();
                    reconcile(&mut st);
                    let now: BTreeMap<String, Value> = st
                        .objects
                        .iter()
                        .filter(|((r, n, _), o)| {
                            *r == resource && *n == ns && labels_match(o, &labels) && fields_match(o, &fields)
                        })
                        .map(|((_, _, name), o)| (name.clone(), o.clone()))
                        .collect();
                    for (name, o) in &now {
                        let rv = o["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                        let kind = match seen.insert(name.clone(), rv.clone()) {
                            None => "ADDED",
                            Some(old) if old != rv => "MODIFIED",
                            Some(_) => continue,
                        };
                        out.push_str(&json!({"type": kind, "object": o}).to_string());
                        out.push('\n');
                    }
                    let gone: Vec<String> = seen.keys().filter(|n| !now.contains_key(*n)).cloned().collect();
                    for name in gone {
                        seen.remove(&name);
                        let o = json!({"kind": kind_of(&resource), "metadata": {"name": name, "namespace": ns}});
                        out.push_str(&json!({"type": "DELETED", "object": o}).to_string());
                        out.push('\n');
                    }
                }
                if !out.is_empty() || first {
                    return Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), (state, seen, false)));
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(events))
        .unwrap_or_else(|_| status(500, "InternalError", "the watch could not start".into()))
}

/// The controller catches up with what is due on its clock.
fn reconcile(st: &mut State) {
    let Some((_, clock)) = &st.controller else { return };
    let now = clock.now();
    let due: Vec<Key> = st.pending.iter().filter(|(_, at)| *at <= now).map(|(k, _)| k.clone()).collect();
    st.pending.retain(|(_, at)| *at > now);
    for key in due {
        let rv = st.next_rv();
        if let Some(o) = st.objects.get_mut(&key) {
            observe(o);
            o["metadata"]["resourceVersion"] = json!(rv);
        }
    }
}

impl LocalCluster {
    /// Serves `workloads` (and `pods`, by their `service`, as the pods of the workload of that
    /// name) on a loopback port.
    pub async fn start(workloads: &[Workload], pods: &[ScenarioPod]) -> std::io::Result<LocalCluster> {
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut st = state.lock().unwrap();
            for w in workloads {
                add_workload(&mut st, w, pods);
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let s = state.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                match uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")) {
                    true => watch(s, uri),
                    false => handle(&s, method, uri, headers, body),
                }
            }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(LocalCluster { url, state, _server: Arc::new(Server(server)) })
    }

    /// Someone creates a pod as it is (`kubectl apply` of a Pod, another controller's pod).
    pub fn add_pod(&self, pod: Value) {
        let mut st = self.state.lock().unwrap();
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or("pod").to_string();
        st.objects.insert(("pods".into(), ns, name), pod);
    }

    /// Someone creates a workload (`kubectl apply`).
    pub fn add(&self, w: &Workload) {
        add_workload(&mut self.state.lock().unwrap(), w, &[]);
    }

    /// Called after every change that is not a dry run.
    pub fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        self.state.lock().unwrap().on_change = Some(Arc::new(f));
    }

    /// RBAC says no to `verb` on `resource` (`deployments`, `deployments/scale`, `pods`).
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.state.lock().unwrap().forbidden.push((verb.into(), resource.into()));
    }

    /// The next `n` writes that name a `resourceVersion` meet a concurrent writer: their
    /// object changes just before (409).
    pub fn conflict_next_writes(&self, n: u32) {
        self.state.lock().unwrap().conflicts = n;
    }

    /// A status-only update (new `resourceVersion`, same generation) lands before each of the
    /// next `n` writes, as on any busy Deployment.
    pub fn status_writes_before_next_writes(&self, n: u32) {
        self.state.lock().unwrap().status_writes = n;
    }

    /// A person's spec edit (as [`LocalCluster::edit`]) lands just before the next write.
    pub fn edit_before_next_write(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        let key = (resource.to_string(), namespace.to_string(), name.to_string());
        self.state.lock().unwrap().edit_next_write = Some((key, Box::new(f)));
    }

    /// The Deployment controller observes a new spec `delay` after it is written, on `clock`;
    /// until then the workload's status and conditions are the previous rollout's.
    pub fn controller_delay(&self, delay: std::time::Duration, clock: Arc<dyn crate::time::Clock>) {
        self.state.lock().unwrap().controller = Some((delay, clock));
    }

    /// The current rollout of a Deployment has passed its progress deadline (a bad build that
    /// never became ready): `Progressing` is `False`, `ProgressDeadlineExceeded`.
    pub fn deadline_exceeded(&self, namespace: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        let rv = st.next_rv();
        if let Some(o) = st.objects.get_mut(&("deployments".into(), namespace.into(), name.into())) {
            let rs = format!("{name}-{}", template_hash(&o["spec"]["template"]));
            o["status"]["conditions"] = json!([
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                 "message": "Deployment does not have minimum availability."},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": format!("ReplicaSet \"{rs}\" has timed out progressing.")},
            ]);
            o["status"]["availableReplicas"] = json!(0);
            o["status"]["readyReplicas"] = json!(0);
            o["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    /// A person edits a workload (`kubectl edit`): a spec change, new generation and version.
    pub fn edit(&self, resource: &str, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut st = self.state.lock().unwrap();
        let rv = st.next_rv();
        if let Some(o) = st.objects.get_mut(&(resource.into(), namespace.into(), name.into())) {
            f(o);
            o["metadata"]["resourceVersion"] = json!(rv);
            let g = o["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            o["metadata"]["generation"] = json!(g);
            o["status"]["observedGeneration"] = json!(g);
        }
    }

    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(&(resource.into(), namespace.into(), name.into())).cloned()
    }

    /// The names of the pods in `namespace`.
    pub fn pods(&self, namespace: &str) -> Vec<String> {
        self.names("pods", namespace)
    }

    /// The names of the objects of `resource` in `namespace`.
    pub fn names(&self, resource: &str, namespace: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.objects.keys().filter(|(r, ns, _)| r == resource && ns == namespace).map(|(_, _, n)| n.clone()).collect()
    }

    /// Every request so far: `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every PATCH and DELETE so far, whoever sent it: `METHOD path?query` and the body.
    pub fn bodies(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().bodies.clone()
    }
}

fn add_workload(st: &mut State, w: &Workload, pods: &[ScenarioPod]) {
    let uid = st.next_uid();
    let labels = json!({"app.kubernetes.io/name": w.name});
    let revisions = if w.revisions.is_empty() {
        vec![Revision { revision: 1, image: format!("{}:latest", w.name), change_cause: None }]
    } else {
        w.revisions.clone()
    };
    // A template as the API server stores it: with the defaults it fills in (what a typed
    // client such as kubectl sends back too).
    let template = |image: &str| {
        json!({"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": w.name, "image": image, "resources": {}, "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "securityContext": {}, "schedulerName": "default-scheduler"}})
    };
    let current = revisions.last().expect("at least one");
    let mut meta = json!({"name": w.name, "namespace": w.namespace, "uid": uid, "generation": 1,
        "resourceVersion": st.next_rv(), "labels": labels, "creationTimestamp": CREATED});
    // Whose pods these are: the current ReplicaSet's (a Deployment), else the workload's.
    let mut owner =
        json!({"apiVersion": "apps/v1", "kind": w.kind.as_str(), "name": w.name, "uid": uid, "controller": true});
    let mut pod_labels = labels.clone();
    if w.kind == WorkloadKind::Deployment {
        meta["annotations"] = json!({"deployment.kubernetes.io/revision": current.revision.to_string()});
        if let Some(c) = &current.change_cause {
            meta["annotations"]["kubernetes.io/change-cause"] = json!(c);
        }
        for r in &revisions {
            let mut t = template(&r.image);
            let hash = template_hash(&t);
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut annotations = json!({"deployment.kubernetes.io/revision": r.revision.to_string()});
            if let Some(c) = &r.change_cause {
                annotations["kubernetes.io/change-cause"] = json!(c);
            }
            let rs_uid = st.next_uid();
            if r.revision == current.revision {
                owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-{hash}", w.name),
                    "uid": rs_uid, "controller": true});
                pod_labels = t["metadata"]["labels"].clone();
            }
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{}-{hash}", w.name), "namespace": w.namespace, "uid": rs_uid,
                    "resourceVersion": st.next_rv(), "labels": t["metadata"]["labels"], "creationTimestamp": CREATED,
                    "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name, "uid": uid, "controller": true}]},
                "spec": {"replicas": if r.revision == current.revision { w.replicas } else { 0 },
                    "selector": {"matchLabels": labels}, "template": t},
            });
            st.objects.insert(
                ("replicasets".into(), w.namespace.clone(), rs["metadata"]["name"].as_str().unwrap().into()),
                rs,
            );
        }
    }
    let status = match w.kind {
        WorkloadKind::Deployment => json!({"observedGeneration": 1, "replicas": w.replicas,
            "updatedReplicas": w.replicas, "readyReplicas": w.replicas, "availableReplicas": w.replicas}),
        WorkloadKind::StatefulSet => json!({"observedGeneration": 1, "replicas": w.replicas,
            "updatedReplicas": w.replicas, "readyReplicas": w.replicas, "currentReplicas": w.replicas}),
        WorkloadKind::DaemonSet => json!({"observedGeneration": 1, "desiredNumberScheduled": w.replicas,
            "updatedNumberScheduled": w.replicas, "numberAvailable": w.replicas, "numberReady": w.replicas,
            "currentNumberScheduled": w.replicas, "numberMisscheduled": 0}),
    };
    let mut spec = json!({"selector": {"matchLabels": labels}, "template": template(&current.image)});
    if w.kind != WorkloadKind::DaemonSet {
        spec["replicas"] = json!(w.replicas);
    }
    if w.kind == WorkloadKind::StatefulSet {
        spec["serviceName"] = json!(w.name);
    }
    if w.paused {
        spec["paused"] = json!(true);
    }
    let mut obj =
        json!({"apiVersion": "apps/v1", "kind": w.kind.as_str(), "metadata": meta, "spec": spec, "status": status});
    observe(&mut obj);
    st.objects.insert((w.kind.plural().into(), w.namespace.clone(), w.name.clone()), obj);
    let given: Vec<&ScenarioPod> = pods.iter().filter(|p| p.service == w.name).collect();
    if given.is_empty() {
        for i in 0..w.replicas.max(0) {
            let name = format!("{}-{}", w.name, i);
            add_pod(
                st,
                &w.namespace,
                &name,
                (&pod_labels, &owner),
                &ScenarioPod {
                    name: name.clone(),
                    service: w.name.clone(),
                    phase: "Running".into(),
                    reason: None,
                    restarts: 0,
                    last_termination: None,
                    events: Vec::new(),
                },
            );
        }
    }
    for p in given {
        add_pod(st, &w.namespace, &p.name, (&pod_labels, &owner), p);
    }
}

/// A Pod object from a scenario's pod: its `reason` is a waiting container's (or, for
/// `OOMKilled`/`Error`, the last termination's); it is ready when running with no reason.
fn add_pod(st: &mut State, namespace: &str, name: &str, (labels, owner): (&Value, &Value), p: &ScenarioPod) {
    let ready = p.phase == "Running" && p.reason.is_none();
    let mut container = json!({"name": p.service, "ready": ready, "restartCount": p.restarts, "image": "",
        "imageID": "", "state": {"running": {}}});
    match p.reason.as_deref() {
        Some(r @ ("OOMKilled" | "Error" | "Completed")) => {
            container["lastState"] = json!({"terminated": {"reason": r, "exitCode": 137}});
            container["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        }
        Some(r) => container["state"] = json!({"waiting": {"reason": r}}),
        None => {}
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": st.next_uid(), "resourceVersion": st.next_rv(),
            "labels": labels, "ownerReferences": [owner], "creationTimestamp": CREATED},
        "spec": {"containers": [{"name": p.service}]},
        "status": {"phase": p.phase, "containerStatuses": [container],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    st.objects.insert(("pods".into(), namespace.into(), name.into()), pod);
}

/// The discovery documents a client reads before anything else (kubectl among them): the
/// server's version, the API groups, and the resources of each group version it serves.
fn discovery(path: &str) -> Option<Value> {
    let resource = |name: &str, kind: &str, short: &[&str], verbs: &[&str]| {
        json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
               "verbs": verbs, "shortNames": short})
    };
    let workload = ["get", "list", "watch", "patch", "update"];
    let scale = |name: &str| {
        json!({"name": format!("{name}/scale"), "singularName": "", "namespaced": true, "group": "autoscaling",
               "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
    };
    let group = |name: &str| {
        json!({"name": name, "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
               "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}})
    };
    Some(match path {
        "/version" => json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4", "goVersion": "go1.23.8",
                             "compiler": "gc", "platform": "linux/amd64", "buildDate": CREATED}),
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group("apps"), group("autoscaling")]}),
        "/api/v1" => json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource("pods", "Pod", &["po"], &["get", "list", "watch", "delete"])]}),
        "/apis/apps/v1" => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
            resource("deployments", "Deployment", &["deploy"], &workload), scale("deployments"),
            resource("statefulsets", "StatefulSet", &["sts"], &workload), scale("statefulsets"),
            resource("daemonsets", "DaemonSet", &["ds"], &workload),
            resource("replicasets", "ReplicaSet", &["rs"], &["get", "list", "watch"])]})
        }
        "/apis/autoscaling/v1" => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "autoscaling/v1", "resources": []})
        }
        _ => return None,
    })
}

/// `/apis/apps/v1/namespaces/NS/RESOURCE[/NAME[/scale]]` or `/api/v1/namespaces/NS/pods[/NAME]`.
fn route(path: &str) -> Option<(String, String, Option<String>, bool)> {
    let rest = path.strip_prefix("/apis/apps/v1/namespaces/").or_else(|| path.strip_prefix("/api/v1/namespaces/"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [ns, res] => Some((res.to_string(), ns.to_string(), None, false)),
        [ns, res, name] => Some((res.to_string(), ns.to_string(), Some(name.to_string()), false)),
        [ns, res, name, "scale"] => Some((res.to_string(), ns.to_string(), Some(name.to_string()), true)),
        _ => None,
    }
}

fn handle(state: &Mutex<State>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut st = state.lock().unwrap();
    reconcile(&mut st);
    let request = format!("{method} {}", uri.path_and_query().map(|p| p.as_str()).unwrap_or(""));
    if matches!(method, Method::PATCH | Method::DELETE) {
        st.bodies.push((request.clone(), serde_json::from_slice(&body).unwrap_or(Value::Null)));
    }
    st.requests.push(request);
    let query: BTreeMap<String, String> =
        uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    if method == Method::GET
        && let Some(doc) = discovery(uri.path())
    {
        return axum::Json(doc).into_response();
    }
    let Some((resource, ns, name, scale)) = route(uri.path()) else {
        return status(404, "NotFound", format!("the server could not find the requested resource ({})", uri.path()));
    };
    let verb = match (&method, &name) {
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => return status(405, "MethodNotAllowed", format!("{method} is not supported here")),
    };
    let rbac_resource = if scale { format!("{resource}/scale") } else { resource.clone() };
    if st.forbidden.iter().any(|(v, r)| v == verb && *r == rbac_resource) {
        return status(
            403,
            "Forbidden",
            format!(
                "{} {:?} is forbidden: User \"system:serviceaccount:medic:medic\" cannot {verb} resource {:?} in API group {:?} in the namespace {:?}",
                qualified(&resource),
                name.clone().unwrap_or_default(),
                rbac_resource,
                group(&resource),
                ns
            ),
        );
    }
    let Some(name) = name else {
        let selector = query.get("labelSelector").cloned().unwrap_or_default();
        let fields = query.get("fieldSelector").cloned().unwrap_or_default();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((r, n, _), o)| {
                *r == resource && *n == ns && labels_match(o, &selector) && fields_match(o, &fields)
            })
            .map(|(_, o)| o.clone())
            .collect();
        let kind = format!("{}List", kind_of(&resource));
        let api = if resource == "pods" { "v1" } else { "apps/v1" };
        return axum::Json(json!({"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": items})).into_response();
    };
    let key = (resource.clone(), ns.clone(), name.clone());
    let not_found = || status(404, "NotFound", format!("{} {name:?} not found", qualified(&resource)));
    let Some(current) = st.objects.get(&key).cloned() else { return not_found() };
    match verb {
        "get" if scale => axum::Json(scale_of(&current)).into_response(),
        "get" => axum::Json(current).into_response(),
        "delete" => {
            let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            // DeleteOptions carries `dryRun` in the body (kube-rs puts it there).
            let dry_run = dry_run || opts["dryRun"].as_array().is_some_and(|a| a.iter().any(|v| v == "All"));
            if let Some(uid) = opts["preconditions"]["uid"].as_str()
                && current["metadata"]["uid"].as_str() != Some(uid)
            {
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        current["metadata"]["uid"]
                    ),
                );
            }
            if !dry_run {
                st.objects.remove(&key);
                // The controller replaces the pod with a healthy one.
                let labels = current["metadata"]["labels"].clone();
                let owner = current["metadata"]["ownerReferences"][0].clone();
                let service = current["spec"]["containers"][0]["name"].as_str().unwrap_or("").to_string();
                let new_name = format!("{name}-r{}", st.resource_version + 1);
                let p = ScenarioPod {
                    name: new_name.clone(),
                    service,
                    phase: "Running".into(),
                    reason: None,
                    restarts: 0,
                    last_termination: None,
                    events: Vec::new(),
                };
                add_pod(&mut st, &ns, &new_name, (&labels, &owner), &p);
                changed(&st);
            }
            axum::Json(current).into_response()
        }
        _ => patch(&mut st, key, current, scale, dry_run, &headers, &body),
    }
}

fn scale_of(o: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"],
            "uid": o["metadata"]["uid"], "resourceVersion": o["metadata"]["resourceVersion"]},
        "spec": {"replicas": o["spec"]["replicas"]},
        "status": {"replicas": o["status"]["replicas"], "selector": "app.kubernetes.io/name=".to_string() + o["metadata"]["name"].as_str().unwrap_or("")},
    })
}

fn changed(st: &State) {
    if let Some(f) = st.on_change.clone() {
        f();
    }
}

fn patch(
    st: &mut State,
    key: Key,
    current: Value,
    scale: bool,
    dry_run: bool,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (resource, ns, name) = key.clone();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the request body is not JSON".into());
    };

    // What lands between the writer's read and its write: a controller's status updates, a
    // person's edit.
    let mut current = current;
    if !dry_run {
        if st.status_writes > 0 {
            st.status_writes -= 1;
            let rv = st.next_rv();
            if let Some(o) = st.objects.get_mut(&key) {
                o["status"]["observedGeneration"] = o["metadata"]["generation"].clone();
                o["metadata"]["resourceVersion"] = json!(rv);
            }
        }
        if st.edit_next_write.as_ref().is_some_and(|(k, _)| *k == key)
            && let Some((_, f)) = st.edit_next_write.take()
        {
            let rv = st.next_rv();
            if let Some(o) = st.objects.get_mut(&key) {
                f(o);
                o["metadata"]["resourceVersion"] = json!(rv);
                let g = o["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                o["metadata"]["generation"] = json!(g);
                o["status"]["observedGeneration"] = json!(g);
            }
        }
        current = st.objects[&key].clone();
    }
    // Only a patch that names a `resourceVersion` can conflict on it.
    let names_rv = match content_type {
        "application/json-patch+json" => {
            patch.as_array().into_iter().flatten().any(|op| op["path"] == "/metadata/resourceVersion")
        }
        _ => patch.pointer("/metadata/resourceVersion").is_some(),
    };
    let mut doc = if scale { scale_of(&current) } else { current.clone() };
    let applied = match content_type {
        "application/json-patch+json" => {
            serde_json::from_value::<json_patch::Patch>(patch).map_err(|e| e.to_string()).and_then(|p| {
                json_patch::patch(&mut doc, &p).map_err(|e| match e.kind {
                    // What kube-apiserver's JSON patch library says of a failed `test`.
                    json_patch::PatchErrorKind::TestFailed => format!("testing value {} failed: test failed", e.path),
                    _ => e.to_string(),
                })
            })
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            json_patch::merge(&mut doc, &patch);
            Ok(())
        }
        other => {
            return status(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {other}"),
            );
        }
    };
    if let Err(e) = applied {
        if e.starts_with("testing value") {
            return status(422, "Invalid", e);
        }
        return status(422, "Invalid", format!("{} {name:?} is invalid: {e}", qualified(&resource)));
    }
    if names_rv && st.conflicts > 0 {
        // A concurrent writer got there first.
        st.conflicts -= 1;
        let rv = st.next_rv();
        if let Some(o) = st.objects.get_mut(&key) {
            o["metadata"]["resourceVersion"] = json!(rv);
        }
    }
    let stored_rv = st.objects[&key]["metadata"]["resourceVersion"].clone();
    if names_rv && doc["metadata"]["resourceVersion"] != stored_rv {
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                qualified(&resource)
            ),
        );
    }
    let mut next = if scale {
        let mut o = current.clone();
        o["spec"]["replicas"] = doc["spec"]["replicas"].clone();
        o
    } else {
        doc
    };
    match next["spec"]["replicas"].as_i64() {
        Some(r) if r < 0 => {
            return status(
                422,
                "Invalid",
                format!(
                    "{} {name:?} is invalid: spec.replicas: Invalid value: {r}: must be greater than or equal to 0",
                    qualified(&resource)
                ),
            );
        }
        None if next["spec"].get("replicas").is_some_and(|r| !r.is_null()) => {
            return status(
                422,
                "Invalid",
                format!("{} {name:?} is invalid: spec.replicas: must be an integer", qualified(&resource)),
            );
        }
        _ => {}
    }
    if next["spec"] != current["spec"] {
        let g = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        next["metadata"]["generation"] = json!(g);
        roll_out(st, &ns, &mut next, &current, dry_run);
        // The controller observes the new spec at once, or after its delay.
        match &st.controller {
            Some((delay, clock)) if !dry_run => {
                let at = clock.now() + delay.as_millis() as crate::time::Millis;
                st.pending.retain(|(k, _)| *k != key);
                st.pending.push((key.clone(), at));
            }
            _ => observe(&mut next),
        }
    }
    next["metadata"]["resourceVersion"] =
        json!(if dry_run { stored_rv.as_str().unwrap_or("").to_string() } else { st.next_rv() });
    if !dry_run {
        st.objects.insert(key, next.clone());
        changed(st);
    }
    axum::Json(if scale { scale_of(&next) } else { next }).into_response()
}

/// What the Deployment controller does with a new template: the ReplicaSet with the same
/// template gets the next revision (a rollback), or a new one is made.
fn roll_out(st: &mut State, ns: &str, next: &mut Value, current: &Value, dry_run: bool) {
    if next["kind"] != "Deployment" || next["spec"]["template"] == current["spec"]["template"] {
        return;
    }
    let uid = next["metadata"]["uid"].clone();
    let owned: Vec<Key> = st
        .objects
        .iter()
        .filter(|((r, n, _), o)| r == "replicasets" && n == ns && o["metadata"]["ownerReferences"][0]["uid"] == uid)
        .map(|(k, _)| k.clone())
        .collect();
    let revision = |o: &Value| {
        o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let top = owned.iter().map(|k| revision(&st.objects[k])).max().unwrap_or(0) + 1;
    next["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(top.to_string());
    if dry_run {
        return;
    }
    let hash = template_hash(&next["spec"]["template"]);
    let same = owned.into_iter().find(|k| template_hash(&st.objects[k]["spec"]["template"]) == hash);
    let key = match same {
        Some(k) => k,
        None => {
            let mut t = next["spec"]["template"].clone();
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let name = format!("{}-{hash}", next["metadata"]["name"].as_str().unwrap_or(""));
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": name, "namespace": ns, "uid": st.next_uid(), "resourceVersion": st.next_rv(),
                    "labels": t["metadata"]["labels"], "annotations": {}, "creationTimestamp": CREATED,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": next["metadata"]["name"], "uid": uid, "controller": true}]},
                "spec": {"replicas": 0, "selector": next["spec"]["selector"], "template": t},
            });
            let key = ("replicasets".to_string(), ns.to_string(), name);
            st.objects.insert(key.clone(), rs);
            key
        }
    };
    let rv = st.next_rv();
    if let Some(rs) = st.objects.get_mut(&key) {
        // As the controller's SetNewReplicaSetAnnotations: the Deployment's annotations (its
        // change-cause among them) go onto the ReplicaSet that now serves, with the revision.
        const SKIPPED: [&str; 5] = [
            "kubectl.kubernetes.io/last-applied-configuration",
            "deployment.kubernetes.io/revision-history",
            "deployment.kubernetes.io/desired-replicas",
            "deployment.kubernetes.io/max-replicas",
            "deprecated.deployment.rollback.to",
        ];
        for (k, v) in next["metadata"]["annotations"].as_object().into_iter().flatten() {
            if !SKIPPED.contains(&k.as_str()) {
                rs["metadata"]["annotations"][k] = v.clone();
            }
        }
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(top.to_string());
        rs["metadata"]["resourceVersion"] = json!(rv);
    }
}
