//! Filter-chain selection: what the inbound listener does with a connection, from the port's
//! PeerAuthentication mode, its protocol, and what the client started with. This is the table of
//! authentication.md §2.4, implemented for the two port kinds a workload declares (HTTP-family
//! and TCP); SNI never takes part ("SNI is **not** used for inbound chain selection").

use meshward_identity::tls::alpn;
use meshward_policy::peer_authn::EffectiveMtls;

/// The ALPN values that mark mesh mTLS (istiod `allIstioMtlsALPNs`; authentication.md §2.4:
/// "TLS + ALPN ∈ {`istio`,`istio-peer-exchange`,`istio-http/1.0`,`istio-http/1.1`,`istio-h2`}").
const ISTIO_ALPNS: [&[u8]; 5] = [
    alpn::ISTIO,
    alpn::ISTIO_PEER_EXCHANGE,
    b"istio-http/1.0",
    alpn::ISTIO_HTTP11,
    alpn::ISTIO_H2,
];

/// What the client sent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Not TLS (Envoy's `raw_buffer`).
    Plaintext,
    /// A TLS ClientHello; `istio` is whether its ALPN offered an Istio value.
    Tls {
        /// The ClientHello offered at least one of the Istio ALPN values.
        istio: bool,
    },
}

impl Transport {
    /// A TLS transport classified by the ALPN values it offers.
    pub(crate) fn tls(offered: &[Vec<u8>]) -> Self {
        Transport::Tls {
            istio: offered.iter().any(|a| ISTIO_ALPNS.contains(&a.as_slice())),
        }
    }
}

/// The filter chain a connection takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    /// No chain matched: close without a byte, log `NR filter_chain_not_found`.
    NoMatch,
    /// Terminate mTLS (§1.8 server checks), then HTTP or TCP.
    Mtls {
        /// The HTTP chain (else TCP proxy).
        http: bool,
    },
    /// Plaintext, HTTP or TCP.
    Plaintext {
        /// The HTTP chain (else TCP proxy).
        http: bool,
    },
    /// The application's own TLS: proxied as opaque TCP, not terminated.
    Passthrough,
}

/// Picks the chain (istiod `filterchain_options.go`, as tabulated in authentication.md §2.4).
pub(crate) fn select(mode: EffectiveMtls, http: bool, transport: Transport) -> Chain {
    match (mode, transport) {
        // "HTTP | STRICT | any TLS → terminate mTLS, HTTP"; "TCP | STRICT | any TLS → terminate
        // mTLS, TCP"; "No raw_buffer chain" (plaintext to STRICT finds no chain).
        (EffectiveMtls::Strict, Transport::Tls { .. }) => Chain::Mtls { http },
        (EffectiveMtls::Strict, Transport::Plaintext) => Chain::NoMatch,
        // "HTTP | PERMISSIVE | TLS + ALPN ∈ {istio…} → mTLS HTTP; raw → plaintext HTTP";
        // "TCP | PERMISSIVE | TLS + Istio ALPN → mTLS TCP; … raw → plaintext TCP".
        (EffectiveMtls::Permissive, Transport::Tls { istio: true }) => Chain::Mtls { http },
        (EffectiveMtls::Permissive, Transport::Plaintext)
        | (EffectiveMtls::Disable, Transport::Plaintext) => Chain::Plaintext { http },
        // "HTTP | PERMISSIVE | … non-Istio TLS → no chain"; "TCP | PERMISSIVE | … other TLS →
        // TCP passthrough (not terminated)".
        (EffectiveMtls::Permissive, Transport::Tls { istio: false }) => {
            if http {
                Chain::NoMatch
            } else {
                Chain::Passthrough
            }
        }
        // "any | DISABLE | raw_buffer chains only … TLS from a client → no chain" (istiod's
        // plaintext chains all match `transport_protocol: raw_buffer`, so application TLS finds
        // no chain either).
        (EffectiveMtls::Disable, Transport::Tls { .. }) => Chain::NoMatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EffectiveMtls::{Disable, Permissive, Strict};

    const MESH: Transport = Transport::Tls { istio: true };
    const APP_TLS: Transport = Transport::Tls { istio: false };
    const RAW: Transport = Transport::Plaintext;

    #[test]
    fn strict() {
        assert_eq!(select(Strict, true, RAW), Chain::NoMatch);
        assert_eq!(select(Strict, false, RAW), Chain::NoMatch);
        assert_eq!(select(Strict, true, MESH), Chain::Mtls { http: true });
        assert_eq!(select(Strict, true, APP_TLS), Chain::Mtls { http: true });
        assert_eq!(select(Strict, false, APP_TLS), Chain::Mtls { http: false });
    }

    #[test]
    fn permissive() {
        assert_eq!(
            select(Permissive, true, RAW),
            Chain::Plaintext { http: true }
        );
        assert_eq!(
            select(Permissive, false, RAW),
            Chain::Plaintext { http: false }
        );
        assert_eq!(select(Permissive, true, MESH), Chain::Mtls { http: true });
        assert_eq!(select(Permissive, false, MESH), Chain::Mtls { http: false });
        assert_eq!(select(Permissive, true, APP_TLS), Chain::NoMatch);
        assert_eq!(select(Permissive, false, APP_TLS), Chain::Passthrough);
    }

    #[test]
    fn disable() {
        assert_eq!(select(Disable, true, RAW), Chain::Plaintext { http: true });
        assert_eq!(
            select(Disable, false, RAW),
            Chain::Plaintext { http: false }
        );
        assert_eq!(select(Disable, true, MESH), Chain::NoMatch);
        assert_eq!(select(Disable, false, APP_TLS), Chain::NoMatch);
    }

    #[test]
    fn istio_alpn_classification() {
        assert_eq!(
            Transport::tls(&alpn::client_http1()),
            Transport::Tls { istio: true }
        );
        assert_eq!(
            Transport::tls(&[b"h2".to_vec(), b"http/1.1".to_vec()]),
            Transport::Tls { istio: false }
        );
        assert_eq!(Transport::tls(&[]), Transport::Tls { istio: false });
    }
}
