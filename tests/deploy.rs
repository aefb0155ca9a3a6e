//! The Kubernetes manifests in deploy/kubernetes do what their instructions say: the namespace
//! and ServiceAccount they bind exist in medic.yaml; the namespaced file takes its namespace
//! from `kubectl apply -n` (no namespace of its own to conflict with it); the cluster file is
//! cluster-wide only; every read permission is read-only, and the write Role for Kubernetes
//! actions grants only what they use.

mod common;

use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

fn docs(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["kind"].as_str().unwrap()).collect()
}

fn read_only(rules: &Value) {
    for rule in rules.as_array().unwrap() {
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(matches!(verb.as_str(), Some("get" | "list" | "watch")), "a write verb: {rule}");
        }
    }
}

#[test]
fn manifests_are_consistent_and_read_only() {
    let base = docs("medic.yaml");
    assert_eq!(kinds(&base), ["Namespace", "ServiceAccount"]);
    assert_eq!(base[0]["metadata"]["name"], "medic");
    assert_eq!(
        (base[1]["metadata"]["name"].as_str(), base[1]["metadata"]["namespace"].as_str()),
        (Some("medic"), Some("medic"))
    );

    let ns = docs("read-namespace.yaml");
    assert_eq!(kinds(&ns), ["Role", "RoleBinding"]);
    for d in &ns {
        assert!(d["metadata"]["namespace"].is_null(), "`kubectl apply -n X` decides the namespace: {d}");
    }
    let cluster = docs("read-cluster.yaml");
    assert_eq!(kinds(&cluster), ["ClusterRole", "ClusterRoleBinding"]);
    assert_eq!(ns[0]["rules"], cluster[0]["rules"], "the same permissions either way");
    read_only(&ns[0]["rules"]);
    read_only(&cluster[0]["rules"]);
    for binding in [&ns[1], &cluster[1]] {
        assert_eq!(binding["roleRef"]["name"], "medic-read");
        let subject = &binding["subjects"][0];
        assert_eq!(
            (subject["kind"].as_str(), subject["name"].as_str(), subject["namespace"].as_str()),
            (Some("ServiceAccount"), Some("medic"), Some("medic")),
            "binds the ServiceAccount of medic.yaml"
        );
    }
}

/// The write Role: patch workloads and their scale, delete pods; nothing else, nowhere else.
#[test]
fn the_write_role_is_least_privilege() {
    let docs = docs("write-namespace.yaml");
    assert_eq!(kinds(&docs), ["Role", "RoleBinding"]);
    for d in &docs {
        assert!(d["metadata"]["namespace"].is_null(), "`kubectl apply -n X` decides the namespace: {d}");
    }
    let mut grants: Vec<String> = Vec::new();
    for rule in docs[0]["rules"].as_array().unwrap() {
        for res in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                grants.push(format!("{} {}", verb.as_str().unwrap(), res.as_str().unwrap()));
            }
        }
    }
    grants.sort();
    assert_eq!(
        grants,
        [
            "delete pods",
            "get daemonsets",
            "get deployments",
            "get statefulsets",
            "patch daemonsets",
            "patch deployments",
            "patch deployments/scale",
            "patch statefulsets",
            "patch statefulsets/scale",
        ]
    );
    assert_eq!(docs[1]["roleRef"]["name"], "medic-act");
    assert_eq!(docs[1]["subjects"][0]["name"], "medic");
    assert_eq!(docs[1]["subjects"][0]["namespace"], "medic");
}

/// The Alertmanager receiver the README shows is a configuration Alertmanager accepts, and it
/// points at medic's route with a bearer token.
#[test]
fn the_alertmanager_example_passes_amtool() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/alertmanager.yml");
    let out = match std::process::Command::new("amtool").arg("check-config").arg(&file).output() {
        Ok(o) => o,
        Err(e) => {
            common::unavailable(&format!("amtool (Debian package prometheus-alertmanager) cannot run: {e}"));
            return;
        }
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
    let cfg: Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let hook = &cfg["receivers"][0]["webhook_configs"][0];
    assert!(hook["url"].as_str().unwrap().ends_with("/v1/alerts/alertmanager"));
    assert_eq!(hook["send_resolved"], true);
    assert_eq!(hook["http_config"]["authorization"]["type"], "Bearer");
    let grafana: Value = serde_norway::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana-contact-point.yaml"))
            .unwrap(),
    )
    .unwrap();
    let settings = &grafana["contactPoints"][0]["receivers"][0]["settings"];
    assert!(settings["url"].as_str().unwrap().ends_with("/v1/alerts/grafana"));
    assert_eq!(settings["authorization_scheme"], "Bearer");
}
