//! Reading a stored body's copied columns (`time`, `action`, `agent`, `task_id`) without
//! building its [`AuditEvent`]: the verifier's per-entry parse.
//!
//! [`Shape`] declares the same fields, with the same serde attributes, as [`AuditEvent`], so
//! the derive walks a body by the same rules (unknown and duplicate fields refused, every
//! field's JSON type checked, the time parsed as RFC 3339, `details` any JSON value). Only the
//! field types differ: the four copied columns borrow from the body, and every other field is
//! checked and then dropped instead of being allocated. Each of these types accepts no more
//! than the type it stands for, so a body [`Shape`] accepts is one [`AuditEvent`] accepts,
//! with the same columns. A body [`Shape`] refuses is handed to [`AuditEvent`] itself, which
//! decides: what is refused here is exactly what is refused today, and the full parse is paid
//! only by bodies the fast path does not know (none that [`AuditEvent::to_body`] writes).
//!
//! Owns no rule of its own: what an event is stays [`AuditEvent`]'s business.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use time::OffsetDateTime;

use super::{AuditEvent, Outcome, unix_ms};

/// The copied columns as a body gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Columns<'a> {
    /// Unix milliseconds of the event's time.
    pub time_ms: i64,
    /// The event's action.
    pub action: Cow<'a, str>,
    /// The event's agent.
    pub agent: Option<Cow<'a, str>>,
    /// The event's task.
    pub task_id: Option<Cow<'a, str>>,
}

impl<'a> Columns<'a> {
    /// The columns of `body`, `None` when it is not a valid event.
    pub(super) fn of(body: &'a str) -> Option<Self> {
        match Self::fast(body) {
            Some(columns) => Some(columns),
            None => Self::full(body),
        }
    }

    /// The fast path alone: `None` for a body it does not accept, valid or not.
    pub(super) fn fast(body: &'a str) -> Option<Self> {
        let shape = serde_json::from_str::<Shape<'a>>(body).ok()?;
        Some(Self {
            time_ms: unix_ms(shape.time),
            action: shape.action.0,
            agent: shape.agent.map(|a| a.0),
            task_id: shape.task_id.map(|t| t.0),
        })
    }

    /// The full parse, which decides every body the fast path refuses.
    pub(super) fn full(body: &str) -> Option<Self> {
        let event = serde_json::from_str::<AuditEvent>(body).ok()?;
        Some(Self {
            time_ms: unix_ms(event.time),
            action: Cow::Owned(event.action),
            agent: event.agent.map(Cow::Owned),
            task_id: event.task_id.map(Cow::Owned),
        })
    }
}

/// [`AuditEvent`]'s fields and serde attributes, field for field; see the module doc.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "the fields other than the copied columns are only checked, never read"
)]
struct Shape<'a> {
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    #[serde(default)]
    request_id: Option<Text>,
    actor: ActorShape,
    #[serde(borrow)]
    action: Str<'a>,
    outcome: Outcome,
    #[serde(default)]
    code: Option<Text>,
    #[serde(default, borrow)]
    agent: Option<Str<'a>>,
    #[serde(default)]
    owner: Option<Text>,
    #[serde(default)]
    resource: Option<Text>,
    #[serde(default, borrow)]
    task_id: Option<Str<'a>>,
    #[serde(default)]
    token_id: Option<Text>,
    #[serde(default)]
    parent_token_id: Option<Text>,
    #[serde(default)]
    delegation_chain: Texts,
    #[serde(default)]
    intent: Option<Text>,
    #[serde(default)]
    decision: Option<Text>,
    #[serde(default)]
    approval_id: Option<Text>,
    #[serde(default)]
    policy_ids: Texts,
    #[serde(default)]
    details: AnyValue,
}

/// [`super::Actor`] in the one form [`AuditEvent::to_body`] writes: a map with `kind` and
/// exactly that variant's fields, each once, each a string. `Actor` accepts more (fields it
/// does not know are ignored there, and a sequence is a form too); those bodies are left to
/// the full parse. Read here without `Actor`'s buffering of the map.
struct ActorShape;

impl<'de> Deserialize<'de> for ActorShape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ActorShape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an actor")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ActorShape, A::Error> {
                let mut kind = None;
                // Which of `name`, `role`, `spiffe_id` were seen.
                let mut seen = [false; 3];
                while let Some(key) = map.next_key::<ActorKey>()? {
                    let slot = match key {
                        ActorKey::Kind => {
                            if kind.replace(map.next_value::<ActorKind>()?).is_some() {
                                return Err(de::Error::duplicate_field("kind"));
                            }
                            continue;
                        }
                        ActorKey::Name => &mut seen[0],
                        ActorKey::Role => &mut seen[1],
                        ActorKey::SpiffeId => &mut seen[2],
                    };
                    if std::mem::replace(slot, true) {
                        return Err(de::Error::custom("a repeated actor field"));
                    }
                    map.next_value::<Text>()?;
                }
                let fits = match kind {
                    Some(ActorKind::User) => seen == [true, true, false],
                    Some(ActorKind::Agent) => seen == [false, false, true],
                    Some(ActorKind::ResourceServer) => seen == [true, false, false],
                    Some(ActorKind::Anonymous | ActorKind::System) => seen == [false; 3],
                    None => false,
                };
                if fits {
                    Ok(ActorShape)
                } else {
                    Err(de::Error::custom("not an actor's fields"))
                }
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The keys an actor's map may hold; any other key is refused.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ActorKey {
    Kind,
    Name,
    Role,
    SpiffeId,
}

/// [`super::Actor`]'s `kind`s, as its `rename_all` spells them.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActorKind {
    User,
    Agent,
    ResourceServer,
    Anonymous,
    System,
}

/// A copied column's text: borrowed from the body unless it holds escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_string(V)
    }
}

/// A string, checked and dropped (where [`AuditEvent`] has a `String`).
struct Text;

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Text, E> {
                Ok(Text)
            }
        }
        deserializer.deserialize_string(V)
    }
}

/// An array of strings, checked and dropped (where [`AuditEvent`] has a `Vec<String>`).
#[derive(Default)]
struct Texts;

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Texts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Texts, A::Error> {
                while seq.next_element::<Text>()?.is_some() {}
                Ok(Texts)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

/// Any JSON value, checked and dropped (where [`AuditEvent`] has a `serde_json::Value`).
/// It asks the parser for the same `deserialize_any` as `serde_json::Value` does, so numbers
/// out of range, bad escapes and nesting past the parser's depth are refused alike; it
/// refuses the map keys `serde_json` reserves for its optional number and raw-value
/// features rather than follow whichever of them this build enabled.
#[derive(Default)]
struct AnyValue;

/// The prefix of the map keys `serde_json` reserves.
const RESERVED_KEY: &str = "$serde_json::private::";

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_unit<E: de::Error>(self) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_none<E: de::Error>(self) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
                while seq.next_element::<AnyValue>()?.is_some() {}
                Ok(AnyValue)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
                if map.next_key::<FirstKey>()?.is_none() {
                    return Ok(AnyValue);
                }
                map.next_value::<AnyValue>()?;
                while map.next_entry::<Text, AnyValue>()?.is_some() {}
                Ok(AnyValue)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A map's first key, which `serde_json::Value` classifies: the reserved ones are refused.
struct FirstKey;

impl<'de> Deserialize<'de> for FirstKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FirstKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FirstKey, E> {
                if v.starts_with(RESERVED_KEY) {
                    return Err(E::custom("a reserved key"));
                }
                Ok(FirstKey)
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
#[path = "shape_tests.rs"]
mod tests;
