//! Audit records as OCSF events (Open Cybersecurity Schema Framework 1.2.0), for SIEMs.
//!
//! Each record becomes one event of one class:
//! - **Authentication (3002)**: identities issued at attestation (activity 3, Authentication
//!   Ticket) and refused for drift; task tokens issued by exchange or delegation (activity 4,
//!   Service Ticket Request). `user` is the agent, `service` is AIMS.
//! - **Account Change (3001)**: the agent registry — registration (1, Create), lifecycle
//!   changes (2 Enable, 5 Disable, 6 Delete, 9 Lock, by the state reached), updates and join
//!   tokens (99, Other). `user` is the agent.
//! - **API Activity (6003)**: everything else — policy decisions (the decided action as
//!   `api.operation`, the resource in `resources`; activity from the action's verb) and the
//!   operators' and enforcement points' calls (the AIMS action as `api.operation`).
//!
//! Every event carries the base attributes the schema requires (`activity_id`,
//! `category_uid`, `class_uid`, `type_uid = class_uid * 100 + activity_id`, `severity_id`,
//! `time` in epoch milliseconds, `metadata` with `product` and `version`), `status_id` from the
//! outcome, the record's position as `metadata.uid` and its request id as
//! `metadata.correlation_uid`; what OCSF has no attribute for (task, token, delegation chain,
//! decision, policies, approval, refusal code) is in `unmapped`. [`missing_required`] lists
//! what a produced event lacks of what its class requires.

use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use serde_json::{Map, Value, json};

/// The OCSF version the events follow.
pub const OCSF_VERSION: &str = "1.2.0";

const AUTHENTICATION: u64 = 3002;
const ACCOUNT_CHANGE: u64 = 3001;
const API_ACTIVITY: u64 = 6003;
const OTHER: u64 = 99;

/// The class and activity of `event`.
fn class_of(event: &AuditEvent) -> (u64, u64) {
    match event.action.as_str() {
        action::IDENTITY_ISSUE | action::POSTURE_DRIFT => (AUTHENTICATION, 3),
        action::TOKEN_EXCHANGE | action::TOKEN_DELEGATE => (AUTHENTICATION, 4),
        action::AGENT_REGISTER => (ACCOUNT_CHANGE, 1),
        action::AGENT_LIFECYCLE => {
            let state = event.details.get("to").and_then(Value::as_str);
            let activity = match state {
                Some("active") => 2,
                Some("suspended") => 5,
                Some("decommissioned") => 6,
                Some("quarantined") => 9,
                _ => OTHER,
            };
            (ACCOUNT_CHANGE, activity)
        }
        action::AGENT_UPDATE | action::AGENT_JOIN_TOKEN | action::AGENT_RECERTIFY => {
            (ACCOUNT_CHANGE, OTHER)
        }
        action::DECISION => {
            let verb = event
                .resource
                .as_deref()
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_default();
            let activity = match verb {
                "create" => 1,
                "read" | "query" | "list" | "get" => 2,
                "write" | "update" => 3,
                "delete" => 4,
                _ => OTHER,
            };
            (API_ACTIVITY, activity)
        }
        _ => (API_ACTIVITY, OTHER),
    }
}

/// The OCSF actor and source endpoint of who did it.
fn actor_of(actor: &Actor) -> (Value, Value) {
    match actor {
        Actor::User { name, role } => (
            json!({"user": {"name": name, "type": role}}),
            json!({"uid": format!("user:{name}")}),
        ),
        Actor::Agent { spiffe_id } => (
            json!({"user": {"uid": spiffe_id, "type": "agent"}}),
            json!({"uid": spiffe_id}),
        ),
        Actor::ResourceServer { name } => (
            json!({"app_name": name}),
            json!({"uid": format!("resource_server:{name}")}),
        ),
        Actor::Anonymous => (
            json!({"app_name": "anonymous"}),
            json!({"uid": "anonymous"}),
        ),
        Actor::System => (json!({"app_name": "aims"}), json!({"uid": "aims"})),
    }
}

/// Record `seq`'s `event` as an OCSF event; `issuer` names this AIMS (the service of
/// authentications).
pub fn event(seq: u64, event: &AuditEvent, issuer: &str) -> Value {
    let (class_uid, activity_id) = class_of(event);
    let success = event.outcome == Outcome::Success;
    let mut out = Map::new();
    out.insert("class_uid".into(), json!(class_uid));
    out.insert("category_uid".into(), json!(class_uid / 1000));
    out.insert("activity_id".into(), json!(activity_id));
    out.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
    out.insert("severity_id".into(), json!(if success { 1 } else { 3 }));
    out.insert("status_id".into(), json!(if success { 1 } else { 2 }));
    out.insert(
        "time".into(),
        json!(event.time.unix_timestamp_nanos() / 1_000_000),
    );
    out.insert(
        "message".into(),
        json!(format!(
            "{} {}",
            event.action,
            if success { "succeeded" } else { "was refused" }
        )),
    );
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "uid": seq.to_string(),
        "log_name": "aims-audit",
        "product": {"name": "AIMS", "vendor_name": "AIMS", "version": env!("CARGO_PKG_VERSION")},
    });
    if let (Some(request), Some(metadata)) = (&event.request_id, metadata.as_object_mut()) {
        metadata.insert("correlation_uid".into(), json!(request));
    }
    out.insert("metadata".into(), metadata);
    let (actor, source) = actor_of(&event.actor);
    let agent = event
        .agent
        .as_ref()
        .map(|spiffe_id| json!({"uid": spiffe_id, "type": "agent"}));
    match class_id_kind(class_uid) {
        ClassKind::Identity => {
            // The agent is the account; without one (a refused attestation), whoever asked.
            let user = agent.unwrap_or_else(|| {
                actor
                    .get("user")
                    .cloned()
                    .unwrap_or_else(|| json!({"name": "unknown"}))
            });
            out.insert("user".into(), user);
            out.insert("actor".into(), actor);
            if class_uid == AUTHENTICATION {
                out.insert("service".into(), json!({"name": "aims", "uid": issuer}));
            }
        }
        ClassKind::Api => {
            let operation = if event.action == action::DECISION {
                event
                    .resource
                    .as_deref()
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or(action::DECISION)
                    .to_owned()
            } else {
                event.action.clone()
            };
            out.insert("actor".into(), actor);
            out.insert("src_endpoint".into(), source);
            out.insert("api".into(), json!({"operation": operation}));
            if let Some(resource) = &event.resource {
                out.insert("resources".into(), json!([{"uid": resource}]));
            }
        }
    }
    let mut unmapped = Map::new();
    unmapped.insert("aims_action".into(), json!(event.action));
    for (name, value) in [
        ("agent", &event.agent),
        ("owner", &event.owner),
        ("task_id", &event.task_id),
        ("token_id", &event.token_id),
        ("parent_token_id", &event.parent_token_id),
        ("intent", &event.intent),
        ("decision", &event.decision),
        ("approval_id", &event.approval_id),
        ("code", &event.code),
    ] {
        if let Some(value) = value {
            unmapped.insert(name.into(), json!(value));
        }
    }
    if !event.delegation_chain.is_empty() {
        unmapped.insert("delegation_chain".into(), json!(event.delegation_chain));
    }
    if !event.policy_ids.is_empty() {
        unmapped.insert("policy_ids".into(), json!(event.policy_ids));
    }
    out.insert("unmapped".into(), Value::Object(unmapped));
    Value::Object(out)
}

enum ClassKind {
    Identity,
    Api,
}

fn class_id_kind(class_uid: u64) -> ClassKind {
    if class_uid == API_ACTIVITY {
        ClassKind::Api
    } else {
        ClassKind::Identity
    }
}

/// What `event` lacks of what OCSF 1.2.0 requires of its class: the base event's attributes,
/// `metadata.product.vendor_name`, and per class — Authentication: `user` (with `uid`,
/// `name` or `account`) and `service` or `dst_endpoint`; Account Change: `user`; API
/// Activity: `actor` (with one of its identifying attributes), `api.operation` and
/// `src_endpoint` (with one of its identifying attributes). Empty when it has them all.
pub fn missing_required(event: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    let has = |pointer: &str| event.pointer(pointer).is_some_and(|v| !v.is_null());
    let any = |base: &str, names: &[&str]| names.iter().any(|n| has(&format!("{base}/{n}")));
    for attribute in [
        "/activity_id",
        "/category_uid",
        "/class_uid",
        "/type_uid",
        "/severity_id",
        "/time",
        "/metadata/version",
        "/metadata/product/vendor_name",
    ] {
        if !has(attribute) {
            missing.push(attribute.to_owned());
        }
    }
    let number = |pointer: &str| event.pointer(pointer).and_then(Value::as_u64);
    if let (Some(class), Some(activity), Some(type_uid)) = (
        number("/class_uid"),
        number("/activity_id"),
        number("/type_uid"),
    ) && type_uid != class * 100 + activity
    {
        missing.push("/type_uid = class_uid * 100 + activity_id".to_owned());
    }
    let user_ok = any("/user", &["uid", "name", "account"]);
    match number("/class_uid") {
        Some(AUTHENTICATION) => {
            if !user_ok {
                missing.push("/user (uid, name or account)".to_owned());
            }
            if !has("/service") && !has("/dst_endpoint") {
                missing.push("/service or /dst_endpoint".to_owned());
            }
        }
        Some(ACCOUNT_CHANGE) => {
            if !user_ok {
                missing.push("/user (uid, name or account)".to_owned());
            }
        }
        Some(API_ACTIVITY) => {
            if !any(
                "/actor",
                &[
                    "process",
                    "user",
                    "invoked_by",
                    "session",
                    "app_name",
                    "app_uid",
                ],
            ) {
                missing.push("/actor (user, app_name, ...)".to_owned());
            }
            if !has("/api/operation") {
                missing.push("/api/operation".to_owned());
            }
            if !any(
                "/src_endpoint",
                &["ip", "uid", "name", "hostname", "svc_name", "instance_uid"],
            ) {
                missing.push("/src_endpoint (ip, uid, name, ...)".to_owned());
            }
        }
        _ => missing.push("/class_uid (3001, 3002 or 6003)".to_owned()),
    }
    missing
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn audit(actor: Actor, action: &str, outcome: Outcome) -> AuditEvent {
        let mut event = AuditEvent::new(OffsetDateTime::UNIX_EPOCH, actor, action, outcome);
        event.agent = Some("spiffe://acme.example/agent/coder".into());
        event
    }

    #[test]
    fn every_kind_of_record_becomes_a_valid_event_of_its_class() {
        let agent = Actor::Agent {
            spiffe_id: "spiffe://acme.example/agent/coder".into(),
        };
        let admin = Actor::User {
            name: "alice".into(),
            role: "admin".into(),
        };
        let mut decision = audit(agent.clone(), action::DECISION, Outcome::Success);
        decision.resource = Some("read Resource::repo/acme/app".into());
        decision.decision = Some("allow".into());
        decision.policy_ids = vec!["coding-read-repository".into()];
        decision.task_id = Some("T".into());
        let mut suspended = audit(admin.clone(), action::AGENT_LIFECYCLE, Outcome::Success);
        suspended.details = json!({"action": "suspend", "from": "active", "to": "suspended"});
        let mut drift = audit(Actor::System, action::POSTURE_DRIFT, Outcome::Denied);
        drift.agent = None;
        let cases = [
            (
                audit(agent.clone(), action::IDENTITY_ISSUE, Outcome::Success),
                3002,
                3,
            ),
            (
                audit(agent.clone(), action::TOKEN_EXCHANGE, Outcome::Success),
                3002,
                4,
            ),
            (drift, 3002, 3),
            (
                audit(admin.clone(), action::AGENT_REGISTER, Outcome::Success),
                3001,
                1,
            ),
            (suspended, 3001, 5),
            (decision, 6003, 2),
            (audit(admin, action::KEY_ROTATE, Outcome::Success), 6003, 99),
            (
                audit(
                    Actor::ResourceServer { name: "gw".into() },
                    action::REJECT,
                    Outcome::Denied,
                ),
                6003,
                99,
            ),
            (
                audit(Actor::Anonymous, action::REJECT, Outcome::Denied),
                6003,
                99,
            ),
        ];
        for (record, class, activity) in cases {
            let ocsf = event(7, &record, "https://aims.acme.example");
            assert_eq!(missing_required(&ocsf), Vec::<String>::new(), "{ocsf}");
            assert_eq!(
                (ocsf["class_uid"].as_u64(), ocsf["activity_id"].as_u64()),
                (Some(class), Some(activity)),
                "{}",
                record.action
            );
            assert_eq!(ocsf["type_uid"], class * 100 + activity);
            assert_eq!(ocsf["metadata"]["uid"], "7");
        }
        let mut decision = audit(
            Actor::Agent {
                spiffe_id: "spiffe://acme.example/agent/coder".into(),
            },
            action::DECISION,
            Outcome::Denied,
        );
        decision.resource = Some("delete Resource::repo/acme/app".into());
        decision.decision = Some("deny".into());
        let ocsf = event(8, &decision, "https://aims.acme.example");
        assert_eq!(ocsf["status_id"], 2);
        assert_eq!(ocsf["api"]["operation"], "delete");
        assert_eq!(ocsf["unmapped"]["decision"], "deny");
    }

    #[test]
    fn the_check_names_what_is_missing() {
        let mut incomplete = event(
            1,
            &audit(Actor::System, action::AGENT_REGISTER, Outcome::Success),
            "https://aims.acme.example",
        );
        incomplete["type_uid"] = json!(1);
        if let Some(map) = incomplete.as_object_mut() {
            map.remove("user");
        }
        let missing = missing_required(&incomplete);
        assert!(
            missing.iter().any(|m| m.starts_with("/type_uid =")),
            "{missing:?}"
        );
        assert!(
            missing.iter().any(|m| m.starts_with("/user")),
            "{missing:?}"
        );
    }
}
