use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::observe::record::{AuthzOutcome, ResponseFlags};

fn filled() -> RequestRecord {
    let mut r = RequestRecord::new("2024-05-01T12:34:56.789Z".parse().unwrap());
    r.protocol = Some("HTTP/1.1");
    r.method = Some("GET".into());
    r.path = Some("/status/200?x=1".into());
    r.authority = Some("httpbin.foo:8000".into());
    r.request_headers = vec![
        ("user-agent".into(), "curl/8.5.0".into()),
        ("x-request-id".into(), "0f1e2d3c".into()),
    ];
    r.response_headers = vec![("x-envoy-upstream-service-time".into(), "4".into())];
    r.response_code = 200;
    r.response_code_details = Some("via_upstream".into());
    r.bytes_received = 0;
    r.bytes_sent = 3;
    r.duration = Some(Duration::from_micros(5_900));
    r.upstream_host = Some("10.0.0.5:8080".parse().unwrap());
    r.upstream_cluster = Some(Arc::from("inbound|8080||"));
    r.upstream_local_address = Some("127.0.0.6:40123".parse().unwrap());
    r.downstream_local_address = Some("10.0.0.5:8080".parse().unwrap());
    r.downstream_remote_address = Some("10.0.0.9:51234".parse().unwrap());
    r.requested_server_name = Some(Arc::from("outbound_.8000_._.httpbin.foo.svc.cluster.local"));
    r.route_name = Some(Arc::from("default"));
    r.downstream_tls_version = Some("TLSv1.3");
    r.downstream_peer_uri_sans =
        Arc::from(vec!["spiffe://cluster.local/ns/foo/sa/sleep".to_owned()]);
    r.downstream_peer_subject = Some(Arc::from(""));
    r.authz = Some(AuthzOutcome::Allow);
    r.authz_policy = Some("foo/allow-get".into());
    r.authz_reason = Some("allowed by ALLOW policy foo/allow-get rule 0".into());
    r
}

#[test]
fn istio_default_text_line() {
    let line = LogFormat::istio_default_text().render(&filled());
    assert_eq!(
        line,
        "[2024-05-01T12:34:56.789Z] \"GET /status/200?x=1 HTTP/1.1\" 200 - via_upstream - \"-\" 0 3 5 4 \
         \"-\" \"curl/8.5.0\" \"0f1e2d3c\" \"httpbin.foo:8000\" \"10.0.0.5:8080\" inbound|8080|| \
         127.0.0.6:40123 10.0.0.5:8080 10.0.0.9:51234 \
         outbound_.8000_._.httpbin.foo.svc.cluster.local default \
         authz=allow policy=foo/allow-get reason=\"allowed by ALLOW policy foo/allow-get rule 0\"\n"
    );
}

#[test]
fn istio_default_text_for_a_tcp_connection_denied() {
    let mut r = RequestRecord::new("2024-05-01T00:00:00Z".parse().unwrap());
    r.response_flags = ResponseFlags::NO_ROUTE_FOUND;
    r.connection_termination_details = Some("filter_chain_not_found".into());
    r.downstream_local_address = Some("[fd00::5]:8080".parse().unwrap());
    r.downstream_remote_address = Some("[fd00::9]:40000".parse().unwrap());
    let line = LogFormat::istio_default_text().render(&r);
    assert_eq!(
        line,
        "[2024-05-01T00:00:00.000Z] \"- - -\" 0 NR - filter_chain_not_found \"-\" 0 0 - - \"-\" \"-\" \
         \"-\" \"-\" \"-\" - - [fd00::5]:8080 [fd00::9]:40000 - - authz=- policy=- reason=\"-\"\n"
    );
}

#[test]
fn alternative_header_falls_back() {
    let f = LogFormat::parse_text("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%").unwrap();
    let mut r = filled();
    assert!(f.render(&r).starts_with("/status/200?x=1 authz="));
    r.request_headers
        .push(("x-envoy-original-path".into(), "/original".into()));
    assert!(f.render(&r).starts_with("/original authz="));
    // Neither header: `-`.
    r.request_headers.clear();
    r.path = None;
    assert!(f.render(&r).starts_with("- authz="));
}

#[test]
fn missing_values_render_dash() {
    let f = LogFormat::parse_text(
        "%UPSTREAM_HOST% %RESP(X-FOO)% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN% \
         %DOWNSTREAM_PEER_SUBJECT% %DURATION% %PROTOCOL% %AUTHZ_DECISION%",
    )
    .unwrap();
    assert_eq!(f.render(&RequestRecord::default()), "- - - - - - - -\n");
    let r = filled();
    // An empty subject (Istio certificates) also renders `-`, as in Envoy.
    assert_eq!(
        f.render(&r),
        "10.0.0.5:8080 - TLSv1.3 spiffe://cluster.local/ns/foo/sa/sleep - 5 HTTP/1.1 allow\n"
    );
}

#[test]
fn trailing_newline_appended_once() {
    let r = RequestRecord::default();
    let with = LogFormat::parse_text("%RESPONSE_CODE%\n")
        .unwrap()
        .render(&r);
    let without = LogFormat::parse_text("%RESPONSE_CODE%").unwrap().render(&r);
    assert_eq!(with, without);
    assert_eq!(with, "0 authz=- policy=- reason=\"-\"\n");
    assert_eq!(with.matches('\n').count(), 1);
}

#[test]
fn authz_suffix_left_out_when_format_names_it() {
    let f = LogFormat::parse_text("%RESPONSE_CODE% %AUTHZ_POLICY%").unwrap();
    assert_eq!(f.render(&filled()), "200 foo/allow-get\n");
}

#[test]
fn reason_is_escaped_inside_quotes() {
    let r = RequestRecord {
        authz: Some(AuthzOutcome::Deny),
        authz_reason: Some("provider `x\"y` \\ unavailable\nnow".into()),
        ..RequestRecord::default()
    };
    let line = LogFormat::parse_text("x").unwrap().render(&r);
    assert_eq!(
        line,
        "x authz=deny policy=- reason=\"provider `x\\\"y` \\\\ unavailable\\x0anow\"\n"
    );
}

#[test]
fn percent_escape_length_and_query_stripping() {
    let f = LogFormat::parse_text(
        "100%% %REQ(USER-AGENT):4% %REQ_WITHOUT_QUERY(:PATH)% %START_TIME(%Y/%m/%d %H:%M:%E3S)%",
    )
    .unwrap();
    assert!(
        f.render(&filled())
            .starts_with("100% curl /status/200 2024/05/01 12:34:56.789 authz=allow"),
        "{}",
        f.render(&filled())
    );
}

#[test]
fn request_header_names_lists_what_to_copy() {
    let f = LogFormat::istio_default_text();
    assert_eq!(
        f.request_header_names(),
        [
            "x-envoy-original-path",
            "x-forwarded-for",
            "user-agent",
            "x-request-id"
        ]
    );
    assert_eq!(f.response_header_names(), ["x-envoy-upstream-service-time"]);
}

#[test]
fn unknown_operator_is_named_with_its_position() {
    let err = LogFormat::parse_text("[%START_TIME%] %NOT_AN_OPERATOR% x").unwrap_err();
    assert_eq!(
        err,
        FormatError::UnknownOperator {
            operator: "NOT_AN_OPERATOR".into(),
            position: 15,
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported access log operator %NOT_AN_OPERATOR% at position 15"
    );
}

#[test]
fn malformed_commands_are_refused() {
    for (format, position) in [
        ("abc %", 4),
        ("%lower%", 0),
        ("x %REQ(A%", 2),
        ("%REQ(A):x%", 0),
        ("%RESPONSE_CODE", 0),
    ] {
        match LogFormat::parse_text(format) {
            Err(FormatError::InvalidCommand { position: p, .. }) => {
                assert_eq!(p, position, "{format}")
            }
            other => panic!("{format}: {other:?}"),
        }
    }
    for format in [
        "%REQ()%",
        "%REQ(A?B?C)%",
        "%PROTOCOL(x)%",
        "%DURATION:3%",
        "%START_TIME(%Q %9999)%",
        "%DYNAMIC_METADATA()%",
    ] {
        assert!(
            matches!(
                LogFormat::parse_text(format),
                Err(FormatError::InvalidArgument { .. })
            ),
            "{format}"
        );
    }
}

#[test]
fn json_keys_and_values() {
    let line = LogFormat::istio_default_json().render(&filled());
    assert!(line.ends_with("}\n"));
    assert_eq!(line.matches('\n').count(), 1);
    let v: Value = serde_json::from_str(&line).unwrap();
    let obj = v.as_object().unwrap();
    let mut expected_keys: Vec<&str> = ISTIO_DEFAULT_JSON_FORMAT.iter().map(|(k, _)| *k).collect();
    expected_keys.extend(["authz_decision", "authz_policy", "authz_reason"]);
    expected_keys.sort_unstable();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, expected_keys);
    assert_eq!(v["start_time"], "2024-05-01T12:34:56.789Z");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/status/200?x=1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    // Single-operator values keep Envoy's types: numbers and null.
    assert_eq!(v["response_code"], json!(200));
    assert_eq!(v["bytes_sent"], json!(3));
    assert_eq!(v["duration"], json!(5));
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["x_forwarded_for"], Value::Null);
    assert_eq!(v["upstream_service_time"], "4");
    assert_eq!(v["upstream_cluster"], "inbound|8080||");
    assert_eq!(v["downstream_remote_address"], "10.0.0.9:51234");
    assert_eq!(v["authz_decision"], "allow");
    assert_eq!(v["authz_policy"], "foo/allow-get");
    assert_eq!(
        v["authz_reason"],
        "allowed by ALLOW policy foo/allow-get rule 0"
    );
    // Keys come out sorted, as Envoy writes them.
    assert!(line.starts_with("{\"authority\":\"httpbin.foo:8000\",\"authz_decision\":\"allow\","));
}

#[test]
fn json_custom_format_mixed_values() {
    let map = json!({
        "code": "%RESPONSE_CODE%",
        "line": "%REQ(:METHOD)% %UPSTREAM_HOST% %ROUTE_NAME%",
        "fixed": "no operators here",
        "n": 7,
        "nested": {"sni": "%REQUESTED_SERVER_NAME%", "list": ["%PROTOCOL%", true]},
        "authz_decision": "mine",
    });
    let f = LogFormat::parse_json(map.as_object().unwrap()).unwrap();
    let r = RequestRecord {
        method: Some("POST".into()),
        authz: Some(AuthzOutcome::Deny),
        ..RequestRecord::default()
    };
    let v: Value = serde_json::from_str(&f.render(&r)).unwrap();
    assert_eq!(
        v,
        json!({
            "authz_decision": "mine",
            "authz_policy": null,
            "authz_reason": null,
            "code": 0,
            "fixed": "no operators here",
            "line": "POST - -",
            "n": 7,
            "nested": {"list": [null, true], "sni": null},
        })
    );
}

#[test]
fn json_errors_name_the_key() {
    let map = json!({"ok": "%BYTES_SENT%", "bad": {"inner": "x %NOPE%"}});
    let err = LogFormat::parse_json(map.as_object().unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "JSON access log format, key `bad.inner`: unsupported access log operator %NOPE% at position 2"
    );
}

#[test]
fn json_escapes_strings() {
    let map = json!({"ua": "%REQ(USER-AGENT)%"});
    let f = LogFormat::parse_json(map.as_object().unwrap()).unwrap();
    let mut r = RequestRecord::default();
    r.request_headers
        .push(("user-agent".into(), "a\"b\\c\u{1}".into()));
    let line = f.render(&r);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ua"], "a\"b\\c\u{1}");
}

#[test]
fn dynamic_metadata_values() {
    let f = LogFormat::parse_text(
        "%DYNAMIC_METADATA(envoy.common:access_log_hint)% \
         %DYNAMIC_METADATA(envoy.filters.http.rbac:istio_dry_run_deny_shadow_engine_result)% \
         %DYNAMIC_METADATA(missing:key)%",
    )
    .unwrap();
    let mut r = RequestRecord::default();
    r.set_metadata("envoy.common", "access_log_hint", Value::Bool(true));
    r.set_metadata(
        "envoy.filters.http.rbac",
        "istio_dry_run_deny_shadow_engine_result",
        Value::String("denied".into()),
    );
    assert!(f.render(&r).starts_with("true denied - authz="));

    // A whole namespace is an object: inline JSON in TEXT, a nested object in JSON.
    let map = json!({"common": "%DYNAMIC_METADATA(envoy.common)%"});
    let f = LogFormat::parse_json(map.as_object().unwrap()).unwrap();
    let v: Value = serde_json::from_str(&f.render(&r)).unwrap();
    assert_eq!(v["common"], json!({"access_log_hint": true}));
    let f = LogFormat::parse_text("%DYNAMIC_METADATA(envoy.common)%").unwrap();
    assert!(
        f.render(&r)
            .starts_with("{\"access_log_hint\":true} authz=")
    );
}

#[test]
fn start_time_translation() {
    assert_eq!(translate_time_format("%E3S"), "%S.%3f");
    assert_eq!(
        translate_time_format("%f|%6f|%s|%%|%E*S"),
        "%9f|%6f|%s|%%|%S%.f"
    );
}
