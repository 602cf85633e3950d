//! Golden outputs of `edges` from captured `/stats/prometheus` pages.

use super::*;

const BACKEND: &str = include_str!("../../../tests/data/diagnostics/stats-backend.prom");
const FRONTEND: &str = include_str!("../../../tests/data/diagnostics/stats-frontend.prom");

fn golden(name: &str, output: &str) {
    insta::with_settings!({
        snapshot_path => "../../../tests/snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(name, output);
    });
}

fn captured() -> Vec<Edge> {
    edges(&[BACKEND, FRONTEND], None)
}

#[test]
fn table() {
    golden("edges-table", &render(&captured(), Format::Table).unwrap());
}

#[test]
fn json() {
    golden("edges-json", &render(&captured(), Format::Json).unwrap());
}

#[test]
fn yaml() {
    golden("edges-yaml", &render(&captured(), Format::Yaml).unwrap());
}

#[test]
fn only_the_deciding_side_counts_and_a_403_from_the_app_is_not_a_denial() {
    let page = r#"# TYPE istio_requests_total counter
istio_requests_total{reporter="source",source_workload="a",source_workload_namespace="ns",destination_workload="b",destination_workload_namespace="ns",connection_security_policy="unknown",response_code="200"} 5
istio_requests_total{reporter="destination",source_workload="a",source_workload_namespace="ns",source_principal="spiffe://td/ns/ns/sa/a",destination_workload="b",destination_workload_namespace="ns",destination_principal="spiffe://td/ns/ns/sa/b",connection_security_policy="mutual_tls",response_code="403"} 2
meshward_authz_edge_decisions_total{reporter="destination",source_workload="a",source_workload_namespace="ns",source_principal="spiffe://td/ns/ns/sa/a",destination_workload="b",destination_workload_namespace="ns",destination_principal="spiffe://td/ns/ns/sa/b",connection_security_policy="mutual_tls",request_protocol="http",decision="allow",policy="none"} 2
istio_tcp_connections_opened_total{reporter="destination",source_workload="unknown",source_workload_namespace="unknown",destination_workload="b",destination_workload_namespace="ns",connection_security_policy="none"} 1.0
meshward_authz_edge_decisions_total{reporter="destination",source_workload="unknown",source_workload_namespace="unknown",destination_workload="b",destination_workload_namespace="ns",connection_security_policy="none",request_protocol="tcp",decision="reject",policy="none"} 1
# EOF
"#;
    let edges = edges(&[page], Some("ns"));
    let summary: Vec<String> = edges
        .iter()
        .map(|e| {
            format!(
                "{} -> {}: {} requests, {} connections, {} allowed, {} denied, {} rejected, {}",
                e.source,
                e.destination,
                e.requests,
                e.connections,
                e.allowed,
                e.denied,
                e.rejected,
                e.security
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ns/a -> ns/b: 2 requests, 0 connections, 2 allowed, 0 denied, 0 rejected, mutual_tls",
            "unknown -> ns/b: 0 requests, 1 connections, 0 allowed, 0 denied, 1 rejected, none",
        ]
    );
    assert!(super::edges(&[page], Some("other")).is_empty());
}

#[test]
fn label_values_with_escapes() {
    let samples = parse("m{a=\"x\\\"y\",b=\"1\\\\2\",c=\"l\\nm\"} 3 1700000000\nbare 4\n# EOF\n");
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].labels["a"], "x\"y");
    assert_eq!(samples[0].labels["b"], "1\\2");
    assert_eq!(samples[0].labels["c"], "l\nm");
    assert_eq!(samples[0].value, 3.0);
    assert_eq!((samples[1].name.as_str(), samples[1].value), ("bare", 4.0));
    assert!(parse("broken{a=\"x 1\n").is_empty());
}
