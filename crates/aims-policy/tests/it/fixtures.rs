//! Shared builders for requests and engines.

use std::collections::BTreeMap;

use aims_policy::{
    Agent, DecisionRequest, Engine, PolicySource, Posture, RequestContext, Resource,
    ResourceObject, Schema, Tags, Toolchain, Validation,
};

pub fn agent(name: &str, teams: &[&str]) -> Agent {
    Agent {
        name: name.to_owned(),
        spiffe_id: format!("spiffe://acme.example/agent/{name}"),
        owner: "alice".to_owned(),
        teams: teams.iter().map(|t| (*t).to_owned()).collect(),
        environment: "prod".to_owned(),
        state: "active".to_owned(),
        trust_level: 2,
        model: "m".to_owned(),
        toolchain: Toolchain {
            framework: "f".to_owned(),
            version: "1".to_owned(),
            manifest_digest: None,
        },
        posture: Posture {
            identity_verified: true,
            runtime_checks_passed: true,
            model_digest: None,
            image_digest: None,
        },
        labels: Tags::default(),
    }
}

pub fn object(ty: &str, id: &str) -> ResourceObject {
    ResourceObject {
        entity_type: ty.to_owned(),
        id: id.to_owned(),
        system: "github".to_owned(),
        environment: "prod".to_owned(),
        sensitivity: "internal".to_owned(),
        kind: "repository".to_owned(),
        labels: BTreeMap::new(),
        parents: Vec::new(),
    }
}

pub fn context() -> RequestContext {
    RequestContext {
        time: time::macros::datetime!(2026-03-02 10:00 UTC),
        posture_age_s: 10,
        task_id: "task-1".to_owned(),
        intent: "test".to_owned(),
        delegation_depth: 0,
        delegation_chain: Vec::new(),
        approved: false,
        environment: "prod".to_owned(),
        source_ip: "10.0.0.5".parse().unwrap(),
        arguments: serde_json::Map::new(),
    }
}

pub fn request(principal: Agent, action: &str, resource: ResourceObject) -> DecisionRequest {
    DecisionRequest {
        decision_id: Some("d-1".to_owned()),
        principal: principal.into(),
        action: action.to_owned(),
        resource: Resource::Object(resource),
        context: context(),
    }
}

pub fn engine(policies: &str) -> Engine {
    Engine::compile(
        Schema::aims().unwrap(),
        &[PolicySource::new("test.cedar", policies)],
        Validation::Strict,
    )
    .unwrap()
}

pub fn engine_unvalidated(policies: &str) -> Engine {
    Engine::compile(
        Schema::aims().unwrap(),
        &[PolicySource::new("test.cedar", policies)],
        Validation::Skip,
    )
    .unwrap()
}
