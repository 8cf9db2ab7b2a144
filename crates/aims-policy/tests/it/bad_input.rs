//! Bad input is refused or denied, never allowed.

use aims_policy::{Effect, Engine, PolicySource, RequestError, Resource, Schema, Validation};

use crate::fixtures::{agent, context, engine, object, request};

/// A policy set that allows a lot, so that any bad input that slipped through would show
/// up as an allow.
const PERMISSIVE: &str = r#"
@id("coder-anything") permit(principal == Aims::Agent::"coder", action, resource);
@id("read-repos") permit(principal, action == Aims::Action::"read", resource is Aims::Resource);
@id("trusted") permit(principal, action, resource) when { principal.trust_level > 5 };
"#;

#[test]
fn unknown_action_is_refused() {
    let e = engine(PERMISSIVE);
    for action in [
        "fly",
        "read_only",
        "Read",
        "read ",
        "Aims::Action::\"read\"",
        "",
    ] {
        let r = request(agent("coder", &[]), action, object("Resource", "repo"));
        let err = e.decide(&r).unwrap_err();
        assert!(
            matches!(err, RequestError::UnknownAction { .. }),
            "{action:?}: {err}"
        );
        assert_eq!(err.code(), "policy_unknown_action");
    }
}

#[test]
fn unknown_entity_type_is_refused() {
    let e = engine(PERMISSIVE);
    for ty in [
        "Banana",
        "Aims::Banana",
        "Other::Resource",
        "Resource\" ) ; permit(principal, action, resource",
        "Resource\n",
        "",
    ] {
        let r = request(agent("coder", &[]), "read", object(ty, "repo"));
        assert!(
            matches!(e.decide(&r), Err(RequestError::UnknownEntityType { .. })),
            "{ty:?}"
        );
    }
    let mut obj = object("Resource", "repo");
    obj.parents.push(aims_policy::EntityRef {
        entity_type: "Nope".to_owned(),
        id: "x".to_owned(),
    });
    let r = request(agent("coder", &[]), "read", obj);
    assert!(matches!(
        e.decide(&r),
        Err(RequestError::UnknownEntityType { .. })
    ));
}

#[test]
fn resource_type_not_allowed_for_action_is_refused() {
    let e = engine(PERMISSIVE);
    // `read` applies to Resource, not Secret; `System` is not a resource type of any action.
    for ty in ["Secret", "System", "Team"] {
        let r = request(agent("coder", &[]), "read", object(ty, "x"));
        assert!(e.decide(&r).is_err(), "{ty}");
    }
    let r = request(agent("coder", &[]), "read", object("Agent", "x"));
    assert!(e.decide(&r).is_err());
}

#[test]
fn parent_of_a_type_the_schema_forbids_is_refused() {
    let e = engine(PERMISSIVE);
    let mut obj = object("Resource", "repo");
    obj.parents.push(aims_policy::EntityRef {
        entity_type: "Team".to_owned(),
        id: "x".to_owned(),
    });
    let r = request(agent("coder", &[]), "read", obj);
    assert!(matches!(e.decide(&r), Err(RequestError::Entity { .. })));
}

#[test]
fn context_missing_a_required_attribute_is_refused() {
    // On the wire: the typed context cannot be built.
    let mut json = serde_json::to_value(context()).unwrap();
    json.as_object_mut().unwrap().remove("posture_age_s");
    assert!(serde_json::from_value::<aims_policy::RequestContext>(json).is_err());
    // Against a schema whose context requires more than AIMS sends: Cedar refuses it.
    let schema = aims_policy::AIMS_SCHEMA.replace(
        "    arguments: Arguments,\n",
        "    arguments: Arguments,\n    ticket_scope: String,\n",
    );
    assert_ne!(schema, aims_policy::AIMS_SCHEMA);
    let e = Engine::compile(
        Schema::parse("x.cedarschema", &schema).unwrap(),
        &[PolicySource::new("p.cedar", PERMISSIVE)],
        Validation::Strict,
    )
    .unwrap();
    let r = request(agent("coder", &[]), "read", object("Resource", "repo"));
    assert!(matches!(e.decide(&r), Err(RequestError::Request { .. })));
}

#[test]
fn attributes_of_the_wrong_type_are_refused() {
    let e = engine(PERMISSIVE);
    // A declared argument with the wrong type.
    let mut r = request(agent("coder", &[]), "read", object("Resource", "repo"));
    r.context
        .arguments
        .insert("branch".to_owned(), serde_json::json!(42));
    assert!(matches!(e.decide(&r), Err(RequestError::Request { .. })));
    r.context.arguments.insert(
        "branch".to_owned(),
        serde_json::json!({"__entity": {"type": "Aims::Agent", "id": "coder"}}),
    );
    assert!(e.decide(&r).is_err());
    // Values with no Cedar form.
    r.context
        .arguments
        .insert("branch".to_owned(), serde_json::json!(null));
    assert!(matches!(
        e.decide(&r),
        Err(RequestError::InvalidValue { .. })
    ));
    // On the wire: a string where a number belongs.
    let mut json = serde_json::to_value(&r).unwrap();
    json["context"]["posture_age_s"] = serde_json::json!("5");
    assert!(serde_json::from_value::<aims_policy::DecisionRequest>(json.clone()).is_err());
    json["context"]["posture_age_s"] = serde_json::json!(5);
    json["principal"]["trust_level"] = serde_json::json!("9");
    assert!(serde_json::from_value::<aims_policy::DecisionRequest>(json).is_err());
}

#[test]
fn ids_are_matched_literally_never_parsed() {
    let e = engine(
        r#"
        @id("coder") permit(principal == Aims::Agent::"coder", action, resource);
        @id("weird") permit(principal == Aims::Agent::"a\"b::c\nd", action, resource);
        @id("repo") permit(principal, action, resource == Aims::Resource::"github/acme");
        "#,
    );
    let denied = [
        "coder\" || true || \"",
        "Aims::Agent::\"coder\"",
        "coder\n",
        "coder\0",
        "c\u{043e}der", // Cyrillic `о`
        "CODER",
        "coder ",
        "a\"b::c\\nd",
        "a\\\"b::c\nd",
    ];
    for id in denied {
        let r = request(agent(id, &[]), "delete", object("Resource", "x"));
        let d = e.decide(&r).unwrap();
        assert_eq!(d.effect, Effect::Deny, "{id:?}: {d:?}");
    }
    for id in ["coder", "a\"b::c\nd"] {
        let r = request(agent(id, &[]), "delete", object("Resource", "x"));
        assert_eq!(e.decide(&r).unwrap().effect, Effect::Allow, "{id:?}");
    }
    for id in [
        "github/acme\"",
        "github/acme\n",
        "github/acm\u{0435}",
        "Aims::Resource::\"github/acme\"",
    ] {
        let r = request(agent("other", &[]), "delete", object("Resource", id));
        assert_eq!(e.decide(&r).unwrap().effect, Effect::Deny, "{id:?}");
    }
    let r = request(
        agent("other", &[]),
        "delete",
        object("Resource", "github/acme"),
    );
    assert_eq!(e.decide(&r).unwrap().effect, Effect::Allow);
}

#[test]
fn team_and_owner_ids_are_literal_too() {
    let e = engine(r#"permit(principal in Aims::Team::"sre", action, resource);"#);
    for team in ["sre\"", "sre\n", "Aims::Team::\"sre\"", "\u{0455}re"] {
        let mut a = agent("x", &[team]);
        a.owner = team.to_owned();
        let r = request(a, "read", object("Resource", "r"));
        assert_eq!(e.decide(&r).unwrap().effect, Effect::Deny, "{team:?}");
    }
    let r = request(agent("x", &["sre"]), "read", object("Resource", "r"));
    assert_eq!(e.decide(&r).unwrap().effect, Effect::Allow);
}

#[test]
fn context_cannot_set_principal_attributes() {
    let e = engine(PERMISSIVE);
    // `principal` is not a context attribute: the wire form refuses it.
    let r = request(agent("mallory", &[]), "delete", object("Resource", "repo"));
    let mut json = serde_json::to_value(&r).unwrap();
    json["context"]["principal"] = serde_json::json!({"trust_level": 10});
    assert!(serde_json::from_value::<aims_policy::DecisionRequest>(json.clone()).is_err());
    json["context"].as_object_mut().unwrap().remove("principal");
    json["context"]["trust_level"] = serde_json::json!(10);
    assert!(serde_json::from_value::<aims_policy::DecisionRequest>(json).is_err());
    // Undeclared arguments never reach Cedar, whatever they are called.
    let mut r = request(agent("mallory", &[]), "delete", object("Resource", "repo"));
    for key in [
        "principal",
        "trust_level",
        "principal.trust_level",
        "__entity",
    ] {
        r.context
            .arguments
            .insert(key.to_owned(), serde_json::json!({"trust_level": 10}));
    }
    let d = e.decide(&r).unwrap();
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    // Labels (tags) cannot shadow attributes either.
    let mut a = agent("mallory", &[]);
    a.labels = [("trust_level".to_owned(), "10".to_owned())].into();
    let r = request(a, "delete", object("Resource", "repo"));
    assert_eq!(e.decide(&r).unwrap().effect, Effect::Deny);
}

#[test]
fn delegate_to_self_with_different_attributes_is_refused() {
    let e = engine(PERMISSIVE);
    let me = agent("coder", &[]);
    let mut other_me = me.clone();
    other_me.trust_level = 99;
    let mut r = request(me.clone(), "delegate", object("Resource", "x"));
    r.resource = Resource::Agent(other_me);
    assert!(e.decide(&r).is_err());
    r.resource = Resource::Agent(me);
    assert_eq!(e.decide(&r).unwrap().effect, Effect::Allow);
}

#[test]
fn a_schema_the_typed_request_does_not_fit_is_checked_by_cedar() {
    // Agents without tags: a request with labels cannot conform.
    let schema = aims_policy::AIMS_SCHEMA.replacen("  } tags String;\n", "  };\n", 1);
    assert_ne!(schema, aims_policy::AIMS_SCHEMA);
    let e = Engine::compile(
        Schema::parse("x.cedarschema", &schema).unwrap(),
        &[PolicySource::new("p.cedar", PERMISSIVE)],
        Validation::Strict,
    )
    .unwrap();
    let mut a = agent("coder", &[]);
    let r = request(a.clone(), "read", object("Resource", "repo"));
    assert_eq!(e.decide(&r).unwrap().effect, Effect::Allow);
    a.labels = [("role".to_owned(), "x".to_owned())].into();
    let r = request(a, "read", object("Resource", "repo"));
    assert!(matches!(e.decide(&r), Err(RequestError::Entity { .. })));
}
