//! The one place that picks the TLS crypto provider: aws-lc-rs.
//!
//! Every configuration this crate builds passes the provider explicitly, so a process never
//! depends on a global default; `install_default_provider` is still called first thing in each
//! binary so third-party code that asks for the process default gets the same one.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The provider used for every meshward TLS configuration.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Installs aws-lc-rs as the process-wide default provider. Idempotent.
pub fn install_default_provider() {
    // An `Err` means a provider is already installed; the first one stays, which is what every
    // caller here wants.
    let _ = CryptoProvider::install_default(provider().as_ref().clone());
}

/// SHA-256 of `data`, lowercase hex (certificate fingerprints, the XFCC `Hash=` field).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// A uniformly random number in `[0, 1)`, for rotation jitter.
pub(crate) fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    // SystemRandom only fails if the OS RNG is unavailable; fall back to the midpoint, which
    // means "no jitter" rather than a panic.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
