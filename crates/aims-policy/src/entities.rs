//! The wire types' values in Cedar's form: the pieces every Cedar request is built from.
//!
//! This module owns turning the parts of a [`crate::DecisionRequest`] into Cedar values:
//! entity uids (type names checked against the schema's declarations), an agent's and an
//! object's attributes and tags, the context record (datetime and ip extension values, JSON
//! tool-call arguments) and Cedar's [`Request`]. It decides nothing about which checks Cedar
//! runs: [`crate::cedar_request`] assembles these pieces (an agent's once per agent when its
//! entity is reused, the rest per request), and [`crate::shapes`] probes them once per schema.
//!
//! Every id travels through Cedar's API as data ([`EntityId::new`],
//! [`EntityUid::from_type_name_and_id`]), never formatted into policy or entity text, so a
//! quote, `::`, a newline or a confusable character in an id is matched literally.

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression};
use time::OffsetDateTime;

use crate::declarations::Declarations;
use crate::error::{RequestError, render};
use crate::request::{Agent, RequestContext};

/// Deepest nesting accepted in tool-call arguments.
const MAX_ARGUMENT_DEPTH: usize = 16;

/// How many recent `datetime`/`ip` expressions each thread keeps.
const EXTENSION_CACHE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extension {
    Datetime,
    Ip,
}

thread_local! {
    /// Recently built extension-value expressions. Building one parses the extension
    /// function's name inside Cedar (several µs); the expression for a given argument is
    /// always the same, so it is reused. A pure cache: it changes no result.
    static EXTENSION_VALUES: std::cell::RefCell<Vec<(Extension, String, RestrictedExpression)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn extension_value(kind: Extension, arg: &str) -> RestrictedExpression {
    let build = || match kind {
        Extension::Datetime => RestrictedExpression::new_datetime(arg),
        Extension::Ip => RestrictedExpression::new_ip(arg),
    };
    EXTENSION_VALUES
        .try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return build();
            };
            if let Some((_, _, e)) = cache.iter().find(|(k, a, _)| *k == kind && a == arg) {
                return e.clone();
            }
            let e = build();
            if cache.len() >= EXTENSION_CACHE {
                cache.remove(0);
            }
            cache.push((kind, arg.to_owned(), e.clone()));
            e
        })
        .unwrap_or_else(|_| build())
}

pub(crate) fn build_request(
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
    context: &[(String, RestrictedExpression)],
    approved: bool,
    schema: Option<&Declarations>,
) -> Result<Request, RequestError> {
    let pairs = context.iter().cloned().chain([(
        "approved".to_owned(),
        RestrictedExpression::new_bool(approved),
    )]);
    let context = Context::from_pairs(pairs).map_err(|e| RequestError::Context {
        message: render(&e),
    })?;
    Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        context,
        schema.map(Declarations::cedar),
    )
    .map_err(|e| RequestError::Request {
        message: render(&e),
    })
}

/// The declared type called `name`, or [`RequestError::UnknownEntityType`].
pub(crate) fn schema_type<'s>(
    name: &str,
    schema: &'s Declarations,
) -> Result<&'s EntityTypeName, RequestError> {
    schema
        .entity_type(name)
        .ok_or_else(|| RequestError::UnknownEntityType {
            entity_type: name.to_owned(),
        })
}

pub(crate) fn uid(ty: &str, id: &str, schema: &Declarations) -> Result<EntityUid, RequestError> {
    Ok(EntityUid::from_type_name_and_id(
        schema_type(ty, schema)?.clone(),
        EntityId::new(id),
    ))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn record(
    field: &str,
    pairs: Vec<(String, RestrictedExpression)>,
) -> Result<RestrictedExpression, RequestError> {
    RestrictedExpression::new_record(pairs).map_err(|e| RequestError::InvalidValue {
        field: field.to_owned(),
        message: render(&e),
    })
}

pub(crate) fn tags_of<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, RestrictedExpression)> {
    labels
        .into_iter()
        .map(|(k, v)| (k.clone(), string(v)))
        .collect()
}

type Parts = (
    EntityUid,
    Vec<(String, RestrictedExpression)>,
    Vec<(String, RestrictedExpression)>,
);

pub(crate) fn agent_parts(agent: &Agent, schema: &Declarations) -> Result<Parts, RequestError> {
    let mut toolchain = vec![
        ("framework".to_owned(), string(&agent.toolchain.framework)),
        ("version".to_owned(), string(&agent.toolchain.version)),
    ];
    if let Some(d) = &agent.toolchain.manifest_digest {
        toolchain.push(("manifest_digest".to_owned(), string(d)));
    }
    let mut posture = vec![
        (
            "identity_verified".to_owned(),
            RestrictedExpression::new_bool(agent.posture.identity_verified),
        ),
        (
            "runtime_checks_passed".to_owned(),
            RestrictedExpression::new_bool(agent.posture.runtime_checks_passed),
        ),
    ];
    if let Some(d) = &agent.posture.model_digest {
        posture.push(("model_digest".to_owned(), string(d)));
    }
    if let Some(d) = &agent.posture.image_digest {
        posture.push(("image_digest".to_owned(), string(d)));
    }
    let attrs = vec![
        ("name".to_owned(), string(&agent.name)),
        ("spiffe_id".to_owned(), string(&agent.spiffe_id)),
        ("owner".to_owned(), string(&agent.owner)),
        ("environment".to_owned(), string(&agent.environment)),
        ("state".to_owned(), string(&agent.state)),
        (
            "trust_level".to_owned(),
            RestrictedExpression::new_long(agent.trust_level),
        ),
        ("model".to_owned(), string(&agent.model)),
        ("toolchain".to_owned(), record("toolchain", toolchain)?),
        ("posture".to_owned(), record("posture", posture)?),
    ];
    Ok((
        uid("Agent", &agent.name, schema)?,
        attrs,
        tags_of(agent.labels.iter()),
    ))
}

pub(crate) fn object_attrs(
    system: &str,
    environment: &str,
    sensitivity: &str,
    kind: &str,
) -> Vec<(String, RestrictedExpression)> {
    vec![
        ("system".to_owned(), string(system)),
        ("environment".to_owned(), string(environment)),
        ("sensitivity".to_owned(), string(sensitivity)),
        ("kind".to_owned(), string(kind)),
    ]
}

/// The context record without `approved` (added when the request is built).
pub(crate) fn context_pairs(
    ctx: &RequestContext,
    schema: &Declarations,
) -> Result<Vec<(String, RestrictedExpression)>, RequestError> {
    let mut arguments = Vec::new();
    for (name, value) in &ctx.arguments {
        if schema.declares_argument(name) {
            arguments.push((name.clone(), json_value(name, value, 0)?));
        }
    }
    Ok(vec![
        (
            "time".to_owned(),
            extension_value(Extension::Datetime, &datetime(ctx.time)?),
        ),
        (
            "posture_age_s".to_owned(),
            RestrictedExpression::new_long(ctx.posture_age_s),
        ),
        ("task_id".to_owned(), string(&ctx.task_id)),
        ("intent".to_owned(), string(&ctx.intent)),
        (
            "delegation_depth".to_owned(),
            RestrictedExpression::new_long(ctx.delegation_depth),
        ),
        (
            "delegation_chain".to_owned(),
            RestrictedExpression::new_set(ctx.delegation_chain.iter().map(|s| string(s))),
        ),
        ("environment".to_owned(), string(&ctx.environment)),
        (
            "source_ip".to_owned(),
            extension_value(Extension::Ip, &ctx.source_ip.to_string()),
        ),
        ("arguments".to_owned(), record("arguments", arguments)?),
    ])
}

/// Cedar's datetime literal form, in UTC, truncated to the second (policies compare times
/// to the second; it also lets consecutive requests share one expression).
fn datetime(t: OffsetDateTime) -> Result<String, RequestError> {
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        return Err(RequestError::InvalidValue {
            field: "time".to_owned(),
            message: "year outside 0000-9999".to_owned(),
        });
    }
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ))
}

/// A JSON argument as a Cedar value: strings, integers, booleans, arrays (sets) and objects
/// (records). `null` and non-integer numbers have no Cedar form and are refused.
fn json_value(
    field: &str,
    v: &serde_json::Value,
    depth: usize,
) -> Result<RestrictedExpression, RequestError> {
    use serde_json::Value;
    let bad = |message: &str| RequestError::InvalidValue {
        field: format!("arguments.{field}"),
        message: message.to_owned(),
    };
    if depth > MAX_ARGUMENT_DEPTH {
        return Err(bad("nested too deeply"));
    }
    match v {
        Value::String(s) => Ok(string(s)),
        Value::Bool(b) => Ok(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(RestrictedExpression::new_long)
            .ok_or_else(|| bad("only 64-bit integers are supported")),
        Value::Array(items) => Ok(RestrictedExpression::new_set(
            items
                .iter()
                .map(|i| json_value(field, i, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(map) => {
            let pairs = map
                .iter()
                .map(|(k, v)| Ok((k.clone(), json_value(field, v, depth + 1)?)))
                .collect::<Result<Vec<_>, RequestError>>()?;
            record(field, pairs)
        }
        Value::Null => Err(bad("null has no Cedar value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_utc_to_the_second() {
        let t = time::macros::datetime!(2026-03-01 10:15:30.750 +02:00);
        assert_eq!(datetime(t).unwrap(), "2026-03-01T08:15:30Z");
        let far = time::macros::datetime!(-0001-01-01 0:00 UTC);
        assert!(datetime(far).is_err());
    }

    #[test]
    fn cached_extension_values_equal_fresh_ones() {
        for i in 0..(EXTENSION_CACHE * 2) {
            let arg = format!("10.0.0.{}", i % 40);
            let cached = extension_value(Extension::Ip, &arg);
            let again = extension_value(Extension::Ip, &arg);
            let fresh = RestrictedExpression::new_ip(&arg);
            assert_eq!(format!("{cached:?}"), format!("{fresh:?}"));
            assert_eq!(format!("{again:?}"), format!("{fresh:?}"));
        }
        let d = extension_value(Extension::Datetime, "2026-03-01T08:15:30Z");
        let fresh = RestrictedExpression::new_datetime("2026-03-01T08:15:30Z");
        assert_eq!(format!("{d:?}"), format!("{fresh:?}"));
    }

    #[test]
    fn json_arguments_map_to_cedar_values() {
        let v = serde_json::json!({"a": [1, "x", true], "b": {"c": 2}});
        assert!(json_value("x", &v, 0).is_ok());
        assert!(json_value("x", &serde_json::json!(1.5), 0).is_err());
        assert!(json_value("x", &serde_json::Value::Null, 0).is_err());
        let mut deep = serde_json::json!(1);
        for _ in 0..40 {
            deep = serde_json::json!([deep]);
        }
        assert!(json_value("x", &deep, 0).is_err());
    }
}
