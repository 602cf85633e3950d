//! The inbound listener on real sockets: PeerAuthentication modes, mTLS termination, HTTP and gRPC
//! authorization with Envoy's local replies, RequestAuthentication, XFCC, the TCP chain, and
//! live TCP connections re-judged when the configuration changes.

// Helpers outside `#[test]` functions are test code too: a failed step is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use meshward_identity::Credentials;
use meshward_identity::tls::{SpiffeServerVerifier, alpn};
use meshward_proxy::inbound::{AppTarget, AuthzVerdict, Inbound, ListenerMode, Timeouts};
use meshward_proxy::observe::record::ResponseFlags;
use meshward_proxy::state::StateHandle;
use rustls_pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RBAC_DENIED: &str = "RBAC: access denied";

fn plain_http_request() -> &'static [u8] {
    b"GET / HTTP/1.1\r\nhost: httpbin\r\n\r\n"
}

/// authentication.md §2.4: STRICT/PERMISSIVE/DISABLE × mesh mTLS client / plaintext client.
#[tokio::test]
async fn peer_authentication_matrix() {
    let ca = root_ca();
    let ip = unique_ip();
    let [strict, permissive, disable] = free_ports::<3>(ip);
    let app = echo_http_app().await;
    let yaml = format!(
        "{}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: httpbin, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: PERMISSIVE}}
  portLevelMtls:
    {strict}: {{mode: STRICT}}
    {disable}: {{mode: DISABLE}}
",
        workloads_yaml(
            ip,
            &[(strict, "HTTP"), (permissive, "HTTP"), (disable, "HTTP")]
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &yaml, 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[strict, permissive, disable],
        &[
            (strict, app.addr),
            (permissive, app.addr),
            (disable, app.addr),
        ],
    )
    .await;
    let sleep = workload_tls(&ca, "foo", "sleep");
    let httpbin = spiffe("foo", "httpbin");

    // mTLS client: STRICT and PERMISSIVE terminate mTLS and serve the request.
    for port in [strict, permissive] {
        let tls = mtls_connect(&sleep, &httpbin, alpn::client_http1(), proxy.addr(port))
            .await
            .unwrap();
        let reply = send_h1(tls, get("httpbin", "/mtls", &[])).await.unwrap();
        assert_eq!(reply.status, 200, "mTLS to port {port}");
        assert_eq!(reply.json()["path"], "/mtls");
    }
    // mTLS client to DISABLE: no chain, the handshake never completes.
    let err = mtls_connect(&sleep, &httpbin, alpn::client_http1(), proxy.addr(disable))
        .await
        .unwrap_err();
    assert!(!err.is_empty());

    // Plaintext client to STRICT: closed without a byte written.
    let tcp = TcpStream::connect(proxy.addr(strict)).await.unwrap();
    assert_eq!(bytes_until_closed(tcp, plain_http_request()).await, 0);
    // Plaintext to PERMISSIVE and DISABLE: served.
    for port in [permissive, disable] {
        let tcp = TcpStream::connect(proxy.addr(port)).await.unwrap();
        let reply = send_h1(tcp, get("httpbin", "/plain", &[])).await.unwrap();
        assert_eq!(reply.status, 200, "plaintext to port {port}");
    }

    // §2.4: "response code `0`, flag `NR`, details `filter_chain_not_found`".
    for port in [strict, disable] {
        let nr = proxy
            .events
            .wait_for(|e| {
                e.downstream_local_address.port() == port
                    && e.response_flags.contains(ResponseFlags::NO_ROUTE_FOUND)
            })
            .await;
        assert_eq!(nr.response_code, 0);
        assert_eq!(
            nr.response_code_details.as_deref(),
            Some("filter_chain_not_found")
        );
        assert_eq!(nr.verdict, Some(AuthzVerdict::Reject));
    }
    let served = proxy
        .events
        .wait_for(|e| e.downstream_local_address.port() == strict && e.response_code == 200)
        .await;
    assert_eq!(served.connection_security_policy, "mutual_tls");
    assert_eq!(
        served.downstream_peer_uri_san.as_deref(),
        Some("spiffe://cluster.local/ns/foo/sa/sleep")
    );
    assert_eq!(served.downstream_tls_version, Some("TLSv1.3"));
    assert_eq!(
        served.requested_server_name.as_deref(),
        Some("outbound_.8000_._.httpbin.foo.svc.cluster.local")
    );
    assert_eq!(
        served.upstream_cluster.as_deref(),
        Some(format!("inbound|{strict}||").as_str())
    );
    assert_eq!(
        served.response_code_details.as_deref(),
        Some("via_upstream")
    );
    assert_eq!(served.protocol, Some("HTTP/1.1"));
    proxy.stop().await;
}

/// §1.8: a client without a mesh certificate fails the handshake on a STRICT port, and the
/// failure is reported with its reason.
#[tokio::test]
async fn strict_refuses_a_client_without_certificate() {
    let ca = root_ca();
    let ip = unique_ip();
    let [port] = free_ports::<1>(ip);
    let app = echo_http_app().await;
    let yaml = format!(
        "{}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: foo}}
spec:
  mtls: {{mode: STRICT}}
",
        workloads_yaml(ip, &[(port, "HTTP")])
    );
    let dir = tempfile::tempdir().unwrap();
    let server_tls = workload_tls(&ca, "foo", "httpbin");
    let roots = server_tls.credentials().roots().bundle.clone();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &yaml, 1),
        server_tls,
        &[port],
        &[(port, app.addr)],
    )
    .await;

    let verifier = Arc::new(SpiffeServerVerifier::new(Credentials::new(roots), vec![]));
    let mut config =
        rustls::ClientConfig::builder_with_provider(meshward_identity::crypto::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
    config.alpn_protocols = alpn::client_http1();
    let tcp = TcpStream::connect(proxy.addr(port)).await.unwrap();
    let connected = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("httpbin").unwrap(), tcp)
        .await;
    // TLS 1.3 clients learn of the refusal on their first read.
    if let Ok(tls) = connected {
        assert!(send_h1(tls, get("httpbin", "/", &[])).await.is_err());
    }
    let failed = proxy
        .events
        .wait_for(|e| e.verdict == Some(AuthzVerdict::Reject))
        .await;
    let details = failed.connection_termination_details.unwrap();
    assert!(details.contains("certificate"), "{details}");
    assert_eq!(app.accepted.load(Ordering::Relaxed), 0);
    proxy.stop().await;
}

/// §1.9: APPEND_FORWARD on mTLS, removed on plaintext; `x-forwarded-proto` from the transport.
#[tokio::test]
async fn xfcc_and_forwarded_proto() {
    let ca = root_ca();
    let ip = unique_ip();
    let [port] = free_ports::<1>(ip);
    let app = echo_http_app().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &workloads_yaml(ip, &[(port, "HTTP")]), 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[port],
        &[(port, app.addr)],
    )
    .await;
    let sleep = workload_tls(&ca, "foo", "sleep");
    let forged = "By=spiffe://evil/ns/x/sa/y;URI=spiffe://evil/ns/x/sa/z";

    let tls = mtls_connect(
        &sleep,
        &spiffe("foo", "httpbin"),
        alpn::client_http1(),
        proxy.addr(port),
    )
    .await
    .unwrap();
    let reply = send_h1(
        tls,
        get(
            "httpbin",
            "/headers",
            &[
                ("x-forwarded-client-cert", forged),
                ("x-forwarded-proto", "gopher"),
            ],
        ),
    )
    .await
    .unwrap();
    let expected = format!(
        "{forged},By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash={};Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/sleep",
        leaf_hash(&sleep)
    );
    assert_eq!(reply.seen_header("x-forwarded-client-cert"), Some(expected));
    assert_eq!(
        reply.seen_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(reply.seen_header("host").as_deref(), Some("httpbin"));

    let tcp = TcpStream::connect(proxy.addr(port)).await.unwrap();
    let reply = send_h1(
        tcp,
        get(
            "httpbin",
            "/headers",
            &[("x-forwarded-client-cert", forged)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(reply.seen_header("x-forwarded-client-cert"), None);
    assert_eq!(
        reply.seen_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    proxy.stop().await;
}

const AUTHZ_POLICIES: &str = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]
    to: [{operation: {methods: [GET], paths: [/allowed/*]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-bar, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {namespaces: [bar]}}]
    to: [{operation: {paths: [/bar/*]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-open-port, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - to: [{operation: {ports: [\"OPEN_PORT\"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-header, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - when: [{key: 'request.headers[x-block]', values: [\"yes\"]}]
";

/// ALLOW and DENY by principal, namespace, method, path, header and port; Envoy's exact 403.
#[tokio::test]
async fn http_authorization() {
    let ca = root_ca();
    let ip = unique_ip();
    let [guarded, open] = free_ports::<2>(ip);
    let app = echo_http_app().await;
    let yaml = format!(
        "{}{}",
        workloads_yaml(ip, &[(guarded, "HTTP"), (open, "HTTP")]),
        AUTHZ_POLICIES.replace("OPEN_PORT", &open.to_string())
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &yaml, 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[guarded, open],
        &[(guarded, app.addr), (open, app.addr)],
    )
    .await;
    let httpbin = spiffe("foo", "httpbin");
    let sleep = workload_tls(&ca, "foo", "sleep");
    let other = workload_tls(&ca, "bar", "other");

    struct Case {
        name: &'static str,
        client: Option<&'static str>,
        port: u16,
        method: &'static str,
        path: &'static str,
        headers: &'static [(&'static str, &'static str)],
        allowed: bool,
    }
    let cases = [
        Case {
            name: "principal+GET+path",
            client: Some("sleep"),
            port: guarded,
            method: "GET",
            path: "/allowed/x",
            headers: &[],
            allowed: true,
        },
        Case {
            name: "wrong method",
            client: Some("sleep"),
            port: guarded,
            method: "POST",
            path: "/allowed/x",
            headers: &[],
            allowed: false,
        },
        Case {
            name: "wrong path",
            client: Some("sleep"),
            port: guarded,
            method: "GET",
            path: "/other",
            headers: &[],
            allowed: false,
        },
        Case {
            name: "namespace bar",
            client: Some("other"),
            port: guarded,
            method: "DELETE",
            path: "/bar/x",
            headers: &[],
            allowed: true,
        },
        Case {
            name: "namespace bar, not principal",
            client: Some("other"),
            port: guarded,
            method: "GET",
            path: "/allowed/x",
            headers: &[],
            allowed: false,
        },
        Case {
            name: "deny header",
            client: Some("sleep"),
            port: guarded,
            method: "GET",
            path: "/allowed/x",
            headers: &[("x-block", "yes")],
            allowed: false,
        },
        Case {
            name: "other header value",
            client: Some("sleep"),
            port: guarded,
            method: "GET",
            path: "/allowed/x",
            headers: &[("x-block", "no")],
            allowed: true,
        },
        Case {
            name: "plaintext has no principal",
            client: None,
            port: guarded,
            method: "GET",
            path: "/allowed/x",
            headers: &[],
            allowed: false,
        },
        Case {
            name: "open port, plaintext",
            client: None,
            port: open,
            method: "PUT",
            path: "/anything",
            headers: &[],
            allowed: true,
        },
        Case {
            name: "deny beats the open port",
            client: None,
            port: open,
            method: "GET",
            path: "/",
            headers: &[("x-block", "yes")],
            allowed: false,
        },
        Case {
            name: "normalized path matches",
            client: Some("sleep"),
            port: guarded,
            method: "GET",
            path: "/allowed/../allowed/./y",
            headers: &[],
            allowed: true,
        },
    ];
    for case in cases {
        let req = request(case.method, "httpbin", case.path, case.headers);
        let reply = match case.client {
            Some(who) => {
                let tls = if who == "sleep" { &sleep } else { &other };
                let stream =
                    mtls_connect(tls, &httpbin, alpn::client_http1(), proxy.addr(case.port))
                        .await
                        .unwrap();
                send_h1(stream, req).await.unwrap()
            }
            None => {
                let stream = TcpStream::connect(proxy.addr(case.port)).await.unwrap();
                send_h1(stream, req).await.unwrap()
            }
        };
        if case.allowed {
            assert_eq!(reply.status, 200, "{}: {}", case.name, reply.text());
            assert_eq!(reply.json()["method"], case.method, "{}", case.name);
        } else {
            assert_eq!(reply.status, 403, "{}", case.name);
            assert_eq!(reply.text(), RBAC_DENIED, "{}", case.name);
            assert_eq!(reply.headers["content-type"], "text/plain", "{}", case.name);
        }
    }
    // The backend sees the normalized path (authorization.md §7.1).
    let stream = mtls_connect(&sleep, &httpbin, alpn::client_http1(), proxy.addr(guarded))
        .await
        .unwrap();
    let reply = send_h1(stream, get("httpbin", "/allowed/../allowed/./y?q=1", &[]))
        .await
        .unwrap();
    assert_eq!(reply.json()["path"], "/allowed/y?q=1");

    let denied = proxy
        .events
        .wait_for(|e| {
            e.response_code_details.as_deref()
                == Some("rbac_access_denied_matched_policy[ns[foo]-policy[deny-header]-rule[0]]")
        })
        .await;
    assert_eq!(denied.verdict, Some(AuthzVerdict::Deny));
    assert_eq!(denied.deciding_policy().as_deref(), Some("foo/deny-header"));
    let missed = proxy
        .events
        .wait_for(|e| e.path.as_deref() == Some("/other"))
        .await;
    assert_eq!(
        missed.response_code_details.as_deref(),
        Some("rbac_access_denied_matched_policy[none]")
    );
    let allowed = proxy
        .events
        .wait_for(|e| e.path.as_deref() == Some("/bar/x"))
        .await;
    assert_eq!(allowed.verdict, Some(AuthzVerdict::Allow));
    assert_eq!(allowed.deciding_policy().as_deref(), Some("foo/allow-bar"));
    assert_eq!(allowed.method.as_deref(), Some("DELETE"));
    proxy.stop().await;
}

fn grpc_request(authority: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    // One empty length-prefixed message.
    builder
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap()
}

/// authorization.md §9: a denied gRPC request gets HTTP 200, trailers-only, `grpc-status: 7`.
/// Allowed gRPC goes to the application over h2c with its authority.
#[tokio::test]
async fn grpc_over_mtls_h2() {
    let ca = root_ca();
    let ip = unique_ip();
    let [grpc, http] = free_ports::<2>(ip);
    let app = echo_http_app().await;
    let yaml = format!(
        "{}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-forbidden, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: [/pkg.Svc/Forbidden]}}}}]
",
        workloads_yaml(ip, &[(grpc, "GRPC"), (http, "HTTP")])
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &yaml, 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[grpc, http],
        &[(grpc, app.addr), (http, app.addr)],
    )
    .await;
    let sleep = workload_tls(&ca, "foo", "sleep");
    let httpbin = spiffe("foo", "httpbin");
    let authority = format!("httpbin.foo:{grpc}");

    let tls = mtls_connect(&sleep, &httpbin, alpn::client_h2(), proxy.addr(grpc))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let denied = send_h2(tls, grpc_request(&authority, "/pkg.Svc/Forbidden", &[]))
        .await
        .unwrap();
    assert_eq!(denied.status, 200);
    assert_eq!(denied.headers["grpc-status"], "7");
    assert_eq!(denied.headers["grpc-message"], RBAC_DENIED);
    assert_eq!(denied.headers["content-type"], "application/grpc");
    assert!(denied.body.is_empty());
    assert!(
        denied.trailers.is_none(),
        "trailers-only: status in the header block"
    );

    let tls = mtls_connect(&sleep, &httpbin, alpn::client_h2(), proxy.addr(grpc))
        .await
        .unwrap();
    let allowed = send_h2(tls, grpc_request(&authority, "/pkg.Svc/Echo", &[]))
        .await
        .unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let seen = allowed.json();
    assert_eq!(
        seen["version"], "HTTP/2.0",
        "GRPC ports use h2c to the application"
    );
    assert_eq!(seen["authority"], authority.as_str());
    assert_eq!(seen["path"], "/pkg.Svc/Echo");
    assert_eq!(seen["body_len"], 5);
    assert!(allowed.seen_header("x-forwarded-client-cert").is_some());

    // HTTP/2 from the client to an HTTP port reaches the application as HTTP/1.1.
    let tls = mtls_connect(&sleep, &httpbin, alpn::client_h2(), proxy.addr(http))
        .await
        .unwrap();
    let req = Request::builder()
        .uri(format!("http://httpbin.foo:{http}/h2"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send_h2(tls, req).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["version"], "HTTP/1.1");
    assert_eq!(
        reply.seen_header("host"),
        Some(format!("httpbin.foo:{http}"))
    );

    let event = proxy
        .events
        .wait_for(|e| e.path.as_deref() == Some("/pkg.Svc/Forbidden"))
        .await;
    assert_eq!(event.protocol, Some("HTTP/2"));
    assert_eq!(event.grpc_status, Some(7));
    assert_eq!(
        event.response_code_details.as_deref(),
        Some("rbac_access_denied_matched_policy[ns[foo]-policy[deny-forbidden]-rule[0]]")
    );
    proxy.stop().await;
}

const JWT_SECRET: &[u8] = b"meshward-inbound-test-secret-0123456789";
const ISSUER: &str = "https://issuer.test";

fn token(claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap()
}

fn alice(aud: &str, exp: i64) -> String {
    token(serde_json::json!({"iss": ISSUER, "sub": "alice", "aud": aud, "exp": exp}))
}

/// RequestAuthentication: 401 with `www-authenticate` (§5.5), 403 for audiences, 200 with a
/// valid token (which is then removed), gRPC 401 → `grpc-status: 16`.
#[tokio::test]
async fn jwt_authentication() {
    let ca = root_ca();
    let ip = unique_ip();
    let [port, grpc] = free_ports::<2>(ip);
    let app = echo_http_app().await;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(JWT_SECRET);
    let jwks = format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{k}"}}]}}"#);
    let yaml = format!(
        "{}---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [api.test]
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-alice, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{requestPrincipals: [{ISSUER}/alice]}}}}]
    to: [{{operation: {{paths: [/secure]}}}}]
  - to: [{{operation: {{paths: [/public, /pkg.Svc/Call]}}}}]
",
        workloads_yaml(ip, &[(port, "HTTP"), (grpc, "GRPC")])
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &yaml, 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[port, grpc],
        &[(port, app.addr), (grpc, app.addr)],
    )
    .await;
    let now = jiff::Timestamp::now().as_second();
    let valid = alice("api.test", now + 3600);
    let expired = alice("api.test", now - 3600);
    let wrong_audience = alice("other.test", now + 3600);
    // Change a character well inside the signature: the last one may carry only padding bits,
    // and a decoder that ignores them would see the same signature.
    let at = valid.len() - 10;
    let swapped = if &valid[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &valid[..at], &valid[at + 1..]);
    let bearer = |t: &str| format!("Bearer {t}");

    let send = |path: &'static str, auth: Option<String>| {
        let addr = proxy.addr(port);
        async move {
            let headers: Vec<(&str, &str)> = match &auth {
                Some(a) => vec![("authorization", a.as_str())],
                None => vec![],
            };
            let tcp = TcpStream::connect(addr).await.unwrap();
            send_h1(tcp, get("httpbin.foo", path, &headers))
                .await
                .unwrap()
        }
    };

    let public = send("/public", None).await;
    assert_eq!(public.status, 200, "no token: continues unauthenticated");
    let missing = send("/secure", None).await;
    assert_eq!(missing.status, 403);
    assert_eq!(missing.text(), RBAC_DENIED);

    let ok = send("/secure", Some(bearer(&valid))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.seen_header("authorization"),
        None,
        "forwardOriginalToken false removes the token"
    );

    let bad = send("/secure?x=1", Some(bearer(&forged))).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.text(), "Jwt verification fails");
    assert_eq!(bad.headers["content-type"], "text/plain");
    assert_eq!(
        bad.headers["www-authenticate"],
        "Bearer realm=\"http://httpbin.foo/secure?x=1\", error=\"invalid_token\""
    );
    let old = send("/secure", Some(bearer(&expired))).await;
    assert_eq!(old.status, 401);
    assert_eq!(old.text(), "Jwt is expired");
    let aud = send("/public", Some(bearer(&wrong_audience))).await;
    assert_eq!(aud.status, 403);
    assert_eq!(aud.text(), "Audiences in Jwt are not allowed");

    // gRPC (h2c prior knowledge, plaintext): 401 becomes grpc-status 16 UNAUTHENTICATED.
    let tcp = TcpStream::connect(proxy.addr(grpc)).await.unwrap();
    let forged_auth = bearer(&forged);
    let reply = send_h2(
        tcp,
        grpc_request(
            &format!("httpbin.foo:{grpc}"),
            "/pkg.Svc/Call",
            &[("authorization", &forged_auth)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["grpc-status"], "16");
    assert_eq!(reply.headers["grpc-message"], "Jwt verification fails");

    let event = proxy
        .events
        .wait_for(|e| e.path.as_deref() == Some("/secure?x=1"))
        .await;
    assert_eq!(event.response_code, 401);
    assert_eq!(event.verdict, Some(AuthzVerdict::Unauthenticated));
    assert_eq!(
        event.response_code_details.as_deref(),
        Some("jwt_authn_access_denied{Jwt_verification_fails}")
    );
    let verified = proxy
        .events
        .wait_for(|e| e.path.as_deref() == Some("/secure") && e.response_code == 200)
        .await;
    assert_eq!(
        verified.request_principal.as_deref(),
        Some("https://issuer.test/alice")
    );
    proxy.stop().await;
}

/// The TCP chain: allowed connections are proxied both ways, denied ones closed with no byte to
/// either side (authorization.md §9), by port and by principal.
#[tokio::test]
async fn tcp_authorization() {
    let ca = root_ca();
    let ip = unique_ip();
    let [open, mesh_only, closed] = free_ports::<3>(ip);
    let open_app = echo_tcp_app().await;
    let mesh_app = echo_tcp_app().await;
    let closed_app = echo_tcp_app().await;
    let yaml = format!(
        "{}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-tcp, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: ALLOW
  rules:
  - to: [{{operation: {{ports: [\"{open}\"]}}}}]
  - from: [{{source: {{principals: [cluster.local/ns/foo/sa/sleep]}}}}]
    to: [{{operation: {{ports: [\"{mesh_only}\"]}}}}]
",
        workloads_yaml(ip, &[(open, "TCP"), (mesh_only, "TCP"), (closed, "TCP")])
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &yaml, 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[open, mesh_only, closed],
        &[
            (open, open_app.addr),
            (mesh_only, mesh_app.addr),
            (closed, closed_app.addr),
        ],
    )
    .await;
    let sleep = workload_tls(&ca, "foo", "sleep");
    let httpbin = spiffe("foo", "httpbin");

    let mut tcp = TcpStream::connect(proxy.addr(open)).await.unwrap();
    tcp.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    drop(tcp);

    let mut tls = mtls_connect(&sleep, &httpbin, alpn::client_tcp(), proxy.addr(mesh_only))
        .await
        .unwrap();
    tls.write_all(b"mesh").await.unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"mesh");
    drop(tls);

    // Plaintext has no principal: the mesh-only port closes it.
    let tcp = TcpStream::connect(proxy.addr(mesh_only)).await.unwrap();
    assert_eq!(bytes_until_closed(tcp, b"sneaky").await, 0);
    // Nothing allows the closed port, mTLS or not.
    let tcp = TcpStream::connect(proxy.addr(closed)).await.unwrap();
    assert_eq!(bytes_until_closed(tcp, b"x").await, 0);
    let tls = mtls_connect(&sleep, &httpbin, alpn::client_tcp(), proxy.addr(closed))
        .await
        .unwrap();
    assert_eq!(bytes_until_closed(tls, b"x").await, 0);
    assert_eq!(closed_app.accepted.load(Ordering::Relaxed), 0);
    assert_eq!(mesh_app.accepted.load(Ordering::Relaxed), 1);
    assert!(
        !mesh_app
            .received
            .lock()
            .unwrap()
            .windows(6)
            .any(|w| w == b"sneaky")
    );

    let denied = proxy
        .events
        .wait_for(|e| e.downstream_local_address.port() == closed)
        .await;
    assert_eq!(denied.verdict, Some(AuthzVerdict::Deny));
    assert_eq!(denied.protocol, None);
    assert_eq!(
        denied.connection_termination_details.as_deref(),
        Some("rbac_access_denied_matched_policy[none]")
    );
    let proxied = proxy
        .events
        .wait_for(|e| e.downstream_local_address.port() == open)
        .await;
    assert_eq!((proxied.bytes_received, proxied.bytes_sent), (5, 5));
    assert_eq!(proxied.upstream_host, Some(open_app.addr));
    proxy.stop().await;
}

/// "When policy changes, live TCP connections that are no longer allowed are closed."
#[tokio::test]
async fn live_tcp_connections_rechecked_on_policy_change() {
    let ca = root_ca();
    let ip = unique_ip();
    let [revoked, kept, tightened] = free_ports::<3>(ip);
    let app = echo_tcp_app().await;
    let workloads = workloads_yaml(ip, &[(revoked, "TCP"), (kept, "TCP"), (tightened, "TCP")]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &workloads, 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[revoked, kept, tightened],
        &[(revoked, app.addr), (kept, app.addr), (tightened, app.addr)],
    )
    .await;

    async fn echo(stream: &mut TcpStream, msg: &[u8]) {
        stream.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg);
    }
    let mut a = TcpStream::connect(proxy.addr(revoked)).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr(kept)).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr(tightened)).await.unwrap();
    echo(&mut a, b"ping").await;
    echo(&mut b, b"ping").await;
    echo(&mut c, b"ping").await;

    // Version 2 denies port `revoked`.
    let v2 = format!(
        "{workloads}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-revoked, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: DENY
  rules:
  - to: [{{operation: {{ports: [\"{revoked}\"]}}}}]
"
    );
    proxy.handle.store(state_from_yaml(&dir, &v2, 2));
    assert_eq!(bytes_until_closed(&mut a, b"").await, 0);
    echo(&mut b, b"still here").await;
    echo(&mut c, b"still here").await;

    // Version 3 makes `tightened` STRICT: a plaintext connection no longer finds a chain.
    let v3 = format!(
        "{v2}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: httpbin, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  portLevelMtls:
    {tightened}: {{mode: STRICT}}
"
    );
    proxy.handle.store(state_from_yaml(&dir, &v3, 3));
    assert_eq!(bytes_until_closed(&mut c, b"").await, 0);
    echo(&mut b, b"and still").await;

    let closed = proxy
        .events
        .wait_for(|e| e.downstream_local_address.port() == revoked)
        .await;
    assert_eq!(
        closed.connection_termination_details.as_deref(),
        Some("rbac_access_denied_matched_policy[ns[foo]-policy[deny-revoked]-rule[0]]")
    );
    assert_eq!(closed.verdict, Some(AuthzVerdict::Deny));
    assert_eq!((closed.bytes_received, closed.bytes_sent), (4, 4));
    let strict = proxy
        .events
        .wait_for(|e| e.downstream_local_address.port() == tightened)
        .await;
    assert!(
        strict
            .connection_termination_details
            .as_deref()
            .is_some_and(|d| d.contains("STRICT")),
        "{strict:?}"
    );
    drop(b);
    proxy.stop().await;
}

/// Envoy's 503 when the application is down, flag `UF`.
#[tokio::test]
async fn application_down_is_503() {
    let ca = root_ca();
    let ip = unique_ip();
    let [port] = free_ports::<1>(ip);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &workloads_yaml(ip, &[(port, "HTTP")]), 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[port],
        &[(port, dead_app())],
    )
    .await;
    let tcp = TcpStream::connect(proxy.addr(port)).await.unwrap();
    let reply = send_h1(tcp, get("httpbin", "/", &[])).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
    let event = proxy.events.wait_for(|e| e.response_code == 503).await;
    assert_eq!(
        event.response_flags,
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE
    );
    proxy.stop().await;
}

/// §2.4 PERMISSIVE: TLS without an Istio ALPN is the application's own TLS — passed through
/// untouched on a TCP port, no chain on an HTTP port.
#[tokio::test]
async fn permissive_application_tls() {
    let ca = root_ca();
    let ip = unique_ip();
    let [tcp_port, http_port] = free_ports::<2>(ip);
    let tcp_app = echo_tcp_app().await;
    let http_app = echo_http_app().await;
    let dir = tempfile::tempdir().unwrap();
    let server_tls = workload_tls(&ca, "foo", "httpbin");
    let roots = server_tls.credentials().roots().bundle.clone();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(
            &dir,
            &workloads_yaml(ip, &[(tcp_port, "TCP"), (http_port, "HTTP")]),
            1,
        ),
        server_tls,
        &[tcp_port, http_port],
        &[(tcp_port, tcp_app.addr), (http_port, http_app.addr)],
    )
    .await;
    let app_tls_client = || {
        let verifier = Arc::new(SpiffeServerVerifier::new(
            Credentials::new(roots.clone()),
            vec![],
        ));
        let mut config =
            rustls::ClientConfig::builder_with_provider(meshward_identity::crypto::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };

    // TCP port: the application receives the client's ClientHello verbatim (and echoes it, which
    // the client cannot make sense of — that is the application's business).
    let tcp = TcpStream::connect(proxy.addr(tcp_port)).await.unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        app_tls_client().connect(ServerName::try_from("app.example").unwrap(), tcp),
    )
    .await;
    let received = tcp_app.received.lock().unwrap().clone();
    assert!(received.starts_with(&[0x16, 0x03]), "{received:?}");
    assert!(received.windows(11).any(|w| w == b"app.example"));
    let passed = proxy
        .events
        .wait_for(|e| e.downstream_local_address.port() == tcp_port)
        .await;
    assert_eq!(passed.downstream_tls_version, None);
    assert_eq!(passed.requested_server_name.as_deref(), Some("app.example"));
    assert_eq!(passed.connection_security_policy, "none");

    // HTTP port: no chain.
    let tcp = TcpStream::connect(proxy.addr(http_port)).await.unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        app_tls_client().connect(ServerName::try_from("app.example").unwrap(), tcp),
    )
    .await
    .unwrap();
    assert!(outcome.is_err());
    proxy
        .events
        .wait_for(|e| {
            e.downstream_local_address.port() == http_port
                && e.response_flags.contains(ResponseFlags::NO_ROUTE_FOUND)
        })
        .await;
    assert_eq!(http_app.accepted.load(Ordering::Relaxed), 0);
    proxy.stop().await;
}

/// Capture mode: a connection made to the capture port itself (not redirected) is closed rather
/// than forwarded to the proxy's own port.
#[tokio::test]
async fn capture_port_itself_is_closed() {
    let ca = root_ca();
    let ip = unique_ip();
    let [port] = free_ports::<1>(ip);
    let dir = tempfile::tempdir().unwrap();
    let state = state_from_yaml(&dir, &workloads_yaml(ip, &[(8080, "HTTP")]), 1);
    let listening = Inbound::new(
        StateHandle::new(state),
        workload_tls(&ca, "foo", "httpbin"),
        AppTarget::localhost(),
        ListenerMode::Capture {
            addr: std::net::SocketAddr::new(ip, port),
        },
    )
    .with_timeouts(Timeouts {
        drain: Duration::from_millis(200),
        ..Timeouts::default()
    })
    .bind()
    .await
    .unwrap();
    assert_eq!(
        listening.local_addrs(),
        vec![std::net::SocketAddr::new(ip, port)]
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listening.run(async move {
        let _ = stopped.await;
    }));
    let tcp = TcpStream::connect((ip, port)).await.unwrap();
    assert_eq!(bytes_until_closed(tcp, plain_http_request()).await, 0);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// HTTP keep-alive connections: an authorization change applies to the next request on the same
/// connection; a PeerAuthentication change that removes the connection's chain closes it.
#[tokio::test]
async fn http_connections_follow_configuration_changes() {
    let ca = root_ca();
    let ip = unique_ip();
    let [port] = free_ports::<1>(ip);
    let app = echo_http_app().await;
    let workloads = workloads_yaml(ip, &[(port, "HTTP")]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ip,
        state_from_yaml(&dir, &workloads, 1),
        workload_tls(&ca, "foo", "httpbin"),
        &[port],
        &[(port, app.addr)],
    )
    .await;
    let tcp = TcpStream::connect(proxy.addr(port)).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let mut driver = tokio::spawn(connection);
    let status = |r: Result<http::Response<hyper::body::Incoming>, hyper::Error>| {
        r.unwrap().status().as_u16()
    };
    assert_eq!(
        status(sender.send_request(get("httpbin", "/a", &[])).await),
        200
    );

    let v2 = format!(
        "{workloads}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-b, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: [/b]}}}}]
"
    );
    proxy.handle.store(state_from_yaml(&dir, &v2, 2));
    assert_eq!(
        status(sender.send_request(get("httpbin", "/b", &[])).await),
        403
    );
    assert_eq!(
        status(sender.send_request(get("httpbin", "/a", &[])).await),
        200
    );

    let v3 = format!(
        "{v2}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: foo}}
spec:
  mtls: {{mode: STRICT}}
"
    );
    proxy.handle.store(state_from_yaml(&dir, &v3, 3));
    // The idle connection is closed by the proxy; the client's connection task ends.
    tokio::time::timeout(Duration::from_secs(5), &mut driver)
        .await
        .expect("the proxy closes the plaintext connection")
        .unwrap()
        .unwrap();
    proxy.stop().await;
}
