//! Upstream HTTP connections kept for reuse, keyed by (endpoint, transport with its expected
//! identities and SNI, HTTP version): a connection verified for one set of identities is never
//! handed to a request that expects another.
//!
//! HTTP/1.1 connections carry one request at a time: they come back after the response body
//! ends and the connection says it can take another request. HTTP/2 connections are shared by
//! every request while they stay open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};

use super::body::Body;
use super::connect::ConnectionInfo;
use super::resolve::Transport;

/// How long a connection that finished a response may take to become ready for the next
/// request before it is given up (it is usually closing).
const READY_WAIT: Duration = Duration::from_secs(5);

/// Which connections may serve a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// The upstream `ip:port`.
    pub(crate) addr: SocketAddr,
    /// Plaintext, or mTLS with its SNI and expected identities.
    pub(crate) transport: Transport,
    /// HTTP/2?
    pub(crate) h2: bool,
}

/// The request half of an upstream HTTP connection.
#[derive(Debug)]
pub(crate) enum Sender {
    /// HTTP/1.1.
    H1(http1::SendRequest<Body>),
    /// HTTP/2.
    H2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }
}

/// A connection taken from the pool.
#[derive(Debug)]
pub(crate) struct Pooled {
    pub(crate) sender: Sender,
    pub(crate) info: Arc<ConnectionInfo>,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    info: Arc<ConnectionInfo>,
    since: Instant,
}

/// The pool.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    idle_timeout: Duration,
    max_idle_per_key: usize,
}

impl Pool {
    pub(crate) fn new(idle_timeout: Duration, max_idle_per_key: usize) -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            max_idle_per_key,
        }
    }

    /// A ready connection for `key`, most recently used first.
    pub(crate) fn checkout(&self, key: &PoolKey) -> Option<Pooled> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        list.retain(|e| !e.sender.is_closed() && now.duration_since(e.since) < self.idle_timeout);
        let found = match list.iter().rposition(|e| e.sender.is_ready()) {
            None => None,
            Some(i) => {
                let h2 = match list.get_mut(i) {
                    Some(Idle {
                        sender: Sender::H2(s),
                        info,
                        since,
                    }) => {
                        *since = now;
                        Some(Pooled {
                            sender: Sender::H2(s.clone()),
                            info: info.clone(),
                        })
                    }
                    _ => None,
                };
                match h2 {
                    // HTTP/2 connections stay in the pool, shared.
                    Some(shared) => Some(shared),
                    None => {
                        let e = list.swap_remove(i);
                        Some(Pooled {
                            sender: e.sender,
                            info: e.info,
                        })
                    }
                }
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Shares a new HTTP/2 connection with later requests.
    pub(crate) fn share_h2(
        &self,
        key: PoolKey,
        sender: &http2::SendRequest<Body>,
        info: Arc<ConnectionInfo>,
    ) {
        self.put(key, Sender::H2(sender.clone()), info);
    }

    /// Returns an HTTP/1.1 connection whose response is complete, once it can take another
    /// request.
    pub(crate) fn checkin_h1(
        self: &Arc<Self>,
        key: PoolKey,
        mut sender: http1::SendRequest<Body>,
        info: Arc<ConnectionInfo>,
    ) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await
                && let Some(pool) = pool.upgrade()
            {
                pool.put(key, Sender::H1(sender), info);
            }
        });
    }

    fn put(&self, key: PoolKey, sender: Sender, info: Arc<ConnectionInfo>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Sweep everything on the way: the pool never holds dead or expired connections for
        // destinations that are no longer asked for.
        self.sweep_locked(&mut idle, now);
        let list = idle.entry(key).or_default();
        if list.len() < self.max_idle_per_key {
            list.push(Idle {
                sender,
                info,
                since: now,
            });
        }
    }

    /// Closes the connections idle for longer than the idle timeout.
    pub(crate) fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweep_locked(&mut idle, Instant::now());
    }

    fn sweep_locked(&self, idle: &mut HashMap<PoolKey, Vec<Idle>>, now: Instant) {
        idle.retain(|_, list| {
            list.retain(|e| {
                !e.sender.is_closed() && now.duration_since(e.since) < self.idle_timeout
            });
            !list.is_empty()
        });
    }

    /// Closes every idle connection (dropping a request half closes its connection).
    pub(crate) fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
