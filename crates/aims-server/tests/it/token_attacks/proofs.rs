//! DPoP proof abuses (RFC 9449): replay even after a refusal, a proof for another token,
//! stale and future proofs.

use super::*;
use crate::on_both_stores;

on_both_stores!(
    a_dpop_proof_is_single_use_even_when_refused,
    a_dpop_proof_must_match_the_access_token,
    stale_and_future_dpop_proofs_are_refused,
);

async fn a_dpop_proof_is_single_use_even_when_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let planner = &scene.planner;
    let svid = planner.svid.as_str();

    // First use refused after the proof was checked; the corrected request cannot reuse it.
    let proof = token_proof(&scene, planner);
    refused(
        &scene,
        "first use, unknown target",
        &with(identity_form(svid), "audience", "https://nowhere.example"),
        Some(&proof),
        "invalid_target",
    )
    .await;
    let reply = refused(
        &scene,
        "same proof after a refused use",
        &identity_form(svid),
        Some(&proof),
        "invalid_dpop_proof",
    )
    .await;
    assert!(
        description(&reply).contains("used before"),
        "{}",
        reply.body
    );

    // A proof for GET (and one for the other endpoint) does not prove a POST here.
    let get = dpop::sign_proof(
        &planner.key,
        &SystemRandom::new(),
        "GET",
        &scene.url("/oauth2/token"),
        None,
        now(),
    )
    .unwrap();
    refused(
        &scene,
        "proof with htm GET",
        &identity_form(svid),
        Some(&get),
        "invalid_dpop_proof",
    )
    .await;
    let elsewhere = scene.proof(&planner.key, "POST", "/v1/decisions", None);
    refused(
        &scene,
        "proof for /v1/decisions",
        &identity_form(svid),
        Some(&elsewhere),
        "invalid_dpop_proof",
    )
    .await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let get = dpop::sign_proof(
        &planner.key,
        &SystemRandom::new(),
        "GET",
        &scene.url("/v1/decisions"),
        Some(&token),
        now(),
    )
    .unwrap();
    let reply = refused_decision(
        &scene,
        "proof with htm GET",
        &format!("DPoP {token}"),
        Some(&get),
    )
    .await;
    assert_eq!(reply.code(), "invalid_dpop_proof");

    // Eight concurrent uses of one proof: exactly one token.
    let before = issued(&scene).await.0;
    let proof = token_proof(&scene, planner);
    let form = identity_form(svid);
    let replies =
        futures_util::future::join_all((0..8).map(|_| scene.token(&form, Some(&proof)))).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert!(
        replies
            .iter()
            .filter(|r| r.status != StatusCode::OK)
            .all(|r| r.code() == "invalid_dpop_proof")
    );
    assert_eq!(issued(&scene).await.0, before + 1);

    // At the enforcement point, a proof that was accepted once is refused the second time.
    let proof = scene.proof(&planner.key, "POST", "/v1/decisions", Some(&token));
    let first = scene
        .decide_with_proof(&token, &proof, "read", "repo/acme/app")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let reply = refused_decision(
        &scene,
        "replayed proof",
        &format!("DPoP {token}"),
        Some(&proof),
    )
    .await;
    assert_eq!(reply.code(), "invalid_dpop_proof");
}

async fn a_dpop_proof_must_match_the_access_token(backend: Backend) {
    let scene = Scene::start(backend).await;
    let planner = &scene.planner;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let other = access_token(&scene.exchange("read:repo/acme/*").await);
    let auth = format!("DPoP {token}");
    let cases = [
        (
            "ath of another token",
            scene.proof(&planner.key, "POST", "/v1/decisions", Some(&other)),
        ),
        (
            "ath of a tampered token",
            scene.proof(
                &planner.key,
                "POST",
                "/v1/decisions",
                Some(&format!("{token}x")),
            ),
        ),
        (
            "no ath",
            scene.proof(&planner.key, "POST", "/v1/decisions", None),
        ),
    ];
    for (case, proof) in cases {
        let reply = refused_decision(&scene, case, &auth, Some(&proof)).await;
        assert_eq!(reply.code(), "invalid_dpop_proof", "{case}");
    }
    // No proof at all, and a bearer presentation of the bound token.
    let reply = refused_decision(&scene, "no DPoP proof", &auth, None).await;
    assert_eq!(reply.code(), "invalid_dpop_proof");
    refused_decision(
        &scene,
        "DPoP-bound token as bearer",
        &format!("Bearer {token}"),
        None,
    )
    .await;
    // At the token endpoint, where no access token is presented, `ath` must be absent.
    let with_ath = scene.proof(&planner.key, "POST", "/oauth2/token", Some(&token));
    refused(
        &scene,
        "proof with ath at the token endpoint",
        &identity_form(&planner.svid),
        Some(&with_ath),
        "invalid_dpop_proof",
    )
    .await;
}

async fn stale_and_future_dpop_proofs_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let planner = &scene.planner;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let proof_at = |path: &str, access: Option<&str>, iat: i64| {
        let mut claims = json!({
            "jti": format!("jti-{iat}-{path}"),
            "htm": "POST",
            "htu": scene.url(path),
            "iat": iat,
            "nonce": scene.nonce(),
        });
        if let Some(access) = access {
            claims["ath"] = json!(dpop::access_token_hash(access));
        }
        planner
            .key
            .sign_self_signed(&SystemRandom::new(), aims_token::jws::TYP_DPOP, &claims)
            .unwrap()
    };
    // Control: hand-made proofs 30 s old are accepted at both.
    let ok = scene
        .token(
            &identity_form(&planner.svid),
            Some(&proof_at("/oauth2/token", None, now() - 30)),
        )
        .await;
    access_token(&ok);
    let ok = scene
        .server
        .http
        .post(scene.url("/v1/decisions"))
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof_at("/v1/decisions", Some(&token), now() - 30))
        .json(&json!({"action": "read", "resource": repository("repo/acme/app")}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    for (case, iat) in [
        ("proof 61 s old", now() - 61),
        ("proof an hour old", now() - 3600),
        ("proof a minute ahead", now() + 60),
    ] {
        refused(
            &scene,
            case,
            &identity_form(&planner.svid),
            Some(&proof_at("/oauth2/token", None, iat)),
            "invalid_dpop_proof",
        )
        .await;
        let reply = refused_decision(
            &scene,
            case,
            &format!("DPoP {token}"),
            Some(&proof_at("/v1/decisions", Some(&token), iat)),
        )
        .await;
        assert_eq!(reply.code(), "invalid_dpop_proof", "{case}");
    }
}
