//! The governance report ([`GovernanceReport`]): findings about agents, secrets and callers,
//! each with its evidence, a recommended action and the OWASP Non-Human Identity Top 10
//! (2025) item it addresses.
//!
//! [`build`] gathers the facts from the store — the registry, users, secrets, gateway
//! sightings, each agent's last activity, and the audit records of the window — and
//! [`findings`] turns them into the report; it is pure, so every kind is tested here on data
//! made up for it. The window's records are read once, newest [`MAX_REPORT_RECORDS`] at most,
//! and folded into a [`Tally`] as they come, so a long window costs time but not memory.
//!
//! The report names agents, secrets, scopes and caller addresses, never a credential or
//! secret value: nothing here reads one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aims_api::report::{
    AgentDecisions, Finding, FindingKind, GovernanceReport, KindCount, ReportCoverage, SubjectKind,
};
use aims_core::agent::{Agent, LifecycleState};
use aims_core::audit::{AuditEvent, Outcome, action};
use aims_core::id::{ResourceServerName, SpiffeId, TrustDomain};
use aims_core::scope::{Scope, ScopeSet};
use aims_core::secret::Secret;
use aims_core::sighting::Sighting;
use aims_store::{AgentFilter, MAX_PAGE};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::error::ApiError;
use crate::state::AppState;

/// Most agents one report examines.
pub const MAX_REPORT_AGENTS: usize = 10_000;
/// Most audit records of the window one report reads (the newest ones).
pub const MAX_REPORT_RECORDS: u64 = 200_000;
/// Fewest decisions in the window before an agent's denial rate is judged.
pub const MIN_DECISIONS_FOR_RATE: u64 = 5;
/// Share of denials, in percent, from which a denial rate is reported.
pub const HIGH_DENIAL_PERCENT: u64 = 25;

/// What the report cannot answer yet, shown with every report.
const NOT_COVERED: [&str; 4] = [
    "Policies never used: the report does not compare the policies that decided within the \
     window with the active policy set, nor write the least-privilege change as a policy diff; \
     unused scopes name what to stop requesting instead.",
    "Group owners: AIMS keeps no directory of groups, so an owner is known when it names a \
     registered user; a team owner is reported until a user of that name exists.",
    "Several environments: an agent is registered in exactly one environment, so the report \
     shows agents that obtained tokens for resource servers of another environment, not \
     copies of one identity deployed in several places.",
    "Scope use: only task tokens issued within the window are judged, so a scope granted \
     just before the window's end may be reported before it had a chance to be used.",
];

/// An agent and what the store says of its activity.
#[derive(Debug, Clone)]
pub struct AgentFacts {
    /// Its registry record.
    pub agent: Agent,
    /// The time of the last audit record naming it.
    pub last_seen: Option<OffsetDateTime>,
    /// Its live credentials, counted by kind.
    pub live_credentials: BTreeMap<String, u64>,
}

/// Everything but the window's records.
#[derive(Debug, Clone)]
pub struct Facts {
    /// When the report is made.
    pub now: OffsetDateTime,
    /// The window, in days.
    pub window_days: u32,
    /// The agents examined, by name.
    pub agents: Vec<AgentFacts>,
    /// More agents exist than were examined.
    pub agents_truncated: bool,
    /// The names of the registered users.
    pub users: BTreeSet<String>,
    /// The brokered secrets (no values).
    pub secrets: Vec<Secret>,
    /// The most recent sightings, with who reported them.
    pub sightings: Vec<(ResourceServerName, Sighting)>,
    /// Audience → environment of each registered resource server.
    pub audience_environments: BTreeMap<String, String>,
}

impl Facts {
    /// The window's start.
    pub fn window_start(&self) -> OffsetDateTime {
        self.now - Duration::days(i64::from(self.window_days))
    }
}

/// One task token issued within the window.
#[derive(Debug, Clone)]
struct IssuedToken {
    holder: String,
    parent: Option<String>,
    audience: Option<String>,
    scopes: Vec<Scope>,
}

/// One quarantine within the window.
#[derive(Debug, Clone)]
struct Quarantined {
    agent: String,
    time: OffsetDateTime,
    fields: Vec<String>,
}

/// Decision counts of one agent.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    total: u64,
    allowed: u64,
    denied: u64,
    approval_required: u64,
}

/// What the window's records say, folded in one record at a time.
#[derive(Debug)]
pub struct Tally {
    trust_domain: TrustDomain,
    examined: u64,
    first: Option<OffsetDateTime>,
    decisions: BTreeMap<String, Counts>,
    /// Tokens in issuing order, and each one's position.
    tokens: Vec<(String, IssuedToken)>,
    token_index: HashMap<String, usize>,
    /// Token id → the distinct (action, resource) of the calls it was allowed.
    allowed_calls: HashMap<String, BTreeSet<(String, String)>>,
    quarantines: Vec<Quarantined>,
}

impl Tally {
    /// An empty tally for agents of `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            examined: 0,
            first: None,
            decisions: BTreeMap::new(),
            tokens: Vec::new(),
            token_index: HashMap::new(),
            allowed_calls: HashMap::new(),
            quarantines: Vec::new(),
        }
    }

    /// The name of this trust domain's agent with SPIFFE ID `spiffe_id`.
    fn agent_name(&self, spiffe_id: Option<&str>) -> Option<String> {
        let id = SpiffeId::parse(spiffe_id?).ok()?;
        (id.trust_domain() == &self.trust_domain).then(|| id.agent().to_string())
    }

    /// Folds in one event of the window.
    pub fn add(&mut self, event: &AuditEvent) {
        self.examined += 1;
        self.first = Some(self.first.map_or(event.time, |t| t.min(event.time)));
        match event.action.as_str() {
            action::DECISION => self.decision(event),
            action::TOKEN_EXCHANGE | action::TOKEN_DELEGATE => self.issued(event),
            action::POSTURE_DRIFT => {
                if let Some(agent) = self.agent_name(event.agent.as_deref()) {
                    let fields = event
                        .details
                        .get("mismatches")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m.get("field")?.as_str().map(str::to_owned))
                        .collect();
                    self.quarantines.push(Quarantined {
                        agent,
                        time: event.time,
                        fields,
                    });
                }
            }
            _ => {}
        }
    }

    fn decision(&mut self, event: &AuditEvent) {
        // A preview (an enforcement point filtering what it lists) is not a call.
        if event.details.get("preview") == Some(&Value::Bool(true)) {
            return;
        }
        let Some(agent) = self.agent_name(event.agent.as_deref()) else {
            return;
        };
        let counts = self.decisions.entry(agent).or_default();
        counts.total += 1;
        match event.decision.as_deref() {
            Some("allow") => counts.allowed += 1,
            Some("deny") => counts.denied += 1,
            Some("approval_required") => counts.approval_required += 1,
            _ => {}
        }
        if event.decision.as_deref() == Some("allow")
            && let (Some(token), Some(resource)) = (&event.token_id, &event.resource)
            && let Some((call_action, target)) = resource.split_once(' ')
        {
            self.allowed_calls
                .entry(token.clone())
                .or_default()
                .insert((call_action.to_owned(), target.to_owned()));
        }
    }

    fn issued(&mut self, event: &AuditEvent) {
        if event.outcome != Outcome::Success {
            return;
        }
        let Some(id) = event.token_id.clone() else {
            return;
        };
        // An exchanged token is held by the agent that asked; a delegated one by the delegate.
        let holder = if event.action == action::TOKEN_DELEGATE {
            self.agent_name(event.details.get("delegate").and_then(Value::as_str))
        } else {
            self.agent_name(event.agent.as_deref())
        };
        let Some(holder) = holder else { return };
        let scopes = event
            .details
            .get("scope")
            .and_then(Value::as_str)
            .and_then(|s| ScopeSet::parse(s).ok())
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        if self.token_index.contains_key(&id) {
            return;
        }
        self.token_index.insert(id.clone(), self.tokens.len());
        self.tokens.push((
            id,
            IssuedToken {
                holder,
                parent: event.parent_token_id.clone(),
                audience: event.resource.clone(),
                scopes,
            },
        ));
    }

    /// The scopes of each token that were used: by a call it was allowed, or by a token
    /// delegated from it whose used scopes they cover.
    fn used_scopes(&self) -> Vec<BTreeSet<Scope>> {
        let mut used: Vec<BTreeSet<Scope>> = vec![BTreeSet::new(); self.tokens.len()];
        // Children are issued after their parents: walking backwards settles each child
        // before its parent reads it.
        for (index, (id, token)) in self.tokens.iter().enumerate().rev() {
            let calls = self.allowed_calls.get(id);
            let mut mine: BTreeSet<Scope> = used.get(index).cloned().unwrap_or_default();
            for scope in &token.scopes {
                let by_call = calls
                    .into_iter()
                    .flatten()
                    .any(|(call_action, target)| permits(scope, call_action, target));
                if by_call {
                    mine.insert(scope.clone());
                }
            }
            if let Some(parent) = token
                .parent
                .as_ref()
                .and_then(|p| self.token_index.get(p))
                .copied()
                .filter(|&p| p < index)
                && let Some((_, parent_token)) = self.tokens.get(parent)
            {
                let covered: Vec<Scope> = parent_token
                    .scopes
                    .iter()
                    .filter(|s| mine.iter().any(|u| s.covers(u)))
                    .cloned()
                    .collect();
                if let Some(slot) = used.get_mut(parent) {
                    slot.extend(covered);
                }
            }
            if let Some(slot) = used.get_mut(index) {
                *slot = mine;
            }
        }
        used
    }
}

/// Whether `scope` permits `call_action` on `target` (`Type::id` as decisions record it).
/// The type is a `::`-separated path and the id is literal, so an id holding `::` could be
/// split in more than one way: any split counts, which may call a scope used that was not,
/// never the reverse.
fn permits(scope: &Scope, call_action: &str, target: &str) -> bool {
    target.match_indices("::").any(|(at, sep)| {
        target
            .get(at + sep.len()..)
            .is_some_and(|id| scope.permits(call_action, id))
    })
}

/// A finding of `kind` about `subject`.
fn finding(
    kind: FindingKind,
    subject_kind: SubjectKind,
    subject: &str,
    summary: String,
    evidence: Value,
    recommendation: String,
) -> Finding {
    let nhi = kind.nhi();
    Finding {
        kind,
        nhi,
        nhi_title: nhi.title().to_owned(),
        subject_kind,
        subject: subject.to_owned(),
        summary,
        evidence,
        recommendation,
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn joined(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report of `facts` and the window's `tally`.
pub fn findings(facts: &Facts, tally: &Tally) -> GovernanceReport {
    let now = facts.now;
    let window_start = facts.window_start();
    let days = facts.window_days;
    let mut all: Vec<Finding> = Vec::new();
    let live = |a: &AgentFacts| a.agent.state != LifecycleState::Decommissioned;
    let agents: BTreeMap<String, &AgentFacts> = facts
        .agents
        .iter()
        .map(|a| (a.agent.name.to_string(), a))
        .collect();

    for a in facts.agents.iter().filter(|a| live(a)) {
        let agent = &a.agent;
        let name = agent.name.as_str();
        if agent.recertify_by <= now {
            let overdue = (now - agent.recertify_by).whole_days();
            all.push(finding(
                FindingKind::PastRecertification,
                SubjectKind::Agent,
                name,
                format!(
                    "recertification was due {} ({overdue} days ago); owner {}",
                    rfc3339(agent.recertify_by),
                    agent.owner
                ),
                json!({
                    "recertify_by": rfc3339(agent.recertify_by),
                    "days_overdue": overdue,
                    "owner": agent.owner,
                    "state": agent.state,
                }),
                format!(
                    "Have the owner confirm the agent is still needed and recertify it \
                     (aims agent recertify {name} --days N), or decommission it \
                     (aims agent decommission {name}); until then it cannot attest, and \
                     past the grace period it is suspended."
                ),
            ));
        }
        if a.last_seen.is_none_or(|seen| seen < window_start) {
            let live_total: u64 = a.live_credentials.values().sum();
            let seen = a.last_seen.map_or_else(|| "never".to_owned(), rfc3339);
            all.push(finding(
                FindingKind::Inactive,
                SubjectKind::Agent,
                name,
                format!(
                    "no audit record names it within the last {days} days (last seen {seen}); \
                     {live_total} live credentials"
                ),
                json!({
                    "last_seen": a.last_seen.map(rfc3339),
                    "state": agent.state,
                    "live_credentials": a.live_credentials,
                    "registered_at": rfc3339(agent.created_at),
                }),
                format!(
                    "Ask the owner ({}) whether it is still needed; if not, decommission it \
                     (aims agent decommission {name}), which revokes what it holds.",
                    agent.owner
                ),
            ));
        }
        if !facts.users.contains(agent.owner.as_str()) {
            all.push(finding(
                FindingKind::UnknownOwner,
                SubjectKind::Agent,
                name,
                format!("its owner {} is not a registered user", agent.owner),
                json!({ "owner": agent.owner, "state": agent.state }),
                format!(
                    "Give it an accountable owner who is a registered user \
                     (aims agent update {name} --owner USER), or decommission it."
                ),
            ));
        }
        if agent.limits.allow_bearer {
            all.push(finding(
                FindingKind::BearerAllowed,
                SubjectKind::Agent,
                name,
                "it may obtain plain bearer tokens, which work for whoever holds them".to_owned(),
                json!({ "allow_bearer": true, "state": agent.state }),
                format!(
                    "Move its client to DPoP and turn bearer tokens off \
                     (aims agent update {name} --allow-bearer=false)."
                ),
            ));
        }
    }

    for q in &tally.quarantines {
        let state = agents.get(&q.agent).map(|a| a.agent.state);
        all.push(finding(
            FindingKind::Quarantine,
            SubjectKind::Agent,
            &q.agent,
            format!(
                "quarantined at {} for posture drift in {}",
                rfc3339(q.time),
                if q.fields.is_empty() {
                    "its evidence".to_owned()
                } else {
                    q.fields.join(", ")
                }
            ),
            json!({
                "time": rfc3339(q.time),
                "cause": "posture_drift",
                "fields": q.fields,
                "state_now": state,
            }),
            format!(
                "Find which runtime presented the identity (aims audit query --agent {a}). If \
                 the change was intended, update the posture profile and release it (aims agent \
                 release {a}); if not, decommission it and investigate.",
                a = q.agent
            ),
        ));
    }

    // Scopes granted and never used, per holder.
    let used = tally.used_scopes();
    let mut per_agent: BTreeMap<&str, (u64, BTreeSet<Scope>, BTreeSet<Scope>)> = BTreeMap::new();
    for ((_, token), used) in tally.tokens.iter().zip(&used) {
        let entry = per_agent.entry(token.holder.as_str()).or_default();
        entry.0 += 1;
        entry.1.extend(token.scopes.iter().cloned());
        entry.2.extend(used.iter().cloned());
    }
    for (agent, (tokens, granted, used)) in &per_agent {
        let unused: BTreeSet<Scope> = granted.difference(used).cloned().collect();
        if unused.is_empty() {
            continue;
        }
        let keep = if used.is_empty() {
            "none of them".to_owned()
        } else {
            joined(used)
        };
        all.push(finding(
            FindingKind::UnusedScope,
            SubjectKind::Agent,
            agent,
            format!(
                "{} of {} scopes granted in {tokens} task tokens within the last {days} days \
                 allowed no call: {}",
                unused.len(),
                granted.len(),
                joined(&unused)
            ),
            json!({
                "tokens": tokens,
                "granted": granted.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "used": used.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "unused": unused.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
            format!(
                "Have its tasks request only the scopes they use ({keep}) and narrow the \
                 policies that let it obtain {}.",
                joined(&unused)
            ),
        ));
    }

    let mut decisions: Vec<AgentDecisions> = tally
        .decisions
        .iter()
        .map(|(agent, c)| AgentDecisions {
            agent: agent.clone(),
            total: c.total,
            allowed: c.allowed,
            denied: c.denied,
            approval_required: c.approval_required,
        })
        .collect();
    decisions.sort_by(|a, b| b.denied.cmp(&a.denied).then(a.agent.cmp(&b.agent)));
    for d in &decisions {
        let high = d.denied.saturating_mul(100) >= d.total.saturating_mul(HIGH_DENIAL_PERCENT);
        if d.total < MIN_DECISIONS_FOR_RATE || !high {
            continue;
        }
        let percent = d.denied.saturating_mul(100) / d.total.max(1);
        all.push(finding(
            FindingKind::HighDenialRate,
            SubjectKind::Agent,
            &d.agent,
            format!(
                "{} of its {} decisions within the last {days} days were denials ({percent}%)",
                d.denied, d.total
            ),
            json!({
                "decisions": d.total,
                "denied": d.denied,
                "allowed": d.allowed,
                "approval_required": d.approval_required,
                "percent_denied": percent,
            }),
            format!(
                "Read what it was denied (aims audit query --agent {} --decision deny): a \
                 misconfigured agent asks for what it does not need, a compromised one probes.",
                d.agent
            ),
        ));
    }

    for secret in &facts.secrets {
        let Some(due) = secret
            .rotation_due_at()
            .filter(|_| secret.rotation_overdue(now))
        else {
            continue;
        };
        let overdue = (now - due).whole_days();
        let name = secret.name.as_str();
        all.push(finding(
            FindingKind::SecretRotationOverdue,
            SubjectKind::Secret,
            name,
            format!(
                "version {} was stored {} and was due for rotation {} ({overdue} days ago)",
                secret.version,
                rfc3339(secret.rotated_at),
                rfc3339(due)
            ),
            json!({
                "version": secret.version,
                "rotated_at": rfc3339(secret.rotated_at),
                "rotation_period_days": secret.rotation_period_s.map(|s| s / 86_400),
                "due_at": rfc3339(due),
                "days_overdue": overdue,
                "readers": secret.readers,
            }),
            format!(
                "Issue a new credential upstream and store it (aims secret rotate {name}), \
                 then revoke the old one upstream."
            ),
        ));
    }

    // Environments of the resource servers each agent obtained tokens for.
    let mut audiences: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, token) in &tally.tokens {
        if let Some(audience) = &token.audience {
            audiences
                .entry(token.holder.as_str())
                .or_default()
                .insert(audience.as_str());
        }
    }
    for (agent, audiences) in &audiences {
        let Some(facts_of) = agents.get(*agent) else {
            continue;
        };
        let home = facts_of.agent.environment.as_str();
        let elsewhere: Vec<Value> = audiences
            .iter()
            .filter_map(|aud| {
                let env = facts.audience_environments.get(*aud)?;
                (env != home).then(|| json!({ "audience": aud, "environment": env }))
            })
            .collect();
        if elsewhere.is_empty() {
            continue;
        }
        let environments: BTreeSet<&str> = elsewhere
            .iter()
            .filter_map(|e| e["environment"].as_str())
            .collect();
        all.push(finding(
            FindingKind::SeveralEnvironments,
            SubjectKind::Agent,
            agent,
            format!(
                "registered in {home} but obtained tokens within the last {days} days for \
                 resource servers in {}",
                environments.into_iter().collect::<Vec<_>>().join(", ")
            ),
            json!({ "environment": home, "elsewhere": elsewhere }),
            "Register one agent per environment, each with its own owner-approved access, \
             and deny tokens across environments in policy."
                .to_owned(),
        ));
    }

    for (reporter, s) in &facts.sightings {
        if s.last_seen < window_start {
            continue;
        }
        all.push(finding(
            FindingKind::UnmanagedCaller,
            SubjectKind::Caller,
            &s.source,
            format!(
                "{reporter} refused it {} times on route {} ({}), last at {}",
                s.count,
                s.route,
                s.reason,
                rfc3339(s.last_seen)
            ),
            json!({
                "reporter": reporter,
                "route": s.route,
                "user_agent": s.user_agent,
                "reason": s.reason,
                "count": s.count,
                "first_seen": rfc3339(s.first_seen),
                "last_seen": rfc3339(s.last_seen),
            }),
            "Find out what runs there: register it as an agent if it is one, revoke the \
             credential it presents if that leaked, or block the address."
                .to_owned(),
        ));
    }

    let order = |kind: FindingKind| FindingKind::ALL.iter().position(|k| *k == kind);
    all.sort_by(|a, b| {
        order(a.kind)
            .cmp(&order(b.kind))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    let summary = FindingKind::ALL
        .iter()
        .map(|&kind| KindCount {
            kind,
            nhi: kind.nhi(),
            count: all.iter().filter(|f| f.kind == kind).count() as u64,
        })
        .collect();
    GovernanceReport {
        generated_at: now,
        window_days: days,
        window_start,
        coverage: ReportCoverage {
            agents: facts.agents.len() as u64,
            agents_truncated: facts.agents_truncated,
            records_examined: tally.examined,
            records_truncated: false,
            records_from: tally.first,
            secrets: facts.secrets.len() as u64,
            sightings: facts.sightings.len() as u64,
        },
        summary,
        findings: all,
        decisions,
        not_covered: NOT_COVERED.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Gathers the facts and the window's records from the store and makes the report of the
/// `window_days` before `now`.
pub async fn build(
    state: &AppState,
    window_days: u32,
    now: OffsetDateTime,
) -> Result<GovernanceReport, ApiError> {
    state.audit_sequenced().await?;
    let store = &state.store;
    let mut agents = Vec::new();
    let mut after = None;
    let mut agents_truncated = false;
    loop {
        let page = store
            .list_agents(&AgentFilter {
                after: after.clone(),
                limit: MAX_PAGE,
                ..AgentFilter::default()
            })
            .await?;
        let full = page.len() == MAX_PAGE as usize;
        after = page.last().map(|a| a.name.clone());
        for agent in page {
            if agents.len() == MAX_REPORT_AGENTS {
                agents_truncated = true;
                break;
            }
            let spiffe_id = agent.spiffe_id(&state.trust_domain).to_string();
            let activity = store.agent_activity(&agent.name, &spiffe_id, now).await?;
            agents.push(AgentFacts {
                agent,
                last_seen: activity.last_seen,
                live_credentials: activity.live_credentials,
            });
        }
        if !full || agents_truncated {
            break;
        }
    }
    let users = store
        .list_users()
        .await?
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    let facts = Facts {
        now,
        window_days,
        agents,
        agents_truncated,
        users,
        secrets: store.list_secrets(MAX_PAGE).await?,
        sightings: store.sightings(MAX_PAGE).await?,
        audience_environments: store
            .list_resource_servers()
            .await?
            .into_iter()
            .map(|rs| (rs.audience, rs.environment.to_string()))
            .collect(),
    };

    // The window's records, the newest MAX_REPORT_RECORDS of them at most, up to the head as
    // it is now (records appended meanwhile belong to the next report).
    let window_start = facts.window_start();
    let head = store.audit_head().await?;
    let from = store.audit_position_at(window_start).await?;
    let newest = head.seq.saturating_sub(MAX_REPORT_RECORDS);
    let mut position = from.max(newest);
    let records_truncated = newest > from;
    let mut tally = Tally::new(state.trust_domain.clone());
    while position < head.seq {
        let page = store.audit_records(position, MAX_PAGE).await?;
        if page.is_empty() {
            break;
        }
        for record in page.iter().take_while(|r| r.seq <= head.seq) {
            position = record.seq;
            // A body that is not an event (the chain still covers it) says nothing here.
            if let Ok(event) = serde_json::from_str::<AuditEvent>(&record.body)
                && event.time >= window_start
            {
                tally.add(&event);
            }
        }
        if page.last().is_some_and(|r| r.seq > head.seq) {
            break;
        }
    }
    let mut report = findings(&facts, &tally);
    report.coverage.records_truncated = records_truncated;
    Ok(report)
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
