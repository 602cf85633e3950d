//! Tokens whose signature a provider has already verified, so a client that sends the same token
//! on every request pays for one signature check (an ES256 verify costs about twice the rest of a
//! proxied request) instead of one per request.
//!
//! Only the signature result is remembered: it depends on nothing but the token's bytes and the
//! provider's keys, and a provider's keys never change (new keys mean a new provider, with an
//! empty cache). Expiry, audiences and everything else are checked on every request, so a cached
//! token that expires is refused exactly when an uncached one would be. Envoy has the same idea
//! (`jwt_cache_config`), off by default; here it is always on because it cannot change a verdict.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// How many distinct tokens are remembered per provider; when full the set starts over, which
/// keeps memory bounded (a few hundred KiB at most) without bookkeeping on the hot path.
const CAPACITY: usize = 256;

/// A bounded set of tokens with a verified signature, shared by clones of one provider.
#[derive(Debug, Clone, Default)]
pub(crate) struct VerifiedSignatures {
    tokens: Arc<Mutex<HashSet<Box<str>>>>,
}

impl VerifiedSignatures {
    /// Was `token`'s signature verified with this provider's keys?
    pub(crate) fn contains(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .is_ok_and(|tokens| tokens.contains(token))
    }

    /// Remembers that `token`'s signature verified.
    pub(crate) fn insert(&self, token: &str) {
        // A poisoned lock only loses the cache; verification itself never depends on it.
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= CAPACITY {
                tokens.clear();
            }
            tokens.insert(token.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_stays_bounded() {
        let cache = VerifiedSignatures::default();
        assert!(!cache.contains("a"));
        cache.insert("a");
        assert!(cache.contains("a"));
        for i in 0..CAPACITY {
            cache.insert(&format!("t{i}"));
        }
        assert!(cache.tokens.lock().is_ok_and(|t| t.len() <= CAPACITY));
    }

    #[test]
    fn clones_share_one_cache() {
        let cache = VerifiedSignatures::default();
        let clone = cache.clone();
        clone.insert("token");
        assert!(cache.contains("token"));
    }
}
