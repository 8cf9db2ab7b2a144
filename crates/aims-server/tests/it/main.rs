//! Integration tests of the AIMS server: each boots the real server on an ephemeral loopback
//! port and drives it over HTTP, on SQLite and (with `--include-ignored` and
//! `AIMS_TEST_DATABASE_URL`) on PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly on an unexpected error"
)]

mod contract;
mod kit;

mod access;
mod anonymous;
mod approvals;
mod attest;
mod audit;
mod discovery;
mod enforcement_points;
mod epochs;
mod faults;
mod federation;
mod gateway;
mod gateway_mcp;
mod leases;
mod limits;
mod policies;
mod recertify;
mod registry;
mod report;
mod router;
mod secrets;
mod ssf;
mod startup;
mod task_tokens;
mod tiles;
mod tlog;
mod tls;
mod token_attacks;
