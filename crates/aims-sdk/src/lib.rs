//! The AIMS Rust SDK: the typed HTTP client that agents, tool servers and the `aims` CLI use to
//! talk to an AIMS server.
//!
//! It sits above `aims-api` (the wire types, shared with the server) and `aims-core` (the
//! validated domain types), and below the `aims` binary. It knows HTTP; it holds no business
//! rules of its own — the server decides, the SDK only carries requests and typed answers.
//!
//! [`AdminClient`] covers the `/v1` API (agents, users, keys, audit; the public attestation
//! endpoints) and the discovery documents (OAuth metadata, JWKS, SPIFFE bundle).
//! [`attest`] is the agent side of attestation: proofs signed with the agent's own key, SVIDs,
//! renewal. Token exchange, DPoP proofs and authorization checks come next.

pub mod admin;
pub mod attest;
mod error;

pub use admin::AdminClient;
pub use error::SdkError;
