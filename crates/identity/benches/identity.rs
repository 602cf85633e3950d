//! CA and mTLS throughput: certificates signed per second, and full mutual-TLS handshakes per
//! second on one core (client and server in the same thread, over in-memory buffers, so the
//! number is pure CPU cost with no socket or scheduler noise).
//!
//! Run: `cargo bench -p meshward-identity --bench identity`. Compare with the machine's own
//! limit: `openssl speed -seconds 3 ecdsap256` (see BENCHMARKS.md).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use meshward_identity::ca::DEFAULT_ROOT_TTL;
use meshward_identity::tls::alpn;
use meshward_identity::{
    CertificateAuthority, CertificateRequest, Credentials, KeyAlgorithm, MeshTls, SpiffeId,
    TrustDomain, TrustDomains,
};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new(td(), "bench", sa).unwrap()
}

fn ca(alg: KeyAlgorithm) -> CertificateAuthority {
    CertificateAuthority::generate_root(td(), alg, DEFAULT_ROOT_TTL).unwrap()
}

fn signing(c: &mut Criterion) {
    let mut group = c.benchmark_group("ca");
    for (name, alg) in [
        ("ecdsa-p256", KeyAlgorithm::EcdsaP256),
        ("rsa-2048", KeyAlgorithm::Rsa2048),
    ] {
        let ca = ca(alg);
        // The CA's work per request: parse and verify the CSR, build and sign the leaf.
        let csr = CertificateRequest::generate(&id("client"), KeyAlgorithm::EcdsaP256).unwrap();
        group.bench_function(format!("sign_csr/{name}-ca"), |b| {
            b.iter(|| black_box(ca.sign_csr(&csr.csr_pem, &id("client"), None).unwrap()))
        });
    }
    // The workload's work per rotation: a new key and CSR.
    group.bench_function("workload_key_and_csr/ecdsa-p256", |b| {
        b.iter(|| {
            black_box(CertificateRequest::generate(&id("client"), KeyAlgorithm::EcdsaP256).unwrap())
        })
    });
    group.finish();
}

fn configs(alg: KeyAlgorithm) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ca = ca(alg);
    let tds = TrustDomains::new(td(), []);
    let server =
        Credentials::with_certificate(ca.issue(&id("server"), alg, None).unwrap()).unwrap();
    let client =
        Credentials::with_certificate(ca.issue(&id("client"), alg, None).unwrap()).unwrap();
    let server = MeshTls::new(server, tds.clone())
        .server_config(alpn::server())
        .unwrap();
    let client = MeshTls::new(client, tds)
        .client_config(&[id("server")], alpn::client_tcp())
        .unwrap();
    (server, client)
}

/// One complete mutual-TLS handshake, both ends driven in this thread.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) {
    let name = ServerName::try_from("outbound_.80_._.server.bench.svc.cluster.local").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            s.read_tls(&mut slice).unwrap();
        }
        s.process_new_packets().unwrap();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            c.read_tls(&mut slice).unwrap();
        }
        c.process_new_packets().unwrap();
    }
    assert!(s.peer_certificates().is_some());
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("mtls");
    group.measurement_time(Duration::from_secs(8));
    for (name, alg) in [
        ("ecdsa-p256", KeyAlgorithm::EcdsaP256),
        ("rsa-2048", KeyAlgorithm::Rsa2048),
    ] {
        let (server, client) = configs(alg);
        group.bench_function(format!("full_handshake/{name}"), |b| {
            b.iter(|| handshake(&server, &client))
        });
    }
    group.finish();
}

criterion_group!(benches, signing, handshakes);
criterion_main!(benches);
