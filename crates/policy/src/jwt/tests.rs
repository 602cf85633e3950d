//! Tests of the `jwt` module, one file per spec section (authentication.md §5).
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly on purpose"
)]

mod fixtures;

mod checks;
mod combine;
mod corpus;
mod extraction;
mod keys;
mod outputs;
mod units;
