//! Claims signed with the server's own key but wrong (test catalogue §2.8–11): one kind of
//! token used as another, `aud`, `exp`, `nbf`/`iat`, duplicate JSON members.

use super::*;
use crate::on_both_stores;

on_both_stores!(
    a_token_of_one_kind_is_not_another,
    audience_must_be_the_one_expected_string,
    exp_must_be_present_and_an_integer,
    nbf_and_iat_in_the_future_are_refused,
    duplicate_json_members_are_refused,
);

async fn a_token_of_one_kind_is_not_another(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let planner = &scene.planner;
    let svid = lab.svid().to_owned();
    let access = lab.access.clone();

    // An SVID as a DPoP-bound access token, with a valid proof for it.
    let proof = scene.proof(&planner.key, "POST", "/v1/decisions", Some(&svid));
    refused_decision(
        scene,
        "SVID with the DPoP scheme",
        &format!("DPoP {svid}"),
        Some(&proof),
    )
    .await;
    inactive(scene, "SVID at introspection", &svid).await;
    // An SVID as a delegation's subject (an access token is expected).
    refused(
        scene,
        "SVID as access-token subject",
        &delegation_form(&svid, &scene.executor.svid),
        Some(&token_proof(scene, planner)),
        "invalid_grant",
    )
    .await;

    // An access token as an identity: subject_token_type jwt, assertion, actor.
    let reply = lab.identity_refused("access token as SVID", &access).await;
    assert!(description(&reply).contains("type"), "{}", reply.body);

    // A DPoP proof (and an attestation proof) as either kind.
    let dpop_proof = token_proof(scene, planner);
    lab.identity_refused("DPoP proof as SVID", &dpop_proof)
        .await;
    lab.access_refused("DPoP proof as access token", &dpop_proof)
        .await;
    refused_decision(
        scene,
        "DPoP proof as bearer",
        &format!("Bearer {dpop_proof}"),
        None,
    )
    .await;
    let attestation = planner
        .key
        .sign_self_signed(
            &SystemRandom::new(),
            aims_token::jws::TYP_ATTESTATION,
            &json!({"aud": lab.issuer(), "iat": now(), "exp": now() + 60, "jti": "x"}),
        )
        .unwrap();
    lab.identity_refused("attestation proof as SVID", &attestation)
        .await;
    lab.access_refused("attestation proof as access token", &attestation)
        .await;

    // Signed by our own key, only `typ` tells the kinds apart: swapping it is not enough.
    lab.controls().await;
    let retyped = lab.key.resign(&svid, |h, _| {
        h.insert("typ".into(), json!("at+jwt"));
    });
    lab.access_refused("SVID claims typed at+jwt", &retyped)
        .await;
    let retyped = lab.key.resign(&access, |h, _| {
        h.insert("typ".into(), json!("JWT"));
    });
    lab.identity_refused("access claims typed JWT", &retyped)
        .await;
}

async fn audience_must_be_the_one_expected_string(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    lab.controls().await;
    let issuer = lab.issuer();
    let audiences = [
        ("missing", Value::Null),
        ("an array of two", json!([issuer, AUDIENCE])),
        ("an array of one", json!([issuer])),
        ("an object", json!({"aud": issuer})),
        (
            "a sibling service",
            json!("https://tools.acme.example/other"),
        ),
    ];
    for (name, aud) in &audiences {
        let set = set_claim("aud", aud);
        let case = format!("aud {name}");
        let reply = lab
            .identity_refused(&case, &lab.key.reclaim(lab.svid(), set))
            .await;
        assert!(
            description(&reply).contains("audience"),
            "{case}: {}",
            reply.body
        );
        // AIMS accepts its task tokens for any registered audience, so a sibling string is
        // not a forgery there; every other shape is.
        if *name != "a sibling service" {
            lab.access_refused(&case, &lab.key.reclaim(&lab.access, set))
                .await;
        }
    }

    // A genuine SVID the server minted for another audience (renewal with `audience`).
    let other = Attestor::new(
        AdminClient::new(&scene.server.base, None).unwrap(),
        scene.planner.key.clone(),
    )
    .attest(
        &Default::default(),
        &Credential::Svid(scene.planner.svid.clone()),
        Some(AUDIENCE),
    )
    .await
    .unwrap()
    .svid;
    assert_eq!(claims(&other)["aud"], AUDIENCE);
    let reply = refused(
        scene,
        "SVID minted for another audience",
        &identity_form(&other),
        Some(&token_proof(scene, &scene.planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("audience"), "{}", reply.body);
    let reply = refused_decision(
        scene,
        "SVID minted for another audience",
        &format!("Bearer {other}"),
        None,
    )
    .await;
    assert_eq!(reply.code(), "invalid_svid");
}

async fn exp_must_be_present_and_an_integer(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let far = now() + 600;
    let values = [
        ("missing", Value::Null),
        ("a string", json!("9999999999")),
        ("a fraction", json!(far as f64 + 0.5)),
        ("2^64", json!(18_446_744_073_709_551_616.0_f64)),
        ("u64::MAX", json!(u64::MAX)),
        ("an array", json!([far])),
    ];
    for (name, exp) in &values {
        let set = set_claim("exp", exp);
        let case = format!("exp {name}");
        lab.forgery_refused(&case, |token| lab.key.reclaim(token, set), "exp")
            .await;
    }
    // 1e400 is not a number JSON parsers agree on: refused as invalid JSON.
    let huge = |token: &str| {
        let mut claims = segment(token, 1);
        claims.remove("exp");
        lab.key.raw(
            text(&segment(token, 0)).as_bytes(),
            append_raw(&text(&claims), r#""exp":1e400"#).as_bytes(),
        )
    };
    lab.identity_refused("exp 1e400", &huge(lab.svid())).await;
    lab.access_refused("exp 1e400", &huge(&lab.access)).await;
}

async fn nbf_and_iat_in_the_future_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let later = now() + 3600;
    for claim in ["nbf", "iat"] {
        let set = |claims: &mut Map<String, Value>| {
            claims.insert(claim.into(), json!(later));
            claims.insert("exp".into(), json!(later + 600));
        };
        let case = format!("{claim} an hour ahead");
        lab.identity_refused(&case, &lab.key.reclaim(lab.svid(), set))
            .await;
        lab.access_refused(&case, &lab.key.reclaim(&lab.access, set))
            .await;
    }
    let reply = lab
        .identity_refused(
            "nbf (only) an hour ahead",
            &lab.key
                .reclaim(lab.svid(), |c| _ = c.insert("nbf".into(), json!(later))),
        )
        .await;
    assert!(
        description(&reply).contains("not yet valid"),
        "{}",
        reply.body
    );
}

async fn duplicate_json_members_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let executor = "spiffe://test.example/agent/executor";
    let raw = |token: &str, header_extra: Option<&str>, claims_extra: Option<&str>| {
        let header = text(&segment(token, 0));
        let claims = text(&segment(token, 1));
        let header = header_extra.map_or(header.clone(), |m| append_raw(&header, m));
        let claims = claims_extra.map_or(claims.clone(), |m| append_raw(&claims, m));
        lab.key.raw(header.as_bytes(), claims.as_bytes())
    };
    let svid_cases = [
        ("header alg twice", Some(r#""alg":"none""#), None),
        ("header typ twice", Some(r#""typ":"at+jwt""#), None),
        (
            "header kid twice, escaped",
            Some(r#""\u006bid":"other""#),
            None,
        ),
        (
            "claims sub twice",
            None,
            Some(format!(r#""sub":"{executor}""#)),
        ),
        ("claims aud twice", None, Some(r#""aud":"x""#.to_owned())),
        (
            "claims cnf twice",
            None,
            Some(r#""cnf":{"jkt":"attacker"}"#.to_owned()),
        ),
    ];
    for (case, header, claims) in &svid_cases {
        let token = raw(lab.svid(), *header, claims.as_deref());
        let reply = lab.identity_refused(case, &token).await;
        assert!(
            description(&reply).contains("duplicate"),
            "{case}: {}",
            reply.body
        );
    }
    let access_cases = [
        ("header alg twice", Some(r#""alg":"none""#), None),
        ("claims scope twice", None, Some(r#""scope":"admin:*""#)),
        (
            "claims client_id twice",
            None,
            Some(r#""client_id":"spiffe://test.example/agent/executor""#),
        ),
        ("claims nested jkt twice", None, None),
    ];
    for (case, header, claims) in access_cases {
        let token = if case.contains("nested") {
            // Inside `cnf`: {"jkt": <ours>, "jkt": "attacker"}.
            let mut map = segment(&lab.access, 1);
            let jkt = map["cnf"]["jkt"].as_str().unwrap().to_owned();
            map.remove("cnf");
            let claims = append_raw(
                &text(&map),
                &format!(r#""cnf":{{"jkt":"{jkt}","jkt":"attacker"}}"#),
            );
            lab.key
                .raw(text(&segment(&lab.access, 0)).as_bytes(), claims.as_bytes())
        } else {
            raw(&lab.access, header, claims)
        };
        lab.access_refused(case, &token).await;
    }
}
