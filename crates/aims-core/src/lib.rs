//! AIMS domain core: identifiers, agents, posture profiles, human roles, credentials and the
//! audit hash chain.
//!
//! This crate sits at the bottom of the workspace. It holds pure rules only: no IO, no async,
//! no clock (time is always passed in) and no knowledge of storage or the network. Every crate
//! above it shares these types.

pub mod agent;
pub mod audit;
pub mod credential;
pub mod id;
pub mod posture;
pub mod user;
