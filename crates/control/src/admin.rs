//! The admin HTTP API (loopback only, default `127.0.0.1:15014`): what `meshward apply|delete|get`
//! and the local mesh runtime talk to.
//!
//! | method and path | body / query | answer |
//! | --- | --- | --- |
//! | `GET /healthz` | | `ok` |
//! | `GET /api/v1/status` | | store version, resource and proxy counts |
//! | `POST /api/v1/apply` | `{"files": [{"name", "text"}]}` | 200 `{version, changes, skipped, warnings}`; 422 `{errors}` (file:line:column: field) and nothing changes |
//! | `POST /api/v1/delete` | `{"files": [...]}` or `{"resources": [{"kind","namespace","name"}]}` | 200 `{version, changes}` |
//! | `GET /api/v1/resources` | `?kind=&namespace=` | `{version, items: [{kind, namespace, name, origin, line, source, object}]}` |
//! | `GET /api/v1/workloads` | `?namespace=` | the mesh's workloads: identity, address, labels |
//! | `GET /api/v1/describe` | `?subject=pod\|workload&namespace=&name=` | 200 the workload's description (`meshward_policy::describe::Description`); 404 `{errors}` |
//! | `GET /api/v1/snapshot` | | the store's current version as source documents, with who wrote each and the JWKS proxies receive ([`StoreSnapshot`]); what `meshward check` and `meshward analyze` compute on without `-f` |
//! | `GET /api/v1/proxies` | | every proxy stream: connected, versions sent and ACKed, last NACK, the certificate it holds |
//! | `GET /api/v1/jwks` | | each `jwksUri` and its fetch state |
//! | `POST /api/v1/tokens` | `{"namespace", "serviceAccount"}` | `{token, identity}`: a bootstrap token for the CA |
//! | `GET /api/v1/ca/root` | | the mesh root certificates (PEM) |
//!
//! The API has no authentication of its own: it listens on a loopback address and is meant for
//! the user who runs the control plane (like a local Kubernetes API with an admin kubeconfig).
//! Anyone who can reach it can change policy and obtain bootstrap tokens.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshward_api::{LoadReport, SpiffeId, TrustDomain};
use meshward_identity::service::BootstrapTokens;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::jwks::JwksCache;
use crate::push::ProxyRegistry;
use crate::store::{InputFile, Source, Store, StoreError, StoreKey};

mod snapshot;

pub use snapshot::{SnapshotDocument, SnapshotJwks, StoreSnapshot, WrittenBy};

/// Everything the admin API reads and changes.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Store,
    /// Proxy streams.
    pub registry: Arc<ProxyRegistry>,
    /// JWKS.
    pub jwks: JwksCache,
    /// Bootstrap tokens accepted by the CA.
    pub tokens: Arc<RwLock<BootstrapTokens>>,
    /// The mesh trust domain (identities of issued tokens).
    pub trust_domain: TrustDomain,
    /// The mesh roots, PEM.
    pub roots_pem: String,
    /// Where resources of generated watched files really come from.
    pub origins: Arc<Origins>,
}

/// The manifests that watched files restate, loaded once (see
/// `ControlPlaneOptions::origins_from`), and the watched files' names.
#[derive(Debug, Default)]
pub struct Origins {
    watched: Vec<String>,
    manifests: LoadReport,
}

impl Origins {
    /// Loads `manifests`; a file that cannot be read only leaves its resources located in the
    /// watched files.
    pub fn load(watched: &[PathBuf], manifests: &[PathBuf]) -> Self {
        if manifests.is_empty() {
            return Self::default();
        }
        let manifests = meshward_api::load_paths(manifests).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "manifests for origins unreadable; resources stay located in the generated files");
            LoadReport::default()
        });
        Origins {
            watched: watched.iter().map(|p| p.display().to_string()).collect(),
            manifests,
        }
    }

    /// `report` with every watched file's resources that the manifests hold unchanged located
    /// in the manifests.
    pub fn restate(&self, report: &mut LoadReport) {
        for file in &self.watched {
            report.restate_origins(file, &self.manifests);
        }
    }
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// The canonical kind for a name `meshward get` accepts: the kind itself (any case), its plural,
/// or its short name (`ap`, `pa`, `ra`, `dr`, `svc`, `po`, `ns`, `sa`, `deploy`, `we`).
pub fn canonical_kind(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    Some(match lower.as_str() {
        "authorizationpolicy" | "authorizationpolicies" | "ap" => "AuthorizationPolicy",
        "peerauthentication" | "peerauthentications" | "pa" => "PeerAuthentication",
        "requestauthentication" | "requestauthentications" | "ra" => "RequestAuthentication",
        "destinationrule" | "destinationrules" | "dr" => "DestinationRule",
        "workloadentry" | "workloadentries" | "we" => "WorkloadEntry",
        "service" | "services" | "svc" => "Service",
        "pod" | "pods" | "po" => "Pod",
        "deployment" | "deployments" | "deploy" => "Deployment",
        "namespace" | "namespaces" | "ns" => "Namespace",
        "serviceaccount" | "serviceaccounts" | "sa" => "ServiceAccount",
        "policytest" | "policytests" => "PolicyTest",
        _ => return None,
    })
}

/// The router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/status", get(status))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/delete", post(delete))
        .route("/api/v1/resources", get(resources))
        .route("/api/v1/workloads", get(workloads))
        .route("/api/v1/describe", get(describe))
        .route("/api/v1/snapshot", get(store_snapshot))
        .route("/api/v1/proxies", get(proxies))
        .route("/api/v1/jwks", get(jwks))
        .route("/api/v1/tokens", post(tokens))
        .route("/api/v1/ca/root", get(root))
        .with_state(state)
}

fn refused(e: &StoreError) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "errors": e.lines() })),
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "errors": [message] })),
    )
        .into_response()
}

async fn status(State(state): State<AdminState>) -> Json<Value> {
    let current = state.store.current();
    let proxies = state.registry.list();
    Json(json!({
        "version": current.version,
        "resources": current.entries.len(),
        "proxies": proxies.iter().filter(|p| p.connected).count(),
    }))
}

#[derive(Debug, Deserialize)]
struct FilesBody {
    #[serde(default)]
    files: Vec<InputFile>,
    #[serde(default)]
    resources: Vec<KeyBody>,
}

#[derive(Debug, Deserialize)]
struct KeyBody {
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
}

#[derive(Debug, Serialize)]
struct ChangeLine {
    kind: String,
    namespace: String,
    name: String,
    action: crate::store::Action,
}

fn change_body(outcome: &crate::store::ChangeOutcome) -> Json<Value> {
    let changes: Vec<ChangeLine> = outcome
        .changes
        .iter()
        .map(|(k, a)| ChangeLine {
            kind: k.kind.clone(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            action: *a,
        })
        .collect();
    Json(json!({
        "version": outcome.version,
        "changes": changes,
        "skipped": outcome.skipped,
        "warnings": outcome.warnings,
    }))
}

async fn apply(State(state): State<AdminState>, Json(body): Json<FilesBody>) -> Response {
    let store = state.store.clone();
    // Loading and building the mesh is CPU work; keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || store.apply(Source::Api, &body.files)).await;
    match result {
        Ok(Ok(outcome)) => change_body(&outcome).into_response(),
        Ok(Err(e)) => refused(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn delete(State(state): State<AdminState>, Json(body): Json<FilesBody>) -> Response {
    let store = state.store.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut outcome = store.delete_files(&body.files)?;
        if !body.resources.is_empty() {
            let keys: Vec<StoreKey> = body
                .resources
                .iter()
                .map(|k| {
                    let kind = canonical_kind(&k.kind)
                        .unwrap_or(k.kind.as_str())
                        .to_owned();
                    let namespace = if kind == "Namespace" {
                        String::new()
                    } else {
                        k.namespace.clone().unwrap_or_else(|| "default".to_owned())
                    };
                    StoreKey {
                        kind,
                        namespace,
                        name: k.name.clone(),
                    }
                })
                .collect();
            let more = store.delete(&keys)?;
            outcome.version = more.version;
            outcome.changes.extend(more.changes);
        }
        Ok::<_, StoreError>(outcome)
    })
    .await;
    match result {
        Ok(Ok(outcome)) => change_body(&outcome).into_response(),
        Ok(Err(e)) => refused(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ResourceQuery {
    kind: Option<String>,
    namespace: Option<String>,
}

async fn resources(
    State(state): State<AdminState>,
    Query(query): Query<ResourceQuery>,
) -> Response {
    let kind = match query.kind.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => match canonical_kind(k) {
            Some(kind) => Some(kind),
            None => return bad_request(format!("unknown resource kind `{k}`")),
        },
    };
    let current = state.store.current();
    let items: Vec<Value> = current
        .entries
        .iter()
        .filter(|e| kind.is_none_or(|k| e.key.kind == k))
        .filter(|e| {
            query
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .is_none_or(|n| e.key.namespace == n)
        })
        .map(|e| {
            json!({
                "kind": e.key.kind,
                "namespace": e.key.namespace,
                "name": e.key.name,
                "origin": e.document.origin,
                "line": e.document.first_line,
                "source": e.source,
                "object": e.object,
            })
        })
        .collect();
    Json(json!({ "version": current.version, "items": items })).into_response()
}

#[derive(Debug, Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

/// The mesh's workloads as the store's mesh has them (the same inventory the proxies compile).
async fn workloads(
    State(state): State<AdminState>,
    Query(query): Query<NamespaceQuery>,
) -> Json<Value> {
    let current = state.store.current();
    let mesh = &current.mesh;
    let td = &mesh.settings.trust_domain;
    let items: Vec<Value> = mesh
        .inventory
        .workloads
        .iter()
        .filter(|w| {
            query
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .is_none_or(|n| w.namespace == n)
        })
        .map(|w| {
            json!({
                "namespace": w.namespace,
                "name": w.name,
                "serviceAccount": w.service_account,
                "identity": w.spiffe_id(td),
                "address": w.address.to_string(),
                "labels": w.labels,
                "sidecar": w.sidecar,
                "ports": w.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "version": current.version, "workloads": items }))
}

#[derive(Debug, Deserialize)]
struct DescribeQuery {
    subject: Option<meshward_policy::describe::Subject>,
    namespace: Option<String>,
    name: String,
}

/// `meshward describe` against the running mesh: the description computed from the store's
/// resources, by the same function that describes files.
async fn describe(State(state): State<AdminState>, Query(query): Query<DescribeQuery>) -> Response {
    use meshward_policy::describe::{Query as Describe, Subject, describe};
    let request = Describe {
        subject: query.subject.unwrap_or(Subject::Pod),
        namespace: query
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        name: query.name,
    };
    let current = state.store.current();
    let origins = state.origins.clone();
    // Analyzing and describing is CPU work; keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let mut report = current.report();
        origins.restate(&mut report);
        describe(&report, &request)
    })
    .await;
    match result {
        Ok(Ok(description)) => Json(description).into_response(),
        Ok(Err(e)) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "errors": [e.to_string()] })),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The store as documents; `meshward check` and `meshward analyze` run `meshward-policy` on it
/// in the CLI, as they do on files.
async fn store_snapshot(State(state): State<AdminState>) -> Json<StoreSnapshot> {
    let current = state.store.current();
    let jwks = state.jwks.clone();
    Json(StoreSnapshot::of(&current, &|uri: &str| jwks.lookup(uri)))
}

async fn proxies(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "proxies": state.registry.list() }))
}

async fn jwks(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "jwks": state.jwks.status() }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    namespace: String,
    service_account: String,
}

async fn tokens(State(state): State<AdminState>, Json(body): Json<TokenBody>) -> Response {
    let identity = match SpiffeId::new(
        state.trust_domain.clone(),
        &body.namespace,
        &body.service_account,
    ) {
        Ok(id) => id,
        Err(e) => return bad_request(e.to_string()),
    };
    let issued = match state.tokens.write() {
        Ok(mut tokens) => tokens.issue(identity.clone()).map_err(|e| e.to_string()),
        Err(_) => Err("the token table is unavailable".to_owned()),
    };
    match issued {
        Ok(token) => Json(json!({ "token": token, "identity": identity.uri() })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn root(State(state): State<AdminState>) -> String {
    state.roots_pem.clone()
}
