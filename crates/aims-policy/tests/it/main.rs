//! Integration tests of `aims-policy`: one binary, one module per concern.
//!
//! - `scenarios`: the starter policies in `policies/` pass their test cases.
//! - `bad_input`: bad requests are refused or denied, never allowed.
//! - `errors`: error is deny; the approval rule; batch; serialization; lifetime caps.
//! - `explain`: per-policy outcomes and index skips.
//! - `differential`: the indexed engine against plain Cedar on generated policies.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly on an unexpected error"
)]

mod bad_input;
mod differential;
mod errors;
mod explain;
mod fixtures;
mod scenarios;
