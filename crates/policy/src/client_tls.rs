//! What a client sidecar originates towards a destination: DestinationRule `tls` or auto mTLS
//! (authentication.md §3).

use std::sync::Arc;

use meshward_api::resources::networking::{
    ClientTlsSettings, DestinationRule, TlsMode, TrafficPolicy,
};

use crate::inventory::{ServiceDef, Workload};
use crate::mesh::MeshSettings;
use crate::peer_authn::{EffectiveMtls, PeerAuthnIndex};

/// Where the client's TLS setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A DestinationRule's `tls` (`ns/name`).
    DestinationRule(String),
    /// Auto mTLS chose mTLS: the endpoint has a sidecar that accepts it.
    AutoMtls,
    /// Auto mTLS chose plaintext, and why.
    AutoPlaintext(String),
}

impl std::fmt::Display for TlsSource {
    /// What `check` and `describe` print after the mode: `DestinationRule ns/name`, `auto mTLS`,
    /// or `auto mTLS: plaintext, <why>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSource::DestinationRule(name) => write!(f, "DestinationRule {name}"),
            TlsSource::AutoMtls => f.write_str("auto mTLS"),
            TlsSource::AutoPlaintext(why) => write!(f, "auto mTLS: plaintext, {why}"),
        }
    }
}

/// The client side of a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTls {
    /// The mode originated; DISABLE is plaintext.
    pub mode: TlsMode,
    /// Why.
    pub source: TlsSource,
    /// Identities the server certificate must carry (secure naming, §1.8); empty = no check.
    pub expected_sans: Vec<String>,
    /// SNI sent (ISTIO_MUTUAL).
    pub sni: Option<String>,
    /// `insecureSkipVerify`.
    pub skip_verify: bool,
    /// The TLS settings that applied, for SIMPLE/MUTUAL details.
    pub settings: Option<ClientTlsSettings>,
}

/// DestinationRules of the mesh, oldest first.
#[derive(Debug, Clone, Default)]
pub struct DestinationRuleIndex {
    rules: Vec<Arc<DestinationRule>>,
}

impl DestinationRuleIndex {
    /// Orders rules by creation time (the oldest top-level traffic policy wins a merge).
    pub fn build<'a>(rules: impl IntoIterator<Item = &'a DestinationRule>) -> Self {
        let mut rules: Vec<(usize, Arc<DestinationRule>)> = rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i, Arc::new(r.clone())))
            .collect();
        rules.sort_by(|(ia, a), (ib, b)| {
            let ta = a.metadata.creation_timestamp.as_deref();
            let tb = b.metadata.creation_timestamp.as_deref();
            (ta.is_none(), ta).cmp(&(tb.is_none(), tb)).then(ia.cmp(ib))
        });
        DestinationRuleIndex {
            rules: rules.into_iter().map(|(_, r)| r).collect(),
        }
    }

    /// authentication.md §3.2: search the client's namespace, then the service's, then the
    /// root namespace; the first namespace with a DR for the host wins; exact host beats
    /// wildcard, the longest wildcard beats shorter ones; several DRs for one host in one
    /// namespace merge, the oldest top-level traffic policy winning.
    pub fn lookup(
        &self,
        client: &Workload,
        host: &str,
        service_namespace: &str,
        mesh: &MeshSettings,
    ) -> Option<Arc<DestinationRule>> {
        let mut order = vec![client.namespace.as_str()];
        for ns in [service_namespace, mesh.root_namespace.as_str()] {
            if !order.contains(&ns) {
                order.push(ns);
            }
        }
        for ns in order {
            let candidates: Vec<(&Arc<DestinationRule>, usize)> = self
                .rules
                .iter()
                .filter(|r| r.metadata.namespace() == ns)
                .filter(|r| visible(r, &client.namespace))
                .filter(|r| {
                    r.spec.workload_selector.as_ref().is_none_or(|s| {
                        r.metadata.namespace() == client.namespace && s.matches(&client.labels)
                    })
                })
                .filter_map(|r| host_specificity(&fqdn(&r.spec.host, ns), host).map(|s| (r, s)))
                .collect();
            // Workload-selector DRs first, then the most specific host, then the oldest.
            let best = candidates.iter().max_by(|(ra, sa), (rb, sb)| {
                let sel = |r: &DestinationRule| r.spec.workload_selector.is_some();
                (sel(ra), *sa)
                    .cmp(&(sel(rb), *sb))
                    .then(std::cmp::Ordering::Greater)
            });
            if let Some((rule, _)) = best {
                return Some((*rule).clone());
            }
        }
        None
    }
}

/// exportTo: empty ⇒ `*` (meshConfig default), `.` = own namespace, `*` = all, names.
fn visible(rule: &DestinationRule, client_namespace: &str) -> bool {
    let export = &rule.spec.export_to;
    export.is_empty()
        || export.iter().any(|e| {
            e == "*"
                || e == client_namespace
                || (e == "." && rule.metadata.namespace() == client_namespace)
        })
}

/// authentication.md §3.2: "DR `host` short names are expanded relative to the **DR's**
/// namespace (`reviews` in ns `default` ⇒ `reviews.default.svc.cluster.local`)". Names with a
/// dot are taken as written.
fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

/// `Some(score)` when `pattern` matches `host`: exact beats any wildcard, longer wildcards beat
/// shorter ones.
fn host_specificity(pattern: &str, host: &str) -> Option<usize> {
    if pattern.eq_ignore_ascii_case(host) {
        return Some(usize::MAX);
    }
    if pattern == "*" {
        return Some(0);
    }
    let suffix = pattern.strip_prefix('*')?;
    host.to_ascii_lowercase()
        .ends_with(&suffix.to_ascii_lowercase())
        .then_some(suffix.len())
}

/// §3.3: a `portLevelSettings` entry for the service port replaces the whole top-level policy
/// (no field inheritance).
fn cluster_tls(policy: Option<&TrafficPolicy>, service_port: u16) -> Option<ClientTlsSettings> {
    let policy = policy?;
    match policy.port_level_settings.iter().find(|p| {
        p.port
            .as_ref()
            .is_some_and(|s| s.number == u32::from(service_port))
    }) {
        Some(port_policy) => port_policy.tls.clone(),
        None => policy.tls.clone(),
    }
}

/// §3.3 quirk (`mtls_checker.go`): the endpoint label takes the top-level `tls`, overridden by a
/// port entry only if that entry has `tls`.
fn endpoint_label_tls(policy: Option<&TrafficPolicy>, service_port: u16) -> Option<TlsMode> {
    let policy = policy?;
    let port_tls = policy
        .port_level_settings
        .iter()
        .find(|p| {
            p.port
                .as_ref()
                .is_some_and(|s| s.number == u32::from(service_port))
        })
        .and_then(|p| p.tls.as_ref());
    port_tls.or(policy.tls.as_ref()).map(|t| t.mode)
}

/// Everything needed to decide a client's TLS towards one endpoint.
pub struct ClientTlsInput<'a> {
    /// The client workload (it has a sidecar).
    pub client: &'a Workload,
    /// The service, when the destination is reached through one.
    pub service: Option<&'a ServiceDef>,
    /// The service port (or the endpoint port when there is no service).
    pub service_port: u16,
    /// The chosen endpoint.
    pub endpoint: &'a Workload,
    /// The endpoint's container port.
    pub endpoint_port: u16,
    /// Service accounts of every endpoint of the service, as SPIFFE IDs.
    pub service_identities: Vec<String>,
}

/// Decides what the client originates (§3.4).
pub fn decide_client_tls(
    input: &ClientTlsInput<'_>,
    rules: &DestinationRuleIndex,
    peer_authn: &PeerAuthnIndex,
    mesh: &MeshSettings,
) -> ClientTls {
    let host = input
        .service
        .map(ServiceDef::fqdn)
        .unwrap_or_else(|| input.endpoint.address.to_string());
    let service_namespace = input
        .service
        .map(|s| s.namespace.as_str())
        .unwrap_or(input.endpoint.namespace.as_str());
    let rule = input
        .service
        .and_then(|_| rules.lookup(input.client, &host, service_namespace, mesh));
    let policy = rule.as_ref().and_then(|r| r.spec.traffic_policy.as_ref());
    let sni = format!("outbound_.{}_._.{host}", input.service_port);
    let expand = |sans: &[String]| -> Vec<String> { expand_sans(sans, mesh) };
    if let (Some(rule), Some(tls)) = (&rule, cluster_tls(policy, input.service_port)) {
        // "if tls != nil: use it as is (DISABLE/SIMPLE/MUTUAL/ISTIO_MUTUAL) -> user supplied"
        let expected = match &tls.subject_alt_names {
            Some(sans) if !sans.is_empty() => sans.clone(),
            _ if tls.mode == TlsMode::IstioMutual => expand(&input.service_identities),
            _ => Vec::new(),
        };
        return ClientTls {
            mode: tls.mode,
            source: TlsSource::DestinationRule(format!(
                "{}/{}",
                rule.metadata.namespace(),
                rule.metadata.name()
            )),
            expected_sans: expected,
            sni: Some(tls.sni.clone().unwrap_or(sni)),
            skip_verify: tls.insecure_skip_verify.unwrap_or(false),
            settings: Some(tls),
        };
    }
    let plaintext = |why: String| ClientTls {
        mode: TlsMode::Disable,
        source: TlsSource::AutoPlaintext(why),
        expected_sans: Vec::new(),
        sni: None,
        skip_verify: false,
        settings: None,
    };
    if !mesh.enable_auto_mtls {
        return plaintext("meshConfig.enableAutoMtls is false".to_owned());
    }
    // svcMode = nsMode(service namespace): namespace/mesh PeerAuthentication only. With no
    // policy at all the mode is unknown, which Istio treats as PERMISSIVE.
    if peer_authn.namespace_mode(service_namespace) == Some(EffectiveMtls::Disable) {
        return plaintext(format!(
            "namespace `{service_namespace}` PeerAuthentication is DISABLE"
        ));
    }
    // Per endpoint (`mtls_checker.go`): a DR TLS mode for this port decides the label; else
    // the endpoint must have a sidecar whose own mode on the port is not DISABLE.
    let label_mtls = match endpoint_label_tls(policy, input.service_port) {
        Some(mode) => mode == TlsMode::IstioMutual,
        None => {
            if !input.endpoint.sidecar {
                return plaintext(format!("endpoint {} has no sidecar", input.endpoint.key()));
            }
            let endpoint_mode = peer_authn
                .resolve(input.endpoint.selector_view())
                .for_port(input.endpoint_port);
            endpoint_mode != EffectiveMtls::Disable
        }
    };
    if !label_mtls {
        return plaintext(format!(
            "endpoint {} does not accept mTLS on port {}",
            input.endpoint.key(),
            input.endpoint_port
        ));
    }
    ClientTls {
        mode: TlsMode::IstioMutual,
        source: TlsSource::AutoMtls,
        expected_sans: expand(&input.service_identities),
        sni: Some(sni),
        skip_verify: false,
        settings: None,
    }
}

/// authentication.md §1.2: "the expected server identities of a service are expanded with every
/// alias".
fn expand_sans(sans: &[String], mesh: &MeshSettings) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for san in sans {
        out.push(san.clone());
        let rest = san
            .strip_prefix("spiffe://")
            .and_then(|r| r.split_once('/'))
            .map(|(_, rest)| rest);
        if let Some(rest) = rest {
            for td in mesh.accepted_trust_domains() {
                let alias = format!("spiffe://{td}/{rest}");
                if !out.contains(&alias) {
                    out.push(alias);
                }
            }
        }
    }
    out.dedup();
    out
}
