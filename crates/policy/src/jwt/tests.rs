//! Tests of the `jwt` module, one file per spec section (authentication.md §5).

mod fixtures;

mod checks;
mod combine;
mod corpus;
mod extraction;
mod keys;
mod outputs;
mod units;
