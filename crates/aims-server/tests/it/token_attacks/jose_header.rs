//! Forged JOSE headers (test catalogue §2.1–7): `alg` none and HS256 with our public key,
//! zero and empty ECDSA signatures, embedded `jwk`, `jku`/`x5u`, hostile `kid`s, unknown `crit`.

use super::*;
use crate::on_both_stores;

on_both_stores!(
    alg_none_is_refused_in_every_casing,
    hs256_signed_with_our_public_key_is_refused,
    zero_and_empty_ecdsa_signatures_are_refused,
    an_embedded_jwk_is_not_trusted,
    jku_and_x5u_are_never_fetched,
    hostile_kids_are_refused_without_leaking,
    an_unknown_crit_is_refused,
);

async fn alg_none_is_refused_in_every_casing(backend: Backend) {
    let lab = Lab::start(backend).await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let original = URL_SAFE_NO_PAD
            .decode(lab.svid().split('.').nth(2).unwrap())
            .unwrap();
        for (how, signature) in [("unsigned", Vec::new()), ("signature kept", original)] {
            let case = format!("alg {alg}, {how}");
            let svid = reheader(
                lab.svid(),
                |h| _ = h.insert("alg".into(), json!(alg)),
                &signature,
            );
            let reply = lab.identity_refused(&case, &svid).await;
            assert!(
                description(&reply).contains("algorithm"),
                "{case}: {}",
                reply.body
            );
            let access = reheader(&lab.access, |h| _ = h.insert("alg".into(), json!(alg)), &[]);
            lab.access_refused(&case, &access).await;
        }
    }
}

async fn hs256_signed_with_our_public_key_is_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    let jwks_bytes = lab.jwks_document().await;
    let jwks: Value = serde_json::from_slice(&jwks_bytes).unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == lab.key.kid())
        .unwrap()
        .clone();
    let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let (x, y) = (coordinate("x"), coordinate("y"));
    // Every spelling of "our public key" a confused verifier might use as an HMAC secret.
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("the JWKS document", jwks_bytes.clone()),
        ("the JWK", serde_json::to_vec(&jwk).unwrap()),
        ("x || y", [x.clone(), y.clone()].concat()),
        ("the SEC1 point", [vec![4u8], x, y].concat()),
    ];
    for (name, secret) in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let hs256 = |token: &str| {
            let mut header = segment(token, 0);
            header.insert("alg".into(), json!("HS256"));
            compact(
                text(&header).as_bytes(),
                text(&segment(token, 1)).as_bytes(),
                |input| hmac::sign(&key, input).as_ref().to_vec(),
            )
        };
        let case = format!("HS256 keyed with {name}");
        lab.forgery_refused(&case, &hs256, "algorithm").await;
    }
}

async fn zero_and_empty_ecdsa_signatures_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    // CVE-2022-21449: r = s = 0 verified as valid by some ECDSA implementations.
    for (name, signature) in [("r = s = 0", vec![0u8; 64]), ("empty", Vec::new())] {
        let case = format!("ES256 signature {name}");
        let svid = reheader(lab.svid(), |_| {}, &signature);
        let reply = lab.identity_refused(&case, &svid).await;
        assert!(
            description(&reply).contains("signature"),
            "{case}: {}",
            reply.body
        );
        let access = reheader(&lab.access, |_| {}, &signature);
        lab.access_refused(&case, &access).await;

        // Where it matters most: a DPoP proof names its own key, so an attacker holding a
        // stolen token would embed the victim's public key and sign with r = s = 0.
        let scene = &lab.scene;
        let planner = &scene.planner;
        let proof = reheader(&token_proof(scene, planner), |_| {}, &signature);
        let reply = refused(
            scene,
            &format!("DPoP proof, {case}"),
            &identity_form(lab.svid()),
            Some(&proof),
            "invalid_dpop_proof",
        )
        .await;
        assert!(description(&reply).contains("signature"), "{}", reply.body);
        let proof = scene.proof(&planner.key, "POST", "/v1/decisions", Some(&lab.access));
        let proof = reheader(&proof, |_| {}, &signature);
        let reply = refused_decision(
            scene,
            &format!("DPoP proof, {case}"),
            &format!("DPoP {}", lab.access),
            Some(&proof),
        )
        .await;
        assert_eq!(reply.code(), "invalid_dpop_proof");
    }
}

async fn an_embedded_jwk_is_not_trusted(backend: Backend) {
    let lab = Lab::start(backend).await;
    let attacker = attacker_key();
    // CVE-2018-0114: the attacker's own key in `jwk`, claiming our kid (and without a kid).
    let mut jwk = serde_json::to_value(attacker.public_jwk()).unwrap();
    jwk["kid"] = json!(lab.key.kid());
    for with_kid in [true, false] {
        let forge = |token: &str| {
            let mut header = segment(token, 0);
            header.insert("jwk".into(), jwk.clone());
            if !with_kid {
                header.remove("kid");
            }
            compact(
                text(&header).as_bytes(),
                text(&segment(token, 1)).as_bytes(),
                |input| attacker.sign(&SystemRandom::new(), input).unwrap(),
            )
        };
        let case = format!("embedded attacker jwk (our kid: {with_kid})");
        lab.forgery_refused(&case, &forge, "jwk").await;
    }
}

async fn jku_and_x5u_are_never_fetched(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    // A loopback listener standing in for the attacker's host: it counts every connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let contacts = Arc::new(AtomicUsize::new(0));
    let counter = contacts.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let attacker = attacker_key();
    let cases = [
        ("jku", format!("{base}/.well-known/jwks.json")),
        ("x5u", format!("{base}/cert.pem")),
    ];
    for (member, url) in &cases {
        for kid in [attacker.kid(), lab.key.kid()] {
            let forge = |token: &str| {
                let mut header = segment(token, 0);
                header.insert((*member).into(), json!(url));
                header.insert("kid".into(), json!(kid));
                compact(
                    text(&header).as_bytes(),
                    text(&segment(token, 1)).as_bytes(),
                    |input| attacker.sign(&SystemRandom::new(), input).unwrap(),
                )
            };
            let case = format!("{member} at a loopback listener, kid {kid}");
            lab.forgery_refused(&case, &forge, member).await;
        }
    }
    // Even signed by our own key, the header is refused: keys never come from the token.
    let ours = lab.key.resign(lab.svid(), |h, _| {
        h.insert("jku".into(), json!(cases[0].1));
    });
    lab.identity_refused("jku, signed by our key", &ours).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        contacts.load(Ordering::SeqCst),
        0,
        "the server fetched a key"
    );
}

async fn hostile_kids_are_refused_without_leaking(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let long = "A".repeat(10 * 1024);
    for kid in [
        "../../etc/passwd",
        "../../dev/null",
        "' OR 1=1 --",
        long.as_str(),
    ] {
        // Signed with our real key: a verifier that ignored the kid and tried every key it
        // knows would accept these.
        let forge = |token: &str| {
            lab.key.resign(token, |h, _| {
                h.insert("kid".into(), json!(kid));
            })
        };
        let case = format!("kid {}", &kid[..kid.len().min(24)]);
        let reply = lab.identity_refused(&case, &forge(lab.svid())).await;
        let denied = lab.access_refused(&case, &forge(&lab.access)).await;
        for body in [&reply.body, &denied.body] {
            let body = body.to_string().to_lowercase();
            for leak in ["passwd", "1=1", "sql", "database", "syntax", "postgres"] {
                assert!(!body.contains(leak), "{case}: {body}");
            }
        }
        assert!(
            description(&reply).contains("kid"),
            "{case}: {}",
            reply.body
        );
    }
    // No kid at all, signed by our key: no verifier falls back to trying every key.
    let forge = |token: &str| {
        lab.key.resign(token, |h, _| {
            h.remove("kid");
        })
    };
    lab.forgery_refused("no kid", &forge, "no verification key")
        .await;
}

async fn an_unknown_crit_is_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    for crit in [json!(["aims-unknown"]), json!(["exp"]), json!([])] {
        let forge = |token: &str| {
            lab.key.resign(token, |h, _| {
                h.insert("crit".into(), crit.clone());
                h.insert("aims-unknown".into(), json!(true));
            })
        };
        let case = format!("crit {crit}");
        lab.forgery_refused(&case, &forge, "crit").await;
    }
}
