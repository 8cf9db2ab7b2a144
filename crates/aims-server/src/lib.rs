//! The AIMS server: HTTP API (`/v1` JSON, discovery documents, health, metrics), operator
//! authentication, the group-commit audit writer, configuration and startup.
//!
//! It sits above `aims-core` (rules), `aims-token` (keys) and `aims-store` (persistence) and
//! below the `aims` binary, which only parses flags and calls [`server::start`].

pub mod approval_watch;
pub mod approvals;
pub mod audit_writer;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod decisions;
pub mod error;
pub mod extract;
pub mod federation;
pub mod follow;
pub mod keyring;
pub mod leases;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod ocsf;
pub mod outbound;
pub mod policy;
pub mod presented;
pub mod readiness;
pub mod recertify;
pub mod refusals;
pub mod registry;
pub mod report;
pub mod revocation;
pub mod routes;
pub mod server;
pub mod signals;
pub mod state;
pub mod tlog;
pub mod tls;
pub mod trace;
pub mod webhook;
