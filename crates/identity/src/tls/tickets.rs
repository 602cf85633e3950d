//! TLS 1.3 session tickets for inbound mesh mTLS.
//!
//! A resumed handshake skips both certificate signatures and both chain verifications (RFC 8446
//! §2.2: a resumed session carries the authentication of the handshake that issued the ticket),
//! which is most of what a new mesh connection costs. Envoy resumes the same way: its upstream
//! TLS contexts cache sessions and its listeners accept tickets unless told otherwise.
//!
//! Tickets are stateless (sealed with a key only this process holds, rotated every six hours),
//! so the server keeps no per-session state. A ticket is only good under the trust bundle it
//! was issued with: when the roots change, the keys are replaced, every earlier ticket fails to
//! open, and the client falls back to a full handshake verified against the new roots. The
//! peer certificate's expiry is checked again after a resumed handshake
//! ([`resumed_peer_is_current`](super::resumed_peer_is_current)).

use std::sync::{Arc, Mutex, PoisonError};

use rustls::crypto::aws_lc_rs::Ticketer;
use rustls::server::ProducesTickets;

use super::credentials::{ActiveRoots, Credentials};

/// Ticket keys tied to the trust bundle that was current when they were made.
#[derive(Debug)]
pub(super) struct MeshTickets {
    credentials: Arc<Credentials>,
    current: Mutex<Keys>,
}

#[derive(Debug)]
struct Keys {
    roots: Arc<ActiveRoots>,
    /// `None` when no key could be made (no randomness): no tickets, full handshakes only.
    tickets: Option<Arc<dyn ProducesTickets>>,
}

impl MeshTickets {
    pub(super) fn new(credentials: Arc<Credentials>) -> Arc<Self> {
        let keys = Keys {
            roots: credentials.roots(),
            tickets: Ticketer::new().ok(),
        };
        Arc::new(Self {
            credentials,
            current: Mutex::new(keys),
        })
    }

    /// The keys for the current roots, replaced first if the roots changed.
    fn keys(&self) -> Option<Arc<dyn ProducesTickets>> {
        let roots = self.credentials.roots();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current.roots, &roots) {
            *current = Keys {
                roots,
                tickets: Ticketer::new().ok(),
            };
        }
        current.tickets.clone()
    }
}

impl ProducesTickets for MeshTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.keys().map_or(0, |k| k.lifetime())
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.keys()?.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.keys()?.decrypt(cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::TrustBundle;

    #[test]
    fn a_ticket_opens_until_the_roots_change() {
        let credentials = Credentials::new(TrustBundle::default());
        let tickets = MeshTickets::new(credentials.clone());
        let sealed = tickets.encrypt(b"session").expect("a key");
        assert_eq!(tickets.decrypt(&sealed).as_deref(), Some(&b"session"[..]));
        credentials.set_roots(TrustBundle::default());
        assert_eq!(tickets.decrypt(&sealed), None, "new roots, new keys");
        let resealed = tickets.encrypt(b"session").expect("a key");
        assert_eq!(tickets.decrypt(&resealed).as_deref(), Some(&b"session"[..]));
    }
}
