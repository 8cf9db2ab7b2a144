//! The AIMS Rust SDK: the typed HTTP client that agents, tool servers and the `aims` CLI use to
//! talk to an AIMS server.
//!
//! It sits above `aims-api` (the wire types, shared with the server), `aims-core` (the
//! validated domain types) and `aims-token` (keys, JOSE, access-token and DPoP rules), and below
//! the `aims` binary. It knows HTTP; it holds no business rules of its own — the server
//! decides, and every token or proof rule is `aims-token`'s, called rather than copied.
//!
//! - [`AdminClient`] covers the `/v1` administration API (agents, users, keys, policies,
//!   audit, tasks, revocations, resource servers, introspection as an operator; the public
//!   attestation endpoints) and the discovery documents (OAuth metadata, JWKS, SPIFFE
//!   bundle).
//! - [`attest`] is the agent side of attestation: proofs signed with the agent's own key,
//!   SVIDs, renewal ([`attest::SvidSource`]).
//! - [`oauth`] is the agent side of task tokens: [`TokenClient`] speaks the OAuth endpoints
//!   (token exchange, JWT bearer, delegation, introspection, revocation), the revocation feed
//!   and the decision endpoint, presenting tokens with DPoP proofs (or as bearer tokens where
//!   an agent is allowed them); [`TaskToken`] keeps one task's token fresh by exchanging again
//!   for the same task before it runs out.
//! - [`approval`] waits for a human when a call needs approval
//!   ([`TokenClient::decide_or_wait`], [`AdminClient::decide_or_wait`]), and
//!   [`AdminClient`] lists, shows, approves and denies approval requests as a human.
//! - [`verifier`] is the tool-server side: [`Verifier`] checks a request's token offline
//!   (signature by a JWKS key, issuer, audience, time, revocation feed, DPoP binding and
//!   replay) and fails closed when it has lost touch with AIMS. Its core,
//!   [`verifier::VerifierState`], does no IO.
//!
//! Credentials (API tokens, SVIDs, access tokens, proofs, client secrets) never appear in
//! errors or `Debug` output, and every header carrying one is marked sensitive.

pub mod admin;
pub mod approval;
pub mod attest;
mod error;
mod http;
pub mod oauth;
#[cfg(test)]
mod test_server;
pub mod tlog;
pub mod verifier;

pub use admin::AdminClient;
pub use approval::WaitedDecision;
pub use error::SdkError;
pub use oauth::{TaskToken, TokenClient};
pub use verifier::{Verifier, VerifierConfig, VerifyError};
