//! JWKS for `jwksUri`: fetched by the control plane and pushed to the proxies inside their
//! snapshots, as istiod does by default.
//!
//! authentication.md §5.6 (`PILOT_JWT_ENABLE_REMOTE_JWKS=false`, "istiod" mode): "istiod fetches
//! `jwksUri` […] The JWKS JSON is inlined into Envoy config (`local_jwks`). Refresh every 20 min
//! (`PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`), retry every 1 min on failure (backing off to 60 min)
//! […] Fetch failure or non-JWKS body ⇒ a fixed RSA public key whose private key was discarded is
//! inlined ⇒ every token for that issuer fails". meshward does the same: each URI has its own
//! task, so a slow or failing server holds up nothing but its own issuer's tokens (which are
//! rejected until a fetch succeeds). A failed *refresh* keeps the last good document, as istiod's
//! cache does.
//!
//! One deliberate extension: §5.6 says istiod does "no on-demand refetch on unknown `kid`";
//! meshward proxies ask for one ([`JwksCache::request_refresh`]) when a token names a key the
//! JWKS lacks, rate-limited per URI, so a key rotation at the issuer takes effect in seconds.
//!
//! Fetches use HTTP/1.1 over plain TCP or rustls (aws-lc-rs provider) with the system's roots
//! plus optional extra roots, are bounded in time and size, and follow no redirects. Not
//! implemented: OIDC discovery from the issuer when `jwksUri` is empty, and istiod's
//! `BLOCKED_CIDRS_IN_JWKS_URIS`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use meshward_api::protocol::proto::{FetchedJwks, fetched_jwks};
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Timing and bounds of JWKS fetching.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    /// How often a fetched JWKS is fetched again (`PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20 min).
    pub refresh_interval: Duration,
    /// First retry after a failed fetch (1 min); doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest delay between retries (60 min).
    pub retry_max: Duration,
    /// Time allowed for one fetch: connect, TLS, request and body.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Shortest time between two fetches of one URI asked for by proxies (unknown `kid`).
    pub on_demand_min_interval: Duration,
    /// Roots trusted for `https` besides the system's (a private issuer, tests).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(20 * 60),
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(60 * 60),
            timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
            on_demand_min_interval: Duration::from_secs(5),
            extra_roots: Vec::new(),
        }
    }
}

/// Why a JWKS could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksFetchError {
    /// The URI does not parse or has no host.
    #[error("invalid jwksUri `{uri}`: {reason}")]
    InvalidUri {
        /// The URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// Neither `http` nor `https`.
    #[error("jwksUri `{0}`: only http and https are supported")]
    UnsupportedScheme(String),
    /// No TCP connection.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The OS error.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls {
        /// The host.
        host: String,
        /// rustls' reason.
        reason: String,
    },
    /// The server answered with a non-2xx status.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// The body is larger than allowed.
    #[error("the response is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The fetch took too long.
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    /// The body is not UTF-8 text.
    #[error("the response is not UTF-8 text")]
    NotText,
    /// HTTP failed below the status line.
    #[error("HTTP error: {0}")]
    Http(String),
}

/// Fetches one URL over HTTP/1.1, with or without TLS, within the configured bounds.
#[derive(Clone)]
pub struct Fetcher {
    tls: TlsConnector,
    timeout: Duration,
    max_body_bytes: usize,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher trusting the system roots plus `options.extra_roots`.
    pub fn new(options: &JwksOptions) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        for root in &options.extra_roots {
            if let Err(e) = roots.add(root.clone()) {
                tracing::warn!(error = %e, "JWKS: an extra root certificate is unusable");
            }
        }
        tracing::debug!(system_roots = added, "JWKS fetcher roots loaded");
        let mut config =
            rustls::ClientConfig::builder_with_provider(meshward_identity::crypto::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            timeout: options.timeout,
            max_body_bytes: options.max_body_bytes,
        })
    }

    /// GETs `uri` and returns the body.
    pub async fn fetch(&self, uri: &str) -> Result<String, JwksFetchError> {
        match tokio::time::timeout(self.timeout, self.fetch_unbounded(uri)).await {
            Ok(result) => result,
            Err(_) => Err(JwksFetchError::Timeout(self.timeout)),
        }
    }

    async fn fetch_unbounded(&self, uri: &str) -> Result<String, JwksFetchError> {
        let invalid = |reason: &str| JwksFetchError::InvalidUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed: http::Uri = uri
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let secure = match parsed.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(JwksFetchError::UnsupportedScheme(uri.to_owned())),
        };
        let host = parsed.host().ok_or_else(|| invalid("no host"))?.to_owned();
        let port = parsed.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let address = if bare_host.contains(':') {
            format!("[{bare_host}]:{port}")
        } else {
            format!("{bare_host}:{port}")
        };
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|e| JwksFetchError::Connect {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let authority = parsed
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone());
        let path = parsed
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        if secure {
            let name = ServerName::try_from(bare_host.clone())
                .map_err(|e| invalid(&format!("host is not a TLS server name: {e}")))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| JwksFetchError::Tls {
                    host: bare_host.clone(),
                    reason: e.to_string(),
                })?;
            self.get(tls, &authority, &path).await
        } else {
            self.get(tcp, &authority, &path).await
        }
    }

    async fn get<S>(&self, io: S, authority: &str, path: &str) -> Result<String, JwksFetchError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http_error = |e: &dyn std::fmt::Display| JwksFetchError::Http(e.to_string());
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
                .await
                .map_err(|e| http_error(&e))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "meshward-control")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http_error(&e))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http_error(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(JwksFetchError::Status(status.as_u16()));
            }
            let limit = self.max_body_bytes;
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        JwksFetchError::TooLarge { limit }
                    } else {
                        JwksFetchError::Http(e.to_string())
                    }
                })?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| JwksFetchError::NotText)
        }
        .await;
        driver.abort();
        result
    }
}

/// The state of one URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum JwksResult {
    /// Not fetched yet: tokens of the issuer are rejected meanwhile.
    Pending,
    /// The body of the last successful fetch.
    Ready {
        /// The JWKS text.
        document: String,
    },
    /// Never fetched successfully.
    Failed {
        /// Why the last attempt failed.
        error: String,
    },
}

struct UriEntry {
    result: JwksResult,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for UriEntry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The JWKS of every `jwksUri` in the store. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<CacheInner>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").finish_non_exhaustive()
    }
}

struct CacheInner {
    options: JwksOptions,
    fetcher: Fetcher,
    entries: Mutex<HashMap<String, UriEntry>>,
    /// Bumped whenever a result changes (what proxies receive may then change).
    changes: watch::Sender<u64>,
}

/// One URI's status, for the admin API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwksStatus {
    /// The URI.
    pub uri: String,
    /// Its result.
    pub result: JwksResult,
    /// The error of the last attempt, even if an older document is still in use.
    pub last_error: Option<String>,
}

impl JwksCache {
    /// An empty cache. [`set_uris`](Self::set_uris) spawns fetch tasks on the current Tokio
    /// runtime.
    pub fn new(options: JwksOptions) -> Result<Self, rustls::Error> {
        let fetcher = Fetcher::new(&options)?;
        let (changes, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(CacheInner {
                options,
                fetcher,
                entries: Mutex::new(HashMap::new()),
                changes,
            }),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, UriEntry>> {
        // Entries are replaced whole under the lock; a panicked holder leaves them consistent.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notified with a new generation whenever a result changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The current generation (increases with every change of a result).
    pub fn generation(&self) -> u64 {
        *self.inner.changes.borrow()
    }

    /// Makes the cache follow exactly `uris`: new ones start fetching, dropped ones stop.
    pub fn set_uris(&self, uris: &BTreeSet<String>) {
        let mut entries = self.entries();
        entries.retain(|uri, _| uris.contains(uri));
        for uri in uris {
            if entries.contains_key(uri) {
                continue;
            }
            let wake = Arc::new(Notify::new());
            let task = tokio::spawn(fetch_loop(self.clone(), uri.clone(), wake.clone()));
            entries.insert(
                uri.clone(),
                UriEntry {
                    result: JwksResult::Pending,
                    last_attempt: None,
                    last_error: None,
                    wake,
                    task,
                },
            );
        }
    }

    /// What a proxy receives for `uri`.
    pub fn lookup(&self, uri: &str) -> FetchedJwks {
        let result = match self.entries().get(uri).map(|e| e.result.clone()) {
            Some(JwksResult::Ready { document }) => fetched_jwks::Result::Document(document),
            Some(JwksResult::Failed { error }) => fetched_jwks::Result::Error(error),
            Some(JwksResult::Pending) | None => fetched_jwks::Result::Error(
                "not fetched yet: tokens of this issuer are rejected until it is".to_owned(),
            ),
        };
        FetchedJwks {
            uri: uri.to_owned(),
            result: Some(result),
        }
    }

    /// A proxy saw a token whose `kid` is not in the JWKS of `uris`: fetch them again now, unless
    /// they were fetched less than `on_demand_min_interval` ago. Unknown URIs are ignored (a
    /// proxy cannot make the control plane fetch arbitrary URLs).
    pub fn request_refresh<'a>(&self, uris: impl IntoIterator<Item = &'a str>) {
        let min = self.inner.options.on_demand_min_interval;
        let entries = self.entries();
        for uri in uris {
            if let Some(entry) = entries.get(uri) {
                let recent = entry.last_attempt.is_some_and(|at| at.elapsed() < min);
                if recent {
                    tracing::debug!(uri, "JWKS refresh request ignored: fetched moments ago");
                } else {
                    tracing::info!(uri, "JWKS: refreshing on a proxy's request (unknown kid)");
                    entry.wake.notify_one();
                }
            }
        }
    }

    /// Every URI and its state, sorted.
    pub fn status(&self) -> Vec<JwksStatus> {
        let entries = self.entries();
        let sorted: BTreeMap<&String, &UriEntry> = entries.iter().collect();
        sorted
            .into_iter()
            .map(|(uri, e)| JwksStatus {
                uri: uri.clone(),
                result: e.result.clone(),
                last_error: e.last_error.clone(),
            })
            .collect()
    }

    /// Records an attempt's outcome; returns the delay until the next attempt.
    fn record(
        &self,
        uri: &str,
        outcome: Result<String, JwksFetchError>,
        failures: u32,
    ) -> Duration {
        let options = &self.inner.options;
        let mut changed = false;
        let delay;
        {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(uri) else {
                return options.refresh_interval;
            };
            match outcome {
                Ok(document) => {
                    let next = JwksResult::Ready { document };
                    changed = entry.result != next;
                    entry.result = next;
                    entry.last_error = None;
                    delay = options.refresh_interval;
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(uri, %error, "JWKS fetch failed");
                    entry.last_error = Some(error.clone());
                    // A failed refresh keeps the last good document, as istiod's cache does.
                    if !matches!(entry.result, JwksResult::Ready { .. }) {
                        let next = JwksResult::Failed { error };
                        changed = entry.result != next;
                        entry.result = next;
                    }
                    let factor = 2u32.saturating_pow(failures.min(16));
                    delay = options
                        .retry_initial
                        .saturating_mul(factor)
                        .min(options.retry_max);
                }
            }
        }
        if changed {
            self.inner.changes.send_modify(|g| *g += 1);
        }
        delay
    }

    fn mark_attempt(&self, uri: &str) {
        if let Some(entry) = self.entries().get_mut(uri) {
            entry.last_attempt = Some(Instant::now());
        }
    }
}

/// Fetches `uri` now, then again after each refresh interval or retry delay, or when woken by a
/// proxy's request.
async fn fetch_loop(cache: JwksCache, uri: String, wake: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        cache.mark_attempt(&uri);
        let outcome = cache.inner.fetcher.fetch(&uri).await;
        let ok = outcome.is_ok();
        let delay = cache.record(&uri, outcome, failures);
        failures = if ok { 0 } else { failures.saturating_add(1) };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {}
        }
    }
}
