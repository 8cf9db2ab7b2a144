//! The OpenAPI description as a contract the suite holds the server to: every response that
//! goes through [`crate::kit::TestServer::call`] must be one the document describes — its
//! path and method are documented, its status is listed for that operation (or covered by
//! `default`), and a JSON body validates against the response's schema (JSON Schema 2020-12,
//! which OpenAPI 3.1 uses, with the document's `components` for `$ref`).
//!
//! A violation fails the test that caused it, naming the operation and what did not match,
//! so a generated client can rely on the document. Setting `AIMS_CONTRACT_REPORT=FILE`
//! appends violations to `FILE` instead of failing (to survey a change to the document).
//!
//! It also holds the document to the requests the server takes: each name type's schema
//! (`AgentName`, `Owner`, `TaskId`, …) must accept exactly what its aims-core validator does.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};

use aims_core::id;
use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

/// The document the server serves at `/v1/openapi.json`.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json is JSON")
});

/// Which documented response: (path template, method, status key).
type ResponseKey = (String, String, String);

/// Compiled response schemas, each compiled once per run.
static VALIDATORS: LazyLock<Mutex<HashMap<ResponseKey, Arc<jsonschema::Validator>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Checks one response against the document; panics (or reports) on a violation.
pub fn check(method: &Method, path: &str, status: StatusCode, content_type: &str, body: &Value) {
    if let Err(violation) = violation(method, path, status, content_type, body) {
        let line = format!("{method} {path} -> {status}: {violation}");
        match std::env::var("AIMS_CONTRACT_REPORT") {
            Ok(file) => {
                let mut out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .unwrap();
                writeln!(out, "{line}").unwrap();
            }
            Err(_) => panic!("the response breaks openapi.json: {line}"),
        }
    }
}

/// What about the response the document does not describe, if anything.
fn violation(
    method: &Method,
    path: &str,
    status: StatusCode,
    content_type: &str,
    body: &Value,
) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    let Some((template, operation)) = operation(method, path) else {
        // What the document does not list does not exist: 404 (or 405 for a documented
        // path with another method), with the error body every refusal has.
        return match status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                let error = json!({"$ref": "#/components/schemas/Error"});
                matches(validator("(none)", method, status.as_str(), &error)?, body)
            }
            _ => Err("no such operation in the document".to_owned()),
        };
    };
    let responses = &operation["responses"];
    let code = status.as_str();
    let class = format!("{}XX", &code[..1]);
    let key = [code, class.as_str(), "default"]
        .into_iter()
        .find(|k| responses.get(*k).is_some())
        .ok_or_else(|| format!("status {code} is not listed for {template}"))?;
    let response = resolve(&responses[key]);
    let schema = response
        .get("content")
        .and_then(|c| c.get("application/json"))
        .and_then(|c| c.get("schema"));
    let is_json = content_type.starts_with("application/json");
    match (schema, is_json) {
        (Some(_), false) => Err(format!(
            "{template} is documented to answer {code} in JSON but sent {content_type:?}"
        )),
        (None, true) if !body.is_null() => Err(format!(
            "{template} answers JSON with {code} but the document gives no JSON schema for it"
        )),
        (Some(schema), true) => matches(validator(template, method, key, schema)?, body),
        _ => Ok(()),
    }
}

/// Whether `body` validates against `validator`, with the first errors if not.
fn matches(validator: Arc<jsonschema::Validator>, body: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(body)
        .take(3)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "body does not match the schema: {}",
            errors.join("; ")
        ))
    }
}

/// The operation documented for `method` on a concrete `path`, with its path template. A
/// segment of a template is literal, `{param}`, or `{param}` and a literal suffix
/// (`{n}.p`); where several templates match, the one with the most literal text wins, as
/// OpenAPI matches concrete paths before templated ones.
fn operation(method: &Method, path: &str) -> Option<(&'static str, &'static Value)> {
    let paths = DOCUMENT["paths"].as_object()?;
    let method = method.as_str().to_ascii_lowercase();
    let wanted: Vec<&str> = path.split('/').collect();
    paths
        .iter()
        .filter_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != wanted.len() {
                return None;
            }
            let mut literal = 0;
            for (t, w) in parts.iter().zip(&wanted) {
                literal += segment_matches(t, w)?;
            }
            Some((literal, template.as_str(), item.get(&method)?))
        })
        .max_by_key(|(literal, _, _)| *literal)
        .map(|(_, template, op)| (template, op))
}

/// How much literal text of template segment `t` the concrete segment `w` matched, or `None`
/// if it does not match.
fn segment_matches(t: &str, w: &str) -> Option<usize> {
    let Some(suffix) = t
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
        .map(|(_, suffix)| suffix)
    else {
        return (t == w).then_some(t.len());
    };
    let value = w.strip_suffix(suffix)?;
    (!value.is_empty()).then_some(suffix.len())
}

/// A response object, following a `$ref` to `components/responses`.
fn resolve(response: &'static Value) -> &'static Value {
    response
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/"))
        .map_or(response, |pointer| {
            DOCUMENT
                .pointer(&format!("/{pointer}"))
                .unwrap_or(&Value::Null)
        })
}

/// The compiled schema of one response, with the document's components in reach of `$ref`.
fn validator(
    template: &str,
    method: &Method,
    key: &str,
    schema: &Value,
) -> Result<Arc<jsonschema::Validator>, String> {
    let cache_key = (template.to_owned(), method.to_string(), key.to_owned());
    let mut cache = VALIDATORS.lock().unwrap();
    if let Some(found) = cache.get(&cache_key) {
        return Ok(found.clone());
    }
    let mut root = Map::new();
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert("components".into(), DOCUMENT["components"].clone());
    root.insert("allOf".into(), json!([schema]));
    let compiled = jsonschema::validator_for(&Value::Object(root))
        .map_err(|e| format!("the schema of {template} does not compile: {e}"))?;
    let compiled = Arc::new(compiled);
    cache.insert(cache_key, compiled.clone());
    Ok(compiled)
}

#[test]
fn the_contract_refuses_what_the_document_does_not_say() {
    let ok = json!({"status": "ok"});
    let json_type = "application/json";
    assert!(violation(&Method::GET, "/healthz", StatusCode::OK, json_type, &ok).is_ok());
    // A body of the wrong shape, a status not listed, plain text where JSON is documented,
    // an operation that does not exist but answered, and a 404 without the error body.
    let wrong = json!({"status": 1});
    assert!(violation(&Method::GET, "/healthz", StatusCode::OK, json_type, &wrong).is_err());
    assert!(
        violation(
            &Method::GET,
            "/healthz",
            StatusCode::CREATED,
            json_type,
            &ok
        )
        .is_err()
    );
    let task = json!({"error": "invalid_query", "message": "agent is empty"});
    let tasks = "/v1/tasks?agent=";
    assert!(
        violation(
            &Method::GET,
            tasks,
            StatusCode::BAD_REQUEST,
            json_type,
            &task
        )
        .is_ok()
    );
    assert!(
        violation(
            &Method::GET,
            tasks,
            StatusCode::BAD_REQUEST,
            "text/plain",
            &Value::Null
        )
        .is_err()
    );
    assert!(violation(&Method::GET, "/v1/nope", StatusCode::OK, json_type, &ok).is_err());
    assert!(
        violation(
            &Method::GET,
            "/v1/nope",
            StatusCode::NOT_FOUND,
            json_type,
            &ok
        )
        .is_err()
    );
}

/// Whether an aims-core validator accepts a string.
type Accepts = fn(&str) -> bool;

/// Each name type (and the approver's free-text reason) the document declares in
/// `components/schemas`, with the aims-core validator whose rules its pattern and lengths
/// must state.
const NAME_RULES: &[(&str, Accepts)] = &[
    ("AgentName", |s| id::AgentName::new(s).is_ok()),
    ("ResourceServerName", |s| {
        id::ResourceServerName::new(s).is_ok()
    }),
    ("SecretName", |s| id::SecretName::new(s).is_ok()),
    ("EngineName", |s| id::EngineName::new(s).is_ok()),
    ("RoleName", |s| id::RoleName::new(s).is_ok()),
    ("Owner", |s| id::Owner::new(s).is_ok()),
    ("Environment", |s| id::Environment::new(s).is_ok()),
    ("UserName", |s| id::UserName::new(s).is_ok()),
    ("LabelKey", |s| id::LabelKey::new(s).is_ok()),
    ("TaskId", |s| id::TaskId::new(s).is_ok()),
    ("ApprovalReason", aims_core::approval::is_valid_reason),
    ("RevocationReason", aims_core::revocation::is_valid_reason),
    ("LifecycleReason", |s| {
        aims_core::text::is_visible_within(s, aims_core::agent::MAX_LIFECYCLE_REASON_LEN)
    }),
    ("PrintableText256", |s| {
        aims_core::text::is_printable_within(s, 256)
    }),
    ("PrintableText512", |s| {
        aims_core::text::is_printable_within(s, 512)
    }),
    ("LabelValue", aims_core::agent::is_valid_label_value),
    ("AgentDescription", aims_core::agent::is_valid_description),
];

/// Whether the document's schema `name` (pattern, lengths) accepts `value`.
fn schema_accepts(name: &str, value: &str) -> bool {
    let schema = json!({"$ref": format!("#/components/schemas/{name}")});
    validator("(name schemas)", &Method::GET, name, &schema)
        .unwrap()
        .is_valid(&json!(value))
}

/// Strings near every rule of the name types: their alphabets with the characters just
/// outside them, lengths around every limit (32, 63, 64, 128, 256), single and double dots,
/// spaces in every position, and any text at all.
fn name_candidates() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._ -]{0,4}",
        "[a-z0-9._-]{0,70}",
        "[A-Za-z0-9_-]{60,70}",
        "[A-Za-z0-9._-]{120,136}",
        "[!-~]{1,4}( {1,2}[!-~]{1,4}){0,3} ?",
        "[!-~ ]{250,260}",
        "\\.{1,3}[a-z]?",
        "[a-z0-9]{1,3}[\\x00-\\x20\\x7f\\u{80}-\\u{ff}\\u{200b}\\u{0430}][a-z0-9]{0,3}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// openapi.json states what the server enforces: for each name type, the document's
    /// pattern and lengths accept exactly the strings its aims-core validator accepts, so a
    /// change to either without the other fails here.
    #[test]
    fn name_schemas_state_what_the_validators_enforce(value in name_candidates()) {
        for (name, valid) in NAME_RULES {
            prop_assert_eq!(
                schema_accepts(name, &value),
                valid(&value),
                "{} and its validator disagree on {:?}",
                name,
                value
            );
        }
    }
}

#[test]
fn name_schemas_hold_at_their_limits() {
    // The exact boundaries, which random strings rarely hit: the longest name accepted, one
    // byte more refused, by the document and the validator alike.
    for (name, valid) in NAME_RULES {
        let max = DOCUMENT["components"]["schemas"][name]["maxLength"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} states no maxLength"));
        let max = usize::try_from(max).unwrap();
        for value in ["a".repeat(max), "a".repeat(max + 1), String::new()] {
            assert_eq!(
                schema_accepts(name, &value),
                valid(&value),
                "{name} and its validator disagree at length {}",
                value.len()
            );
        }
        assert!(schema_accepts(name, &"a".repeat(max)), "{name}");
        assert!(!schema_accepts(name, &"a".repeat(max + 1)), "{name}");
    }
}
