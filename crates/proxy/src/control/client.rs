//! The config stream client: connect, say `Hello`, install each snapshot and ACK it (or NACK it
//! with the error and keep the last good one), ask for a JWKS refresh when a token names an
//! unknown key, and reconnect with backoff whenever the stream breaks. The proxy never drops its
//! configuration because the control plane went away: listeners keep enforcing the last state.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use meshward_api::TrustDomains;
use meshward_api::protocol::proto::config_discovery_client::ConfigDiscoveryClient;
use meshward_api::protocol::proto::{
    Ack, ControlMessage, Document, FetchedJwks, Hello, JwksRefresh, Nack, ProxyMessage, Snapshot,
    control_message, proxy_message,
};
use meshward_identity::service::ca_client_tls_config;
use meshward_identity::{Credentials, SpiffeId};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tonic::transport::{Endpoint, Uri};

use super::ControlOptions;
use super::bootstrap::control_plane_identity;
use super::compile::compile_snapshot;
use crate::inbound::{EventSink, InboundEvent};
use crate::state::StateHandle;

/// First reconnect delay.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Time allowed for TCP + TLS to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings, so a control plane that vanished without closing the connection is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// At most one JWKS refresh request per this interval (the control plane rate-limits too).
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Why the client cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The options are unusable.
    #[error("control plane client: {0}")]
    Config(String),
    /// The connection task ended before a configuration arrived.
    #[error("the control plane client stopped before receiving a configuration")]
    Stopped,
}

/// Exponential backoff with jitter: 100 ms doubling up to 5 s, each delay ±20 %.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // Jitter spreads the reconnects of many proxies after a control plane restart. It needs
        // no cryptographic randomness: RandomState is seeded randomly per instance.
        let unit = (RandomState::new().build_hasher().finish() % 1000) as f64 / 1000.0;
        base.mul_f64(0.8 + 0.4 * unit)
    }
}

/// What the client has done so far (tests and the admin view read it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Whether a stream is open now.
    pub connected: bool,
    /// How many streams were opened.
    pub connects: u64,
    /// Control-plane version of the configuration in force.
    pub applied_version: Option<u64>,
    /// The last NACK: version and error.
    pub last_nack: Option<(u64, String)>,
}

/// A running client. Dropping it stops the stream (the state stays as it is).
#[derive(Debug)]
pub struct ControlClient {
    state: Arc<StateHandle>,
    status: watch::Receiver<ClientStatus>,
    refresh: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ControlClient {
    /// Connects to the control plane as workload `namespace/name` with `credentials` (which must
    /// hold the workload certificate) and returns once the first snapshot is in force. Until
    /// then it retries with backoff, for as long as it takes.
    pub async fn connect(
        options: &ControlOptions,
        namespace: &str,
        name: &str,
        credentials: Arc<Credentials>,
        trust_domains: TrustDomains,
        identity: SpiffeId,
    ) -> Result<Self, ControlError> {
        let expected =
            control_plane_identity(options).map_err(|e| ControlError::Config(e.to_string()))?;
        let tls = ca_client_tls_config(credentials, &trust_domains, &[expected])
            .map_err(|e| ControlError::Config(e.to_string()))?;
        let dialer = Dialer::new(&options.address, TlsConnector::from(tls))?;
        let (status_tx, status) = watch::channel(ClientStatus::default());
        let (refresh, refresh_rx) = mpsc::channel(1);
        let (first_tx, first_rx) = oneshot::channel();
        let worker = Worker {
            dialer,
            hello: Hello {
                namespace: namespace.to_owned(),
                workload: name.to_owned(),
                pod_address: options
                    .pod_address
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            identity,
            state: None,
            first: Some(first_tx),
            applied: None,
            status: status_tx,
            refresh: refresh_rx,
        };
        let task = tokio::spawn(worker.run());
        let state = first_rx.await.map_err(|_| ControlError::Stopped)?;
        Ok(Self {
            state,
            status,
            refresh,
            task,
        })
    }

    /// The state the listeners enforce; replaced with every accepted snapshot.
    pub fn state(&self) -> &Arc<StateHandle> {
        &self.state
    }

    /// What the client has done so far, updated live.
    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.clone()
    }

    /// Asks the control plane to fetch this proxy's JWKS again (a token named an unknown `kid`).
    pub fn request_jwks_refresh(&self) {
        // A full channel means a request is already pending: this one adds nothing.
        let _ = self.refresh.try_send(());
    }

    /// A sender for JWKS refresh requests, for [`jwks_refresh_sink`].
    pub fn refresh_sender(&self) -> mpsc::Sender<()> {
        self.refresh.clone()
    }
}

/// Wraps an inbound event sink: a request refused because no key of the JWKS matches the
/// token's `kid` (authentication.md §5.4: "Jwks doesn't have key to match kid or alg from Jwt")
/// also asks the control plane for a fresh JWKS.
pub fn jwks_refresh_sink(inner: EventSink, refresh: mpsc::Sender<()>) -> EventSink {
    Arc::new(move |event: InboundEvent| {
        if event
            .response_code_details
            .as_deref()
            .is_some_and(|d| d.contains("Jwks_doesn't_have_key_to_match_kid"))
        {
            let _ = refresh.try_send(());
        }
        inner(event);
    })
}

struct Worker {
    dialer: Dialer,
    hello: Hello,
    identity: SpiffeId,
    state: Option<Arc<StateHandle>>,
    first: Option<oneshot::Sender<Arc<StateHandle>>>,
    /// The documents and JWKS in force, to ACK an identical snapshot without recompiling.
    applied: Option<(Vec<Document>, Vec<FetchedJwks>)>,
    status: watch::Sender<ClientStatus>,
    refresh: mpsc::Receiver<()>,
}

/// How a stream ended.
enum End {
    /// It delivered at least one snapshot: reconnect quickly.
    AfterSnapshots(String),
    /// It failed before delivering anything.
    Early(String),
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        loop {
            let end = self.session().await;
            self.status.send_modify(|s| s.connected = false);
            let reason = match end {
                End::AfterSnapshots(reason) => {
                    backoff.reset();
                    reason
                }
                End::Early(reason) => reason,
            };
            let delay = backoff.next_delay();
            tracing::warn!(
                reason = %reason,
                retry_in = ?delay,
                "control plane stream ended; enforcing the last configuration and reconnecting"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn session(&mut self) -> End {
        let endpoint = match Endpoint::from_shared(format!("http://{}", self.dialer.address)) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(CONNECT_TIMEOUT),
            Err(e) => return End::Early(format!("address {}: {e}", self.dialer.address)),
        };
        let channel = match endpoint.connect_with_connector(self.dialer.clone()).await {
            Ok(c) => c,
            Err(e) => return End::Early(format!("cannot connect: {}", error_chain(&e))),
        };
        let mut grpc = ConfigDiscoveryClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        let hello = ProxyMessage {
            message: Some(proxy_message::Message::Hello(self.hello.clone())),
        };
        if tx.send(hello).await.is_err() {
            return End::Early("the request stream closed".to_owned());
        }
        let mut inbound = match grpc
            .stream_config(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return End::Early(format!("stream refused: {}", status.message())),
        };
        self.status.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
        });
        tracing::info!(address = %self.dialer.address, "connected to the control plane");
        let mut received = false;
        let mut last_refresh: Option<Instant> = None;
        let end = |received: bool, reason: String| {
            if received {
                End::AfterSnapshots(reason)
            } else {
                End::Early(reason)
            }
        };
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(ControlMessage { message: Some(control_message::Message::Snapshot(snapshot)) })) => {
                        received = true;
                        let reply = self.apply(snapshot).await;
                        if tx.send(reply).await.is_err() {
                            return end(received, "the request stream closed".to_owned());
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return end(received, "the control plane closed the stream".to_owned()),
                    Err(status) => return end(received, format!("{}: {}", status.code(), status.message())),
                },
                Some(()) = self.refresh.recv() => {
                    if last_refresh.is_some_and(|at| at.elapsed() < JWKS_REFRESH_INTERVAL) {
                        continue;
                    }
                    last_refresh = Some(Instant::now());
                    let message = ProxyMessage {
                        message: Some(proxy_message::Message::JwksRefresh(JwksRefresh { uris: Vec::new() })),
                    };
                    if tx.send(message).await.is_err() {
                        return end(received, "the request stream closed".to_owned());
                    }
                }
            }
        }
    }

    /// Installs `snapshot` if it compiles; the ACK or NACK to send.
    async fn apply(&mut self, snapshot: Snapshot) -> ProxyMessage {
        let version = snapshot.version;
        let same = self
            .applied
            .as_ref()
            .is_some_and(|(docs, jwks)| *docs == snapshot.documents && *jwks == snapshot.jwks);
        if same {
            self.status
                .send_modify(|s| s.applied_version = Some(version));
            return ack(version);
        }
        let local_version = self.state.as_ref().map_or(1, |s| s.load().version + 1);
        let (namespace, name) = (self.hello.namespace.clone(), self.hello.workload.clone());
        let compiled = tokio::task::spawn_blocking(move || {
            let result = compile_snapshot(&snapshot, &namespace, &name, local_version);
            (snapshot, result)
        })
        .await;
        let (snapshot, result) = match compiled {
            Ok(pair) => pair,
            Err(e) => return self.nack(version, format!("compiling the snapshot failed: {e}")),
        };
        let state = match result {
            Ok(state) => state,
            Err(e) => return self.nack(version, e.to_string()),
        };
        if state.identity != self.identity {
            let message = format!(
                "the snapshot makes this workload {}, but its certificate is {}",
                state.identity, self.identity
            );
            return self.nack(version, message);
        }
        match &self.state {
            Some(handle) => handle.store(state),
            None => {
                let handle = StateHandle::new(state);
                self.state = Some(handle.clone());
                if let Some(first) = self.first.take() {
                    let _ = first.send(handle);
                }
            }
        }
        tracing::info!(version, "configuration from the control plane in force");
        self.applied = Some((snapshot.documents, snapshot.jwks));
        self.status
            .send_modify(|s| s.applied_version = Some(version));
        ack(version)
    }

    fn nack(&self, version: u64, error: String) -> ProxyMessage {
        tracing::error!(version, error = %error, "configuration refused; the last good configuration stays in force");
        self.status
            .send_modify(|s| s.last_nack = Some((version, error.clone())));
        ProxyMessage {
            message: Some(proxy_message::Message::Nack(Nack { version, error })),
        }
    }
}

fn ack(version: u64) -> ProxyMessage {
    ProxyMessage {
        message: Some(proxy_message::Message::Ack(Ack { version })),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !out.contains(&part) {
            out.push_str(": ");
            out.push_str(&part);
        }
        next = cause.source();
    }
    out
}

/// Dials TCP and runs the TLS handshake for tonic's channel.
#[derive(Clone)]
struct Dialer {
    address: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl Dialer {
    fn new(address: &str, tls: TlsConnector) -> Result<Self, ControlError> {
        let uri: Uri = format!("http://{address}")
            .parse()
            .map_err(|e| ControlError::Config(format!("control plane address {address:?}: {e}")))?;
        let (Some(host), Some(_)) = (uri.host(), uri.port_u16()) else {
            return Err(ControlError::Config(format!(
                "control plane address {address:?}: expected host:port"
            )));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| ControlError::Config(format!("TLS server name {host:?}: {e}")))?;
        Ok(Self {
            address: address.to_owned(),
            server_name,
            tls,
        })
    }
}

impl tower::Service<Uri> for Dialer {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, std::io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&this.address))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            let _ = tcp.set_nodelay(true);
            let tls = this.tls.connect(this.server_name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds_with_jitter() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(80) && delays[0] <= Duration::from_millis(120));
        assert!(delays[1] >= Duration::from_millis(160) && delays[1] <= Duration::from_millis(240));
        for d in &delays[6..] {
            assert!(
                *d >= Duration::from_secs(4) && *d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn an_unknown_kid_rejection_asks_for_a_jwks_refresh() {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let inner: EventSink = Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let (tx, mut rx) = mpsc::channel(1);
        let sink = jwks_refresh_sink(inner, tx);
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let event = |details: &str| {
            let mut e = InboundEvent::new(jiff::Timestamp::now(), addr, addr);
            e.response_code_details = Some(details.to_owned());
            e
        };
        sink(event("rbac_access_denied_matched_policy[none]"));
        assert!(rx.try_recv().is_err());
        sink(event(
            "jwt_authn_access_denied{Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt}",
        ));
        assert!(rx.try_recv().is_ok());
        assert_eq!(
            seen.load(Ordering::SeqCst),
            2,
            "events still reach the log and metrics"
        );
    }
}
