#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The config stream's authentication, fail closed: real TLS and gRPC on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use meshward_api::protocol::proto::config_discovery_client::ConfigDiscoveryClient;
use meshward_api::protocol::proto::{
    ControlMessage, Hello, ProxyMessage, control_message, proxy_message,
};
use meshward_api::{SpiffeId, TrustDomain, TrustDomains};
use meshward_control::{ControlPlane, ControlPlaneOptions, InputFile, Source};
use meshward_identity::ca::DEFAULT_ROOT_TTL;
use meshward_identity::service::ca_client_tls_config;
use meshward_identity::{CertificateAuthority, Credentials, KeyAlgorithm};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Code;
use tonic::transport::{Endpoint, Uri};

const MESH: &str = "apiVersion: v1
kind: Pod
metadata:
  name: httpbin
  namespace: foo
spec:
  serviceAccountName: httpbin
  containers:
  - name: app
";

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

async fn control_plane(dir: &std::path::Path) -> ControlPlane {
    let mut options = ControlPlaneOptions::new(dir.join("ca"));
    options.grpc_listen = "127.0.0.1:0".parse().unwrap();
    options.admin_listen = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(options).await.unwrap();
    cp.store()
        .apply(
            Source::Api,
            &[InputFile {
                name: "mesh.yaml".into(),
                text: MESH.into(),
            }],
        )
        .unwrap();
    cp
}

/// A gRPC client over TLS presenting whatever `credentials` hold.
async fn client(
    cp: &ControlPlane,
    credentials: Arc<Credentials>,
) -> Result<ConfigDiscoveryClient<tonic::transport::Channel>, tonic::transport::Error> {
    let tls = ca_client_tls_config(
        credentials,
        &TrustDomains::new(td(), []),
        &[cp.identity().clone()],
    )
    .unwrap();
    let connector = TlsConnector::from(tls);
    let addr = cp.grpc_addr();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(ConfigDiscoveryClient::new(channel))
}

fn with_cert(ca: &CertificateAuthority, ns: &str, sa: &str) -> Arc<Credentials> {
    let id = SpiffeId::new(td(), ns, sa).unwrap();
    Credentials::with_certificate(ca.issue(&id, KeyAlgorithm::EcdsaP256, None).unwrap()).unwrap()
}

fn hello(namespace: &str, workload: &str) -> tokio_stream::Iter<std::vec::IntoIter<ProxyMessage>> {
    tokio_stream::iter(vec![ProxyMessage {
        message: Some(proxy_message::Message::Hello(Hello {
            namespace: namespace.into(),
            workload: workload.into(),
            ..Default::default()
        })),
    }])
}

/// The first thing the control plane answers on a stream.
async fn first_answer(
    client: &mut ConfigDiscoveryClient<tonic::transport::Channel>,
    namespace: &str,
    workload: &str,
) -> Result<ControlMessage, tonic::Status> {
    // The request stream must stay open, or the server sees the proxy leave: chain a pending
    // stream after the Hello.
    let requests =
        tokio_stream::StreamExt::chain(hello(namespace, workload), tokio_stream::pending());
    let mut inbound = client.stream_config(requests).await?.into_inner();
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(tonic::Status::unknown("stream ended")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

#[tokio::test]
async fn only_the_certified_workload_gets_its_configuration() {
    meshward_identity::crypto::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path()).await;
    let ca = cp.ca().clone();
    let roots = ca.trust_bundle().clone();

    // No client certificate: refused before anything is sent.
    let mut anonymous = client(&cp, Credentials::new(roots.clone())).await.unwrap();
    let err = first_answer(&mut anonymous, "foo", "httpbin")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A certificate of another namespace.
    let mut sleep = client(&cp, with_cert(&ca, "bar", "httpbin")).await.unwrap();
    let err = first_answer(&mut sleep, "foo", "httpbin")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The right namespace, another service account than the workload runs as.
    let mut sleep = client(&cp, with_cert(&ca, "foo", "sleep")).await.unwrap();
    let err = first_answer(&mut sleep, "foo", "httpbin")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("service account httpbin"), "{err:?}");

    // A certificate from a CA the mesh does not trust: the TLS handshake fails.
    let foreign =
        CertificateAuthority::generate_root(td(), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
            .unwrap();
    let id = SpiffeId::new(td(), "foo", "httpbin").unwrap();
    let foreign_cert = foreign.issue(&id, KeyAlgorithm::EcdsaP256, None).unwrap();
    let creds = Credentials::new(roots.clone());
    creds.set_certificate(foreign_cert).unwrap();
    let refused = match client(&cp, creds).await {
        Err(_) => true,
        Ok(mut c) => first_answer(&mut c, "foo", "httpbin").await.is_err(),
    };
    assert!(refused, "a foreign certificate must not get configuration");

    // The workload itself.
    let mut httpbin = client(&cp, with_cert(&ca, "foo", "httpbin")).await.unwrap();
    let answer = first_answer(&mut httpbin, "foo", "httpbin").await.unwrap();
    let Some(control_message::Message::Snapshot(snapshot)) = answer.message else {
        panic!("expected a snapshot");
    };
    assert_eq!(snapshot.version, 1);
    assert_eq!(snapshot.documents.len(), 1);
    assert_eq!(snapshot.documents[0].origin, "mesh.yaml");
    cp.stop().await;
}
