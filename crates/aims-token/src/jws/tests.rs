//! Tests for `jws`: one per verification rule, the catalogue's bad-token cases (§2 "Tokens"),
//! published test vectors, and property tests for bit flips and kind separation.

use std::cell::Cell;
use std::sync::OnceLock;

use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

use super::*;
use crate::agent_key::{AgentKey, AgentKeyKind};
use crate::codec::b64url;

const NOW: i64 = 1_700_000_000;
const AUD: &str = "spiffe://example.org/tool";
const ALL_ALGS: [Alg; 4] = [Alg::Es256, Alg::EdDsa, Alg::Ed25519, Alg::Rs256];
const RSA_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/rsa2048.pk8.der");

fn claims() -> Value {
    json!({"iss": "https://aims.example", "sub": "agent-1", "aud": AUD, "iat": NOW, "exp": NOW + 300})
}

struct Es {
    rng: SystemRandom,
    signing: SigningKey,
    public: VerifyingKey,
}

fn es_key() -> Es {
    let rng = SystemRandom::new();
    let signing = SigningKey::generate(&rng).unwrap().key;
    let public = VerifyingKey::try_from(signing.public_jwk()).unwrap();
    Es {
        rng,
        signing,
        public,
    }
}

impl Es {
    fn mint(&self, typ: &str) -> String {
        sign(&self.signing, &self.rng, typ, &claims()).unwrap()
    }

    /// A token with exactly this header and payload text, correctly signed with our key.
    fn forge(&self, header: &str, payload: &[u8]) -> String {
        forge_raw(&b64url(header.as_bytes()), &b64url(payload), |input| {
            self.signing.sign(&self.rng, input).unwrap()
        })
    }

    fn header(&self, typ: &str) -> String {
        format!(
            r#"{{"alg":"ES256","kid":"{}","typ":"{typ}"}}"#,
            self.signing.kid()
        )
    }

    fn verify(&self, token: &str, typ: &str) -> Result<Verified, TokenError> {
        verify(token, typ, &[Alg::Es256], |_| {
            Ok::<_, TokenError>(&self.public)
        })
    }
}

/// Signs `header_b64.payload_b64` exactly as written.
fn forge_raw(header_b64: &str, payload_b64: &str, signer: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let signature = signer(input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

/// A resolver that fails the test if it is ever asked for a key.
fn never(_: &Header) -> Result<VerifyingKey, TokenError> {
    panic!("the key resolver must not be reached")
}

fn header_reason<T: std::fmt::Debug>(result: Result<T, TokenError>) -> &'static str {
    match result {
        Err(TokenError::Header(reason)) => reason,
        other => panic!("expected a header error, got {other:?}"),
    }
}

// ---- round trips and the minted format ----

#[test]
fn es256_round_trip_and_exact_header() {
    let es = es_key();
    let token = es.mint(TYP_ACCESS_TOKEN);
    let header_b64 = token.split('.').next().unwrap();
    let header = String::from_utf8(b64url_decode(header_b64).unwrap()).unwrap();
    assert_eq!(
        header,
        format!(
            r#"{{"alg":"ES256","kid":"{}","typ":"at+jwt"}}"#,
            es.signing.kid()
        )
    );
    let seen = Cell::new(None);
    let verified = verify(&token, TYP_ACCESS_TOKEN, &[Alg::Es256], |header| {
        seen.set(Some(header.clone()));
        Ok::<_, TokenError>(es.public.clone())
    })
    .unwrap();
    let seen = seen.take().unwrap();
    assert_eq!(seen.alg, Alg::Es256);
    assert_eq!(seen.kid.as_deref(), Some(es.signing.kid()));
    assert_eq!(verified.alg, Alg::Es256);
    assert_eq!(verified.kid.as_deref(), Some(es.signing.kid()));
    assert_eq!(verified.typ, "at+jwt");
    assert_eq!(Value::Object(verified.claims.clone()), claims());
    let checks = ClaimChecks {
        issuer: Some("https://aims.example"),
        audience: AUD,
        now: NOW + 10,
        leeway_s: 30,
        max_lifetime_s: Some(3600),
    };
    assert!(check_claims(&verified.claims, &checks).is_ok());
}

#[test]
fn resolver_errors_propagate() {
    let es = es_key();
    let token = es.mint(TYP_SVID);
    assert!(matches!(
        verify(&token, TYP_SVID, &[Alg::Es256], |_| Err::<VerifyingKey, _>(
            TokenError::UnknownKey
        )),
        Err(TokenError::UnknownKey)
    ));
}

#[test]
fn signing_refuses_what_verification_would_refuse() {
    let es = es_key();
    assert!(matches!(
        sign(&es.signing, &es.rng, "JWT", &json!([1])),
        Err(TokenError::Claims(_))
    ));
    assert!(matches!(
        sign(&es.signing, &es.rng, "", &claims()),
        Err(TokenError::Header(_))
    ));
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    assert!(matches!(
        sign(&es.signing, &es.rng, "JWT", &json!({"deep": deep})),
        Err(TokenError::Claims(_))
    ));
    let big = json!({"pad": "x".repeat(MAX_TOKEN_LEN)});
    assert!(matches!(
        sign(&es.signing, &es.rng, "JWT", &big),
        Err(TokenError::TooLarge)
    ));
    // A typ needing JSON escapes is escaped, and verifies as itself.
    let token = sign(&es.signing, &es.rng, "a\"b", &claims()).unwrap();
    assert!(es.verify(&token, "a\"b").is_ok());
}

// ---- size, segments, base64, UTF-8, JSON ----

#[test]
fn size_is_checked_first() {
    let es = es_key();
    let huge = "!".repeat(1 << 20);
    assert!(matches!(
        verify(&huge, TYP_SVID, &ALL_ALGS, never),
        Err(TokenError::TooLarge)
    ));
    let just_over = "a".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(
        verify(&just_over, TYP_SVID, &ALL_ALGS, never),
        Err(TokenError::TooLarge)
    ));
    // A header of 1 MB is refused before it is decoded.
    let big_header = format!("{}.e30.AA", b64url("x".repeat(1 << 20).as_bytes()));
    assert!(matches!(
        verify(&big_header, TYP_SVID, &ALL_ALGS, never),
        Err(TokenError::TooLarge)
    ));
    // A valid token padded up to exactly the limit gets past the size check.
    let token = es.forge(&es.header("JWT"), br#"{"p":""}"#);
    let room = MAX_TOKEN_LEN - token.len();
    let filler = "x".repeat(room / 4 * 3);
    let padded = es.forge(
        &es.header("JWT"),
        format!(r#"{{"p":"{filler}"}}"#).as_bytes(),
    );
    assert!(padded.len() <= MAX_TOKEN_LEN);
    assert!(es.verify(&padded, "JWT").is_ok());
}

#[test]
fn exactly_three_segments() {
    let es = es_key();
    let token = es.mint(TYP_SVID);
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        String::new(),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{token}."),
        format!("{token}.{}", parts[2]),
        format!(".{token}"),
    ] {
        let result = verify(&bad, TYP_SVID, &ALL_ALGS, never);
        assert!(
            matches!(result, Err(TokenError::Malformed(_))),
            "{bad:?}: {result:?}"
        );
    }
}

#[test]
fn base64url_must_be_strict() {
    let es = es_key();
    let token = es.mint(TYP_SVID);
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let mut bad = vec![
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}==.{s}"),
        format!("{h}.{p}.{s}="),
        format!("{h} .{p}.{s}"),
        format!("{h}.{p}.{s}\n"),
        // The standard alphabet's `+` in place of a url-safe character (always one change,
        // whatever characters the signature happens to contain).
        format!("{h}.{p}.+{}", &s[1..]),
        format!("{h}.{p}.{}", "/".repeat(86)),
    ];
    // Non-zero trailing bits in the last character of the 86-character signature.
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = alphabet.find(last).unwrap();
    assert_eq!(
        value & 0b1111,
        0,
        "the canonical encoding has zero trailing bits"
    );
    let sloppy = alphabet.chars().nth(value | 1).unwrap();
    bad.push(format!("{h}.{p}.{}{sloppy}", &s[..s.len() - 1]));
    // A payload written in the standard alphabet, correctly signed over that text.
    let std_payload = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        br#"{"k":"????>>>>"}"#,
    );
    assert!(std_payload.contains('/') || std_payload.contains('+'));
    bad.push(forge_raw(
        &b64url(es.header("JWT").as_bytes()),
        &std_payload,
        |input| es.signing.sign(&es.rng, input).unwrap(),
    ));
    for token in bad {
        let result = verify(&token, TYP_SVID, &ALL_ALGS, never);
        assert!(
            matches!(result, Err(TokenError::Malformed(_))),
            "{token}: {result:?}"
        );
    }
}

#[test]
fn header_must_be_a_strict_utf8_json_object() {
    let p = b64url(br#"{"exp":1}"#);
    for header in [
        b"\xff\xfe{}".as_slice(),
        br#"{"alg":"ES256","typ":"\ud800"}"#,
        br#"{"alg":"ES256","typ":"JWT","alg":"none"}"#,
        br#"{"alg":"ES256","typ":"JWT","x":{"a":1,"a":2}}"#,
        br#"["ES256"]"#,
        b"null",
        b"",
        br#"{"alg":"ES256","typ":"JWT"}{}"#,
    ] {
        let token = format!("{}.{p}.AA", b64url(header));
        let result = verify(&token, TYP_SVID, &ALL_ALGS, never);
        let trailing_space_ok = header.ends_with(b" ");
        if trailing_space_ok {
            // JSON allows trailing whitespace; it then fails later (the signature is garbage).
            assert!(result.is_err());
        } else {
            assert!(
                matches!(result, Err(TokenError::Malformed(_))),
                "{header:?}: {result:?}"
            );
        }
    }
}

#[test]
fn deep_header_is_refused_quickly() {
    // 10,000 levels (left open: closing them would not fit in 16 KiB).
    let header = format!(r#"{{"alg":"ES256","typ":"JWT","x":{}"#, "[".repeat(10_000));
    let token = format!("{}.e30.AA", b64url(header.as_bytes()));
    assert!(token.len() <= MAX_TOKEN_LEN);
    let started = std::time::Instant::now();
    assert!(matches!(
        verify(&token, TYP_SVID, &ALL_ALGS, never),
        Err(TokenError::Malformed("JSON is nested too deeply"))
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn claims_must_be_strict_json_and_are_parsed_only_after_the_signature() {
    let es = es_key();
    let header = es.header("JWT");
    let bad_payloads: [&[u8]; 8] = [
        br#"{"scope":"read","scope":"admin"}"#,
        br#"{"a":{"b":1,"b":2}}"#,
        br#"{"exp":1e400}"#,
        br#"{"sub":"\udc00"}"#,
        b"{\"sub\":\"\xc3\x28\"}",
        b"not json",
        br#"["exp"]"#,
        b"",
    ];
    let stranger = es_key();
    for payload in bad_payloads {
        let token = es.forge(&header, payload);
        // With a wrong key the signature fails first: the claims were never looked at.
        let result = verify(&token, TYP_SVID, &[Alg::Es256], |_| {
            Ok::<_, TokenError>(&stranger.public)
        });
        assert!(matches!(result, Err(TokenError::Signature)), "{result:?}");
        // With the right key the claims are parsed and refused.
        let result = es.verify(&token, TYP_SVID);
        assert!(
            matches!(result, Err(TokenError::Malformed(_))),
            "{result:?}"
        );
    }
    let mut deep = "1".to_owned();
    for _ in 0..MAX_DEPTH {
        deep = format!("[{deep}]");
    }
    let token = es.forge(&header, format!(r#"{{"deep":{deep}}}"#).as_bytes());
    assert!(matches!(
        es.verify(&token, TYP_SVID),
        Err(TokenError::Malformed("JSON is nested too deeply"))
    ));
    // 2^64 parses, but is never an integer time.
    let token = es.forge(
        &header,
        br#"{"aud":"spiffe://example.org/tool","exp":18446744073709551616}"#,
    );
    let verified = es.verify(&token, TYP_SVID).unwrap();
    let checks = ClaimChecks {
        issuer: None,
        audience: AUD,
        now: NOW,
        leeway_s: 0,
        max_lifetime_s: None,
    };
    assert!(matches!(
        check_claims(&verified.claims, &checks),
        Err(TokenError::Claims(_))
    ));
}

// ---- alg ----

#[test]
fn only_allowed_algorithms_are_accepted() {
    for alg in [
        "none", "None", "nONE", "NONE", "", "HS256", "HS512", "ES384", "ES512", "PS256", "RS512",
        "es256", "ES256 ", "ed25519", "ED25519", "Ed448", "EDDSA",
    ] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        for signature in ["", "AA"] {
            let token = format!(
                "{}.{}.{signature}",
                b64url(header.as_bytes()),
                b64url(br#"{"exp":1}"#)
            );
            let result = verify(&token, TYP_SVID, &ALL_ALGS, never);
            assert!(
                matches!(result, Err(TokenError::Algorithm)),
                "{alg}: {result:?}"
            );
        }
    }
    for header in [
        r#"{"alg":null,"typ":"JWT"}"#,
        r#"{"alg":["ES256"],"typ":"JWT"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        let token = format!("{}.e30.", b64url(header.as_bytes()));
        assert!(matches!(
            verify(&token, TYP_SVID, &ALL_ALGS, never),
            Err(TokenError::Header(_))
        ));
    }
    // A supported algorithm the caller does not allow for this kind.
    let es = es_key();
    let token = es.mint(TYP_SVID);
    assert!(matches!(
        verify(&token, TYP_SVID, &[Alg::EdDsa, Alg::Rs256], never),
        Err(TokenError::Algorithm)
    ));
    assert!(matches!(
        verify(&token, TYP_SVID, &[], never),
        Err(TokenError::Algorithm)
    ));
}

#[test]
fn ed25519_verifies_under_either_of_its_names() {
    // RFC 9864 names the algorithm EdDSA-over-Ed25519 `Ed25519`; the signature is the same.
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = VerifyingKey::from_ed25519(pair.public_key().as_ref()).unwrap();
    let signed = |alg: &str| {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        forge_raw(
            &b64url(header.as_bytes()),
            &b64url(br#"{"exp":1}"#),
            |input| pair.sign(input).as_ref().to_vec(),
        )
    };
    for (name, alg) in [("EdDSA", Alg::EdDsa), ("Ed25519", Alg::Ed25519)] {
        let verified = verify(&signed(name), TYP_SVID, &ALL_ALGS, |_| {
            Ok::<_, TokenError>(&public)
        })
        .unwrap();
        assert_eq!(verified.alg, alg);
        assert_eq!(Alg::parse(name).unwrap().as_str(), name);
        assert!(public.verifies(alg));
    }
    // Each name is allowed separately: a kind that allows one does not allow the other.
    assert!(matches!(
        verify(&signed("Ed25519"), TYP_SVID, &[Alg::EdDsa], never),
        Err(TokenError::Algorithm)
    ));
    // And no other key type takes either name.
    let es = es_key();
    assert!(!es.public.verifies(Alg::Ed25519));
    assert!(matches!(
        verify(&signed("Ed25519"), TYP_SVID, &ALL_ALGS, |_| Ok::<
            _,
            TokenError,
        >(
            &es.public
        )),
        Err(TokenError::Algorithm)
    ));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    // CVE-2015-9235: the attacker uses our published key as an HMAC secret.
    let es = es_key();
    let secret = serde_json::to_vec(es.signing.public_jwk()).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let header = format!(
        r#"{{"alg":"HS256","kid":"{}","typ":"JWT"}}"#,
        es.signing.kid()
    );
    let token = forge_raw(
        &b64url(header.as_bytes()),
        &b64url(claims().to_string().as_bytes()),
        |input| ring::hmac::sign(&key, input).as_ref().to_vec(),
    );
    assert!(matches!(
        verify(&token, TYP_SVID, &ALL_ALGS, never),
        Err(TokenError::Algorithm)
    ));
}

#[test]
fn key_type_must_match_alg() {
    let rng = SystemRandom::new();
    let es = es_key();
    let ed = AgentKey::generate(AgentKeyKind::Ed25519, &rng).unwrap();
    let token = es.mint(TYP_SVID);
    // An ES256 token checked against an Ed25519 or RSA key fails on the algorithm, not later.
    assert!(matches!(
        verify(&token, TYP_SVID, &ALL_ALGS, |_| Ok::<_, TokenError>(
            ed.verifying_key()
        )),
        Err(TokenError::Algorithm)
    ));
    let (rsa_public, _) = rsa_fixture();
    assert!(matches!(
        verify(&token, TYP_SVID, &ALL_ALGS, |_| Ok::<_, TokenError>(
            &rsa_public
        )),
        Err(TokenError::Algorithm)
    ));
    // An EdDSA-signed token claiming ES256 fails too.
    let header = format!(
        r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#,
        es.signing.kid()
    );
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let token = forge_raw(
        &b64url(header.as_bytes()),
        &b64url(br#"{"exp":1}"#),
        |input| pair.sign(input).as_ref().to_vec(),
    );
    let ed_public = VerifyingKey::from_ed25519(pair.public_key().as_ref()).unwrap();
    assert!(matches!(
        verify(&token, TYP_SVID, &ALL_ALGS, |_| Ok::<_, TokenError>(
            &ed_public
        )),
        Err(TokenError::Algorithm)
    ));
    assert!(matches!(
        es.verify(&token, TYP_SVID),
        Err(TokenError::Signature)
    ));
}

// ---- typ and token kinds ----

#[test]
fn typ_is_required_and_compared_as_a_media_type() {
    let es = es_key();
    let no_typ = es.forge(
        &format!(r#"{{"alg":"ES256","kid":"{}"}}"#, es.signing.kid()),
        br#"{}"#,
    );
    assert_eq!(
        header_reason(es.verify(&no_typ, TYP_SVID)),
        "typ is required"
    );
    for bad in [r#""""#, "null", "1", r#"["JWT"]"#] {
        let header = format!(
            r#"{{"alg":"ES256","kid":"{}","typ":{bad}}}"#,
            es.signing.kid()
        );
        assert!(matches!(
            es.verify(&es.forge(&header, b"{}"), TYP_SVID),
            Err(TokenError::Header(_))
        ));
    }
    for (written, expected, ok) in [
        ("at+jwt", "at+jwt", true),
        ("AT+JWT", "at+jwt", true),
        ("application/at+jwt", "at+jwt", true),
        ("Application/At+Jwt", "at+jwt", true),
        ("at+jwt", "application/at+jwt", true),
        ("jwt", "JWT", true),
        ("text/at+jwt", "at+jwt", false),
        ("application/", "application/", false),
        ("at+jwt ", "at+jwt", false),
        ("JWT", "at+jwt", false),
        ("at+jwt", "JWT", false),
        ("jwt", "at+jwt", false),
        ("dpop+jwt", "aims-attest+jwt", false),
    ] {
        let token = es.forge(&es.header(written), b"{}");
        let result = es.verify(&token, expected);
        assert_eq!(result.is_ok(), ok, "{written} as {expected}: {result:?}");
        if !ok {
            assert!(
                matches!(result, Err(TokenError::Type)),
                "{written} as {expected}"
            );
        }
    }
}

#[test]
fn a_token_of_one_kind_never_verifies_as_another() {
    let es = es_key();
    let kinds = [
        TYP_SVID,
        TYP_ACCESS_TOKEN,
        TYP_ATTESTATION,
        TYP_DPOP,
        "aims-approval+jwt",
        "aims-refresh+jwt",
    ];
    for minted in kinds {
        let token = es.mint(minted);
        for expected in kinds {
            let result = es.verify(&token, expected);
            if minted == expected {
                assert!(result.is_ok());
            } else {
                assert!(
                    matches!(result, Err(TokenError::Type)),
                    "{minted} as {expected}"
                );
            }
        }
    }
    // Self-signed proofs are kept apart the same way.
    let rng = SystemRandom::new();
    let agent = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let proof = agent
        .sign_self_signed(&rng, TYP_ATTESTATION, &claims())
        .unwrap();
    assert!(matches!(
        verify_self_signed(&proof, TYP_DPOP, &ALL_ALGS),
        Err(TokenError::Type)
    ));
}

// ---- header members that would move trust into the token ----

#[test]
fn crit_is_refused() {
    let es = es_key();
    for crit in [r#"["exp"]"#, r#"["b64"]"#, "[]", r#""x""#] {
        let header = format!(
            r#"{{"alg":"ES256","kid":"{}","typ":"JWT","crit":{crit},"exp":1}}"#,
            es.signing.kid()
        );
        let token = es.forge(&header, br#"{}"#);
        assert_eq!(
            header_reason(verify(&token, TYP_SVID, &ALL_ALGS, never)),
            "crit is not supported"
        );
    }
}

#[test]
fn key_urls_and_certificates_are_refused_without_fetching() {
    let es = es_key();
    for (name, value) in [
        ("jku", r#""https://attacker.example/jwks.json""#),
        ("jku", r#""http://169.254.169.254/latest/meta-data/""#),
        ("x5u", r#""https://attacker.example/cert.pem""#),
        ("x5u", r#""http://169.254.169.254/""#),
        ("x5c", r#"["MIIB"]"#),
    ] {
        let header = format!(
            r#"{{"alg":"ES256","kid":"{}","typ":"JWT","{name}":{value}}}"#,
            es.signing.kid()
        );
        let token = es.forge(&header, br#"{}"#);
        // `never` proves no key lookup (and so no fetch) happens.
        assert_eq!(
            header_reason(verify(&token, TYP_SVID, &ALL_ALGS, never)),
            "jku, x5u and x5c are refused"
        );
        assert!(matches!(
            verify_self_signed(&token, TYP_SVID, &ALL_ALGS),
            Err(TokenError::Header(_))
        ));
    }
}

#[test]
fn an_embedded_jwk_is_never_trusted_by_verify() {
    // CVE-2018-0114: the attacker signs with their own key and ships it in the header.
    let rng = SystemRandom::new();
    let attacker = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let token = attacker
        .sign_self_signed(&rng, TYP_ACCESS_TOKEN, &claims())
        .unwrap();
    assert_eq!(
        header_reason(verify(&token, TYP_ACCESS_TOKEN, &ALL_ALGS, never)),
        "an embedded jwk is not trusted here"
    );
    // Even when the resolver would have returned that very key.
    let es = es_key();
    let header = format!(
        r#"{{"alg":"ES256","kid":"{}","typ":"at+jwt","jwk":{}}}"#,
        es.signing.kid(),
        es.public.to_jwk()
    );
    let token = es.forge(&header, claims().to_string().as_bytes());
    assert!(matches!(
        es.verify(&token, TYP_ACCESS_TOKEN),
        Err(TokenError::Header(_))
    ));
}

#[test]
fn self_signed_requires_a_valid_public_jwk() {
    let es = es_key();
    let plain = es.mint(TYP_ATTESTATION);
    assert_eq!(
        header_reason(verify_self_signed(&plain, TYP_ATTESTATION, &ALL_ALGS)),
        "jwk is required"
    );
    let rng = SystemRandom::new();
    let agent = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let mut with_d = agent.public_jwk();
    with_d["d"] = json!("jpsQnnGQmL-YBIffH1136cLyQXRqwu-3NMX2r2xL5gQ");
    let mut wrong_alg = agent.public_jwk();
    wrong_alg["alg"] = json!("RS256");
    for (jwk, expected) in [
        (with_d, "private"),
        (wrong_alg, "alg"),
        (json!("not an object"), "object"),
        (json!({"kty": "oct", "k": "c2VjcmV0"}), "private"),
    ] {
        let header = json!({"alg": "ES256", "typ": TYP_ATTESTATION, "jwk": jwk});
        // Signed by the agent's own key, so only the jwk rules can refuse it.
        let token = forge_raw(
            &b64url(header.to_string().as_bytes()),
            &b64url(b"{}"),
            |input| agent.sign_raw(&rng, input).unwrap(),
        );
        let result = verify_self_signed(&token, TYP_ATTESTATION, &ALL_ALGS);
        let message = format!("{:?}", result);
        assert!(result.is_err(), "{expected}");
        assert!(
            message.contains(expected) || message.contains("Header"),
            "{expected}: {message}"
        );
    }
    // A jwk whose key does not match the signature.
    let other = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let header = json!({"alg": "ES256", "typ": TYP_ATTESTATION, "jwk": other.public_jwk()});
    let token = forge_raw(
        &b64url(header.to_string().as_bytes()),
        &b64url(b"{}"),
        |input| agent.sign_raw(&rng, input).unwrap(),
    );
    assert!(matches!(
        verify_self_signed(&token, TYP_ATTESTATION, &ALL_ALGS),
        Err(TokenError::Signature)
    ));
}

#[test]
fn hostile_kids_are_refused_before_lookup() {
    let es = es_key();
    let long = "a".repeat(10 * 1024);
    let just_over = "k".repeat(MAX_KID_LEN + 1);
    for kid in [
        "../../dev/null",
        "' OR 1=1--",
        long.as_str(),
        just_over.as_str(),
        "",
        "kid with spaces",
        "kid\u{0}",
        "kid\n",
        "ключ",
        "a/b",
        "a\\b",
        "%2e%2e",
    ] {
        let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"}).to_string();
        let token = es.forge(&header, b"{}");
        let result = verify(&token, TYP_SVID, &ALL_ALGS, never);
        assert!(
            matches!(
                result,
                Err(TokenError::Header(_)) | Err(TokenError::TooLarge)
            ),
            "{kid:?}: {result:?}"
        );
    }
    for kid in [json!(7), json!(null), json!(["k"])] {
        let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"}).to_string();
        assert!(matches!(
            verify(&es.forge(&header, b"{}"), TYP_SVID, &ALL_ALGS, never),
            Err(TokenError::Header(_))
        ));
    }
    // The longest allowed kid, and one with every allowed character class, are fine.
    for kid in ["k".repeat(MAX_KID_LEN), "Ab9_-.x".to_owned()] {
        let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"}).to_string();
        assert!(es.verify(&es.forge(&header, b"{}"), TYP_SVID).is_ok());
    }
    // No kid at all is allowed; the resolver decides what that means.
    let header = json!({"alg": "ES256", "typ": "JWT"}).to_string();
    assert!(
        es.verify(&es.forge(&header, b"{}"), TYP_SVID)
            .unwrap()
            .kid
            .is_none()
    );
}

// ---- signatures ----

#[test]
fn es256_signatures_must_be_64_valid_bytes() {
    let es = es_key();
    let token = es.mint(TYP_SVID);
    let input = token.rsplit_once('.').unwrap().0;
    let real = b64url_decode(token.rsplit_once('.').unwrap().1).unwrap();
    assert_eq!(real.len(), 64);
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend_from_slice(&real[..32]);
    der.extend_from_slice(&[0x02, 0x20]);
    der.extend_from_slice(&real[32..]);
    for signature in [
        vec![0u8; 64],                                 // r = s = 0 (CVE-2022-21449)
        vec![],                                        // empty
        real[..63].to_vec(),                           // short
        [real.clone(), vec![0]].concat(),              // long
        der,                                           // ASN.1 DER instead of r || s
        [vec![0u8; 32], real[32..].to_vec()].concat(), // r = 0
        [real[..32].to_vec(), vec![0u8; 32]].concat(), // s = 0
        vec![0xff; 64],                                // r, s >= n
    ] {
        let forged = format!("{input}.{}", b64url(&signature));
        assert!(
            matches!(es.verify(&forged, TYP_SVID), Err(TokenError::Signature)),
            "{signature:?}"
        );
    }
    // Another key's valid signature over the same input.
    let other = es_key();
    let foreign = other.signing.sign(&other.rng, input.as_bytes()).unwrap();
    assert!(matches!(
        es.verify(&format!("{input}.{}", b64url(&foreign)), TYP_SVID),
        Err(TokenError::Signature)
    ));
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let (token, key) = fixed_token();
    for index in 0..token.len() {
        for bit in 0..8 {
            assert!(
                flipped_is_rejected(token, key, index, bit),
                "byte {index} bit {bit}"
            );
        }
    }
}

fn fixed_token() -> (&'static str, &'static VerifyingKey) {
    static TOKEN: OnceLock<(String, VerifyingKey)> = OnceLock::new();
    let (token, key) = TOKEN.get_or_init(|| {
        let es = es_key();
        (es.mint(TYP_ACCESS_TOKEN), es.public)
    });
    (token, key)
}

fn flipped_is_rejected(token: &str, key: &VerifyingKey, index: usize, bit: u8) -> bool {
    let mut bytes = token.as_bytes().to_vec();
    bytes[index] ^= 1 << bit;
    // A flipped high bit is not UTF-8, so it never even becomes a `&str`.
    let Ok(flipped) = String::from_utf8(bytes) else {
        return true;
    };
    verify(&flipped, TYP_ACCESS_TOKEN, &ALL_ALGS, |_| {
        Ok::<_, TokenError>(key)
    })
    .is_err()
}

proptest! {
    #[test]
    fn any_single_bit_flip_is_rejected(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (token, key) = fixed_token();
        prop_assert!(flipped_is_rejected(token, key, index.index(token.len()), bit));
    }

    #[test]
    fn a_typ_verifies_only_as_itself(minted in "[A-Za-z0-9+.-]{1,16}", expected in "[A-Za-z0-9+.-]{1,16}") {
        let es = es_key();
        let token = es.mint(&minted);
        let result = es.verify(&token, &expected);
        if minted.eq_ignore_ascii_case(&expected) {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(matches!(result, Err(TokenError::Type)));
        }
    }

    #[test]
    fn self_signed_flips_are_rejected(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        static PROOF: OnceLock<String> = OnceLock::new();
        let proof = PROOF.get_or_init(|| {
            let rng = SystemRandom::new();
            let agent = AgentKey::generate(AgentKeyKind::Ed25519, &rng).unwrap();
            agent.sign_self_signed(&rng, TYP_ATTESTATION, &claims()).unwrap()
        });
        let mut bytes = proof.as_bytes().to_vec();
        let index = index.index(bytes.len());
        bytes[index] ^= 1 << bit;
        if let Ok(flipped) = String::from_utf8(bytes) {
            prop_assert!(verify_self_signed(&flipped, TYP_ATTESTATION, &ALL_ALGS).is_err());
        }
    }
}

// ---- RSA ----

/// The RSA test key's public half and its key pair.
fn rsa_fixture() -> (VerifyingKey, RsaKeyPair) {
    let pair = RsaKeyPair::from_pkcs8(RSA_FIXTURE).unwrap();
    let components = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let jwk = json!({"kty": "RSA", "n": b64url(&components.n), "e": b64url(&components.e), "alg": "RS256", "kid": "rsa-1"});
    let (key, kid) = VerifyingKey::from_jwk(&jwk).unwrap();
    assert_eq!(kid.as_deref(), Some("rsa-1"));
    (key, pair)
}

#[test]
fn rs256_tokens_verify() {
    let rng = SystemRandom::new();
    let (public, pair) = rsa_fixture();
    assert_eq!(rsa_bits(&public), 2048);
    let header = r#"{"alg":"RS256","kid":"rsa-1","typ":"JWT"}"#;
    let token = forge_raw(
        &b64url(header.as_bytes()),
        &b64url(claims().to_string().as_bytes()),
        |input| {
            let mut signature = vec![0u8; pair.public().modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, input, &mut signature)
                .unwrap();
            signature
        },
    );
    let verified = verify(&token, TYP_SVID, &[Alg::Rs256], |header| {
        assert_eq!(header.kid.as_deref(), Some("rsa-1"));
        Ok::<_, TokenError>(&public)
    })
    .unwrap();
    assert_eq!(verified.alg, Alg::Rs256);
    assert_eq!(verified.claims["sub"], "agent-1");
    // Not allowed for this kind.
    assert!(matches!(
        verify(&token, TYP_SVID, &[Alg::Es256], never),
        Err(TokenError::Algorithm)
    ));
    // Tampered or truncated signatures fail.
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = b64url_decode(signature).unwrap();
    bytes[10] ^= 1;
    let tampered = format!("{input}.{}", b64url(&bytes));
    assert!(matches!(
        verify(&tampered, TYP_SVID, &[Alg::Rs256], |_| Ok::<_, TokenError>(
            &public
        )),
        Err(TokenError::Signature)
    ));
    let short = format!("{input}.{}", b64url(&bytes[1..]));
    assert!(matches!(
        verify(&short, TYP_SVID, &[Alg::Rs256], |_| Ok::<_, TokenError>(
            &public
        )),
        Err(TokenError::Signature)
    ));
}

fn rsa_bits(key: &VerifyingKey) -> usize {
    match key {
        VerifyingKey::Rs256(rsa) => rsa.modulus_bits(),
        other => panic!("not RSA: {other:?}"),
    }
}

#[test]
fn rsa_moduli_outside_2048_to_8192_bits_are_refused() {
    let e = b64url(&[1, 0, 1]);
    let modulus = |len: usize, first: u8| {
        let mut n = vec![0xa5; len];
        n[0] = first;
        n[len - 1] |= 1;
        json!({"kty": "RSA", "n": b64url(&n), "e": e})
    };
    for (jwk, ok) in [
        (modulus(128, 0xc0), false),  // 1024 bits
        (modulus(256, 0x7f), false),  // 2047 bits
        (modulus(256, 0x80), true),   // 2048 bits
        (modulus(1024, 0xff), true),  // 8192 bits
        (modulus(1025, 0x01), false), // 8193 bits
        (
            json!({"kty": "RSA", "n": format!("AA{}", &b64url(&[0xc0; 256])[2..]), "e": e}),
            false,
        ),
    ] {
        assert_eq!(
            VerifyingKey::from_jwk(&jwk).is_ok(),
            ok,
            "{}",
            jwk["n"].as_str().unwrap().len()
        );
    }
    let mut leading_zero = vec![0u8];
    leading_zero.extend_from_slice(&[0xc0; 256]);
    assert!(
        VerifyingKey::from_jwk(&json!({"kty": "RSA", "n": b64url(&leading_zero), "e": e})).is_err()
    );
    let n = b64url(&[0xc1; 256]);
    for bad_e in [
        vec![1],
        vec![2],
        vec![1, 0, 0],
        vec![0, 1, 0, 1],
        vec![1, 0, 0, 0, 1],
        vec![],
    ] {
        assert!(
            VerifyingKey::from_jwk(&json!({"kty": "RSA", "n": n, "e": b64url(&bad_e)})).is_err(),
            "{bad_e:?}"
        );
    }
    assert!(VerifyingKey::from_jwk(&json!({"kty": "RSA", "n": n, "e": b64url(&[3])})).is_ok());
}

// ---- JWKs and thumbprints ----

#[test]
fn jwks_are_read_strictly() {
    let rng = SystemRandom::new();
    let ec = AgentKey::generate(AgentKeyKind::P256, &rng)
        .unwrap()
        .public_jwk();
    let ed = AgentKey::generate(AgentKeyKind::Ed25519, &rng)
        .unwrap()
        .public_jwk();
    let with = |base: &Value, name: &str, value: Value| {
        let mut jwk = base.clone();
        jwk[name] = value;
        jwk
    };
    for (name, ok) in [
        ("ES256", true),
        ("EdDSA", false),
        ("Ed25519", false),
        ("RS256", false),
        ("none", false),
        ("HS256", false),
    ] {
        assert_eq!(
            VerifyingKey::from_jwk(&with(&ec, "alg", json!(name))).is_ok(),
            ok,
            "EC {name}"
        );
    }
    assert!(VerifyingKey::from_jwk(&with(&ed, "alg", json!("EdDSA"))).is_ok());
    assert!(VerifyingKey::from_jwk(&with(&ed, "alg", json!("Ed25519"))).is_ok());
    assert!(VerifyingKey::from_jwk(&with(&ed, "alg", json!("ES256"))).is_err());
    for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        assert!(matches!(
            VerifyingKey::from_jwk(&with(&ec, private, json!("AAAA"))),
            Err(TokenError::BadJwk(
                "a JWK with private key members is refused"
            ))
        ));
    }
    assert!(VerifyingKey::from_jwk(&with(&ec, "use", json!("sig"))).is_ok());
    assert!(VerifyingKey::from_jwk(&with(&ec, "use", json!("jwt-svid"))).is_ok());
    assert!(VerifyingKey::from_jwk(&with(&ec, "use", json!("enc"))).is_err());
    assert!(VerifyingKey::from_jwk(&with(&ec, "crv", json!("P-384"))).is_err());
    assert!(VerifyingKey::from_jwk(&with(&ed, "crv", json!("X25519"))).is_err());
    assert!(VerifyingKey::from_jwk(&with(&ec, "kty", json!("oct"))).is_err());
    assert!(VerifyingKey::from_jwk(&with(&ec, "x", json!("AAAA"))).is_err());
    assert!(VerifyingKey::from_jwk(&with(&ec, "y", json!(7))).is_err());
    assert!(
        VerifyingKey::from_jwk(&with(
            &ed,
            "x",
            json!(format!("{}=", ed["x"].as_str().unwrap()))
        ))
        .is_err()
    );
    assert!(VerifyingKey::from_jwk(&with(&ec, "kid", json!("../../dev/null"))).is_err());
    assert_eq!(
        VerifyingKey::from_jwk(&with(&ec, "kid", json!("k-1")))
            .unwrap()
            .1
            .as_deref(),
        Some("k-1")
    );
    assert!(VerifyingKey::from_jwk(&json!([])).is_err());
    assert!(VerifyingKey::from_jwk(&json!({})).is_err());
}

#[test]
fn thumbprints_follow_rfc7638() {
    // RFC 7638 §3.1.
    let rsa = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    let (key, _) = VerifyingKey::from_jwk(&rsa).unwrap();
    assert_eq!(
        key.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    // RFC 9449 §6.1 (EC), and agreement with the stored-key form.
    let ec = json!({"kty": "EC", "crv": "P-256", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs", "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"});
    let (key, _) = VerifyingKey::from_jwk(&ec).unwrap();
    assert_eq!(
        key.thumbprint(),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
    let es = es_key();
    assert_eq!(es.public.thumbprint(), es.signing.public_jwk().thumbprint());
    // RFC 8037 appendix A.3 (OKP).
    let (key, _) = VerifyingKey::from_jwk(&rfc8037_jwk()).unwrap();
    assert_eq!(
        key.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    // Debug shows the algorithm and thumbprint only.
    assert_eq!(
        format!("{key:?}"),
        "VerifyingKey { alg: EdDsa, thumbprint: \"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k\" }"
    );
}

// ---- published vectors ----

fn rfc8037_jwk() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
}

#[test]
fn rfc8037_ed25519_vector() {
    // RFC 8037 appendix A.4: {"alg":"EdDSA"} over "Example of Ed25519 signing".
    let token = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let (input, signature) = token.rsplit_once('.').unwrap();
    let (key, _) = VerifyingKey::from_jwk(&rfc8037_jwk()).unwrap();
    assert!(
        key.verify_signature(input.as_bytes(), &b64url_decode(signature).unwrap())
            .is_ok()
    );
    // Ed25519 is deterministic: the RFC's private key reproduces the signature exactly.
    let d = b64url_decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap();
    let x = b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
    let pair = Ed25519KeyPair::from_seed_and_public_key(&d, &x).unwrap();
    assert_eq!(b64url(pair.sign(input.as_bytes()).as_ref()), signature);
    // Our verifier refuses it all the same: it has no `typ`, and its payload is not claims.
    assert_eq!(
        header_reason(verify(token, TYP_SVID, &ALL_ALGS, |_| Ok::<_, TokenError>(
            &key
        ))),
        "typ is required"
    );
}

#[test]
fn rfc7515_a3_es256_vector() {
    // RFC 7515 appendix A.3: ES256 with the P-256 key below.
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    let (key, _) = VerifyingKey::from_jwk(&jwk).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    assert!(
        key.verify_signature(input.as_bytes(), &b64url_decode(signature).unwrap())
            .is_ok()
    );
    assert!(
        key.verify_signature(b"other input", &b64url_decode(signature).unwrap())
            .is_err()
    );
    assert_eq!(
        header_reason(verify(token, TYP_SVID, &ALL_ALGS, |_| Ok::<_, TokenError>(
            &key
        ))),
        "typ is required"
    );
    // The same shape with a `typ`, minted and verified by us (an A.3-style round trip).
    let es = es_key();
    let payload = b64url_decode(token.split('.').nth(1).unwrap()).unwrap();
    let ours = es.forge(&es.header("JWT"), &payload);
    let verified = es.verify(&ours, TYP_SVID).unwrap();
    assert_eq!(verified.claims["iss"], "joe");
    assert_eq!(verified.claims["exp"], 1_300_819_380);
    assert_eq!(verified.claims["http://example.com/is_root"], true);
}

#[test]
fn third_party_tokens_may_omit_typ_but_not_carry_another() {
    let es = es_key();
    let resolve = |_: &Header| Ok::<_, TokenError>(&es.public);
    let kid = es.signing.kid();
    let no_typ = es.forge(
        &format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
        claims().to_string().as_bytes(),
    );
    assert!(verify_third_party(&no_typ, &[Alg::Es256], resolve).is_ok());
    assert!(
        matches!(es.verify(&no_typ, "JWT"), Err(TokenError::Header(_))),
        "our own tokens need typ"
    );
    assert!(verify_third_party(&es.mint("JWT"), &[Alg::Es256], resolve).is_ok());
    assert!(matches!(
        verify_third_party(&es.mint("at+jwt"), &[Alg::Es256], resolve),
        Err(TokenError::Type)
    ));
    let with_jku = es.forge(
        &format!(r#"{{"alg":"ES256","kid":"{kid}","jku":"http://169.254.169.254/"}}"#),
        b"{}",
    );
    assert!(verify_third_party(&with_jku, &[Alg::Es256], never).is_err());
}
