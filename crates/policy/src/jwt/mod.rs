//! `RequestAuthentication` semantics: what Envoy's `jwt_authn` filter, configured by istiod, does
//! with the tokens of one request (authentication.md §5).
//!
//! [`JwtProvider::compile`] turns one `JWTRule` into an Envoy provider; [`JwtAuthenticator`]
//! combines the providers of a workload into Istio's requirement tree and decides each request:
//! no token, a verified token (claims for authorization plus header changes for the upstream), or
//! a local reply with Envoy's exact status string.
//!
//! Pure and synchronous: no I/O, no clock (callers pass `now`), no `unsafe`. Keys of `jwksUri`
//! rules are fetched by the caller and supplied with [`JwtProvider::with_keys`]; signatures are
//! checked with `jsonwebtoken`, everything else is parsed here so that failures match
//! jwt_verify_lib message for message.

mod authenticator;
mod cache;
mod claims;
mod config;
mod extract;
mod jwks;
mod token;
mod verify;

pub use authenticator::{
    HeaderMutations, JwtAuthenticator, JwtOutcome, JwtRejection, JwtRequest, VerifiedJwt,
};
pub use config::{ClaimToHeader, HeaderLocation, JwtProvider, JwtRuleConfig};
pub use jwks::{JwkError, JwksError, SkippedKey};
pub use token::JwtFailure;

#[cfg(test)]
mod tests;
