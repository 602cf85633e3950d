//! The client side of session resumption: TLS 1.3 tickets kept per destination.
//!
//! A sidecar opens many connections to the same destination at once (one per concurrent
//! request on HTTP/1.1, one per connection on TCP ports). Each TLS 1.3 ticket is used once
//! (RFC 8446 §C.4), and a server sends two per handshake, so a burst needs as many tickets as
//! connections in flight; rustls' own cache keeps eight per server. This one keeps
//! [`TICKETS_PER_DESTINATION`], newest first, for at most [`DESTINATIONS`] server names.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls_pki_types::ServerName;

/// Tickets kept per server name: enough for the connections a busy sidecar opens in a burst.
pub const TICKETS_PER_DESTINATION: usize = 64;
/// Server names remembered; the cache is emptied when a new one would exceed this.
pub const DESTINATIONS: usize = 256;

/// Sessions to resume, per server name (the `outbound_.…` SNI of a destination).
#[derive(Debug, Default)]
pub(super) struct MeshSessions {
    /// Keyed by the server name as text (an SNI, or an address when there is none).
    by_server: Mutex<HashMap<String, Sessions>>,
}

#[derive(Debug, Default)]
struct Sessions {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl MeshSessions {
    fn with<R>(&self, server: &ServerName<'_>, f: impl FnOnce(&mut Sessions) -> R) -> Option<R> {
        let mut map = self
            .by_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get_mut(&*server.to_str()).map(f)
    }

    fn with_entry<R>(&self, server: ServerName<'static>, f: impl FnOnce(&mut Sessions) -> R) -> R {
        let mut map = self
            .by_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = server.to_str();
        if let Some(sessions) = map.get_mut(&*key) {
            return f(sessions);
        }
        if map.len() >= DESTINATIONS {
            map.clear();
        }
        f(map.entry(key.into_owned()).or_default())
    }
}

impl ClientSessionStore for MeshSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with_entry(server_name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(server_name, |s| s.kx_hint).flatten()
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with_entry(server_name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(server_name, |s| s.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with(server_name, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with_entry(server_name, |s| {
            if s.tls13.len() >= TICKETS_PER_DESTINATION {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // Newest first: the oldest are the likeliest to have outlived the server's keys.
        self.with(server_name, |s| s.tls13.pop_back()).flatten()
    }
}
