//! `meshward analyze`: findings about a set of manifests, in the spirit of `istioctl analyze`.
//!
//! Pure: the caller loads the files ([`meshward_api::load_paths`]) and hands over the
//! [`LoadReport`]; nothing here reads files or prints. Each family of analyzers lives in its own
//! module, whose doc comment quotes the rule it implements (shared/spec/authorization.md and
//! authentication.md, by section). Decisions (which policies select a workload, the effective
//! PeerAuthentication of a port, what a rule becomes on a TCP chain, what a client sidecar
//! originates) are asked of the engine, so `analyze` says what `check` and the proxy do.
//!
//! Codes. Istio's own codes where Istio has an analyzer for the problem (authorization.md §8.3,
//! authentication.md §7.2):
//!
//! | code | name | level |
//! | --- | --- | --- |
//! | IST0101 | ReferencedResourceNotFound | Warning (Istio: Error — offline, files are a partial view of the cluster) |
//! | IST0102 | NamespaceNotInjected | Info |
//! | IST0103 | PodMissingProxy | Warning |
//! | IST0106 | SchemaValidationError | Error |
//! | IST0127 | NoMatchingWorkloadsFound | Warning |
//! | IST0133 | SchemaWarning | Warning |
//!
//! meshward's own codes, for traps Istio accepts silently. The numbers are stable: a code is
//! never reused or renumbered.
//!
//! | code | name | catches |
//! | --- | --- | --- |
//! | MW0001 | HttpFieldOnTcpPort | HTTP-only fields (`methods`, `paths`, `hosts`, `requestPrincipals`) in a rule that applies to a TCP port |
//! | MW0002 | HttpConditionOnTcpPort | `when` keys that need HTTP (`request.headers[…]`, `request.auth.*`) on a TCP port |
//! | MW0003 | IdentityRuleAcceptsPlaintext | principal/namespace rules on a workload that still accepts plaintext |
//! | MW0004 | TokenNotRequired | a RequestAuthentication that nothing requires a token for |
//! | MW0005 | AnyRequestPrincipal | `requestPrincipals: ["*"]` means "any valid token" |
//! | MW0006 | PrincipalNeverMatches | principals written with `spiffe://` or with an inner `*` |
//! | MW0007 | QuotedBracketKey | `request.headers["x"]`: the quotes are part of the name |
//! | MW0008 | PlaintextToStrictServer | DestinationRule `DISABLE` towards a STRICT server |
//! | MW0009 | ShadowedByDeny | ALLOW policies under a DENY that matches every request |
//! | MW0010 | RuleNeverMatches | a field whose every value is also excluded by its `not…` twin |
//! | MW0011 | SplitRule | a list item that turns an AND into an OR |
//! | MW0012 | PeerAddressIsAProxy | public client addresses in `ipBlocks` / `source.ip` on a sidecar, which sees the gateway's address |
//! | MW0013 | OnlyAllowNothing | (info) a workload whose only ALLOW policies have no rules refuses every request |

mod addresses;
mod allow_nothing;
mod client_tls;
mod conditions;
mod identity;
mod jwt;
mod references;
mod rules;
mod schema;
mod tcp;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use meshward_api::policytest::{POLICY_TEST_API_VERSION, PolicyTest};
use meshward_api::resources::security::{AuthorizationPolicy, Rule};
use meshward_api::{
    FieldPath, LoadReport, LoadedResource, LoadedTest, Location, Origin, Resource, ResourceId,
};

use crate::authz::identity::TrustDomainBundle;
use crate::authz::{AuthzIndex, CompiledPolicy, compile_policy};
use crate::declared::build_mesh;
use crate::flow::Mesh;
use crate::inventory::Workload;

/// How bad a finding is. Only errors make `meshward analyze` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Refused by Istio, or certainly broken.
    Error,
    /// Accepted, but does not do what it appears to.
    Warning,
    /// Worth knowing.
    Info,
}

impl Level {
    /// Istio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error, warning or info.
    pub level: Level,
    /// `IST0127`, `MW0003`, …
    pub code: &'static str,
    /// The code's name, `NoMatchingWorkloadsFound`.
    pub name: &'static str,
    /// The resource concerned (`None` for a file that does not parse).
    pub resource: Option<ResourceId>,
    /// File name as given.
    pub file: Arc<str>,
    /// Line and column of the field concerned, when known.
    pub location: Option<Location>,
    /// The field concerned, relative to the resource.
    pub field: FieldPath,
    /// What is wrong and what it does.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// The PolicyTests whose configuration shows the problem, when the files as a whole do not:
    /// a tutorial stage (its included manifests and embedded resources, its workloads) that a
    /// later stage changes. Empty for a finding about the files as a whole.
    pub stages: Vec<String>,
    /// The workloads (`ns/name`) the finding is about, when it concerns some of the workloads
    /// its resource applies to and not the others; empty when it concerns the resource as a
    /// whole.
    pub workloads: Vec<String>,
}

impl Finding {
    /// `, in PolicyTest NAME` (`… and N more stage(s)`) when the finding holds only in stages.
    pub fn stages_text(&self) -> String {
        match self.stages.as_slice() {
            [] => String::new(),
            [one] => format!(", in PolicyTest {one}"),
            [first, rest @ ..] => {
                format!(", in PolicyTest {first} and {} more stage(s)", rest.len())
            }
        }
    }
}

impl fmt::Display for Finding {
    /// `istioctl analyze` style: `Warning [IST0127] (AuthorizationPolicy ns/name file:line) …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] (", self.level, self.code)?;
        if let Some(id) = &self.resource {
            write!(f, "{id} ")?;
        }
        write!(f, "{}", self.file)?;
        if let Some(loc) = self.location {
            write!(f, ":{}", loc.line)?;
        }
        write!(f, "{}) {}", self.stages_text(), self.message)
    }
}

/// Describes a code: `(code, name)`.
type Code = (&'static str, &'static str);

pub(crate) const IST0101: Code = ("IST0101", "ReferencedResourceNotFound");
pub(crate) const IST0102: Code = ("IST0102", "NamespaceNotInjected");
pub(crate) const IST0103: Code = ("IST0103", "PodMissingProxy");
pub(crate) const IST0106: Code = ("IST0106", "SchemaValidationError");
pub(crate) const IST0127: Code = ("IST0127", "NoMatchingWorkloadsFound");
pub(crate) const IST0133: Code = ("IST0133", "SchemaWarning");
pub(crate) const MW0001: Code = ("MW0001", "HttpFieldOnTcpPort");
pub(crate) const MW0002: Code = ("MW0002", "HttpConditionOnTcpPort");
pub(crate) const MW0003: Code = ("MW0003", "IdentityRuleAcceptsPlaintext");
pub(crate) const MW0004: Code = ("MW0004", "TokenNotRequired");
pub(crate) const MW0005: Code = ("MW0005", "AnyRequestPrincipal");
pub(crate) const MW0006: Code = ("MW0006", "PrincipalNeverMatches");
pub(crate) const MW0007: Code = ("MW0007", "QuotedBracketKey");
pub(crate) const MW0008: Code = ("MW0008", "PlaintextToStrictServer");
pub(crate) const MW0009: Code = ("MW0009", "ShadowedByDeny");
pub(crate) const MW0010: Code = ("MW0010", "RuleNeverMatches");
pub(crate) const MW0011: Code = ("MW0011", "SplitRule");
pub(crate) const MW0012: Code = ("MW0012", "PeerAddressIsAProxy");
pub(crate) const MW0013: Code = ("MW0013", "OnlyAllowNothing");

/// Every code this module can report, in order, with its name.
pub const CODES: &[Code] = &[
    IST0101, IST0102, IST0103, IST0106, IST0127, IST0133, MW0001, MW0002, MW0003, MW0004, MW0005,
    MW0006, MW0007, MW0008, MW0009, MW0010, MW0011, MW0012, MW0013,
];

/// What the analyzers read: the resources of the files, and the mesh they make.
pub(crate) struct Context<'a> {
    pub(crate) report: &'a LoadReport,
    pub(crate) mesh: Mesh,
    pub(crate) bundle: TrustDomainBundle,
    /// Namespaces that exist as far as the files tell: declared Namespaces, and the namespaces
    /// of every resource and workload.
    pub(crate) namespaces: BTreeSet<String>,
}

impl<'a> Context<'a> {
    fn new(report: &'a LoadReport) -> Self {
        let mesh = mesh_of(report);
        let bundle = TrustDomainBundle::new(
            &mesh.settings.trust_domain,
            &mesh.settings.trust_domain_aliases,
        );
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        for r in &report.resources {
            let id = r.resource.id();
            if id.kind.is_namespaced() {
                namespaces.insert(id.namespace);
            } else {
                namespaces.insert(id.name);
            }
        }
        namespaces.extend(mesh.inventory.workloads.iter().map(|w| w.namespace.clone()));
        namespaces.extend(mesh.inventory.namespaces.keys().cloned());
        namespaces.insert(mesh.settings.root_namespace.clone());
        Context {
            report,
            mesh,
            bundle,
            namespaces,
        }
    }

    /// The resources analyzed: the files' own, or a PolicyTest stage's (see [`analyze`]).
    pub(crate) fn resources(&self) -> impl Iterator<Item = &'a LoadedResource> + 'a {
        self.report.resources.iter()
    }

    /// Every AuthorizationPolicy of the files, with its origin.
    pub(crate) fn authorization_policies(
        &self,
    ) -> impl Iterator<Item = (&'a AuthorizationPolicy, &'a LoadedResource)> + 'a {
        self.resources().filter_map(|r| match &r.resource {
            Resource::AuthorizationPolicy(p) => Some((p, r)),
            _ => None,
        })
    }

    /// True when the files describe at least one workload; analyzers that need to know who is
    /// in the mesh stay quiet otherwise (a folder of policies alone says nothing about pods).
    pub(crate) fn knows_workloads(&self) -> bool {
        !self.mesh.inventory.workloads.is_empty()
    }

    /// The policy compiled by the engine, and the workloads (with a sidecar) it applies to
    /// (authorization.md §2, asked of [`AuthzIndex`]).
    pub(crate) fn authz_targets(
        &self,
        policy: &AuthorizationPolicy,
    ) -> (CompiledPolicy, Vec<&Workload>) {
        let compiled = compile_policy(Arc::new(policy.clone()), &self.bundle);
        let index = AuthzIndex::build([policy], &self.mesh.settings);
        let targets = self
            .mesh
            .inventory
            .workloads
            .iter()
            .filter(|w| w.sidecar && !index.select(w.selector_view()).is_empty())
            .collect();
        (compiled, targets)
    }

    /// A finding about `field` of a loaded resource.
    pub(crate) fn finding(
        &self,
        code: Code,
        level: Level,
        loaded: &LoadedResource,
        field: FieldPath,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        finding_at(
            code,
            level,
            &loaded.origin,
            Some(loaded.resource.id()),
            field,
            message,
            fix,
        )
    }
}

pub(crate) fn finding_at(
    code: Code,
    level: Level,
    origin: &Origin,
    resource: Option<ResourceId>,
    field: FieldPath,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        level,
        code: code.0,
        name: code.1,
        resource,
        file: origin.file.clone(),
        location: origin.locate(&field),
        field,
        message: message.into(),
        fix: fix.into(),
        stages: Vec::new(),
        workloads: Vec::new(),
    }
}

/// The mesh the files describe: their resources, plus the workloads, services and first
/// `meshConfig` declared by PolicyTests among them (tutorials start clients with `kubectl run`,
/// which PolicyTests declare). The PolicyTests' own resources are left out: they restate the
/// files, in earlier stages or fixed.
fn mesh_of(report: &LoadReport) -> Mesh {
    let mut test = PolicyTest {
        api_version: POLICY_TEST_API_VERSION.to_owned(),
        kind: "PolicyTest".to_owned(),
        metadata: Default::default(),
        spec: Default::default(),
    };
    let mut seen_w = BTreeSet::new();
    let mut seen_s = BTreeSet::new();
    for t in &report.tests {
        for w in &t.test.spec.workloads {
            if seen_w.insert((w.namespace.clone().unwrap_or_default(), w.name.clone())) {
                test.spec.workloads.push(w.clone());
            }
        }
        for s in &t.test.spec.services {
            if seen_s.insert((s.namespace.clone().unwrap_or_default(), s.name.clone())) {
                test.spec.services.push(s.clone());
            }
        }
        if test.spec.mesh_config.is_none() {
            test.spec.mesh_config = t.test.spec.mesh_config.clone();
        }
    }
    let declared = test.spec.workloads.len();
    let mut mesh = match build_mesh(&test, &report.resources) {
        Ok(mesh) => mesh,
        Err(_) => {
            // A declared workload with a bad address: the PolicyTest run reports it; analyze
            // goes on with the manifests alone.
            test.spec.workloads.clear();
            test.spec.services.clear();
            return build_mesh(&test, &report.resources).unwrap_or_default();
        }
    };
    // Workloads from manifests win over PolicyTest declarations of the same name; a manifest
    // loaded twice (a tutorial's `steps/` folder) counts once.
    let all = std::mem::take(&mut mesh.inventory.workloads);
    let (tests, manifests) = all.split_at(declared.min(all.len()));
    let mut keys = BTreeSet::new();
    for w in manifests.iter().chain(tests) {
        if keys.insert(w.key()) {
            mesh.inventory.workloads.push(w.clone());
        }
    }
    let mut svc_keys = BTreeSet::new();
    mesh.inventory
        .services
        .retain(|s| svc_keys.insert((s.namespace.clone(), s.name.clone())));
    mesh
}

/// Runs every analyzer on the files as a whole, then on each PolicyTest's own configuration (a
/// tutorial stage), and reports the errors and warnings only a stage shows with that stage's
/// name. Findings are sorted by file, line and code, duplicates removed.
pub fn analyze(report: &LoadReport) -> Vec<Finding> {
    let mut out = run_analyzers(report);
    let whole: BTreeSet<FindingKey<'_>> = out.iter().map(FindingKey::of).collect();
    let mut staged: Vec<Finding> = Vec::new();
    for test in report.tests.iter().filter(|t| is_stage(t)) {
        let name = test.test.metadata.name.clone().unwrap_or_default();
        for mut finding in run_analyzers(&stage_report(test)) {
            let key = FindingKey::of(&finding);
            // A stage is a step on the way: its traps matter, its information does not (deny-all
            // refusing everything before the ALLOWs arrive is the step's point).
            if whole.contains(&key) || finding.level == Level::Info {
                continue;
            }
            match staged.iter_mut().find(|s| FindingKey::of(s) == key) {
                Some(seen) => seen.stages.push(name.clone()),
                None => {
                    finding.stages.push(name.clone());
                    staged.push(finding);
                }
            }
        }
    }
    out.extend(staged);
    sort(&mut out);
    out
}

/// By file, line, code and message.
fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (&a.file, a.location, a.code, &a.message).cmp(&(&b.file, b.location, b.code, &b.message))
    });
}

/// What makes two findings the same problem.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct FindingKey<'a> {
    file: &'a str,
    location: Option<Location>,
    code: &'static str,
    message: &'a str,
}

impl<'a> FindingKey<'a> {
    fn of(f: &'a Finding) -> Self {
        FindingKey {
            file: &f.file,
            location: f.location,
            code: f.code,
            message: &f.message,
        }
    }
}

/// A PolicyTest describes a configuration worth analyzing when it loaded cleanly and does not
/// test refusal: a test expecting validation errors holds deliberately wrong resources.
fn is_stage(test: &LoadedTest) -> bool {
    test.test.spec.expect_errors.is_none()
        && !test.diagnostics.iter().any(|d| d.is_error())
        && !test.resources.is_empty()
}

/// A PolicyTest's configuration as a load report of its own: its resources (included and
/// embedded), their load warnings, and the test itself for its workloads and `meshConfig`.
fn stage_report(test: &LoadedTest) -> LoadReport {
    LoadReport {
        resources: test.resources.clone(),
        tests: vec![test.clone()],
        skipped: test.skipped.clone(),
        diagnostics: test.diagnostics.clone(),
    }
}

/// Every analyzer on one configuration, duplicates removed.
fn run_analyzers(report: &LoadReport) -> Vec<Finding> {
    let cx = Context::new(report);
    let mut out = Vec::new();
    schema::analyze(&cx, &mut out);
    references::analyze(&cx, &mut out);
    tcp::analyze(&cx, &mut out);
    identity::analyze(&cx, &mut out);
    jwt::analyze(&cx, &mut out);
    conditions::analyze(&cx, &mut out);
    client_tls::analyze(&cx, &mut out);
    rules::analyze(&cx, &mut out);
    addresses::analyze(&cx, &mut out);
    allow_nothing::analyze(&cx, &mut out);
    sort(&mut out);
    out.dedup();
    out
}

/// The rules of a policy with their field paths (`spec.rules[i]`), null rules skipped.
pub(crate) fn rules_of(
    policy: &AuthorizationPolicy,
) -> impl Iterator<Item = (usize, &Rule, FieldPath)> {
    policy
        .spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref()
                .map(|r| (i, r, FieldPath::root().key("spec").key("rules").index(i)))
        })
}

/// `ns/name` of workloads, comma-separated, at most five then `…`.
pub(crate) fn names(workloads: &[&Workload]) -> String {
    let mut keys: Vec<String> = workloads.iter().map(|w| w.key()).collect();
    keys.sort();
    keys.dedup();
    if keys.len() > 5 {
        let more = keys.len() - 5;
        keys.truncate(5);
        format!("{} and {more} more", keys.join(", "))
    } else {
        keys.join(", ")
    }
}

/// `ns/name:port` items, grouped by workload.
pub(crate) fn ports_text(items: &BTreeMap<String, Vec<u16>>) -> String {
    items
        .iter()
        .map(|(w, ports)| {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!("{w} port {}", ports.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
