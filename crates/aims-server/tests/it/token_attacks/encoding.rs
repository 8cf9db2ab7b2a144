//! Malformed and oversized serializations (test catalogue §2.12–14): broken compact
//! serializations, oversized tokens, deeply nested claims.

use super::*;
use crate::on_both_stores;

on_both_stores!(
    malformed_compact_serializations_are_refused,
    oversized_tokens_are_refused_cleanly,
    deeply_nested_claims_are_refused,
);

async fn malformed_compact_serializations_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let mangle = |token: &str, how: &str| -> String {
        let parts: Vec<&str> = token.split('.').collect();
        match how {
            "four segments" => format!("{token}.{}", parts[2]),
            "four segments, trailing dot" => format!("{token}."),
            "two segments" => format!("{}.{}", parts[0], parts[1]),
            "a character outside base64url" => format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
            "standard base64 alphabet" => format!(
                "{}.{}.{}+/",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 2]
            ),
            "padding" => format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            "whitespace" => format!("{} .{}.{}", parts[0], parts[1], parts[2]),
            _ => unreachable!(),
        }
    };
    let hows = [
        "four segments",
        "four segments, trailing dot",
        "two segments",
        "a character outside base64url",
        "standard base64 alphabet",
        "padding",
        "whitespace",
    ];
    for how in hows {
        lab.identity_refused(how, &mangle(lab.svid(), how)).await;
        lab.access_refused(how, &mangle(&lab.access, how)).await;
    }
    // Invalid UTF-8 (and a lone surrogate) inside segments that are signed by our key.
    let utf8 = |token: &str, where_: &str, bad: &[u8]| {
        let mut header = text(&segment(token, 0)).into_bytes();
        let mut claims = text(&segment(token, 1)).into_bytes();
        let target = if where_ == "header" {
            &mut header
        } else {
            &mut claims
        };
        target.pop();
        target.extend_from_slice(b",\"x\":\"");
        target.extend_from_slice(bad);
        target.extend_from_slice(b"\"}");
        lab.key.raw(&header, &claims)
    };
    for where_ in ["header", "claims"] {
        for (what, bad) in [
            ("invalid UTF-8", &b"\xff\xfe"[..]),
            ("a lone surrogate", &br"\ud800"[..]),
        ] {
            let case = format!("{what} in the {where_}");
            lab.identity_refused(&case, &utf8(lab.svid(), where_, bad))
                .await;
            lab.access_refused(&case, &utf8(&lab.access, where_, bad))
                .await;
        }
    }
}

async fn oversized_tokens_are_refused_cleanly(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let padded = |token: &str, size: usize| {
        lab.key.resign(token, |h, _| {
            h.insert("x".into(), json!("A".repeat(size)));
        })
    };

    // Just over the 16 KiB token limit: refused by the parameter bound, and audited.
    let big = padded(lab.svid(), 13 * 1024);
    assert!(big.len() > aims_token::jws::MAX_TOKEN_LEN);
    let reply = refused(
        scene,
        "17 KiB subject_token",
        &identity_form(&big),
        Some(&token_proof(scene, &scene.planner)),
        "invalid_request",
    )
    .await;
    assert!(description(&reply).contains("too long"), "{}", reply.body);
    let big_access = padded(&lab.access, 13 * 1024);
    refused_decision(
        scene,
        "17 KiB access token",
        &format!("DPoP {big_access}"),
        Some(&scene.proof(
            &scene.planner.key,
            "POST",
            "/v1/decisions",
            Some(&big_access),
        )),
    )
    .await;

    // A 1 MB header: refused before any handler by the transport limits (body size at the
    // token endpoint, header size at /v1/decisions). Such refusals are not audited: no
    // handler ran, and nothing was parsed or issued.
    let huge = padded(lab.svid(), 1024 * 1024);
    let before = issued(scene).await;
    let started = Instant::now();
    let reply = scene
        .token(
            &identity_form(&huge),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    eprintln!("token endpoint | 1 MB header -> {}", reply.status);
    let huge_access = padded(&lab.access, 1024 * 1024);
    let sent = scene
        .server
        .http
        .post(scene.url("/v1/decisions"))
        .header("Authorization", format!("DPoP {huge_access}"))
        .json(&json!({"action": "read", "resource": repository("repo/acme/app")}))
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status();
            assert!(
                [
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNAUTHORIZED,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                ]
                .contains(&status),
                "{status}"
            );
            eprintln!("/v1/decisions  | 1 MB header -> {status}");
        }
        // hyper answers 431 and closes the connection as soon as its header buffer is full;
        // when the client is still writing the rest of the megabyte, the reset can reach it
        // before the 431 does. Either way the request was cut off unread; the server must
        // stay up (checked below).
        Err(e) => {
            assert!(e.is_request(), "{e}");
            eprintln!(
                "/v1/decisions  | 1 MB header -> connection closed before the answer was read"
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10), "refused fast");
    assert_eq!(issued(scene).await, before, "nothing issued");

    // The server is still up and serving.
    access_token(&scene.exchange("read:repo/acme/app").await);
}

async fn deeply_nested_claims_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let nest = |token: &str, depth: usize, open: &str, close: &str| {
        let mut claims = segment(token, 1);
        claims.remove("x");
        let deep = format!("{}{}", open.repeat(depth), close.repeat(depth));
        lab.key.raw(
            text(&segment(token, 0)).as_bytes(),
            append_raw(&text(&claims), &format!(r#""x":{deep}"#)).as_bytes(),
        )
    };
    for (name, depth, open, close) in [
        ("5,000 arrays", 5_000, "[", "]"),
        ("33 objects (one over the limit)", 32, r#"{"a":"#, "}"),
        ("1,500 objects", 1_500, r#"{"a":"#, "}"),
    ] {
        let case = format!("claims nested {name}");
        let started = Instant::now();
        lab.forgery_refused(&case, |token| nest(token, depth, open, close), "deep")
            .await;
        assert!(started.elapsed() < Duration::from_secs(10), "{case}: fast");
    }
    // A delegation chain nested deeper than any verifier reads (17 actors), signed by us.
    let chain = (0..17).fold(Value::Null, |inner, i| {
        let mut actor = json!({"sub": format!("spiffe://test.example/agent/a{i}")});
        if !inner.is_null() {
            actor["act"] = inner;
        }
        actor
    });
    let deep_act = lab
        .key
        .reclaim(&lab.access, |c| _ = c.insert("act".into(), chain));
    lab.access_refused("act nested 17 deep", &deep_act).await;
}
