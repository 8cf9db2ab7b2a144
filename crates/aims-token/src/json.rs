//! Strict JSON for token headers and claims: UTF-8 only, a single top-level object, no
//! duplicate member names at any level, and at most [`MAX_DEPTH`] nested containers.
//!
//! `serde_json` silently keeps the last of two equal names, which lets `"scope":"read",
//! "scope":"admin"` mean different things to different parsers (RFC 8725 §3.1 says reject).
//! This module builds the `Value` itself through a depth-counting visitor instead, so a
//! 10,000-deep document is refused at depth 33 without deep recursion. Names are compared
//! after unescaping, so `"a"` and `"\u0061"` are duplicates.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::TokenError;

/// The deepest nesting of arrays and objects accepted, counting the top-level object as 1.
pub(crate) const MAX_DEPTH: usize = 32;

/// Why a document was refused, kept beside the `serde_json` error, whose text we never show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Duplicate,
    TooDeep,
}

/// Parses `bytes` as a strict JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, TokenError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| TokenError::Malformed("JSON is not UTF-8"))?;
    let fault = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = Strict {
        depth: 0,
        fault: &fault,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, fault.get()) {
        (Ok(Value::Object(map)), _) => Ok(map),
        (Ok(_), _) => Err(TokenError::Malformed("JSON is not an object")),
        (Err(_), Some(Fault::Duplicate)) => Err(TokenError::Malformed("duplicate member name")),
        (Err(_), Some(Fault::TooDeep)) => Err(TokenError::Malformed("JSON is nested too deeply")),
        (Err(_), None) => Err(TokenError::Malformed("invalid JSON")),
    }
}

/// Whether `value` has at most `remaining` levels of nested containers (the same rule
/// [`parse_object`] applies), so a token we mint is one we would accept. Recursion stops at
/// `remaining`, so a deep value cannot exhaust the stack.
pub(crate) fn within_depth(value: &Value, remaining: usize) -> bool {
    match value {
        Value::Array(items) => {
            remaining > 0 && items.iter().all(|v| within_depth(v, remaining - 1))
        }
        Value::Object(map) => remaining > 0 && map.values().all(|v| within_depth(v, remaining - 1)),
        _ => true,
    }
}

/// Builds a `Value` for a document whose containers are nested `depth` deep so far.
#[derive(Clone, Copy)]
struct Strict<'f> {
    depth: usize,
    fault: &'f Cell<Option<Fault>>,
}

impl Strict<'_> {
    fn child<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            self.fault.set(Some(Fault::TooDeep));
            return Err(E::custom("nested too deeply"));
        }
        Ok(Self {
            depth: self.depth + 1,
            fault: self.fault,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json already refuses numbers that overflow to infinity (e.g. 1e400).
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut map = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            if map.contains_key(&name) {
                self.fault.set(Some(Fault::Duplicate));
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = access.next_value_seed(child)?;
            map.insert(name, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &[u8]) -> &'static str {
        match parse_object(text) {
            Err(TokenError::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn accepts_plain_objects() {
        let map = parse_object(br#"{"a":1,"b":[true,null,"x",-2,1.5],"c":{"d":{}}}"#).unwrap();
        assert_eq!(map["a"], 1);
        assert_eq!(map["b"][4], 1.5);
        assert!(map["c"]["d"].is_object());
    }

    #[test]
    fn refuses_duplicate_names_at_any_level() {
        assert_eq!(
            reason(br#"{"scope":"read","scope":"admin"}"#),
            "duplicate member name"
        );
        assert_eq!(reason(br#"{"a":{"b":1,"b":1}}"#), "duplicate member name");
        assert_eq!(reason(br#"{"a":[{"b":1,"b":2}]}"#), "duplicate member name");
        // Equal after unescaping.
        assert_eq!(reason(br#"{"a":1,"\u0061":2}"#), "duplicate member name");
        // The same name in sibling objects is fine.
        assert!(parse_object(br#"{"a":{"b":1},"c":{"b":1}}"#).is_ok());
    }

    #[test]
    fn refuses_deep_nesting_without_recursing() {
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(parse_object(format!(r#"{{"a":{at_limit}}}"#).as_bytes()).is_ok());
        let over = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(
            reason(format!(r#"{{"a":{over}}}"#).as_bytes()),
            "JSON is nested too deeply"
        );
        // 10,000 levels (and a million unclosed ones) are refused at depth 33.
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(reason(deep.as_bytes()), "JSON is nested too deeply");
        let unclosed = format!(r#"{{"a":{}"#, "{\"a\":".repeat(1_000_000));
        assert_eq!(reason(unclosed.as_bytes()), "JSON is nested too deeply");
    }

    #[test]
    fn refuses_non_objects_bad_text_and_bad_numbers() {
        assert_eq!(reason(b"[]"), "JSON is not an object");
        assert_eq!(reason(b"\"s\""), "JSON is not an object");
        assert_eq!(reason(b"{\"a\":\"\xff\"}"), "JSON is not UTF-8");
        assert_eq!(reason(br#"{"a":"\ud800"}"#), "invalid JSON");
        assert_eq!(reason(br#"{"a":1e400}"#), "invalid JSON");
        assert_eq!(reason(br#"{"a":1} {}"#), "invalid JSON");
        assert_eq!(reason(br#"{"a":1,}"#), "invalid JSON");
        assert_eq!(reason(b"\xef\xbb\xbf{}"), "invalid JSON");
        assert_eq!(reason(b""), "invalid JSON");
        // Beyond u64 is a float: kept, but never mistaken for an integer.
        let map = parse_object(br#"{"a":18446744073709551616}"#).unwrap();
        assert!(map["a"].as_i64().is_none() && map["a"].as_u64().is_none());
    }

    #[test]
    fn depth_of_values_matches_the_parser() {
        let ok: Value = serde_json::from_str(&format!(
            r#"{{"a":{}{}}}"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        ))
        .unwrap();
        assert!(within_depth(&ok, MAX_DEPTH));
        let mut deep = Value::Null;
        for _ in 0..MAX_DEPTH + 1 {
            deep = Value::Array(vec![deep]);
        }
        assert!(!within_depth(&deep, MAX_DEPTH));
    }
}
