//! Wire types of `/v1/sightings`: callers enforcement points refused before any decision.

use aims_core::id::ResourceServerName;
use aims_core::sighting::Sighting;
use serde::{Deserialize, Serialize};

/// `POST /v1/sightings/report`, by a resource server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSightings {
    /// 1 to 40 sightings.
    pub sightings: Vec<Sighting>,
}

/// The answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SightingsReported {
    /// How many were kept (new ones past the reporter's bound are dropped).
    pub kept: u64,
}

/// One sighting and who reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedSighting {
    /// The enforcement point that saw it.
    pub reporter: ResourceServerName,
    /// What it saw.
    #[serde(flatten)]
    pub sighting: Sighting,
}

/// `GET /v1/sightings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SightingList {
    /// Most recently seen first.
    pub sightings: Vec<ReportedSighting>,
}
