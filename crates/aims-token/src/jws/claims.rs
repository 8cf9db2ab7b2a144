//! The registered-claim rules every AIMS token obeys (RFC 7519 §4.1, RFC 8725 §3.9–3.10,
//! SPIFFE JWT-SVID §3): `exp` and a single-string `aud` are required, times are integers, and
//! the clock is an argument. Kind-specific claims (`sub`, `scope`, `cnf`, `jti`, …) are the
//! caller's to check after these pass.

use serde_json::{Map, Value};

use crate::TokenError;

/// What [`check_claims`] requires of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimChecks<'a> {
    /// The issuer `iss` must equal, when given. When `None`, `iss` is not compared (but must
    /// be a string if present).
    pub issuer: Option<&'a str>,
    /// The one audience this verifier answers to; `aud` must be exactly this string.
    pub audience: &'a str,
    /// The current time, seconds since the Unix epoch.
    pub now: i64,
    /// Allowed clock skew in seconds; negative values count as zero.
    pub leeway_s: i64,
    /// When given, `iat` is required and `exp - iat` must not exceed this.
    pub max_lifetime_s: Option<i64>,
}

/// Applies the registered-claim rules:
/// - `exp` required, an integer, and `exp > now - leeway` (else [`TokenError::Expired`]);
/// - `nbf`, if present, an integer and `nbf <= now + leeway` (else [`TokenError::NotYetValid`]);
/// - `iat`, if present, an integer and `iat <= now + leeway`, and not after `exp`;
/// - `aud` required and a single string equal to `audience` — arrays (even of one element)
///   and objects are refused, so a token cannot be replayed at a second audience;
/// - `iss` a string, equal to `issuer` when one is given;
/// - with `max_lifetime_s`, `iat` required and `exp - iat <= max_lifetime_s`.
///
/// Integers must fit in `i64`: strings, fractions and numbers such as `2^64` are refused, and
/// all arithmetic saturates, so no input can panic or wrap.
pub fn check_claims(
    claims: &Map<String, Value>,
    checks: &ClaimChecks<'_>,
) -> Result<(), TokenError> {
    let leeway = checks.leeway_s.max(0);
    let exp = integer(claims, "exp")?.ok_or(TokenError::Claims("exp is required"))?;
    let nbf = integer(claims, "nbf")?;
    let iat = integer(claims, "iat")?;

    if exp <= checks.now.saturating_sub(leeway) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > checks.now.saturating_add(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if let Some(iat) = iat {
        if iat > checks.now.saturating_add(leeway) {
            return Err(TokenError::Claims("iat is in the future"));
        }
        if iat > exp {
            return Err(TokenError::Claims("iat is after exp"));
        }
    }
    if let Some(max) = checks.max_lifetime_s {
        let iat = iat.ok_or(TokenError::Claims("iat is required"))?;
        if exp.saturating_sub(iat) > max {
            return Err(TokenError::Claims("lifetime is longer than allowed"));
        }
    }

    match claims.get("aud") {
        Some(Value::String(aud)) if aud == checks.audience => {}
        _ => return Err(TokenError::Audience),
    }
    match (claims.get("iss"), checks.issuer) {
        (None, None) => {}
        (Some(Value::String(iss)), expected) if expected.is_none_or(|e| e == iss) => {}
        (Some(Value::String(_)) | None, Some(_)) => return Err(TokenError::Issuer),
        (Some(_), _) => return Err(TokenError::Claims("iss must be a string")),
    }
    Ok(())
}

/// A NumericDate claim as an `i64`: absent is `None`; anything but an integer that fits is an
/// error (RFC 7519 allows fractions, AIMS never mints them and refuses them).
fn integer(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(match name {
            "exp" => TokenError::Claims("exp must be an integer"),
            "nbf" => TokenError::Claims("nbf must be an integer"),
            _ => TokenError::Claims("iat must be an integer"),
        }),
        Some(_) => Err(match name {
            "exp" => TokenError::Claims("exp must be an integer"),
            "nbf" => TokenError::Claims("nbf must be an integer"),
            _ => TokenError::Claims("iat must be an integer"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn checks() -> ClaimChecks<'static> {
        ClaimChecks {
            issuer: Some("https://aims.example"),
            audience: "spiffe://example.org/tool",
            now: NOW,
            leeway_s: 30,
            max_lifetime_s: Some(3600),
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({
            "iss": "https://aims.example",
            "aud": "spiffe://example.org/tool",
            "iat": NOW - 10,
            "exp": NOW + 300,
        });
        if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
            for (name, value) in extra {
                if value.is_null() {
                    base.remove(&name);
                } else {
                    base.insert(name, value);
                }
            }
        }
        match base {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn check(extra: Value) -> Result<(), TokenError> {
        check_claims(&claims(extra), &checks())
    }

    #[test]
    fn valid_claims_pass() {
        assert!(check(json!({})).is_ok());
        assert!(check(json!({"nbf": NOW + 30})).is_ok());
    }

    #[test]
    fn exp_is_required_and_an_integer() {
        assert!(matches!(
            check(json!({"exp": null})),
            Err(TokenError::Claims("exp is required"))
        ));
        for bad in [
            json!("1700000300"),
            json!(1_700_000_300.5),
            json!(1.7e9),
            json!(u64::MAX),
            json!(18_446_744_073_709_551_616.0_f64),
            json!(true),
            json!([NOW + 300]),
            json!({"t": NOW + 300}),
        ] {
            assert!(
                matches!(
                    check(json!({"exp": bad})),
                    Err(TokenError::Claims("exp must be an integer"))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn exp_honours_the_leeway() {
        assert!(matches!(
            check(json!({"exp": NOW - 30, "iat": NOW - 60})),
            Err(TokenError::Expired)
        ));
        assert!(check(json!({"exp": NOW - 29, "iat": NOW - 60})).is_ok());
        assert!(matches!(
            check(json!({"exp": NOW - 3000, "iat": NOW - 3100})),
            Err(TokenError::Expired)
        ));
        // A negative leeway counts as none.
        let strict = ClaimChecks {
            leeway_s: -100,
            ..checks()
        };
        assert!(matches!(
            check_claims(&claims(json!({"exp": NOW, "iat": NOW - 60})), &strict),
            Err(TokenError::Expired)
        ));
        assert!(check_claims(&claims(json!({"exp": NOW + 1})), &strict).is_ok());
    }

    #[test]
    fn nbf_and_iat_may_not_be_in_the_future() {
        assert!(matches!(
            check(json!({"nbf": NOW + 31})),
            Err(TokenError::NotYetValid)
        ));
        assert!(matches!(
            check(json!({"nbf": "0"})),
            Err(TokenError::Claims(_))
        ));
        assert!(matches!(
            check(json!({"iat": NOW + 31})),
            Err(TokenError::Claims("iat is in the future"))
        ));
        assert!(check(json!({"iat": NOW + 30})).is_ok());
        assert!(matches!(
            check(json!({"iat": 1.5})),
            Err(TokenError::Claims(_))
        ));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let extreme = ClaimChecks {
            now: i64::MIN,
            leeway_s: i64::MAX,
            max_lifetime_s: None,
            ..checks()
        };
        let map = claims(json!({"exp": i64::MAX, "iat": i64::MIN, "nbf": i64::MIN}));
        assert!(check_claims(&map, &extreme).is_ok());
        let late = ClaimChecks {
            now: i64::MAX,
            ..extreme
        };
        assert!(matches!(
            check_claims(&claims(json!({"exp": i64::MIN, "iat": null})), &late),
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            check(json!({"exp": i64::MAX, "iat": i64::MIN})),
            Err(TokenError::Claims("lifetime is longer than allowed"))
        ));
    }

    #[test]
    fn lifetime_is_capped_and_needs_iat() {
        assert!(check(json!({"iat": NOW - 100, "exp": NOW + 3500})).is_ok());
        assert!(matches!(
            check(json!({"iat": NOW - 100, "exp": NOW + 3501})),
            Err(TokenError::Claims("lifetime is longer than allowed"))
        ));
        assert!(matches!(
            check(json!({"iat": null})),
            Err(TokenError::Claims("iat is required"))
        ));
        let uncapped = ClaimChecks {
            max_lifetime_s: None,
            ..checks()
        };
        assert!(check_claims(&claims(json!({"iat": null})), &uncapped).is_ok());
        assert!(matches!(
            check(json!({"iat": NOW, "exp": NOW - 1})),
            Err(TokenError::Expired | TokenError::Claims(_))
        ));
        assert!(matches!(
            check_claims(
                &claims(json!({"iat": NOW + 20, "exp": NOW + 10})),
                &uncapped
            ),
            Err(TokenError::Claims("iat is after exp"))
        ));
    }

    #[test]
    fn audience_must_be_the_one_string() {
        for bad in [
            Value::Null,
            json!("spiffe://example.org/sibling"),
            json!("SPIFFE://example.org/tool"),
            json!(["spiffe://example.org/tool"]),
            json!(["spiffe://example.org/tool", "spiffe://example.org/other"]),
            json!({"aud": "spiffe://example.org/tool"}),
            json!(""),
            json!(1),
        ] {
            assert!(
                matches!(check(json!({"aud": bad})), Err(TokenError::Audience)),
                "{bad}"
            );
        }
    }

    #[test]
    fn issuer_must_match_when_given() {
        assert!(matches!(
            check(json!({"iss": "https://evil.example"})),
            Err(TokenError::Issuer)
        ));
        assert!(matches!(
            check(json!({"iss": null})),
            Err(TokenError::Issuer)
        ));
        assert!(matches!(
            check(json!({"iss": ["https://aims.example"]})),
            Err(TokenError::Claims(_))
        ));
        let any = ClaimChecks {
            issuer: None,
            ..checks()
        };
        assert!(check_claims(&claims(json!({"iss": "https://other.example"})), &any).is_ok());
        assert!(check_claims(&claims(json!({"iss": null})), &any).is_ok());
        assert!(matches!(
            check_claims(&claims(json!({"iss": 7})), &any),
            Err(TokenError::Claims("iss must be a string"))
        ));
    }
}
