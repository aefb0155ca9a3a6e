//! A local stand-in for a Kubernetes API server, speaking its wire format for the part medic's
//! actions use: Deployments, StatefulSets and DaemonSets (get, patch — JSON, merge and
//! strategic merge — and the `scale` subresource), ReplicaSets and Pods (list by label
//! selector, delete with preconditions), `dryRun=All`, `resourceVersion` conflicts, and `Status`
//! objects for 403/404/409/422. A Deployment's template change rolls out at once: a ReplicaSet
//! revision is created or reused, as the Deployment controller would.
//!
//! The demo and `medic test` run a scenario's workloads (its `kubernetes:` list) on it, so
//! plans act through medic's real Kubernetes client; the first change switches the recorded
//! world to its "after" state. Tests use its knobs (forbid a verb, a concurrent writer, a
//! person's edit) for the paths a real cluster takes rarely.

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
}

type Key = (String, String, String); // (resource, namespace, name)

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    uid: u64,
    forbidden: Vec<(String, String)>,
    conflicts: u32,
    requests: Vec<String>,
    on_change: Option<Arc<dyn Fn() + Send + Sync>>,
}

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

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => obj["metadata"]["labels"][k].as_str() == Some(v),
        None => false,
    })
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
            async move { handle(&s, method, uri, headers, body) }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(LocalCluster { url, state, _server: Arc::new(Server(server)) })
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

    /// The next `n` writes meet a concurrent writer: their object changes just before (409).
    pub fn conflict_next_writes(&self, n: u32) {
        self.state.lock().unwrap().conflicts = n;
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
        let st = self.state.lock().unwrap();
        st.objects.keys().filter(|(r, ns, _)| r == "pods" && ns == namespace).map(|(_, _, n)| n.clone()).collect()
    }

    /// Every request so far: `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn add_workload(st: &mut State, w: &Workload, pods: &[ScenarioPod]) {
    let uid = st.next_uid();
    let labels = json!({"app.kubernetes.io/name": w.name});
    let revisions = if w.revisions.is_empty() {
        vec![Revision { revision: 1, image: format!("{}:latest", w.name) }]
    } else {
        w.revisions.clone()
    };
    let template = |image: &str| json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": w.name, "image": image}]}});
    let current = revisions.last().expect("at least one");
    let mut meta = json!({"name": w.name, "namespace": w.namespace, "uid": uid, "generation": 1,
        "resourceVersion": st.next_rv(), "labels": labels});
    if w.kind == WorkloadKind::Deployment {
        meta["annotations"] = json!({"deployment.kubernetes.io/revision": current.revision.to_string()});
        for r in &revisions {
            let mut t = template(&r.image);
            let hash = template_hash(&t);
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{}-{hash}", w.name), "namespace": w.namespace, "uid": st.next_uid(),
                    "resourceVersion": st.next_rv(), "labels": t["metadata"]["labels"],
                    "annotations": {"deployment.kubernetes.io/revision": r.revision.to_string()},
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
    let (api_kind, status) = match w.kind {
        WorkloadKind::Deployment => (
            "Deployment",
            json!({"observedGeneration": 1, "replicas": w.replicas,
            "updatedReplicas": w.replicas, "readyReplicas": w.replicas, "availableReplicas": w.replicas}),
        ),
        WorkloadKind::StatefulSet => (
            "StatefulSet",
            json!({"observedGeneration": 1, "replicas": w.replicas,
            "updatedReplicas": w.replicas, "readyReplicas": w.replicas, "currentReplicas": w.replicas}),
        ),
        WorkloadKind::DaemonSet => (
            "DaemonSet",
            json!({"observedGeneration": 1, "desiredNumberScheduled": w.replicas,
            "updatedNumberScheduled": w.replicas, "numberAvailable": w.replicas, "numberReady": w.replicas,
            "currentNumberScheduled": w.replicas, "numberMisscheduled": 0}),
        ),
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
    let obj = json!({"apiVersion": "apps/v1", "kind": api_kind, "metadata": meta, "spec": spec, "status": status});
    st.objects.insert((w.kind.plural().into(), w.namespace.clone(), w.name.clone()), obj);
    let given: Vec<&ScenarioPod> = pods.iter().filter(|p| p.service == w.name).collect();
    if given.is_empty() {
        for i in 0..w.replicas.max(0) {
            let name = format!("{}-{}", w.name, i);
            add_pod(
                st,
                &w.namespace,
                &name,
                &labels,
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
        add_pod(st, &w.namespace, &p.name, &labels, p);
    }
}

/// A Pod object from a scenario's pod: its `reason` is a waiting container's (or, for
/// `OOMKilled`/`Error`, the last termination's); it is ready when running with no reason.
fn add_pod(st: &mut State, namespace: &str, name: &str, labels: &Value, p: &ScenarioPod) {
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
        "metadata": {"name": name, "namespace": namespace, "uid": st.next_uid(), "resourceVersion": st.next_rv(), "labels": labels},
        "spec": {"containers": [{"name": p.service}]},
        "status": {"phase": p.phase, "containerStatuses": [container],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    st.objects.insert(("pods".into(), namespace.into(), name.into()), pod);
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
    st.requests.push(format!("{method} {}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("")));
    let query: BTreeMap<String, String> =
        uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
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
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((r, n, _), o)| *r == resource && *n == ns && labels_match(o, &selector))
            .map(|(_, o)| o.clone())
            .collect();
        let kind = if resource == "pods" { "PodList" } else { "ReplicaSetList" };
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
                add_pod(&mut st, &ns, &new_name, &labels, &p);
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
    let mut doc = if scale { scale_of(&current) } else { current.clone() };
    let applied = match content_type {
        "application/json-patch+json" => serde_json::from_value::<json_patch::Patch>(patch)
            .map_err(|e| e.to_string())
            .and_then(|p| json_patch::patch(&mut doc, &p).map_err(|e| e.to_string())),
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
        return status(422, "Invalid", format!("{} {name:?} is invalid: {e}", qualified(&resource)));
    }
    if st.conflicts > 0 {
        // A concurrent writer got there first.
        st.conflicts -= 1;
        let rv = st.next_rv();
        if let Some(o) = st.objects.get_mut(&key) {
            o["metadata"]["resourceVersion"] = json!(rv);
        }
    }
    let stored_rv = st.objects[&key]["metadata"]["resourceVersion"].clone();
    if doc["metadata"]["resourceVersion"] != stored_rv {
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
        let r = next["spec"]["replicas"].clone();
        let s = &mut next["status"];
        s["observedGeneration"] = json!(g);
        for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
            if s.get(k).is_some() {
                s[k] = r.clone();
            }
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
                    "labels": t["metadata"]["labels"], "annotations": {},
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
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(top.to_string());
        rs["metadata"]["resourceVersion"] = json!(rv);
    }
}
