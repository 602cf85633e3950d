//! Unit tests of the description: evaluation order, which resource set each port's mTLS mode,
//! a workload nothing selects, and name resolution.

use super::{DescribeError, Description, Query, Subject, describe};

const APP: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  template:
    metadata: {labels: {app: api}}
    spec:
      serviceAccountName: api-sa
      containers:
      - name: api
        ports: [{containerPort: 8080, name: web}, {containerPort: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-admin, port: 9000}]
";

fn run(yaml: &str, subject: Subject, name: &str) -> Result<Description, DescribeError> {
    let report = meshward_api::load_text(yaml, "test.yaml", None);
    assert!(!report.has_errors(), "{:?}", report.diagnostics);
    describe(
        &report,
        &Query {
            subject,
            namespace: "shop".to_owned(),
            name: name.to_owned(),
        },
    )
}

fn api(extra: &str) -> Description {
    run(&format!("{APP}---\n{extra}"), Subject::Pod, "api").unwrap()
}

#[test]
fn policies_are_listed_in_evaluation_order_custom_audit_deny_allow() {
    let d = api("\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-allow, namespace: shop}
spec: {action: ALLOW, rules: [{from: [{source: {namespaces: [shop]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b-audit, namespace: shop}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: c-deny, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d-custom, namespace: shop}
spec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: e-dry, namespace: shop, annotations: {istio.io/dry-run: \"true\"}}
spec: {action: DENY, rules: [{}]}
");
    let order: Vec<(&str, &str)> = d
        .authorization
        .policies
        .iter()
        .map(|p| (p.action.as_str(), p.policy.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("CUSTOM", "shop/d-custom"),
            ("AUDIT", "shop/b-audit"),
            ("DENY", "istio-system/c-deny"),
            ("ALLOW", "shop/a-allow"),
        ]
    );
    assert_eq!(d.authorization.dry_run.len(), 1);
    assert_eq!(
        d.authorization.policies[2].scope,
        "mesh-wide (root namespace istio-system, no selector)"
    );
    assert_eq!(
        d.authorization.policies[3].rules[0].summary,
        "from namespace = shop"
    );
    assert_eq!(
        d.authorization.policies[3].rules[0].origin.as_deref(),
        Some("test.yaml:27")
    );
    let verdict = d.authorization.verdict.join("\n");
    assert!(verdict.contains("CUSTOM (shop/d-custom)"), "{verdict}");
    assert!(
        verdict.contains("ALLOW: a request must match one of 1 rule(s)"),
        "{verdict}"
    );
    assert!(verdict.contains("dry-run (shop/e-dry)"), "{verdict}");
}

#[test]
fn allow_nothing_alone_denies_everything_and_http_rules_vanish_on_tcp_ports() {
    let d = api("\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec: {selector: {matchLabels: {app: api}}, rules: [{to: [{operation: {methods: [GET]}}]}]}
");
    let verdict = d.authorization.verdict.join("\n");
    // Port 8080 is HTTP: get-only's rule decides; allow-nothing adds nothing (§3.1).
    assert!(
        verdict.contains("ALLOW: a request must match one of 1 rule(s) of 2 ALLOW policy(ies)"),
        "{verdict}"
    );
    assert!(
        verdict.contains("shop/allow-nothing contribute(s) no rule"),
        "{verdict}"
    );
    // Port 9000 is TCP (`tcp-admin`): the methods rule is dropped, nothing is allowed (§6).
    assert!(
        verdict.contains("ALLOW on TCP port(s) 9000: ALLOW policies apply but none keeps a rule here: every request is denied"),
        "{verdict}"
    );
    let get_only = &d.authorization.policies[1];
    assert_eq!(get_only.policy, "shop/get-only");
    assert!(
        get_only
            .notes
            .iter()
            .any(|n| n.starts_with("on TCP port(s) 9000: rule 0 is dropped")),
        "{:?}",
        get_only.notes
    );
}

#[test]
fn each_port_names_the_peer_authentication_that_set_it() {
    let d = api("\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: shop}
spec: {mtls: {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    '9000': {mode: DISABLE}
    '7000': {mode: UNSET}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ignored, namespace: istio-system}
spec: {selector: {matchLabels: {app: api}}, mtls: {mode: DISABLE}}
");
    let pa = &d.peer_authentication;
    assert_eq!(pa.mode, "PERMISSIVE");
    let steps: Vec<(&str, &str, &str)> = pa
        .steps
        .iter()
        .map(|s| (s.level.as_str(), s.result.as_str(), s.effect.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("default", "PERMISSIVE", "built-in default"),
            ("mesh", "STRICT", "sets STRICT"),
            ("namespace", "STRICT", "UNSET: inherits STRICT"),
            ("workload", "PERMISSIVE", "sets PERMISSIVE"),
        ]
    );
    let ports: Vec<(u16, &str, &str)> = pa
        .ports
        .iter()
        .map(|p| (p.port, p.mode.as_str(), p.set_by.as_str()))
        .collect();
    assert_eq!(
        ports,
        [
            (
                7000,
                "PERMISSIVE",
                "shop/api portLevelMtls[7000] is UNSET: inherits the workload mode"
            ),
            (8080, "PERMISSIVE", "the workload mode"),
            (9000, "DISABLE", "shop/api portLevelMtls[9000]"),
        ]
    );
    assert_eq!(pa.ignored.len(), 1);
    assert_eq!(pa.ignored[0].policy, "istio-system/ignored");
    assert!(pa.ignored[0].reason.contains("root namespace"));
}

#[test]
fn a_workload_no_policy_selects() {
    let d = api("");
    assert_eq!(
        d.workload.identity,
        "spiffe://cluster.local/ns/shop/sa/api-sa"
    );
    assert!(d.workload.sidecar);
    assert_eq!(d.workload.kind, "Deployment");
    assert!(d.authorization.policies.is_empty());
    assert_eq!(
        d.authorization.verdict,
        ["no ALLOW policy applies: every request not refused above is allowed"]
    );
    assert_eq!(d.peer_authentication.mode, "PERMISSIVE");
    assert_eq!(d.peer_authentication.steps.len(), 1);
    assert!(d.request_authentication.policies.is_empty());
    // Auto mTLS: the endpoint has a sidecar, so sidecar clients send mTLS.
    let port = &d.services[0].ports[0];
    assert_eq!((port.port, port.target_port), (80, Some(8080)));
    assert_eq!(port.client_tls[0].mode, "ISTIO_MUTUAL");
    assert_eq!(
        d.workload.ports[1].protocol_source,
        "Service api port name `tcp-admin`"
    );
}

#[test]
fn a_replica_name_resolves_to_its_deployment() {
    let d = run(APP, Subject::Pod, "api-5c5944c58c-k8x2c").unwrap();
    assert_eq!(d.workload.name, "api");
    assert!(d.workload.resolved.is_some());
    let err = run(APP, Subject::Workload, "api-0").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no workload `api-0` in namespace `shop`; workloads there: api"
    );
}
