//! One task's audit events as a tree ([`TaskTrace`]): the task tokens obtained for it, each
//! with what was done with it — decisions, approvals, its revocation — and the tokens
//! delegated from it, recursively; events that belong to no token of the task (opening and
//! ending it, refused exchanges, humans deciding approvals) beside the tree.
//!
//! A token is a node from its issuing event (`token.exchange` or `token.delegate`, with the
//! token's id); its parent is the token named by that event's `parent_token_id` when that is
//! a token of the task (a delegated token), and none otherwise (a token obtained with an
//! SVID). Every event appears exactly once.

use std::collections::BTreeMap;

use aims_api::oauth::TaskView;
use aims_api::{TaskTrace, TracedEvent, TracedToken};
use aims_core::audit::{AuditRecord, Outcome, action};

/// Deepest delegation the tree nests; tokens below it are listed as roots of their own.
const MAX_DEPTH: usize = 64;

/// A token of the task while the tree is built.
struct Node {
    issued: TracedEvent,
    parent: Option<String>,
    events: Vec<TracedEvent>,
}

/// The tree of `records` (the task's records, in order); `truncated` when the task has more.
pub fn trace_of(task: TaskView, records: Vec<AuditRecord>, truncated: bool) -> TaskTrace {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut loose = Vec::new();
    for record in records {
        let event = match serde_json::from_str(&record.body) {
            Ok(event) => TracedEvent {
                seq: record.seq,
                event,
            },
            // A body that is not an event (the chain still covers it): not part of the tree.
            Err(_) => continue,
        };
        let issues = matches!(
            event.event.action.as_str(),
            action::TOKEN_EXCHANGE | action::TOKEN_DELEGATE
        ) && event.event.outcome == Outcome::Success;
        if issues
            && let Some(id) = event.event.token_id.clone()
            && !nodes.contains_key(&id)
        {
            order.push(id.clone());
            let parent = event.event.parent_token_id.clone();
            nodes.insert(
                id,
                Node {
                    issued: event,
                    parent,
                    events: Vec::new(),
                },
            );
            continue;
        }
        match event
            .event
            .token_id
            .as_ref()
            .and_then(|id| nodes.get_mut(id))
        {
            Some(node) => node.events.push(event),
            None => loose.push(event),
        }
    }
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut roots = Vec::new();
    for id in &order {
        match nodes.get(id).and_then(|n| n.parent.clone()) {
            Some(parent) if nodes.contains_key(&parent) => {
                children.entry(parent).or_default().push(id.clone());
            }
            _ => roots.push(id.clone()),
        }
    }
    // Roots first, in issuing order; a token left over (below MAX_DEPTH, or in a cycle a
    // tampered log could describe) then becomes a root of its own, so none is lost.
    let mut tokens = Vec::new();
    for id in roots.iter().chain(&order) {
        if let Some(token) = build(id, &mut nodes, &children, 0) {
            tokens.push(token);
        }
    }
    TaskTrace {
        task,
        events: loose,
        tokens,
        truncated,
    }
}

/// Token `id` with the tokens delegated from it, taken out of `nodes`.
fn build(
    id: &str,
    nodes: &mut BTreeMap<String, Node>,
    children: &BTreeMap<String, Vec<String>>,
    depth: usize,
) -> Option<TracedToken> {
    let node = nodes.remove(id)?;
    let delegated = if depth < MAX_DEPTH {
        children
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|child| build(child, nodes, children, depth + 1))
            .collect()
    } else {
        Vec::new()
    };
    Some(TracedToken {
        token_id: id.to_owned(),
        issued: node.issued,
        events: node.events,
        delegated,
    })
}

#[cfg(test)]
mod tests {
    use aims_core::audit::{Actor, AuditEvent, ChainHash};
    use time::OffsetDateTime;

    use super::*;

    fn record(seq: u64, action: &str, token: Option<&str>, parent: Option<&str>) -> AuditRecord {
        let mut event = AuditEvent::new(
            OffsetDateTime::UNIX_EPOCH,
            Actor::System,
            action,
            Outcome::Success,
        );
        event.task_id = Some("T".to_owned());
        event.token_id = token.map(str::to_owned);
        event.parent_token_id = parent.map(str::to_owned);
        AuditRecord {
            seq,
            prev_hash: ChainHash::GENESIS,
            hash: ChainHash::GENESIS,
            body: serde_json::to_string(&event).unwrap(),
        }
    }

    fn task() -> TaskView {
        serde_json::from_value(serde_json::json!({
            "id": "T", "agent": "planner", "intent": "fix the build", "subject": "planner",
            "state": "active", "created_at": "2026-01-01T00:00:00Z",
            "deadline": "2026-01-01T01:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn delegations_nest_under_their_parent_and_every_event_appears_once() {
        let records = vec![
            record(1, action::TASK_CREATE, None, None),
            record(2, action::TOKEN_EXCHANGE, Some("a"), Some("svid")),
            record(3, action::DECISION, Some("a"), None),
            record(4, action::TOKEN_DELEGATE, Some("b"), Some("a")),
            record(5, action::DECISION, Some("b"), None),
            record(6, action::TOKEN_DELEGATE, Some("c"), Some("b")),
            record(7, action::TOKEN_EXCHANGE, Some("d"), Some("svid")),
            record(8, action::TASK_END, None, None),
        ];
        let trace = trace_of(task(), records, false);
        let seqs = |events: &[TracedEvent]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&trace.events), [1, 8]);
        assert_eq!(trace.tokens.len(), 2);
        let a = &trace.tokens[0];
        assert_eq!((a.token_id.as_str(), seqs(&a.events)), ("a", vec![3]));
        let b = &a.delegated[0];
        assert_eq!((b.token_id.as_str(), seqs(&b.events)), ("b", vec![5]));
        assert_eq!(b.delegated[0].token_id, "c");
        assert_eq!(trace.tokens[1].token_id, "d");
    }

    #[test]
    fn a_cycle_in_a_tampered_log_loses_no_token() {
        let records = vec![
            record(1, action::TOKEN_DELEGATE, Some("x"), Some("y")),
            record(2, action::TOKEN_DELEGATE, Some("y"), Some("x")),
        ];
        let trace = trace_of(task(), records, false);
        let mut ids = Vec::new();
        let mut stack: Vec<&TracedToken> = trace.tokens.iter().collect();
        while let Some(token) = stack.pop() {
            ids.push(token.token_id.clone());
            stack.extend(token.delegated.iter());
        }
        ids.sort();
        assert_eq!(ids, ["x", "y"]);
    }
}
