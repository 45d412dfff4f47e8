//! Installing Serin with its Helm chart (`charts/serin`), as a user and as an auditor would:
//! the chart lints and renders for every documented combination of values, with a locked-down
//! pod and only the permissions Serin uses; it installs into and uninstalls from a real API
//! server; the operator, running as the chart's own ServiceAccount, rolls a canary through to
//! promotion (reading a webhook's header from a Secret) and hands the app back, and sends every
//! Rollout's messages to the chart's global notification receivers; and every rule of its role
//! is needed: without any one of them, the operator is refused and the rollout does not get
//! where it gets with the full role.
//!
//! Helm is built from the Go module proxy on first use (`e2e/build-tools --helm`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use serin::api::{Phase, Rollout};
use serin_e2e::receiver::Receiver;
use serin_e2e::{
    MANAGER, Operator, OperatorOptions, client, eventually, helm, install_rollout_crd,
    install_trafficsplit_crd, namespace, repo_root, serin_binary, service_account_kubeconfig,
};

const WAIT: Duration = Duration::from_secs(120);
const CHART: &str = "charts/serin";

// ----- rendering --------------------------------------------------------------------------------

fn chart() -> String {
    repo_root().join(CHART).to_string_lossy().into_owned()
}

/// `helm template <release> charts/serin --namespace <ns> --set <each>`: the rendered objects.
fn render(release: &str, ns: &str, sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", ns];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    assert!(out.status.success(), "helm {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // Duplicate keys are an error here, as they are for a strict YAML reader.
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("helm {args:?} rendered YAML that does not parse: {e}\n{text}"));
    docs.into_iter().flatten().filter(|d| !d.is_null()).collect()
}

/// `helm template` that must fail; returns its stderr.
fn render_error(sets: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", "t", chart.as_str()];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    assert!(!out.status.success(), "helm {args:?} should have failed, but rendered");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", names(objects)))
}

fn names(objects: &[Value]) -> Vec<String> {
    objects.iter().map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"])).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The operator container of the release's Deployment.
fn operator_container(objects: &[Value], release: &str) -> Value {
    let deployment = one(objects, "Deployment", &format!("{release}-serin"));
    deployment["spec"]["template"]["spec"]["containers"][0].clone()
}

/// A rule of a role, as "group/resource[,resource] [verbs] names", for messages and case names.
fn describe(rule: &Value) -> String {
    let names = strings(&rule["resourceNames"]);
    format!(
        "{}/{} {:?}{}",
        strings(&rule["apiGroups"]).join(","),
        strings(&rule["resources"]).join(","),
        strings(&rule["verbs"]),
        if names.is_empty() { String::new() } else { format!(" names {names:?}") }
    )
}

#[test]
fn helm_lint_passes_for_every_documented_combination() {
    let chart = chart();
    for sets in [
        vec![],
        vec!["rbac.scope=namespaced", "watchNamespaces={shop,checkout}"],
        vec!["metricsAdapter.enabled=true", "serviceMonitor.enabled=true"],
        vec!["leaderElection.enabled=false", "rbac.secrets=false", "logFormat=text"],
        GLOBAL_RECEIVERS.to_vec(),
    ] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint with {sets:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn by_default_a_locked_down_operator_with_cluster_wide_rbac_and_leader_election() {
    let objects = render("rel", "serin-system", &[]);
    let container = operator_container(&objects, "rel");

    // The image is the chart's appVersion, and runs the operator binary the Dockerfile copies.
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo_root().join(CHART).join("Chart.yaml")).unwrap())
            .unwrap();
    let app_version = chart["appVersion"].as_str().unwrap();
    assert_eq!(container["image"], format!("ghcr.io/serin-dev/serin:{app_version}"));
    assert_eq!(strings(&container["command"]), ["/usr/local/bin/serin"]);

    let args = strings(&container["args"]);
    for want in [
        "run",
        "--log-format=json",
        "--metrics-addr=0.0.0.0:8080",
        "--leader-elect",
        "--lease-name=serin",
        "--lease-namespace=serin-system",
    ] {
        assert!(args.iter().any(|a| a == want), "args {args:?} lack {want}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--namespace")), "all namespaces by default: {args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--otlp-endpoint")), "no traces unless asked: {args:?}");
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let from = e["valueFrom"]["fieldRef"]["fieldPath"].as_str().map(str::to_string);
            (e["name"].as_str().unwrap().to_string(), from.unwrap_or_else(|| e["value"].to_string()))
        })
        .collect();
    assert!(env.contains(&("POD_NAME".into(), "metadata.name".into())), "{env:?}");
    assert!(env.contains(&("POD_NAMESPACE".into(), "metadata.namespace".into())), "{env:?}");

    // Probes on the metrics port, and resources.
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    // The pod runs as nobody in particular, with nothing to escalate to.
    let deployment = one(&objects, "Deployment", "rel-serin");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(pod["serviceAccountName"], "rel-serin");
    one(&objects, "ServiceAccount", "rel-serin");

    // Cluster-wide RBAC bound to that ServiceAccount; the Lease only in the release namespace.
    let role = one(&objects, "ClusterRole", "rel-serin");
    let binding = one(&objects, "ClusterRoleBinding", "rel-serin");
    assert_eq!(binding["subjects"][0]["name"], "rel-serin");
    assert_eq!(binding["subjects"][0]["namespace"], "serin-system");
    assert_eq!(binding["roleRef"]["name"], "rel-serin");
    let rules: Vec<String> = role["rules"].as_array().unwrap().iter().map(describe).collect();
    assert!(rules.contains(&r#"serin.dev/rollouts/status ["patch"]"#.to_string()), "{rules:#?}");
    assert!(rules.contains(&r#"/secrets ["get"]"#.to_string()), "rbac.secrets is on by default: {rules:#?}");
    for rule in role["rules"].as_array().unwrap() {
        let verbs = strings(&rule["verbs"]);
        assert!(!verbs.iter().any(|v| v == "*"), "no wildcard verbs: {}", describe(rule));
        assert!(
            !strings(&rule["resources"]).iter().any(|r| r == "*"),
            "no wildcard resources: {}",
            describe(rule)
        );
        assert!(
            !strings(&rule["apiGroups"]).iter().any(|g| g == "*"),
            "no wildcard groups: {}",
            describe(rule)
        );
        assert!(
            !rule["apiGroups"].to_string().contains("coordination.k8s.io"),
            "leases are not granted cluster-wide"
        );
    }
    let lease_role = one(&objects, "Role", "rel-serin-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "serin-system");
    let lease_rules: Vec<String> = lease_role["rules"].as_array().unwrap().iter().map(describe).collect();
    assert_eq!(
        lease_rules,
        [
            r#"coordination.k8s.io/leases ["create"]"#,
            r#"coordination.k8s.io/leases ["get", "update", "patch"] names ["serin"]"#
        ]
    );
    assert_eq!(of_kind(&objects, "Role").len(), 1, "only the lease Role: {:?}", names(&objects));

    // Nothing optional is on.
    for kind in ["APIService", "ServiceMonitor", "Secret", "ConfigMap"] {
        assert!(of_kind(&objects, kind).is_empty(), "{kind} rendered by default");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--notifications")),
        "no global receivers by default: {args:?}"
    );
    assert!(pod["volumes"].is_null() && container["volumeMounts"].is_null(), "nothing mounted by default");
}

#[test]
fn namespaced_mode_renders_a_role_per_watched_namespace_and_nothing_cluster_wide() {
    let cluster = render("rel", "serin-system", &[]);
    let objects =
        render("rel", "serin-system", &["rbac.scope=namespaced", "watchNamespaces={shop,checkout}"]);
    assert!(of_kind(&objects, "ClusterRole").is_empty(), "{:?}", names(&objects));
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty(), "{:?}", names(&objects));

    let cluster_rules = &one(&cluster, "ClusterRole", "rel-serin")["rules"];
    for ns in ["shop", "checkout"] {
        let role = of_kind(&objects, "Role")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "rel-serin" && r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role rel-serin in {ns}: {:?}", names(&objects)));
        assert_eq!(&role["rules"], cluster_rules, "the same rules as the ClusterRole, in {ns}");
        let binding = of_kind(&objects, "RoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["name"] == "rel-serin" && b["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding rel-serin in {ns}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["subjects"][0]["namespace"], "serin-system", "the release's ServiceAccount");
    }
    let args = strings(&operator_container(&objects, "rel")["args"]);
    assert!(args.contains(&"--namespace=shop,checkout".to_string()), "{args:?}");
}

#[test]
fn leader_election_off_drops_its_flags_and_its_role() {
    let objects = render("rel", "serin-system", &["leaderElection.enabled=false"]);
    let args = strings(&operator_container(&objects, "rel")["args"]);
    assert!(!args.iter().any(|a| a.starts_with("--lease") || a == "--leader-elect"), "{args:?}");
    assert!(of_kind(&objects, "Role").is_empty(), "{:?}", names(&objects));
    assert!(!serde_json::to_string(&objects).unwrap().contains("coordination.k8s.io"));
    // And a trace endpoint, when given, is passed on.
    let objects = render("rel", "serin-system", &["otlp.endpoint=http://otel-collector:4317"]);
    let args = strings(&operator_container(&objects, "rel")["args"]);
    assert!(args.contains(&"--otlp-endpoint=http://otel-collector:4317".to_string()), "{args:?}");
}

/// Global receivers: a Slack one in the release namespace, and two in `ops` naming the same
/// Secret twice and another one.
const GLOBAL_RECEIVERS: [&str; 9] = [
    "notifications[0].type=slack",
    "notifications[0].secretRef.namespace=serin-system",
    "notifications[0].secretRef.name=slack-platform",
    "notifications[0].severity=warn",
    "notifications[1].type=generic",
    "notifications[1].secretRef.namespace=ops",
    "notifications[1].secretRef.name=bridge",
    "notifications[1].secretRef.key=url",
    "notifications[2].type=teams,notifications[2].secretRef.namespace=ops,notifications[2].secretRef.name=bridge,notifications[2].secretRef.key=teams",
];

#[test]
fn global_notification_receivers_are_a_mounted_file_and_get_on_exactly_their_secrets() {
    let mut sets = GLOBAL_RECEIVERS.to_vec();
    sets.extend(["notifications[3].type=generic", "notifications[3].secretRef.namespace=ops"]);
    sets.push("notifications[3].secretRef.name=audit");
    let objects = render("rel", "serin-system", &sets);

    // The list is a file the operator accepts, with the receivers as given.
    let config = one(&objects, "ConfigMap", "rel-serin-notifications");
    assert_eq!(config["metadata"]["namespace"], "serin-system");
    let file = config["data"]["notifications.yaml"].as_str().unwrap();
    let receivers = serin::notify::parse_global(file).unwrap_or_else(|e| panic!("{e}\n{file}"));
    let described: Vec<String> = receivers
        .iter()
        .map(|r| {
            let to = &r.secret_ref;
            format!("{:?} {}/{}[{}] {:?}", r.type_, to.namespace, to.name, to.key, r.severity)
        })
        .collect();
    assert_eq!(
        described,
        [
            "Slack serin-system/slack-platform[address] Warn",
            "Generic ops/bridge[url] Info",
            "Teams ops/bridge[teams] Info",
            "Generic ops/audit[address] Info",
        ]
    );

    // Mounted read-only where the flag points, and a changed list restarts the pod.
    let deployment = one(&objects, "Deployment", "rel-serin");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = operator_container(&objects, "rel");
    let args = strings(&container["args"]);
    assert!(args.contains(&"--notifications=/etc/serin/notifications.yaml".to_string()), "{args:?}");
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["mountPath"], "/etc/serin");
    assert_eq!(mounts[0]["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mounts[0]["name"])
        .unwrap_or_else(|| panic!("no volume {} in {}", mounts[0]["name"], pod["volumes"]));
    assert_eq!(volume["configMap"]["name"], "rel-serin-notifications");
    let checksum = &deployment["spec"]["template"]["metadata"]["annotations"]["checksum/notifications"];
    assert!(checksum.as_str().is_some_and(|c| c.len() == 64), "{checksum}");
    let fewer = render("rel", "serin-system", &GLOBAL_RECEIVERS);
    let fewer_checksum = &one(&fewer, "Deployment", "rel-serin")["spec"]["template"]["metadata"]["annotations"]
        ["checksum/notifications"];
    assert_ne!(checksum, fewer_checksum, "the pod template changes with the list");

    // `get` on exactly the Secrets named, in their namespaces, for the release's ServiceAccount.
    for (ns, secrets) in [("ops", vec!["audit", "bridge"]), ("serin-system", vec!["slack-platform"])] {
        let role = of_kind(&objects, "Role")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "rel-serin-notifications" && r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role rel-serin-notifications in {ns}: {:?}", names(&objects)));
        let rules: Vec<String> = role["rules"].as_array().unwrap().iter().map(describe).collect();
        assert_eq!(rules, [format!(r#"/secrets ["get"] names {secrets:?}"#)], "in {ns}");
        let binding = of_kind(&objects, "RoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["name"] == "rel-serin-notifications" && b["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding rel-serin-notifications in {ns}"));
        assert_eq!(binding["roleRef"]["name"], "rel-serin-notifications");
        assert_eq!(binding["subjects"][0]["name"], "rel-serin");
        assert_eq!(binding["subjects"][0]["namespace"], "serin-system");
    }
    let notification_roles = of_kind(&objects, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == "rel-serin-notifications")
        .count();
    assert_eq!(notification_roles, 2, "one Role per namespace: {:?}", names(&objects));

    // Not with rbac.create=false: then the user binds it.
    let objects = render("rel", "serin-system", &[&GLOBAL_RECEIVERS[..], &["rbac.create=false"]].concat());
    assert!(of_kind(&objects, "Role").iter().all(|r| r["metadata"]["name"] != "rel-serin-notifications"));
    one(&objects, "ConfigMap", "rel-serin-notifications");

    // The schema checks each item as the operator would.
    let error = render_error(&[
        "notifications[0].type=slak",
        "notifications[0].secretRef.namespace=a,notifications[0].secretRef.name=b",
    ]);
    assert!(error.contains("/notifications/0/type"), "{error}");
    let error = render_error(&["notifications[0].type=slack", "notifications[0].secretRef.name=b"]);
    assert!(error.contains("/notifications/0/secretRef") && error.contains("namespace"), "{error}");
}

#[test]
fn the_metrics_adapter_is_registered_with_a_certificate_the_api_server_can_verify() {
    let objects =
        render("rel", "serin-system", &["metricsAdapter.enabled=true", "serviceMonitor.enabled=true"]);
    let service = one(&objects, "Service", "rel-serin-metrics-adapter");
    let api_service = one(&objects, "APIService", "v1alpha1.metrics.smi-spec.io");
    assert_eq!(api_service["spec"]["service"]["name"], "rel-serin-metrics-adapter");
    assert_eq!(api_service["spec"]["service"]["namespace"], "serin-system");
    assert_eq!(api_service["spec"]["service"]["port"], service["spec"]["ports"][0]["port"]);

    // The generated CA is the APIService's caBundle and signed the serving certificate for the
    // name kube-apiserver dials: <service>.<namespace>.svc.
    let secret = one(&objects, "Secret", "rel-serin-metrics-adapter-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(api_service["spec"]["caBundle"], secret["data"]["ca.crt"]);
    let dir = std::env::temp_dir().join(format!("serin-helm-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let decode = |field: &str| {
        let out = std::process::Command::new("openssl")
            .args(["base64", "-d", "-A"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(secret["data"][field].as_str().unwrap().as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let path = dir.join(field);
        std::fs::write(&path, out.stdout).unwrap();
        path
    };
    let (ca, cert) = (decode("ca.crt"), decode("tls.crt"));
    let verify = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "-verify_hostname",
            "rel-serin-metrics-adapter.serin-system.svc",
        ])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "the serving certificate does not verify for the Service name: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The adapter runs its own binary from the same image, mounts the Secret, and is locked down.
    let deployment = one(&objects, "Deployment", "rel-serin-metrics-adapter");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(strings(&container["command"]), ["/usr/local/bin/serin-metrics-adapter"]);
    assert_eq!(container["image"], operator_container(&objects, "rel")["image"]);
    let args = strings(&container["args"]);
    for want in ["--tls-cert-file=/tls/tls.crt", "--tls-private-key-file=/tls/tls.key", "--query-set=linkerd"]
    {
        assert!(args.iter().any(|a| a == want), "adapter args {args:?} lack {want}");
    }
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "rel-serin-metrics-adapter-tls");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["serviceAccountName"], "rel-serin-metrics-adapter");

    // Delegated authorization, and the front-proxy settings from kube-system.
    let delegator = one(&objects, "ClusterRoleBinding", "rel-serin-metrics-adapter:system:auth-delegator");
    assert_eq!(delegator["roleRef"]["name"], "system:auth-delegator");
    let reader =
        one(&objects, "RoleBinding", "rel-serin-metrics-adapter:extension-apiserver-authentication-reader");
    assert_eq!(reader["metadata"]["namespace"], "kube-system");
    assert_eq!(reader["roleRef"]["name"], "extension-apiserver-authentication-reader");

    // The ServiceMonitor scrapes the operator's metrics Service on its named port.
    let monitor = one(&objects, "ServiceMonitor", "rel-serin");
    let metrics = one(&objects, "Service", "rel-serin-metrics");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &metrics["metadata"]["labels"][key], value,
            "the ServiceMonitor selects the Service by {key}"
        );
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], metrics["spec"]["ports"][0]["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn an_existing_certificate_replaces_the_generated_one() {
    let objects = render(
        "rel",
        "serin-system",
        &[
            "metricsAdapter.enabled=true",
            "metricsAdapter.tls.existingSecret=my-tls",
            "metricsAdapter.tls.certManagerCertificate=serin-system/my-tls",
        ],
    );
    assert!(of_kind(&objects, "Secret").is_empty(), "no generated Secret: {:?}", names(&objects));
    let api_service = one(&objects, "APIService", "v1alpha1.metrics.smi-spec.io");
    assert_eq!(
        api_service["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "serin-system/my-tls"
    );
    let deployment = one(&objects, "Deployment", "rel-serin-metrics-adapter");
    assert_eq!(deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], "my-tls");
}

#[test]
fn values_that_cannot_work_are_refused_naming_the_value_and_the_fix() {
    let error = render_error(&["rbac.scope=namespaced"]);
    assert!(error.contains("rbac.scope=namespaced needs watchNamespaces"), "{error}");
    let error = render_error(&["replicaCount=2", "leaderElection.enabled=false"]);
    assert!(error.contains("replicaCount=2 needs leaderElection.enabled=true"), "{error}");
    let error = render_error(&["rbac.scope=everywhere"]);
    assert!(error.contains("/rbac/scope") && error.contains("'cluster', 'namespaced'"), "{error}");
    let error = render_error(&["watchNamespaces={Shop}"]);
    assert!(error.contains("/watchNamespaces/0"), "{error}");
    let error = render_error(&["metricsAdapter.enabled=true", "metricsAdapter.tls.existingSecret=x"]);
    assert!(error.contains("metricsAdapter.tls.caBundle"), "{error}");
    let error = render_error(&["serviceAccount.create=false"]);
    assert!(error.contains("serviceAccount.name"), "{error}");
}

#[test]
fn the_image_holds_the_binaries_the_chart_runs() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().collect();
    let final_stage = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    assert!(
        lines[final_stage].contains("distroless") && lines[final_stage].contains("nonroot"),
        "{}",
        lines[final_stage]
    );
    let copied: Vec<&str> = lines[final_stage..]
        .iter()
        .filter(|l| l.starts_with("COPY --from=build"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let objects = render("rel", "serin-system", &["metricsAdapter.enabled=true"]);
    for deployment in of_kind(&objects, "Deployment") {
        let command = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["command"]);
        assert!(
            copied.contains(&command[0].as_str()),
            "{} runs {}, which the image lacks ({copied:?})",
            deployment["metadata"]["name"],
            command[0]
        );
    }
    // The default tag is the chart's appVersion, which is the workspace's version.
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    let image = operator_container(&objects, "rel")["image"].as_str().unwrap().to_string();
    assert_eq!(
        image,
        format!("ghcr.io/serin-dev/serin:{version}"),
        "the chart's appVersion follows Cargo.toml"
    );
}

/// Every leaf of `values`, as dotted paths.
fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                leaves(&path, child, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_documented_in_the_charts_readme() {
    let dir = repo_root().join(CHART);
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    // A value is documented by a table row of its own, or of an enclosing value documented whole
    // (e.g. `resources`).
    let undocumented: Vec<&String> = paths
        .iter()
        .filter(|path| {
            let parts: Vec<&str> = path.split('.').collect();
            !(1..=parts.len()).any(|n| readme.contains(&format!("| `{}` |", parts[..n].join("."))))
        })
        .collect();
    assert!(undocumented.is_empty(), "values missing from {CHART}/README.md: {undocumented:?}");
    assert!(paths.len() > 50, "the walk found only {} values", paths.len());
}

// ----- on the cluster ---------------------------------------------------------------------------

/// Applies rendered objects of the kinds given (server-side, as the e2e manager).
async fn apply(client: &Client, objects: &[&Value], dry_run: bool) {
    for object in objects {
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), object["apiVersion"].as_str().unwrap().to_string()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{gvk:?} is not served: {e}"));
        let api: Api<DynamicObject> = match (caps.scope, object["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        let mut params = PatchParams::apply(MANAGER).force();
        params.dry_run = dry_run;
        let name = object["metadata"]["name"].as_str().unwrap();
        api.patch(name, &params, &Patch::Apply(object)).await.unwrap_or_else(|e| {
            panic!("applying {} {name}{}: {e}", object["kind"], if dry_run { " (dry run)" } else { "" })
        });
    }
}

#[tokio::test]
async fn every_rendered_object_passes_the_api_servers_validation() {
    let client = client().await;
    let ns = namespace(&client, "helm-dry").await;
    let objects = render(
        "dry",
        &ns,
        &["metricsAdapter.enabled=true", "rbac.scope=namespaced", &format!("watchNamespaces={{{ns}}}")],
    );
    // A server-side dry run: admission and validation, nothing stored (so the APIService does
    // not go live). ServiceMonitor is left out: the local cluster does not serve its kind.
    let all: Vec<&Value> = objects.iter().collect();
    apply(&client, &all, true).await;
    let cluster = render("dry", &ns, &[]);
    let all: Vec<&Value> = cluster.iter().collect();
    apply(&client, &all, true).await;
}

#[tokio::test]
async fn helm_install_runs_the_operator_and_helm_uninstall_removes_it() {
    let client = client().await;
    install_rollout_crd(&client).await;
    let ns = namespace(&client, "helm-install").await;
    let release = format!("it{}", std::process::id());
    let chart = chart();
    let out = helm(&["install", &release, &chart, "--namespace", &ns, "--wait", "--timeout", "3m"]);
    assert!(
        out.status.success(),
        "helm install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // kwok plays the kubelet: the pod is scheduled, "runs" and is Ready, so the Deployment is
    // Available (no container really runs, and no image is pulled).
    let name = format!("{release}-serin");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = deployments.get(&name).await.unwrap();
    let available = deployment
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    assert!(available, "helm install --wait returned before Deployment {name} was Available");
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    assert!(roles.get_opt(&name).await.unwrap().is_some(), "ClusterRole {name} installed");
    let status = helm(&["status", &release, "--namespace", &ns]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("STATUS: deployed"));

    let out = helm(&["uninstall", &release, "--namespace", &ns, "--wait", "--timeout", "3m"]);
    assert!(out.status.success(), "helm uninstall failed:\n{}", String::from_utf8_lossy(&out.stderr));
    eventually("the release's objects gone", WAIT, || async {
        let gone =
            deployments.get_opt(&name).await.ok()?.is_none() && roles.get_opt(&name).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    // Helm never deletes CRDs: Rollouts outlive the release.
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    assert!(crds.get_opt("rollouts.serin.dev").await.unwrap().is_some());
}

// ----- the operator under the chart's RBAC ------------------------------------------------------

/// The flags `serin run` knows, from its help.
fn known_flags() -> BTreeSet<String> {
    let out = std::process::Command::new(serin_binary()).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// The operator's arguments as the chart renders them, for a local process: the metrics
/// address on a free loopback port, files under the pod's `/etc/serin` (the notifications
/// ConfigMap) read from `etc_serin`. Every flag the chart passes must be one `serin run` knows:
/// an unknown flag would crash the pod.
fn local_args(container: &Value, etc_serin: Option<&Path>) -> Vec<String> {
    let known = known_flags();
    let mut args = Vec::new();
    for arg in strings(&container["args"]).into_iter().skip_while(|a| a == "run") {
        let flag = arg.split('=').next().unwrap().to_string();
        assert!(known.contains(&flag), "the chart passes `{arg}`, which `serin run` does not know");
        let mounted = arg.split_once("=/etc/serin/").map(|(_, file)| file);
        if flag == "--metrics-addr" {
            args.push(format!("--metrics-addr=127.0.0.1:{}", serin_e2e::prometheus::free_port()));
        } else if let Some(file) = mounted {
            let dir = etc_serin.unwrap_or_else(|| panic!("`{arg}` needs the files mounted at /etc/serin"));
            args.push(format!("{flag}={}", dir.join(file).display()));
        } else if flag != "--namespace" {
            args.push(arg);
        }
    }
    args
}

/// The app every RBAC story rolls out, with everything Serin touches: a Service the user made
/// before (adopted, then handed back), an HPA (which gets a primary twin), a Deployment and
/// its Rollout, optionally with metric gates.
struct App {
    client: Client,
    ns: String,
    rollouts: Api<Rollout>,
    deployments: Api<Deployment>,
    services: Api<Service>,
    hpas: Api<HorizontalPodAutoscaler>,
    splits: Api<DynamicObject>,
}

/// Where a rollout gets, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Milestone {
    /// Idle, with the primary serving, Services and TrafficSplit written, the HPA twinned, the
    /// app scaled to zero, and an Initialized Event.
    Initialized,
    /// A new image promoted: Succeeded, the primary runs it, and a Promoted Event.
    Promoted,
    /// The Rollout deleted: gone, the TrafficSplit gone, the root Service selecting the app.
    HandedBack,
}

impl App {
    /// `extra` is merged into the Rollout's spec (analysis, webhooks).
    async fn deploy(client: &Client, ns: &str, extra: Value) -> App {
        let app = App {
            client: client.clone(),
            ns: ns.to_string(),
            rollouts: Api::namespaced(client.clone(), ns),
            deployments: Api::namespaced(client.clone(), ns),
            services: Api::namespaced(client.clone(), ns),
            hpas: Api::namespaced(client.clone(), ns),
            splits: Api::namespaced_with(
                client.clone(),
                ns,
                &ApiResource::from_gvk(&GroupVersionKind::gvk(
                    "split.smi-spec.io",
                    "v1alpha4",
                    "TrafficSplit",
                )),
            ),
        };
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        }))
        .unwrap();
        app.services.create(&PostParams::default(), &svc).await.unwrap();
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 4,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}
        }))
        .unwrap();
        app.hpas.create(&PostParams::default(), &hpa).await.unwrap();
        let mut spec = json!({"strategy": {"weights": [50], "interval": "1s"}});
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        serin_e2e::deploy_web_with_rollout(client, ns, spec).await;
        app
    }

    async fn events(&self, reason: &str) -> usize {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        list.iter().filter(|e| e.reason.as_deref() == Some(reason)).count()
    }

    async fn reached(&self, milestone: Milestone) -> bool {
        self.check(milestone).await.is_some()
    }

    async fn check(&self, milestone: Milestone) -> Option<()> {
        match milestone {
            Milestone::Initialized => {
                let rollout = self.rollouts.get("web").await.ok()?;
                (rollout.status?.phase == Phase::Idle).then_some(())?;
                let primary = self.deployments.get("web-primary").await.ok()?;
                (primary.status?.available_replicas? >= 2).then_some(())?;
                (self.deployments.get("web").await.ok()?.spec?.replicas? == 0).then_some(())?;
                let root = self.services.get("web").await.ok()?;
                (root.spec?.selector?.get("app")? == "web-primary").then_some(())?;
                self.services.get("web-canary").await.ok()?;
                self.splits.get("web").await.ok()?;
                self.hpas.get("web-primary").await.ok()?;
                (self.events("Initialized").await == 1).then_some(())
            }
            Milestone::Promoted => {
                let rollout = self.rollouts.get("web").await.ok()?;
                (rollout.status?.phase == Phase::Succeeded).then_some(())?;
                let primary = self.deployments.get("web-primary").await.ok()?;
                (primary.spec?.template.spec?.containers[0].image.as_deref()? == "web:2").then_some(())?;
                (self.events("Promoted").await == 1).then_some(())
            }
            Milestone::HandedBack => {
                self.rollouts.get_opt("web").await.ok()?.is_none().then_some(())?;
                self.splits.get_opt("web").await.ok()?.is_none().then_some(())?;
                let root = self.services.get("web").await.ok()?;
                (root.spec?.selector?.get("app")? == "web").then_some(())
            }
        }
    }

    /// What moves the rollout towards `milestone`.
    async fn act(&self, milestone: Milestone) {
        match milestone {
            Milestone::Initialized => {}
            Milestone::Promoted => {
                serin_e2e::set_web_image(&self.client, &self.ns, "web:2").await;
            }
            Milestone::HandedBack => {
                self.rollouts.delete("web", &DeleteParams::default()).await.unwrap();
            }
        }
    }
}

/// A confirm-promotion webhook whose `Authorization` header comes from a Secret, answered by a
/// real local receiver: the rollout is promoted only after the operator read the Secret.
struct TokenHook {
    receiver: Receiver,
    token: String,
}

impl TokenHook {
    const SECRET: &str = "hook-token";

    /// Starts the receiver and creates the Secret in `ns`.
    async fn start(client: &Client, ns: &str) -> TokenHook {
        let receiver = Receiver::start("200").await;
        let token = format!("Bearer {ns}-{}", std::process::id());
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": Self::SECRET},
            "stringData": {"Authorization": token}
        }))
        .unwrap();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        TokenHook { receiver, token }
    }

    /// The Rollout's `webhooks`, for [`App::deploy`].
    fn spec(&self) -> Value {
        json!({"webhooks": [{"name": "approval", "type": "confirm-promotion",
                             "url": self.receiver.url("/approve"), "retries": 0,
                             "headersFrom": {"name": Self::SECRET}}]})
    }
}

/// The first line of the operator's log where the API server refused it.
fn denial(operator: &Operator) -> Option<String> {
    let text = std::fs::read_to_string(&operator.log).unwrap_or_default();
    text.lines().find(|l| l.contains("forbidden")).map(str::to_string)
}

/// How far a rollout got.
#[derive(Debug)]
struct Outcome {
    reached: Vec<Milestone>,
    /// The milestone the operator was refused on the way to, and the log line.
    denied: Option<(Milestone, String)>,
}

/// Drives the app through every milestone, stopping when the operator is refused. An error
/// when it neither got to the next milestone nor was refused in time.
async fn drive(app: &App, operator: &Operator, what: &str) -> Result<Outcome, String> {
    let mut reached = Vec::new();
    for milestone in [Milestone::Initialized, Milestone::Promoted, Milestone::HandedBack] {
        app.act(milestone).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = denial(operator) {
                return Ok(Outcome { reached, denied: Some((milestone, line)) });
            }
            if app.reached(milestone).await {
                reached.push(milestone);
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{what}: neither {milestone:?} nor a refusal within {WAIT:?} (after {reached:?}); \
                     Rollout status {:?}\noperator log:\n{}",
                    app.rollouts.get_opt("web").await.ok().flatten().and_then(|r| r.status),
                    operator.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(Outcome { reached, denied: None })
}

/// Creates the chart's ServiceAccount and (Cluster)Roles with their bindings from `objects`,
/// and returns a kubeconfig that authenticates as that ServiceAccount.
async fn install_identity(client: &Client, objects: &[&Value], ns: &str, account: &str) -> PathBuf {
    apply(client, objects, false).await;
    service_account_kubeconfig(client, ns, account).await
}

fn rbac_objects(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| {
            ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
                .contains(&o["kind"].as_str().unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn as_the_charts_service_account_the_operator_promotes_a_canary_and_hands_the_app_back() {
    let client = client().await;
    install_rollout_crd(&client).await;
    install_trafficsplit_crd(&client).await;
    let release_ns = namespace(&client, "helm-rel").await;
    let app_ns = namespace(&client, "helm-app").await;
    // Cluster scope, the default: the release's ClusterRole, bound to its ServiceAccount.
    let release = format!("rbac{}", std::process::id());
    let objects = render(&release, &release_ns, &[]);
    let account = format!("{release}-serin");
    let kubeconfig = install_identity(&client, &rbac_objects(&objects), &release_ns, &account).await;

    // The promotion waits for a webhook whose header the operator reads from a Secret.
    let hook = TokenHook::start(&client, &app_ns).await;
    let app = App::deploy(&client, &app_ns, hook.spec()).await;
    // A second app, with metric gates, so that the operator reads the Traffic Metrics API.
    let gated_ns = namespace(&client, "helm-gated").await;
    let gated = App::deploy(&client, &gated_ns, json!({"analysis": gates()})).await;
    let container = operator_container(&objects, &release);
    let operator = Operator::start_with(OperatorOptions {
        namespaces: vec![app_ns.clone(), gated_ns.clone()],
        kubeconfig: Some(kubeconfig),
        args: local_args(&container, None),
        env: vec![("POD_NAME".into(), format!("{release}-0")), ("POD_NAMESPACE".into(), release_ns.clone())],
    });
    let outcome = drive(&app, &operator, "the full role").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outcome.denied.is_none(),
        "the chart's role refused the operator: {:?}\n{}",
        outcome.denied,
        operator.log_tail()
    );
    assert_eq!(outcome.reached, [Milestone::Initialized, Milestone::Promoted, Milestone::HandedBack]);
    // The approval was asked with the token from the Secret.
    let asked = hook.receiver.requests_to("/approve");
    assert!(!asked.is_empty(), "the promotion was not asked for");
    for request in &asked {
        assert_eq!(request.header("authorization"), Some(hook.token.as_str()), "{request:?}");
    }

    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(!log.contains("forbidden") && !log.contains("Forbidden"), "{}", operator.log_tail());

    // The metric read is allowed: no Traffic Metrics API is registered on this cluster, so the
    // API server answers that it has no such object, and the gates are evaluated on that answer
    // (insufficient data). Without the rule, the read is refused and no gate is evaluated.
    assert!(gated.reached(Milestone::Initialized).await, "the gated app was initialized too");
    gated.act(Milestone::Promoted).await;
    let verdicts = eventually("the gated canary's gates evaluated", WAIT, || async {
        let status = gated.rollouts.get("web").await.ok()?.status?;
        (!status.gates.is_empty()).then_some(status.gates)
    })
    .await;
    assert!(verdicts.iter().all(|g| g.verdict == serin::api::Verdict::InsufficientData), "{verdicts:?}");
    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(!log.contains("forbidden") && !log.contains("Forbidden"), "{}", operator.log_tail());
}

/// The files of the release's ConfigMap `name`, written to a fresh directory: what the pod
/// sees where the ConfigMap is mounted.
fn mount_config_map(objects: &[Value], name: &str) -> PathBuf {
    let config = one(objects, "ConfigMap", name);
    let ns = config["metadata"]["namespace"].as_str().unwrap();
    let dir = std::env::temp_dir().join(format!("serin-helm-{ns}-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in config["data"].as_object().unwrap() {
        std::fs::write(dir.join(file), text.as_str().unwrap()).unwrap();
    }
    dir
}

/// The chart with one global receiver whose address is in a Secret of the release namespace,
/// per namespace and without `rbac.secrets`: only the chart's notifications Role lets the
/// operator read it. Without that Role (`with_role` false), the read is refused.
async fn global_receiver_story(client: &Client, receiver: &Receiver, with_role: bool) {
    let what = if with_role { "with the notifications Role" } else { "without the notifications Role" };
    let release_ns = namespace(client, "helm-notify-rel").await;
    let app_ns = namespace(client, "helm-notify-app").await;
    let path = format!("/{app_ns}");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "platform"},
        "stringData": {"url": receiver.url(&path)}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &release_ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let release = "notify";
    let objects = render(
        release,
        &release_ns,
        &[
            "rbac.scope=namespaced",
            &format!("watchNamespaces={{{app_ns}}}"),
            "rbac.secrets=false",
            "notifications[0].type=generic",
            &format!("notifications[0].secretRef.namespace={release_ns}"),
            "notifications[0].secretRef.name=platform",
            "notifications[0].secretRef.key=url",
        ],
    );
    let identity: Vec<&Value> = rbac_objects(&objects)
        .into_iter()
        .filter(|o| with_role || o["metadata"]["name"] != "notify-serin-notifications")
        .collect();
    assert_eq!(
        rbac_objects(&objects).len() - identity.len(),
        if with_role { 0 } else { 2 },
        "{what}: the chart renders a Role and a RoleBinding for the receivers' Secret"
    );
    let kubeconfig = install_identity(client, &identity, &release_ns, "notify-serin").await;
    let etc_serin = mount_config_map(&objects, "notify-serin-notifications");
    let app = App::deploy(client, &app_ns, json!({})).await;
    let operator = Operator::start_with(OperatorOptions {
        namespaces: vec![app_ns.clone()],
        kubeconfig: Some(kubeconfig),
        args: local_args(&operator_container(&objects, release), Some(&etc_serin)),
        env: vec![("POD_NAME".into(), "notify-0".into()), ("POD_NAMESPACE".into(), release_ns.clone())],
    });
    let outcome = drive(&app, &operator, what).await.unwrap_or_else(|e| panic!("{e}"));
    if with_role {
        assert!(outcome.denied.is_none(), "{what}: refused: {:?}\n{}", outcome.denied, operator.log_tail());
        // Promoted, and the platform's receiver was told, from the address in the Secret.
        let kinds =
            eventually(&format!("{what}: the promotion sent to the global receiver"), WAIT, || async {
                let kinds: Vec<String> = receiver
                    .requests_to(&path)
                    .iter()
                    .map(|r| r.json()["kind"].as_str().unwrap_or_default().to_string())
                    .collect();
                kinds.iter().any(|k| k == "promoted").then_some(kinds)
            })
            .await;
        assert!(kinds.contains(&"started".to_string()), "{what}: {kinds:?}");
        let log = std::fs::read_to_string(&operator.log).unwrap();
        assert!(!log.contains("forbidden") && !log.contains("Forbidden"), "{}", operator.log_tail());
    } else {
        // Notifications are best effort: the rollout goes on, but nothing is sent, and the log
        // names the refused read of the Secret.
        let Some((milestone, line)) = outcome.denied else {
            panic!("{what}: never refused ({:?})\n{}", outcome.reached, operator.log_tail());
        };
        let plain = line.replace('\\', "");
        assert!(
            plain.contains(r#"cannot get resource "secrets" in API group """#)
                && plain.contains(&format!(r#"in the namespace "{release_ns}""#))
                && plain.contains("global[0].secretRef"),
            "{what}: refused on the way to {milestone:?}, but not for the receiver's Secret:\n{line}"
        );
        assert!(receiver.requests_to(&path).is_empty(), "{what}: sent anyway");
        eprintln!("{what}: refused on the way to {milestone:?} (after {:?})", outcome.reached);
    }
}

#[tokio::test]
async fn as_the_charts_service_account_the_global_receivers_get_every_rollouts_messages() {
    let client = client().await;
    install_rollout_crd(&client).await;
    install_trafficsplit_crd(&client).await;
    let receiver = Receiver::start("200").await;
    futures::future::join(
        global_receiver_story(&client, &receiver, true),
        global_receiver_story(&client, &receiver, false),
    )
    .await;
}

/// Metric gates from the SMI Traffic Metrics API, holding while there is no data.
fn gates() -> Value {
    json!({"gates": {"successRate": {"min": 99}}, "minRequests": 1,
           "onInsufficientData": {"action": "hold", "deadline": "10m"}})
}

/// One rule taken out of the chart's roles, and what the operator does without it.
struct Case {
    name: String,
    /// Which Role the rule belongs to, and its index there.
    role: String,
    index: usize,
    rule: Value,
}

/// Why a rule has no case yet (printed, and listed in the test's output).
#[tokio::test]
async fn every_rule_of_the_role_is_needed() {
    let client = client().await;
    install_rollout_crd(&client).await;
    install_trafficsplit_crd(&client).await;

    // The rules, from the namespaced rendering: the operator's Role and the Lease Role.
    let probe = render("rule", "probe", &["rbac.scope=namespaced", "watchNamespaces={probe}"]);
    let mut cases = Vec::new();
    for role in of_kind(&probe, "Role") {
        let role_name = role["metadata"]["name"].as_str().unwrap().to_string();
        for (index, rule) in role["rules"].as_array().unwrap().iter().enumerate() {
            cases.push(Case {
                name: format!("without {}", describe(rule)),
                role: role_name.clone(),
                index,
                rule: rule.clone(),
            });
        }
    }
    assert!(
        cases.iter().any(|c| c.rule["resources"].to_string().contains("leases")),
        "the Lease rules are among the cases"
    );
    assert!(cases.len() >= 16, "the role has lost rules: {} cases", cases.len());

    // Each case in a namespace of its own, with its own operator, all at once.
    let results = futures::future::join_all(cases.iter().map(|case| run_case(&client, case))).await;
    let failures: Vec<String> = results.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} of {} rules were not shown to be needed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Runs one case; `Some(why)` when the rule was not shown to be needed.
async fn run_case(client: &Client, case: &Case) -> Option<String> {
    let ns = namespace(client, "helm-rule").await;
    let release = "rule";
    let objects = render(release, &ns, &["rbac.scope=namespaced", &format!("watchNamespaces={{{ns}}}")]);
    let mut identity: Vec<Value> = rbac_objects(&objects).into_iter().cloned().collect();
    let role = identity
        .iter_mut()
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == case.role.as_str())
        .unwrap_or_else(|| panic!("{}: no Role {} rendered", case.name, case.role));
    let removed = role["rules"].as_array_mut().unwrap().remove(case.index);
    assert_eq!(removed, case.rule, "{}: the rendering changed between namespaces", case.name);
    let identity: Vec<&Value> = identity.iter().collect();
    let kubeconfig = install_identity(client, &identity, &ns, "rule-serin").await;

    // The metrics rule is only exercised by a Rollout with metric gates, the Secrets rule by one
    // whose webhook takes its headers from a Secret.
    let reads_metrics = strings(&case.rule["apiGroups"]) == ["metrics.smi-spec.io"];
    let reads_secrets = strings(&case.rule["resources"]) == ["secrets"];
    let hook = if reads_secrets { Some(TokenHook::start(client, &ns).await) } else { None };
    let extra = match (&hook, reads_metrics) {
        (Some(hook), _) => hook.spec(),
        (None, true) => json!({"analysis": gates()}),
        (None, false) => json!({}),
    };
    let app = App::deploy(client, &ns, extra).await;
    let container = operator_container(&objects, release);
    let operator = Operator::start_with(OperatorOptions {
        namespaces: vec![ns.clone()],
        kubeconfig: Some(kubeconfig),
        args: local_args(&container, None),
        env: vec![("POD_NAME".into(), "rule-0".into()), ("POD_NAMESPACE".into(), ns.clone())],
    });
    let outcome = match drive(&app, &operator, &case.name).await {
        Ok(outcome) => outcome,
        Err(stuck) => {
            return Some(format!(
                "{stuck}\n(stuck without a refusal in the log: the rule may be needed, but the operator does not say why)"
            ));
        }
    };
    let Some((milestone, line)) = outcome.denied else {
        return Some(format!("{}: the rollout got everywhere without it ({:?})", case.name, outcome.reached));
    };
    // The refusal names the rule's resource, group and one of its verbs (quotes in the log
    // are escaped once or twice over, depending on how the error was nested).
    let plain = line.replace('\\', "");
    let group = strings(&case.rule["apiGroups"])[0].clone();
    let names_rule =
        strings(&case.rule["resources"]).iter().any(|r| plain.contains(&format!("resource \"{r}\"")))
            && plain.contains(&format!("in API group \"{group}\""))
            && strings(&case.rule["verbs"]).iter().any(|v| plain.contains(&format!("cannot {v} resource")));
    if !names_rule {
        return Some(format!("{}: refused, but not for this rule:\n{line}", case.name));
    }
    // And the rollout is not where the full role takes it.
    if app.reached(milestone).await {
        return Some(format!("{}: refused ({line}), yet {milestone:?} was reached", case.name));
    }
    if reads_metrics {
        let status = app.rollouts.get("web").await.ok().and_then(|r| r.status).unwrap_or_default();
        if !status.gates.is_empty() {
            return Some(format!("{}: refused, yet the gates were evaluated: {:?}", case.name, status.gates));
        }
    }
    if let Some(hook) = &hook {
        let sent = hook.receiver.requests();
        if !sent.is_empty() {
            return Some(format!(
                "{}: refused, yet the webhook was called without its headers: {sent:?}",
                case.name
            ));
        }
    }
    let refusal = plain.find("cannot ").map(|i| &plain[i..]).unwrap_or(&plain);
    let refusal = refusal.split(" in the namespace").next().unwrap_or(refusal);
    eprintln!("{}: refused on the way to {milestone:?} (after {:?}): {refusal}", case.name, outcome.reached);
    None
}
