//! AIMS domain core: identifiers, agents, posture profiles, human roles, credentials, scopes,
//! tasks, delegation rules, database leases, the audit hash chain and the audit Merkle tree
//! log with its C2SP tiles.
//!
//! This crate sits at the bottom of the workspace. It holds pure rules only: no IO, no async,
//! no clock (time is always passed in) and no knowledge of storage or the network. Every crate
//! above it shares these types.

pub mod agent;
pub mod approval;
pub mod audit;
pub mod credential;
pub mod delegation;
pub mod id;
pub mod lease;
pub mod posture;
pub mod revocation;
pub mod scope;
pub mod secret;
pub mod sighting;
pub mod task;
pub mod text;
pub mod tiles;
pub mod tlog;
pub mod user;

/// Decodes exactly 32 bytes of hex (the stored form of every SHA-256 digest).
fn decode_hex32(value: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).ok()?;
    Some(out)
}
