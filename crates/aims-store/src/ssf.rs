//! Types of the Shared Signals (SSF) part of the store: event streams that publish the
//! revocation log to third-party receivers, and what a stream has still to deliver.
//!
//! A stream does not copy the log: it keeps a position (`acked_through`) below which every
//! entry is delivered, plus the entries above it that the receiver acknowledged out of order.
//! What the events look like on the wire (SETs, CAEP event types) is the server's business.

use aims_core::id::{ResourceServerName, UserName};
use time::OffsetDateTime;

use crate::{IssuedKind, Revocation};

/// Most streams one receiver may hold at once.
pub const MAX_SSF_STREAMS_PER_RECEIVER: u32 = 16;

/// Most verification events one stream may have waiting for delivery.
pub const MAX_SSF_VERIFICATIONS_PENDING: u32 = 16;

/// Who owns a stream: the authenticated party that created it, and the only one that may
/// read, poll or delete it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SsfReceiver {
    /// A registered resource server (an enforcement point).
    ResourceServer(ResourceServerName),
    /// An operator.
    User(UserName),
}

/// How a stream's events reach its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsfDelivery {
    /// The receiver polls the transmitter (RFC 8936).
    Poll,
    /// The transmitter POSTs each event to the receiver (RFC 8935).
    Push {
        /// Where events are POSTed.
        endpoint_url: String,
        /// The `Authorization` header value to send with each POST, sealed under the master
        /// key (the store never sees it in clear).
        sealed_authorization: Option<Vec<u8>>,
    },
}

/// Whether a stream delivers (SSF 1.0 §8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsfStatus {
    /// Events are delivered.
    Enabled,
    /// Nothing is delivered; events wait until the stream is enabled again.
    Paused,
    /// Nothing is delivered and nothing is kept for later.
    Disabled,
}

impl SsfStatus {
    /// Its name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }

    /// The status named `value`, if any.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "enabled" => Some(Self::Enabled),
            "paused" => Some(Self::Paused),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// An SSF event stream as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsfStream {
    /// Its id, unique.
    pub id: String,
    /// Its owner.
    pub receiver: SsfReceiver,
    /// The `aud` of every event sent on it.
    pub audience: String,
    /// How events are delivered.
    pub delivery: SsfDelivery,
    /// The event types the receiver asked for, as it wrote them (empty: none named).
    pub events_requested: Vec<String>,
    /// The event types delivered on the stream.
    pub events_delivered: Vec<String>,
    /// The receiver's description of the stream.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Every revocation-log entry at or before this position is delivered (or predates the
    /// stream). Set by the store when the stream is created: a stream carries only what is
    /// revoked after it exists.
    pub acked_through: u64,
    /// Whether it delivers. New streams are enabled.
    pub status: SsfStatus,
    /// The receiver's reason for the last status change, if it gave one.
    pub status_reason: Option<String>,
}

/// A verification event a receiver asked for (SSF 1.0 §8.1.4) that its stream has not
/// delivered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsfVerification {
    /// Its position in the stream's queue: unique across streams, never reused.
    pub seq: u64,
    /// The receiver's opaque value, echoed in the event.
    pub state: Option<String>,
    /// When it was asked for.
    pub requested_at: OffsetDateTime,
}

/// A revocation-log entry a stream has not delivered yet, with the kind of the revoked
/// credential (which decides the event type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsfPending {
    /// The log entry.
    pub revocation: Revocation,
    /// The kind of credential it revoked.
    pub kind: IssuedKind,
}
