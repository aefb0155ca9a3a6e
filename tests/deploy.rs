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

/// The Alertmanager receiver docs/src/http-api.md shows is a configuration Alertmanager accepts, and it
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

// ---------------------------------------------------------------------------------------------
// Packaging: the Helm chart, the systemd unit, the Dockerfile, the Grafana dashboard.
// ---------------------------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The subset of Go templates the chart is written in — `{{ .Values.x }}`, `{{ $.Release.Name }}`,
/// `{{- if X }}`, `{{- range X }}` over a list with `{{ . }}`, `{{- end }}`, and
/// `{{- toYaml X | nindent N }}`, with `{{-`/`-}}` trimming — rendered as Helm would. Anything
/// else is an error, so the chart cannot drift into what this test cannot check. (Debian has
/// no `helm` package; where `helm` is on PATH, `helm lint` and `helm template` run too.)
mod gotmpl {
    use serde_json::Value;

    enum Node {
        Text(String),
        Print(String),
        ToYaml(String, usize),
        If(String, Vec<Node>),
        Range(String, Vec<Node>),
    }

    fn tokens(src: &str) -> Result<Vec<(bool, String)>, String> {
        let mut out: Vec<(bool, String)> = Vec::new();
        let mut rest = src;
        let mut trim_next = false;
        while let Some(i) = rest.find("{{") {
            let mut text = rest[..i].to_string();
            if trim_next {
                text = text.trim_start().to_string();
            }
            let after = &rest[i + 2..];
            let j = after.find("}}").ok_or("an unclosed {{")?;
            let mut action = &after[..j];
            if let Some(a) = action.strip_prefix('-') {
                text = text.trim_end().to_string();
                action = a;
            }
            trim_next = action.ends_with('-');
            let action = action.trim_end_matches('-').trim().to_string();
            out.push((false, text));
            out.push((true, action));
            rest = &after[j + 2..];
        }
        out.push((false, if trim_next { rest.trim_start().to_string() } else { rest.to_string() }));
        Ok(out)
    }

    fn parse(toks: &mut std::iter::Peekable<std::vec::IntoIter<(bool, String)>>) -> Result<(Vec<Node>, bool), String> {
        let mut nodes = Vec::new();
        while let Some((action, t)) = toks.next() {
            if !action {
                nodes.push(Node::Text(t));
                continue;
            }
            let words: Vec<&str> = t.split_whitespace().collect();
            match words.as_slice() {
                ["end"] => return Ok((nodes, true)),
                ["if", x] => {
                    let (body, ended) = parse(toks)?;
                    if !ended {
                        return Err(format!("`if {x}` has no end"));
                    }
                    nodes.push(Node::If(x.to_string(), body));
                }
                ["range", x] => {
                    let (body, ended) = parse(toks)?;
                    if !ended {
                        return Err(format!("`range {x}` has no end"));
                    }
                    nodes.push(Node::Range(x.to_string(), body));
                }
                ["toYaml", x, "|", "nindent", n] => {
                    nodes.push(Node::ToYaml(x.to_string(), n.parse().map_err(|_| format!("nindent {n}"))?))
                }
                [x] if x.starts_with('.') || x.starts_with("$.") => nodes.push(Node::Print(x.to_string())),
                _ => return Err(format!("unsupported template action {{{{ {t} }}}}")),
            }
        }
        Ok((nodes, false))
    }

    fn lookup<'a>(path: &str, root: &'a Value, dot: &'a Value) -> Result<&'a Value, String> {
        if path == "." {
            return Ok(dot);
        }
        let (base, rest) = match path.strip_prefix("$.") {
            Some(r) => (root, r),
            None => (dot, path.trim_start_matches('.')),
        };
        let mut v = base;
        for part in rest.split('.') {
            v = v.get(part).ok_or_else(|| format!("{path}: no {part}"))?;
        }
        Ok(v)
    }

    fn truthy(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
        }
    }

    fn run(nodes: &[Node], root: &Value, dot: &Value, out: &mut String) -> Result<(), String> {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Print(p) => match lookup(p, root, dot)? {
                    Value::String(s) => out.push_str(s),
                    Value::Number(_) | Value::Bool(_) => out.push_str(&lookup(p, root, dot)?.to_string()),
                    other => return Err(format!("{p} prints a {other}; use toYaml")),
                },
                Node::ToYaml(p, n) => {
                    let yaml = serde_norway::to_string(lookup(p, root, dot)?).map_err(|e| e.to_string())?;
                    for line in yaml.trim_end().lines() {
                        out.push('\n');
                        out.push_str(&" ".repeat(*n));
                        out.push_str(line);
                    }
                }
                Node::If(p, body) => {
                    if truthy(lookup(p, root, dot)?) {
                        run(body, root, dot, out)?;
                    }
                }
                Node::Range(p, body) => {
                    for item in lookup(p, root, dot)?.as_array().ok_or_else(|| format!("range {p}: not a list"))? {
                        run(body, root, item, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Renders `src` with `root` as both `$` and `.`.
    pub fn render(src: &str, root: &Value) -> Result<String, String> {
        let mut toks = tokens(src)?.into_iter().peekable();
        let (nodes, ended) = parse(&mut toks)?;
        if ended {
            return Err("an `end` with no `if` or `range`".into());
        }
        let mut out = String::new();
        run(&nodes, root, root, &mut out)?;
        Ok(out)
    }
}

/// The chart's templates rendered with `values` merged over values.yaml: every document.
fn helm_template(overrides: Value) -> Vec<Value> {
    let chart = root().join("deploy/helm/medic");
    let mut values: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    for (k, v) in overrides.as_object().unwrap() {
        values[k] = v.clone();
    }
    let ctx = serde_json::json!({"Values": values, "Release": {"Name": "medic", "Namespace": "ops"}});
    let mut files: Vec<_> = std::fs::read_dir(chart.join("templates")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = gotmpl::render(&std::fs::read_to_string(&f).unwrap(), &ctx)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for d in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}\n{text}", f.display()));
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn the_helm_chart_renders_what_several_replicas_need() {
    let docs = helm_template(serde_json::json!({}));
    let dep = find(&docs, "Deployment")[0];
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "medic", "secrets by reference");
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name", "each replica's own name");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    // The config map holds a config medic accepts.
    let cm = find(&docs, "ConfigMap")[0];
    let cfg = cm["data"]["medic.yaml"].as_str().unwrap();
    let parsed: medic::config::Config = serde_norway::from_str(cfg).expect("a valid medic config");
    assert_eq!(parsed.listen.to_string(), "0.0.0.0:8080");
    // Only the secrets (which come from the Secret at run time) are missing here.
    let problems: Vec<String> = parsed.problems().into_iter().filter(|p| !p.contains("environment variable")).collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(find(&docs, "Service")[0]["spec"]["ports"][0]["port"], 8080);
    assert_eq!(find(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"], 1);
    assert!(find(&docs, "ServiceMonitor").is_empty(), "optional, off by default");
    assert!(find(&docs, "Role").is_empty(), "no write access unless namespaces are listed");
    read_only(&find(&docs, "ClusterRole")[0]["rules"]);

    let docs = helm_template(serde_json::json!({
        "rbac": {"readCluster": false, "actNamespaces": ["shop", "pay"]},
        "serviceMonitor": {"enabled": true, "interval": "15s"},
        "runbooks": {"restart.yaml": "id: restart\n"},
    }));
    assert!(find(&docs, "ClusterRole").is_empty());
    let roles = find(&docs, "Role");
    assert_eq!(roles.iter().map(|r| r["metadata"]["namespace"].as_str().unwrap()).collect::<Vec<_>>(), ["shop", "pay"]);
    // The act Role grants what write-namespace.yaml grants, plus the reads it relies on.
    let written = docs_of("write-namespace.yaml");
    for rule in written[0]["rules"].as_array().unwrap() {
        assert!(roles[0]["rules"].as_array().unwrap().contains(rule), "missing {rule}");
    }
    let binding = find(&docs, "RoleBinding")[1];
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    assert_eq!(find(&docs, "ServiceMonitor")[0]["spec"]["endpoints"][0]["path"], "/metrics");
    let dep = find(&docs, "Deployment")[0];
    let mounts = dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == "/usr/share/medic/runbooks"));
    assert_eq!(find(&docs, "ConfigMap")[1]["data"]["restart.yaml"], "id: restart\n");
}

/// The chart's config, as its defaults render it and with each platform's values example,
/// passes `medic check` against the image's runbooks (the secrets it references set to
/// stand-ins, as the Secret provides them at run time). `serve` refuses what `check` refuses.
#[test]
fn the_charts_config_passes_medic_check() {
    let dir = tempfile::tempdir().unwrap();
    let chart = root().join("deploy/helm/medic");
    let secret = regex::Regex::new(r"env: (MEDIC_[A-Z_]+)").unwrap();
    for values in [None, Some("values-slack.yaml"), Some("values-discord.yaml"), Some("values-mattermost.yaml")] {
        let overrides = match values {
            Some(f) => serde_norway::from_str(&std::fs::read_to_string(chart.join(f)).unwrap()).unwrap(),
            None => serde_json::json!({}),
        };
        let docs = helm_template(overrides);
        let cfg = find(&docs, "ConfigMap")[0]["data"]["medic.yaml"].as_str().unwrap().to_string();
        let file = dir.path().join(format!("{}.yaml", values.unwrap_or("defaults")));
        std::fs::write(&file, &cfg).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_medic"));
        cmd.args(["check", "--config"]).arg(&file).arg("--runbooks").arg(root().join("runbooks"));
        cmd.env_remove("MEDIC_DATABASE_URL");
        for var in secret.captures_iter(&cfg) {
            let value = if &var[1] == "MEDIC_POSTGRES_URL" { "postgres://medic@db/medic" } else { "stand-in-secret" };
            cmd.env(&var[1], value);
        }
        let out = cmd.output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{values:?}: {said}\n{cfg}");
        assert!(said.contains("from the config's database.url"), "{said}");
        assert_eq!(said.contains("no chat platform"), values.is_none(), "{values:?}: {said}");
    }
    // `serve` with a config `check` refuses does not start.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, format!("runbooks: {}\n", root().join("runbooks").display())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["serve", "--config"])
        .arg(&bad)
        .args(["--listen", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite://{}", dir.path().join("m.db").display()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("not in responders.groups"), "{said}");
}

fn docs_of(file: &str) -> Vec<Value> {
    docs(file)
}

/// `helm lint` and `helm template`, where helm is installed (Debian packages none).
#[test]
fn helm_lints_the_chart_where_it_is_installed() {
    if !common::stack::on_path("helm") {
        eprintln!("helm is not installed (Debian has no package): the chart is checked by rendering it in Rust only");
        return;
    }
    let chart = root().join("deploy/helm/medic");
    let out = std::process::Command::new("helm").arg("lint").arg(&chart).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The unit's install steps, followed as far as this machine allows: the config is installed
/// with a mode the service's dynamic user (neither owner nor group) can read — as an
/// unprivileged user (`runuser -u nobody`) where the test runs as root; the secrets file is
/// root's only (systemd reads it as root); the store the unit sets is a default that a
/// configured `database.url` wins over, and `medic check` says which one it uses.
#[test]
fn the_systemd_install_steps_give_a_service_that_reads_its_config() {
    let text = std::fs::read_to_string(root().join("deploy/systemd/medic.service")).unwrap();
    let mode_of = |target: &str| {
        let line =
            text.lines().find(|l| l.contains("install -m") && l.contains(target)).unwrap_or_else(|| panic!("{target}"));
        let mode = line.split_whitespace().skip_while(|w| *w != "-m").nth(1).unwrap();
        u32::from_str_radix(mode, 8).unwrap()
    };
    let config_mode = mode_of("/etc/medic/medic.yaml");
    assert_ne!(config_mode & 0o004, 0, "the dynamic user must read the config: mode {config_mode:o}");
    assert_eq!(mode_of("/etc/medic/medic.env") & 0o077, 0, "secrets are root's only");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("medic.yaml");
    std::fs::write(&config, "database:\n  url: postgres://medic@db.example/medic\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(config_mode)).unwrap();
    let root_user = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root_user && common::stack::on_path("runuser") {
        let out =
            std::process::Command::new("runuser").args(["-u", "nobody", "--", "cat"]).arg(&config).output().unwrap();
        assert!(out.status.success(), "nobody cannot read it: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("not root: checked the mode bits only");
    }
    // The unit's store is the default, never an override of the config's.
    assert!(!text.contains("Environment=MEDIC_DATABASE_URL"), "an override would hide database.url");
    let default = text.lines().find_map(|l| l.strip_prefix("Environment=MEDIC_DEFAULT_DATABASE_URL=")).unwrap();
    let check = |config: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["check", "--config"])
            .arg(config)
            .args(["--runbooks", "/nonexistent-runbooks-dir"])
            .env("MEDIC_DEFAULT_DATABASE_URL", default)
            .env_remove("MEDIC_DATABASE_URL")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = check(&config);
    assert!(said.contains("store postgres://medic@db.example/medic from the config's database.url"), "{said}");
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, "listen: 127.0.0.1:8080\n").unwrap();
    let said = check(&plain);
    assert!(said.contains("store sqlite:///var/lib/medic/medic.db from MEDIC_DEFAULT_DATABASE_URL"), "{said}");
}

/// The unit file passes `systemd-analyze verify` (with the binary path pointed at the one
/// built) and keeps its sandboxing.
#[test]
fn the_systemd_unit_verifies() {
    let text = std::fs::read_to_string(root().join("deploy/systemd/medic.service")).unwrap();
    for opt in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=medic",
        "CapabilityBoundingSet=",
    ] {
        assert!(text.lines().any(|l| l == opt), "{opt}");
    }
    if !common::stack::on_path("systemd-analyze") {
        if common::in_ci() {
            panic!("systemd-analyze is needed in CI (Debian's systemd package)");
        }
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("medic-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("medic.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/medic", env!("CARGO_BIN_EXE_medic"))).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// The Dockerfile is multi-stage, runs as a non-root user, carries the runbooks and templates,
/// checks health through `medic health`, and copies only what the build needs (which exists).
#[test]
fn the_dockerfile_is_multi_stage_non_root_and_healthy() {
    let text = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("FROM ")).count(), 2, "a build stage and a runtime stage");
    let runtime: Vec<&&str> = lines.iter().skip_while(|l| !l.starts_with("FROM gcr.io/distroless")).collect();
    assert!(runtime.iter().any(|l| l.starts_with("USER 65532")), "non-root");
    assert!(runtime.iter().any(|l| l.starts_with("HEALTHCHECK")));
    assert!(text.contains("\"health\", \"--url\""), "the health check uses medic itself");
    for dir in ["runbooks", "templates"] {
        assert!(runtime.iter().any(|l| l.starts_with(&format!("COPY {dir} /usr/share/medic/{dir}"))), "{dir}");
    }
    for l in lines.iter().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let src = l.split_whitespace().nth(1).unwrap();
        assert!(root().join(src).exists(), "COPY of a missing path: {l}");
    }
    // `medic health` is what HEALTHCHECK runs: it must exist and fail on a dead address.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["health", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The image's build stage builds the crate from exactly the files it copies (base images
/// cannot be pulled here, so the build context is what is tested): a file the source embeds
/// (`include_str!` of a runbook) that the Dockerfile does not copy fails this test.
#[test]
fn the_image_builds_from_what_the_dockerfile_copies() {
    let text = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    let build_stage: Vec<&str> =
        text.lines().skip_while(|l| !l.starts_with("FROM ")).skip(1).take_while(|l| !l.starts_with("FROM ")).collect();
    let context = tempfile::tempdir().unwrap();
    let mut copied = Vec::new();
    for l in build_stage.iter().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let words: Vec<&str> = l.split_whitespace().skip(1).collect();
        let (dest, sources) = words.split_last().unwrap();
        for src in sources {
            let to = if dest.ends_with('/') || sources.len() > 1 || *dest == "./" {
                context.path().join(dest).join(src)
            } else {
                context.path().join(dest)
            };
            copy(&root().join(src), &to);
            copied.push(src.to_string());
        }
    }
    assert!(copied.iter().any(|c| c == "src"), "{copied:?}");
    // The same build the image runs, offline, in its own target directory under the shared one
    // (its dependencies are compiled once and reused by later runs).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("image-context");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["check", "--locked", "--offline", "--bin", "medic"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(context.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the image's build stage fails: {}",
        said.lines().filter(|l| l.contains("error")).take(5).collect::<Vec<_>>().join("\n")
    );
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The Grafana dashboard asks only for metrics medic exports, in PromQL that Prometheus
/// parses (`promtool check rules` over the expressions, with `$job` as `.*`), and its
/// store-wide panels do not add the replicas up (`promtool test rules`).
#[test]
fn the_grafana_dashboard_reads_medics_own_metrics() {
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/medic.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    // What /metrics exposes, histograms with their series.
    let m = medic::metrics::Metrics::default();
    m.observe_request("/healthz", 200, std::time::Duration::from_millis(1));
    m.observe_commit(std::time::Duration::from_millis(1), 1);
    m.observe_investigation(std::time::Duration::from_millis(1), std::time::Duration::from_millis(1));
    m.observe_context_query("metrics", "prometheus", false, std::time::Duration::from_millis(1));
    let text = m.render(0, 0, &[], &[]);
    let mut exported: Vec<String> = Vec::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = l.split_once(' ').unwrap();
        exported.push(name.to_string());
        if kind == "histogram" {
            exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        }
    }
    let names = regex::Regex::new(r"medic_[a-z_]+").unwrap();
    for e in &exprs {
        for n in names.find_iter(e) {
            assert!(exported.iter().any(|x| x == n.as_str()), "{e}: medic does not export {}", n.as_str());
        }
    }
    if !common::stack::on_path("promtool") {
        if common::in_ci() {
            panic!("promtool is needed in CI (Debian's prometheus package)");
        }
        eprintln!("skipped the PromQL syntax check: promtool is not installed");
        return;
    }
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:expr_{i}"), "expr": e.replace("$job", ".*")}))
        .collect();
    let file = std::env::temp_dir().join(format!("medic-dashboard-{}.yml", std::process::id()));
    std::fs::write(&file, serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string()).unwrap();
    let out = std::process::Command::new("promtool").args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Two replicas export the same store-wide gauges and counters: a panel shows the store's
    // figure, not the sum of the replicas' (`promtool test rules`: 3 open incidents, not 6).
    let index = |metric: &str| exprs.iter().position(|e| e.contains(metric)).unwrap();
    let (incidents, executions) = (index("medic_incidents{"), index("medic_runbook_executions_total"));
    let tests = serde_json::json!({
        "rule_files": [file.file_name().unwrap().to_str().unwrap()],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1h",
            "input_series": [
                {"series": "medic_incidents{job=\"medic\",instance=\"a:8080\",state=\"open\"}", "values": "3x30"},
                {"series": "medic_incidents{job=\"medic\",instance=\"b:8080\",state=\"open\"}", "values": "3x30"},
                {"series": "medic_runbook_executions_total{job=\"medic\",instance=\"a:8080\",runbook=\"r\",result=\"verified\"}", "values": "0+1x30"},
                {"series": "medic_runbook_executions_total{job=\"medic\",instance=\"b:8080\",runbook=\"r\",result=\"verified\"}", "values": "0+1x30"},
            ],
            "promql_expr_test": [
                {"expr": format!("dashboard:expr_{incidents}"), "eval_time": "10h",
                 "exp_samples": [{"labels": format!("dashboard:expr_{incidents}{{state=\"open\"}}"), "value": 3}]},
                {"expr": format!("dashboard:expr_{executions}"), "eval_time": "10h",
                 "exp_samples": [{"labels": format!("dashboard:expr_{executions}{{result=\"verified\",runbook=\"r\"}}"), "value": 10}]},
            ],
        }],
    });
    let test_file = file.with_extension("test.yml");
    std::fs::write(&test_file, tests.to_string()).unwrap();
    let out = std::process::Command::new("promtool").args(["test", "rules"]).arg(&test_file).output().unwrap();
    let _ = (std::fs::remove_file(&file), std::fs::remove_file(&test_file));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
