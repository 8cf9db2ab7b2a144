//! End-to-end tests of the `aims` binary: the real server process, the CLI against it, the
//! demo, and third-party clients reading what the server publishes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly on an unexpected error"
)]

mod forwarder;
mod node;
mod process;
mod replica_kit;
mod replicas;

mod canaries;
mod cli;
mod cli_approvals;
mod cli_leases;
mod cli_report;
mod cli_secrets;
mod cli_tlog;
mod cli_tokens;
mod crash;
mod gateway_process;
mod interop;
mod interop_mcp;
mod interop_node;
mod lease_faults;
mod pg_faults;
mod server;
mod storage_faults;
