//! Token-exchange abuses (RFC 8693; test catalogue §2.15–22): widening scope, other
//! targets, revoked or expired subjects and actors, policy, depth, lifetime, a client-supplied
//! `act`.

use super::*;
use crate::on_both_stores;

on_both_stores!(
    delegation_cannot_widen_scope,
    unknown_or_other_targets_are_refused,
    revoked_subjects_and_actors_are_refused,
    expired_subjects_are_refused,
    an_actor_not_allowed_by_policy_is_refused,
    delegation_depth_is_limited,
    delegated_lifetime_is_capped_by_the_parent,
    client_supplied_act_is_ignored,
);

async fn delegation_cannot_widen_scope(backend: Backend) {
    let scene = Scene::start(backend).await;
    let parent = access_token(&scene.exchange("read:repo/acme/* write:repo/acme/app").await);
    for scope in [
        "write:repo/acme/*",
        "read:repo/*",
        "read:repo/acme/* delete:repo/acme/app",
        "admin:*",
        "read",
    ] {
        let form = with(
            delegation_form(&parent, &scene.executor.svid),
            "scope",
            scope,
        );
        refused(
            &scene,
            &format!("delegate {scope} from read:repo/acme/* write:repo/acme/app"),
            &form,
            Some(&token_proof(&scene, &scene.planner)),
            "invalid_scope",
        )
        .await;
    }
    // The parent was not spent by the refusals: a narrower delegation still works.
    let form = with(
        delegation_form(&parent, &scene.executor.svid),
        "scope",
        "read:repo/acme/app",
    );
    let child = scene
        .token(&form, Some(&token_proof(&scene, &scene.planner)))
        .await;
    assert_eq!(claims(&access_token(&child))["scope"], "read:repo/acme/app");
}

async fn unknown_or_other_targets_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let added = scene
        .server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "ci-tools", "audience": "https://ci.acme.example", "system": "github"})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let svid = scene.planner.svid.as_str();
    let proof = || token_proof(&scene, &scene.planner);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "unknown audience",
            with(identity_form(svid), "audience", "https://nowhere.example"),
        ),
        (
            "unknown resource name",
            with(
                identity_form(svid)
                    .into_iter()
                    .filter(|(n, _)| *n != "audience")
                    .collect(),
                "resource",
                "no-such-server",
            ),
        ),
        (
            "audience and resource differ",
            with(identity_form(svid), "resource", "https://ci.acme.example"),
        ),
        (
            "no target",
            identity_form(svid)
                .into_iter()
                .filter(|(n, _)| *n != "audience")
                .collect(),
        ),
    ];
    for (case, form) in cases {
        refused(&scene, case, &form, Some(&proof()), "invalid_target").await;
    }
    // A delegation may not move the token to another (registered or unknown) audience.
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    for audience in [
        "https://ci.acme.example",
        "ci-tools",
        "https://nowhere.example",
    ] {
        let form = with(
            delegation_form(&parent, &scene.executor.svid),
            "audience",
            audience,
        );
        refused(
            &scene,
            &format!("delegate to audience {audience}"),
            &form,
            Some(&proof()),
            "invalid_target",
        )
        .await;
    }
}

async fn revoked_subjects_and_actors_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let revoke = |id: String| {
        let server = &scene.server;
        async move {
            let reply = server
                .admin(
                    Method::POST,
                    "/v1/revocations",
                    Some(json!({"target": "token", "id": id, "reason": "attack test"})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    };
    let jti = |token: &str| claims(token)["jti"].as_str().unwrap().to_owned();

    // A revoked task token: no delegation from it, no decision with it, inactive.
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    revoke(jti(&parent)).await;
    let reply = refused(
        &scene,
        "revoked subject token",
        &delegation_form(&parent, &scene.executor.svid),
        Some(&token_proof(&scene, &scene.planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("revoked"), "{}", reply.body);
    let proof = scene.proof(&scene.planner.key, "POST", "/v1/decisions", Some(&parent));
    refused_decision(
        &scene,
        "revoked access token",
        &format!("DPoP {parent}"),
        Some(&proof),
    )
    .await;
    inactive(&scene, "revoked access token", &parent).await;

    // A revoked actor identity.
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    revoke(jti(&scene.executor.svid)).await;
    refused(
        &scene,
        "revoked actor identity",
        &delegation_form(&parent, &scene.executor.svid),
        Some(&token_proof(&scene, &scene.planner)),
        "invalid_grant",
    )
    .await;

    // A revoked subject identity.
    revoke(jti(&scene.planner.svid)).await;
    refused(
        &scene,
        "revoked subject identity",
        &identity_form(&scene.planner.svid),
        Some(&token_proof(&scene, &scene.planner)),
        "invalid_grant",
    )
    .await;
}

/// A genuinely expired JWT-SVID cannot be produced quickly: SVIDs live at least
/// min(`svid_ttl_s` ≥ 30 s, the agent's `max_token_ttl_s` ≥ 1 s) and every verifier allows 30 s
/// of clock skew, so one would need to wait over 30 s. What *can* expire within seconds, and
/// is tested here for real: a task token minted with `expires_in=1` (delegation refuses a
/// parent past its `exp` with no leeway) and a task created with `ttl_s=1`. Expired
/// identities and task tokens are then forged two ways: signed by the server's own key (so
/// only the expiry is wrong) and signed by a key the server does not know.
async fn expired_subjects_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let planner = &scene.planner;

    let short = scene
        .token(
            &with(identity_form(&planner.svid), "expires_in", "1"),
            Some(&token_proof(scene, planner)),
        )
        .await;
    let short = access_token(&short);
    let c = claims(&short);
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 1);
    let task = scene
        .server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&planner.svid),
            Some(json!({"intent": INTENT, "ttl_s": 1})),
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{}", task.body);
    let task_id = task.body["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2_200)).await;

    let reply = refused(
        scene,
        "parent past its exp (expires_in=1)",
        &delegation_form(&short, &scene.executor.svid),
        Some(&token_proof(scene, planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("expire"), "{}", reply.body);
    let reply = refused(
        scene,
        "task past its deadline (ttl_s=1)",
        &with(identity_form(&planner.svid), "task_id", &task_id),
        Some(&token_proof(scene, planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("ended"), "{}", reply.body);

    // Signed by our key, registered jti, expired beyond the leeway.
    lab.controls().await;
    let past = |claims: &mut Map<String, Value>| {
        claims.insert("iat".into(), json!(now() - 300));
        claims.insert("exp".into(), json!(now() - 120));
    };
    let reply = lab
        .identity_refused(
            "SVID expired 2 minutes ago",
            &lab.key.reclaim(lab.svid(), past),
        )
        .await;
    assert!(description(&reply).contains("expired"), "{}", reply.body);
    lab.access_refused(
        "task token expired 2 minutes ago",
        &lab.key.reclaim(&lab.access, past),
    )
    .await;

    // Signed by a key the server does not know (claiming our kid), expired.
    let stranger = attacker_key();
    let forge = |token: &str| {
        let mut claims = segment(token, 1);
        past(&mut claims);
        compact(
            text(&segment(token, 0)).as_bytes(),
            text(&claims).as_bytes(),
            |input| stranger.sign(&SystemRandom::new(), input).unwrap(),
        )
    };
    lab.identity_refused("expired SVID by an unknown key", &forge(lab.svid()))
        .await;
    lab.access_refused("expired task token by an unknown key", &forge(&lab.access))
        .await;
}

async fn an_actor_not_allowed_by_policy_is_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let reviewer = attested(&scene.server, "reviewer", "reviewer", json!({})).await;
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    let proof = || token_proof(&scene, &scene.planner);
    let reply = refused(
        &scene,
        "delegate to an agent without role executor",
        &delegation_form(&parent, &reviewer.svid),
        Some(&proof()),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("policy"), "{}", reply.body);
    let event = scene.server.last_event("token.delegate").await;
    assert_eq!(event.code.as_deref(), Some("invalid_grant"));

    // Nor to itself, nor to a suspended executor.
    refused(
        &scene,
        "delegate to itself",
        &delegation_form(&parent, &scene.planner.svid),
        Some(&proof()),
        "invalid_request",
    )
    .await;
    let suspended = scene
        .server
        .admin(
            Method::POST,
            "/v1/agents/executor/suspend",
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    refused(
        &scene,
        "delegate to a suspended executor",
        &delegation_form(&parent, &scene.executor.svid),
        Some(&proof()),
        "invalid_grant",
    )
    .await;
}

async fn delegation_depth_is_limited(backend: Backend) {
    let scene = Scene::start(backend).await;
    // Let executors delegate to executors, so chains can grow past the first hop.
    let mut files = starter_files();
    files.insert(
        "chain.cedar".into(),
        r#"@id("test-executors-delegate-to-executors")
permit (principal, action == Aims::Action::"delegate", resource is Aims::Agent)
when {
  principal.hasTag("role") && principal.getTag("role") == "executor" &&
  resource.hasTag("role") && resource.getTag("role") == "executor"
};
"#
        .into(),
    );
    let pushed = scene
        .server
        .admin(Method::POST, "/v1/policies", Some(json!({"files": files})))
        .await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{}", pushed.body);
    let shallow = attested(
        &scene.server,
        "executor-shallow",
        "executor",
        json!({"limits": {"max_delegation_depth": 1}}),
    )
    .await;
    let deep = attested(&scene.server, "executor-deep", "executor", json!({})).await;

    let root = access_token(&scene.exchange("read:repo/acme/*").await);
    let first = access_token(&scene.delegate(&root, &[]).await);
    assert_eq!(
        claims(&first)["act"]["act"]["sub"],
        "spiffe://test.example/agent/planner"
    );
    let by_executor = || token_proof(&scene, &scene.executor);

    // Depth 2 for an agent whose own limit is 1.
    let reply = refused(
        &scene,
        "depth 2 to an agent limited to 1",
        &delegation_form(&first, &shallow.svid),
        Some(&by_executor()),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("depth"), "{}", reply.body);

    // Depth 2 within every limit (default 2) works; depth 3 is over the executors' limit.
    let second = scene
        .token(&delegation_form(&first, &deep.svid), Some(&by_executor()))
        .await;
    let second = access_token(&second);
    let proof = token_proof(&scene, &deep);
    let reply = refused(
        &scene,
        "depth 3 over the agents' limit of 2",
        &delegation_form(&second, &scene.executor.svid),
        Some(&proof),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("depth"), "{}", reply.body);
}

async fn delegated_lifetime_is_capped_by_the_parent(backend: Backend) {
    let scene = Scene::start_with(
        backend,
        json!({}),
        json!({"limits": {"max_token_ttl_s": 120}}),
    )
    .await;
    let int = |token: &str, name: &str| claims(token)[name].as_i64().unwrap();

    // An agent's own token: capped by its limit (900 s) and its identity.
    let own = scene
        .token(
            &with(identity_form(&scene.planner.svid), "expires_in", "86400"),
            Some(&token_proof(&scene, &scene.planner)),
        )
        .await;
    let own = access_token(&own);
    assert!(int(&own, "exp") <= int(&scene.planner.svid, "exp"));
    assert!(int(&own, "exp") - int(&own, "iat") <= 900);

    // Asking for a day below a 60 s parent: the parent's exp.
    let parent = scene
        .token(
            &with(identity_form(&scene.planner.svid), "expires_in", "60"),
            Some(&token_proof(&scene, &scene.planner)),
        )
        .await;
    let parent = access_token(&parent);
    let child = scene.delegate(&parent, &[("expires_in", "86400")]).await;
    assert!(
        child.body["expires_in"].as_u64().unwrap() <= 60,
        "{}",
        child.body
    );
    let child = access_token(&child);
    assert!(int(&child, "exp") <= int(&parent, "exp"));

    // Below a long parent, the delegate's own limit (120 s) caps it.
    let long = access_token(&scene.exchange("read:repo/acme/*").await);
    let child = access_token(&scene.delegate(&long, &[("expires_in", "86400")]).await);
    assert!(int(&child, "exp") <= int(&long, "exp"));
    assert!(int(&child, "exp") - int(&child, "iat") <= 120);
    // And a grandchild never outlives its chain (checked through introspection too).
    let seen = scene.introspect(&child).await;
    assert_eq!(seen.body["exp"].as_i64(), Some(int(&child, "exp")));
}

async fn client_supplied_act_is_ignored(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let root = "spiffe://test.example/agent/root";
    let forged_act =
        json!({"sub": root, "act": {"sub": "spiffe://test.example/agent/admin"}}).to_string();
    let server_chain = json!({"sub": "spiffe://test.example/agent/executor",
                              "act": {"sub": "spiffe://test.example/agent/planner"}});

    // A form parameter `act` on an exchange and on a delegation.
    let own = scene
        .token(
            &with(identity_form(lab.svid()), "act", &forged_act),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    assert!(
        claims(&access_token(&own)).get("act").is_none(),
        "{}",
        own.body
    );
    let child = scene
        .delegate(&lab.access, &[("act", forged_act.as_str())])
        .await;
    assert_eq!(claims(&access_token(&child))["act"], server_chain);

    // An `act` claim inside the subject identity and inside the actor's identity (signed by
    // our key, so they verify): only the server builds the chain.
    let act = serde_json::from_str::<Value>(&forged_act).unwrap();
    let subject = lab
        .key
        .reclaim(lab.svid(), |c| _ = c.insert("act".into(), act.clone()));
    let own = scene
        .token(
            &identity_form(&subject),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    assert!(
        claims(&access_token(&own)).get("act").is_none(),
        "{}",
        own.body
    );
    let actor = lab.key.reclaim(&scene.executor.svid, |c| {
        _ = c.insert("act".into(), act.clone())
    });
    let child = scene
        .token(
            &delegation_form(&lab.access, &actor),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    let child = access_token(&child);
    assert_eq!(claims(&child)["act"], server_chain);
    let event = scene.server.last_event("token.delegate").await;
    assert_eq!(
        event.delegation_chain,
        vec![
            "spiffe://test.example/agent/executor".to_owned(),
            "spiffe://test.example/agent/planner".to_owned()
        ]
    );
    let audit = serde_json::to_string(&scene.server.events().await).unwrap();
    assert!(
        !audit.contains(root),
        "a client-supplied actor reached the audit log"
    );
}
