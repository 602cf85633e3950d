#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Performance of the AuthorizationPolicy decision engine: compilation of a mesh's policies,
//! selection for one workload, and one decision (the per-request hot path).
//!
//! Run with `cargo bench -p meshward-policy --bench decisions`. See BENCHMARKS.md.
//!
//! Groups:
//! * `compile/N`: `AuthzIndex::build` over N policies of the L7 mesh.
//! * `select/N`: `AuthzIndex::for_workload` for the benchmarked workload in a mesh of N policies.
//! * `evaluate/l7/{allowed,denied}/N`: one HTTP decision in a mesh of N policies of which a fixed
//!   [`APPLICABLE`] apply to the workload (the rest spread over many namespaces, plus some in the
//!   workload's namespace and the root namespace with non-matching selectors). `allowed` is
//!   allowed by the ALLOW rule that sorts last in Envoy order, after no DENY rule matched;
//!   `denied` matches no rule at all, so every DENY and ALLOW rule that can match it must be
//!   ruled out (the worst case for a linear scan).
//! * `evaluate/l4/{allowed,denied}/N`: the same for TCP connections, with a TCP mix.
//! * `evaluate/applicable/{allowed,denied}/N`: N policies that all apply to the workload.
//! * `evaluate/unindexed/denied/N`: N applicable ALLOW policies whose rules constrain only
//!   attributes the engine's candidate index does not key on (`ipBlocks`, `notPaths`), so every
//!   one is evaluated: the cost of the residual scan.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use meshward_api::resources::Resource;
use meshward_api::resources::security::AuthorizationPolicy;
use meshward_policy::authz::{AuthzIndex, AuthzReason, WorkloadAuthz, WorkloadSelectorView};
use meshward_policy::{Attributes, HttpAttributes, MeshSettings};
use serde_json::{Map, Value, json};

/// Policies that apply to the benchmarked workload in the `l7`/`l4` series, whatever the
/// size of the mesh.
const APPLICABLE: usize = 10;
/// The benchmarked workload.
const WORKLOAD_NS: &str = "shop";
const WORKLOAD_APP: &str = "checkout";
const ROOT_NS: &str = "istio-system";
/// Policies per unrelated namespace.
const PER_NAMESPACE: usize = 20;

const TOTALS: [usize; 4] = [10, 100, 1_000, 10_000];
const APPLICABLE_SIZES: [usize; 3] = [10, 100, 1_000];
const COMPILE_SIZES: [usize; 3] = [100, 1_000, 10_000];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chain {
    Http,
    Tcp,
}

/// Where a generated policy lives and whether it applies to the benchmarked workload.
#[derive(Clone, Copy)]
enum Placement {
    /// Mesh-wide: root namespace, no selector.
    MeshWide,
    /// The workload's namespace, no selector.
    NamespaceWide,
    /// The workload's namespace, selector matching the workload.
    Selected,
    /// Root namespace, selector matching other workloads only.
    RootOther,
    /// The workload's namespace, selector matching other workloads only.
    NamespaceOther,
    /// Another namespace.
    Elsewhere(usize),
}

fn policy(i: usize, placement: Placement, action: &str, rules: Value) -> Value {
    let (namespace, selector) = match placement {
        Placement::MeshWide => (ROOT_NS.to_owned(), None),
        Placement::NamespaceWide => (WORKLOAD_NS.to_owned(), None),
        Placement::Selected => (WORKLOAD_NS.to_owned(), Some(WORKLOAD_APP.to_owned())),
        Placement::RootOther => (ROOT_NS.to_owned(), Some(format!("other-{i}"))),
        Placement::NamespaceOther => (WORKLOAD_NS.to_owned(), Some(format!("other-{i}"))),
        Placement::Elsewhere(ns) => (format!("team-{ns}"), Some(format!("app-{}", i % 7))),
    };
    let mut spec = json!({ "action": action, "rules": rules });
    if let Some(app) = selector {
        spec["selector"] = json!({ "matchLabels": { "app": app, "version": "v1" } });
    }
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": { "name": format!("p{i:05}"), "namespace": namespace },
        "spec": spec,
    })
}

/// One policy of the HTTP mix, numbered `i`. None of them matches the benchmark requests.
fn l7_policy(i: usize, placement: Placement) -> Value {
    let caller = format!("cluster.local/ns/caller-{i}/sa/sa-{i}");
    let (action, rules) = match i % 10 {
        // ALLOW by exact principal, method and path prefix.
        0 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "principals": [caller] } }],
                "to": [{ "operation": { "methods": ["GET"], "paths": [format!("/api/v1/items-{i}/*")] } }],
            }]),
        ),
        // ALLOW by namespaces, methods and exact paths.
        1 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "namespaces": [format!("caller-{i}"), format!("caller-{}", i + 1)] } }],
                "to": [{ "operation": {
                    "methods": ["GET", "POST"],
                    "paths": [format!("/v{i}/orders"), format!("/v{i}/orders/status")],
                } }],
            }]),
        ),
        // ALLOW by principal prefix and path suffix.
        2 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "principals": [format!("cluster.local/ns/caller-{i}/sa/*")] } }],
                "to": [{ "operation": { "methods": ["GET"], "paths": [format!("*.report-{i}")] } }],
            }]),
        ),
        // ALLOW with two rules: namespace + port, and path prefix + methods.
        3 => (
            "ALLOW",
            json!([
                {
                    "from": [{ "source": { "namespaces": [format!("batch-{i}")] } }],
                    "to": [{ "operation": { "ports": [format!("{}", 9000 + i % 500)] } }],
                },
                {
                    "to": [{ "operation": { "methods": ["GET", "HEAD"], "paths": [format!("/static-{i}/*")] } }],
                },
            ]),
        ),
        // DENY everyone but one principal on an admin path.
        4 => (
            "DENY",
            json!([{
                "from": [{ "source": { "notPrincipals": [format!("cluster.local/ns/caller-{i}/sa/admin")] } }],
                "to": [{ "operation": { "paths": [format!("/admin-{i}/*"), format!("/admin-{i}")] } }],
            }]),
        ),
        // DENY a tenant by header, on a path prefix.
        5 => (
            "DENY",
            json!([{
                "to": [{ "operation": { "paths": [format!("/tenants-{i}/*")] } }],
                "when": [{ "key": "request.headers[x-tenant]", "values": [format!("blocked-{i}")] }],
            }]),
        ),
        // ALLOW by JWT issuer and claim.
        6 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "requestPrincipals": [format!("https://issuer-{i}.example.com/*")] } }],
                "to": [{ "operation": { "paths": [format!("/jwt-{i}/*")] } }],
                "when": [{ "key": "request.auth.claims[groups]", "values": [format!("group-{i}")] }],
            }]),
        ),
        // DENY requests without a JWT on a path.
        7 => (
            "DENY",
            json!([{
                "from": [{ "source": { "notRequestPrincipals": ["*"] } }],
                "to": [{ "operation": { "paths": [format!("/secure-{i}/*")] } }],
            }]),
        ),
        // ALLOW POST by scope claim on an exact path.
        8 => (
            "ALLOW",
            json!([{
                "to": [{ "operation": { "methods": ["POST"], "paths": [format!("/orders-{i}")] } }],
                "when": [{ "key": "request.auth.claims[scope]", "values": [format!("orders:write-{i}")] }],
            }]),
        ),
        // ALLOW a namespace except private paths.
        _ => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "namespaces": [format!("team-{i}")] } }],
                "to": [{ "operation": { "notPaths": [format!("/private-{i}/*")] } }],
            }]),
        ),
    };
    policy(i, placement, action, rules)
}

/// One policy of the TCP mix (fields that exist on TCP chains only).
fn l4_policy(i: usize, placement: Placement) -> Value {
    let (action, rules) = match i % 6 {
        0 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "principals": [format!("cluster.local/ns/caller-{i}/sa/sa-{i}")] } }],
                "to": [{ "operation": { "ports": ["5432"] } }],
            }]),
        ),
        1 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "namespaces": [format!("caller-{i}")] } }],
                "to": [{ "operation": { "ports": [format!("{}", 6000 + i % 1000)] } }],
            }]),
        ),
        2 => (
            "DENY",
            json!([{
                "from": [{ "source": { "notNamespaces": [format!("caller-{i}")] } }],
                "to": [{ "operation": { "ports": [format!("{}", 7000 + i % 1000)] } }],
            }]),
        ),
        3 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "ipBlocks": [format!("10.{}.{}.0/24", (i / 256) % 256, i % 256)] } }],
            }]),
        ),
        4 => (
            "DENY",
            json!([{
                "from": [{ "source": { "principals": [format!("cluster.local/ns/blocked-{i}/sa/*")] } }],
            }]),
        ),
        _ => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "principals": [format!("*/ns/caller-{i}/sa/sa-{i}")] } }],
                "when": [{ "key": "destination.port", "values": ["5432"] }],
            }]),
        ),
    };
    policy(i, placement, action, rules)
}

/// The ALLOW rule that admits the `allowed` request. Its Envoy name
/// `ns[shop]-policy[zz-allow-frontend]-rule[0]` sorts after every other rule.
fn late_allow(chain: Chain) -> Value {
    let rules = match chain {
        Chain::Http => json!([{
            "from": [{ "source": { "principals": ["cluster.local/ns/frontend/sa/web"] } }],
            "to": [{ "operation": { "methods": ["GET"], "paths": ["/api/v2/cart/*"] } }],
            "when": [{ "key": "request.auth.claims[groups]", "values": ["shoppers"] }],
        }]),
        Chain::Tcp => json!([{
            "from": [{ "source": { "principals": ["cluster.local/ns/frontend/sa/web"] } }],
            "to": [{ "operation": { "ports": ["5432"] } }],
        }]),
    };
    let mut p = policy(0, Placement::Selected, "ALLOW", rules);
    p["metadata"]["name"] = json!("zz-allow-frontend");
    p
}

fn load(policies: &[Value]) -> Vec<AuthorizationPolicy> {
    let text = policies
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let report = meshward_api::load_text(&text, "bench", None);
    assert!(
        !report.has_errors(),
        "{:?}",
        report.errors().next().map(|d| &d.message)
    );
    let out: Vec<AuthorizationPolicy> = report
        .resources
        .into_iter()
        .filter_map(|r| match r.resource {
            Resource::AuthorizationPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(out.len(), policies.len());
    out
}

/// A mesh of `total` policies of which `APPLICABLE` apply to the workload: 2 mesh-wide, 2
/// namespace-wide, 5 selected plus the late ALLOW. Of the unrelated ones, 1 in 20 sits in the
/// root namespace and 1 in 20 in the workload's namespace, both with non-matching selectors;
/// the rest fill namespaces `team-*` of [`PER_NAMESPACE`] policies each.
fn mesh(total: usize, chain: Chain) -> Vec<AuthorizationPolicy> {
    assert!(total >= APPLICABLE);
    let gen_policy = |i, placement| match chain {
        Chain::Http => l7_policy(i, placement),
        Chain::Tcp => l4_policy(i, placement),
    };
    let mut out = Vec::with_capacity(total);
    for i in 0..APPLICABLE - 1 {
        let placement = match i {
            0 | 1 => Placement::MeshWide,
            2 | 3 => Placement::NamespaceWide,
            _ => Placement::Selected,
        };
        out.push(gen_policy(i + 1, placement));
    }
    out.push(late_allow(chain));
    for k in 0..total - APPLICABLE {
        let i = APPLICABLE + k;
        let placement = match k % 20 {
            0 => Placement::RootOther,
            1 => Placement::NamespaceOther,
            _ => Placement::Elsewhere(k / PER_NAMESPACE),
        };
        out.push(gen_policy(i, placement));
    }
    load(&out)
}

/// `n` policies of the HTTP mix that all apply to the workload, the late ALLOW among them.
fn all_applicable(n: usize) -> Vec<AuthorizationPolicy> {
    let mut out: Vec<Value> = (1..n)
        .map(|i| {
            let placement = match i % 10 {
                0 => Placement::MeshWide,
                1 | 2 => Placement::NamespaceWide,
                _ => Placement::Selected,
            };
            l7_policy(i, placement)
        })
        .collect();
    out.push(late_allow(Chain::Http));
    load(&out)
}

/// `n` applicable policies (the late ALLOW among them) whose other rules give the candidate
/// index nothing to key on.
fn all_unindexed(n: usize) -> Vec<AuthorizationPolicy> {
    let mut out: Vec<Value> = (1..n)
        .map(|i| {
            let rules = json!([{
                "from": [{ "source": { "ipBlocks": [format!("10.{}.{}.0/24", (i / 256) % 256, i % 256)] } }],
                "to": [{ "operation": { "notPaths": [format!("/private-{i}/*")] } }],
            }]);
            policy(i, Placement::Selected, "ALLOW", rules)
        })
        .collect();
    out.push(late_allow(Chain::Http));
    load(&out)
}

fn workload_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), WORKLOAD_APP.to_owned()),
        ("version".to_owned(), "v1".to_owned()),
        ("pod-template-hash".to_owned(), "7d9f8c6b5-x2x4q".to_owned()),
    ])
}

fn index(policies: &[AuthorizationPolicy]) -> AuthzIndex {
    AuthzIndex::build(policies, &MeshSettings::default())
}

fn select(index: &AuthzIndex, labels: &BTreeMap<String, String>) -> WorkloadAuthz {
    index.for_workload(WorkloadSelectorView {
        namespace: WORKLOAD_NS,
        labels,
    })
}

/// The request data the benchmarks decide on.
struct Requests {
    headers: Vec<(&'static str, &'static str)>,
    jwt: Map<String, Value>,
}

impl Requests {
    fn new() -> Self {
        let headers = [
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
            ("accept", "application/json"),
            ("x-request-id", "5f0c6a9e-3b1d-4c8e-9a2f-1e7d3c4b5a69"),
            ("x-tenant", "acme"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("cookie", "session=abc123; theme=dark"),
        ]
        .to_vec();
        let jwt = json!({
            "iss": "https://auth.example.com",
            "sub": "user-1234",
            "aud": ["shop"],
            "azp": "web",
            "groups": ["customers", "shoppers"],
            "scope": ["cart:read", "cart:write"],
            "exp": 4102444800u64,
        });
        let Value::Object(jwt) = jwt else {
            unreachable!()
        };
        Requests { headers, jwt }
    }

    fn http<'a>(&'a self, peer: &'a str, path: &'a str) -> Attributes<'a> {
        Attributes {
            src_ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 17)),
            remote_ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 17)),
            dst_ip: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 9)),
            dst_port: 8080,
            peer: Some(peer),
            sni: "outbound_.8080_._.checkout.shop.svc.cluster.local",
            http: Some(HttpAttributes {
                method: "GET",
                authority: "checkout.shop.svc.cluster.local:8080",
                path,
                headers: &self.headers,
                jwt: Some(&self.jwt),
            }),
        }
    }

    fn tcp<'a>(&'a self, peer: &'a str) -> Attributes<'a> {
        Attributes {
            src_ip: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 17)),
            remote_ip: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 17)),
            dst_ip: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 9)),
            dst_port: 5432,
            peer: Some(peer),
            sni: "outbound_.5432_._.checkout.shop.svc.cluster.local",
            http: None,
        }
    }
}

const ALLOWED_PEER: &str = "spiffe://cluster.local/ns/frontend/sa/web";
const DENIED_PEER: &str = "spiffe://cluster.local/ns/unknown/sa/default";
const ALLOWED_PATH: &str = "/api/v2/cart/items/42?currency=EUR";
const DENIED_PATH: &str = "/api/v2/checkout/confirm";

/// Checks the premise of a series: the allowed request is allowed by the late rule, the
/// denied one by no ALLOW match.
fn check(authz: &WorkloadAuthz, allowed: &Attributes<'_>, denied: &Attributes<'_>) {
    let d = authz.evaluate(allowed);
    match &d.reason {
        AuthzReason::AllowedBy(rule) => assert_eq!(&*rule.policy.name, "zz-allow-frontend"),
        other => panic!("expected the late ALLOW rule, got {other:?}"),
    }
    let d = authz.evaluate(denied);
    assert_eq!(d.reason, AuthzReason::NoAllowMatched);
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let largest = mesh(*COMPILE_SIZES.iter().max().unwrap(), Chain::Http);
    for n in COMPILE_SIZES {
        let policies = &largest[..n];
        g.bench_with_input(BenchmarkId::from_parameter(n), policies, |b, p| {
            b.iter(|| index(black_box(p)))
        });
    }
    g.finish();
}

fn bench_select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let labels = workload_labels();
    for n in TOTALS {
        let idx = index(&mesh(n, Chain::Http));
        assert_eq!(select(&idx, &labels).policies().len(), APPLICABLE);
        g.bench_with_input(BenchmarkId::from_parameter(n), &idx, |b, idx| {
            b.iter(|| select(black_box(idx), black_box(&labels)))
        });
    }
    g.finish();
}

fn bench_evaluate(
    c: &mut Criterion,
    group: &str,
    sizes: &[usize],
    build: impl Fn(usize) -> Vec<AuthorizationPolicy>,
    chain: Chain,
    variants: &[&str],
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let labels = workload_labels();
    let requests = Requests::new();
    let (allowed, denied) = match chain {
        Chain::Http => (
            requests.http(ALLOWED_PEER, ALLOWED_PATH),
            requests.http(DENIED_PEER, DENIED_PATH),
        ),
        Chain::Tcp => (requests.tcp(ALLOWED_PEER), requests.tcp(DENIED_PEER)),
    };
    for &n in sizes {
        let authz = select(&index(&build(n)), &labels);
        check(&authz, &allowed, &denied);
        for (name, attrs) in [("allowed", &allowed), ("denied", &denied)] {
            if !variants.contains(&name) {
                continue;
            }
            g.bench_with_input(BenchmarkId::new(name, n), attrs, |b, a| {
                b.iter(|| authz.evaluate(black_box(a)))
            });
        }
    }
    g.finish();
}

fn bench_evaluate_all(c: &mut Criterion) {
    let both = ["allowed", "denied"];
    bench_evaluate(
        c,
        "evaluate/l7",
        &TOTALS,
        |n| mesh(n, Chain::Http),
        Chain::Http,
        &both,
    );
    bench_evaluate(
        c,
        "evaluate/l4",
        &TOTALS,
        |n| mesh(n, Chain::Tcp),
        Chain::Tcp,
        &both,
    );
    bench_evaluate(
        c,
        "evaluate/applicable",
        &APPLICABLE_SIZES,
        all_applicable,
        Chain::Http,
        &both,
    );
    bench_evaluate(
        c,
        "evaluate/unindexed",
        &APPLICABLE_SIZES,
        all_unindexed,
        Chain::Http,
        &["denied"],
    );
}

criterion_group!(benches, bench_evaluate_all, bench_select, bench_compile);
criterion_main!(benches);
