//! The AIMS Rust SDK: the typed HTTP client that agents, tool servers and the `aims` CLI use to
//! talk to an AIMS server.
//!
//! It sits above `aims-api` (the wire types, shared with the server) and `aims-core` (the
//! validated domain types), and below the `aims` binary. It knows HTTP; it holds no business
//! rules of its own — the server decides, the SDK only carries requests and typed answers.
//!
//! Today it offers [`AdminClient`], which covers the human-facing `/v1` administration API
//! (agents, users, keys, audit) and the public discovery documents (OAuth metadata, JWKS,
//! SPIFFE bundle). It later grows the agent side: attestation, SVID renewal, token exchange,
//! DPoP proofs and authorization checks.

pub mod admin;
mod error;

pub use admin::AdminClient;
pub use error::SdkError;
