//! The decision engine: a compiled, indexed policy set that answers requests.
//!
//! This module owns [`Engine`]: compiling policies once ([`Engine::compile`],
//! [`Engine::from_dir`]), deciding ([`Engine::decide`], [`Engine::decide_as`] for an agent
//! whose entity was built once, [`Engine::decide_batch`]) and explaining
//! ([`Engine::explain`]). It does no IO per request, keeps no state between requests and
//! generates no ids or randomness, so the same request always gets the same decision.
//!
//! # Semantics
//!
//! Decisions follow Cedar (default deny, a matching `forbid` wins over any `permit`), with
//! two AIMS rules on top:
//!
//! **Error is deny.** Cedar skips a policy whose evaluation errors, so an erroring `forbid`
//! would not deny. AIMS evaluates every policy that could apply (see [`crate::index`]) and if
//! any of them errors the decision is [`Effect::Deny`] with [`Reason::EvaluationError`],
//! the failing policies as determining policies and Cedar's messages in
//! [`Decision::errors`] — whatever the other policies say.
//!
//! **Approval required.** Let *E(a)* be the evaluation of the request with
//! `context.approved = a`. The answer is [`Effect::ApprovalRequired`] exactly when
//! 1. the request was made with `context.approved = false`,
//! 2. *E(false)* denies without any evaluation error, and
//! 3. *E(true)* allows without any evaluation error.
//!
//! Its determining policies are the permits that allow under *E(true)*. Otherwise a denial
//! stays [`Effect::Deny`]. Because *E(true)* is an ordinary evaluation, a `forbid` that does
//! not depend on `context.approved` still matches there and still wins: approval can only
//! lift restrictions written in terms of `context.approved` (`permit … when {
//! context.approved }`, `forbid … unless { context.approved }`). A request that already says
//! `approved = true` (the PEP holds a grant for this exact call) is decided as asked.
//!
//! *E(true)* is computed only where it can differ: the policies that may observe
//! `context.approved` (found in their conditions when compiled) are re-evaluated, the others'
//! answers from *E(false)* are reused, and it is skipped altogether when it cannot allow
//! (see `approval_could_allow`). The differential test checks the result against evaluating
//! *E(true)* in full with plain Cedar.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cedar_policy::{
    ActionConstraint, Authorizer, Decision as CedarDecision, Effect as CedarEffect, EntityUid,
    PolicySet, PrincipalConstraint, Request, ResourceConstraint,
};

use crate::approval::ApprovalTerms;
use crate::cedar_request::{CedarRequest, PrincipalEntity};
use crate::compile::{CompiledPolicy, PolicySource, Validation, compile};
use crate::decision::{
    Decision, Effect, EvaluationDiagnostic, Explanation, PolicyOutcome, PolicyTrace, Reason,
};
use crate::error::{CompileDiagnostic, PolicyError, RequestError, render};
use crate::index::{Bucket, Index, RequestKeys};
use crate::request::DecisionRequest;
use crate::schema::Schema;

/// A compiled, validated, indexed policy set with its schema. Cheap to share (`&Engine` is
/// `Sync`); build a new one to change policies.
#[derive(Debug)]
pub struct Engine {
    schema: Schema,
    policies: Vec<CompiledPolicy>,
    /// Policy id → whether it may observe `context.approved`.
    reads_approval: HashMap<String, bool>,
    /// Policy id → its `@max_token_ttl_s`, for the permits that carry one.
    token_ttl_s: HashMap<String, u64>,
    /// Policy id → the terms of the approval it asks for.
    approval_terms: HashMap<String, ApprovalTerms>,
    full: PolicySet,
    index: Index,
    authorizer: Authorizer,
    warnings: Vec<CompileDiagnostic>,
}

/// What one evaluation found.
#[derive(Debug, Default, Clone)]
struct Outcome {
    permits: BTreeSet<String>,
    forbids: BTreeSet<String>,
    errors: BTreeMap<String, String>,
    evaluated: usize,
}

impl Outcome {
    fn allows(&self) -> bool {
        self.errors.is_empty() && self.forbids.is_empty() && !self.permits.is_empty()
    }
}

impl Engine {
    /// Compile `sources` against `schema` and build the index.
    ///
    /// # Errors
    /// [`PolicyError`] for parse or validation errors (all of them, with locations),
    /// duplicate ids or templates.
    pub fn compile(
        schema: Schema,
        sources: &[PolicySource],
        validation: Validation,
    ) -> Result<Self, PolicyError> {
        let compiled = compile(sources, &schema, validation)?;
        let index = Index::build(&compiled.policies)?;
        let reads_approval = compiled
            .policies
            .iter()
            .map(|p| (p.id.clone(), p.reads_approval))
            .collect();
        let token_ttl_s = compiled
            .policies
            .iter()
            .filter_map(|p| Some((p.id.clone(), p.max_token_ttl_s?)))
            .collect();
        let approval_terms = compiled
            .policies
            .iter()
            .map(|p| (p.id.clone(), p.approval.clone()))
            .collect();
        Ok(Self {
            reads_approval,
            token_ttl_s,
            approval_terms,
            schema,
            policies: compiled.policies,
            full: compiled.set,
            index,
            authorizer: Authorizer::new(),
            warnings: compiled.warnings,
        })
    }

    /// Load a policy directory: its one `*.cedarschema` file (the embedded AIMS schema if it
    /// has none) and every `*.cedar` file, in file-name order; validated in strict mode.
    ///
    /// # Errors
    /// [`PolicyError`] for unreadable files, several schemas, or compile errors.
    pub fn from_dir(dir: &Path) -> Result<Self, PolicyError> {
        let (schema, sources) = read_dir(dir)?;
        Self::compile(schema, &sources, Validation::Strict)
    }

    /// The schema.
    #[must_use]
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Number of policies.
    #[must_use]
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// True when there are no policies (everything is denied).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Policy ids in load order.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.id.as_str())
    }

    /// Validator warnings (e.g. confusable characters in a policy's strings).
    #[must_use]
    pub fn warnings(&self) -> &[CompileDiagnostic] {
        &self.warnings
    }

    /// The whole policy set as one Cedar set (for tooling and the plain-Cedar baseline).
    #[must_use]
    pub fn cedar_policy_set(&self) -> &PolicySet {
        &self.full
    }

    /// The Cedar text of policy `id`, as loaded.
    #[must_use]
    pub fn policy_text(&self, id: &str) -> Option<String> {
        self.full
            .policy(&cedar_policy::PolicyId::new(id))
            .map(ToString::to_string)
    }

    /// The longest lifetime, in seconds, of a token granted on the strength of `decision`:
    /// the least `@max_token_ttl_s` among its determining policies, `None` when none of them
    /// carries one. Every determining permit matched, so the strictest of them applies.
    #[must_use]
    pub fn token_lifetime_limit_s(&self, decision: &Decision) -> Option<u64> {
        decision
            .determining_policies
            .iter()
            .filter_map(|id| self.token_ttl_s.get(id).copied())
            .min()
    }

    /// How the approval an `approval_required` decision asks for is given: the strictest
    /// terms of its determining policies ([`ApprovalTerms::strictest`]); `None` for any
    /// other decision.
    #[must_use]
    pub fn approval_terms(&self, decision: &Decision) -> Option<ApprovalTerms> {
        (decision.effect == Effect::ApprovalRequired).then(|| {
            ApprovalTerms::strictest(
                decision
                    .determining_policies
                    .iter()
                    .filter_map(|id| self.approval_terms.get(id)),
            )
        })
    }

    /// How many index buckets the policies fall into.
    #[must_use]
    pub fn index_buckets(&self) -> usize {
        self.index.bucket_count()
    }

    /// Decide one request.
    ///
    /// # Errors
    /// [`RequestError`] when the request does not conform to the schema (unknown action or
    /// type, wrong attribute types, ...). The caller must treat it as a deny.
    pub fn decide(&self, request: &DecisionRequest) -> Result<Decision, RequestError> {
        let built = request.to_cedar(&self.schema)?;
        self.decide_built(&built, request.decision_id.clone())
    }

    /// Decide one request made by `principal`, an agent whose entity was built once (see
    /// [`PrincipalEntity`]): only the resource and the context are built for the request. A
    /// `principal` built from another agent than the request's, or against another schema,
    /// is not used (the request is decided as [`Engine::decide`] does). Same decision as
    /// [`Engine::decide`].
    ///
    /// # Errors
    /// As [`Engine::decide`].
    pub fn decide_as(
        &self,
        principal: &PrincipalEntity,
        request: &DecisionRequest,
    ) -> Result<Decision, RequestError> {
        let built = request.to_cedar_as(principal, &self.schema)?;
        self.decide_built(&built, request.decision_id.clone())
    }

    /// Decide several requests (e.g. one agent's candidate actions) in one call; one result
    /// per request, in order. Consecutive requests of the same agent share its entity, built
    /// once.
    #[must_use]
    pub fn decide_batch(
        &self,
        requests: &[DecisionRequest],
    ) -> Vec<Result<Decision, RequestError>> {
        let mut principal: Option<PrincipalEntity> = None;
        requests
            .iter()
            .map(|r| {
                if principal
                    .as_ref()
                    .is_none_or(|p| p.agent() != &*r.principal)
                {
                    principal = PrincipalEntity::new(r.principal.clone(), &self.schema).ok();
                }
                match &principal {
                    Some(p) => self.decide_as(p, r),
                    // It does not conform: `decide` says why.
                    None => self.decide(r),
                }
            })
            .collect()
    }

    /// Decide a request already in Cedar's form (see [`DecisionRequest::to_cedar`]).
    ///
    /// # Errors
    /// [`RequestError`] only if the `approved = true` variant of the request fails to build.
    pub fn decide_built(
        &self,
        built: &CedarRequest,
        decision_id: Option<String>,
    ) -> Result<Decision, RequestError> {
        let buckets = self.candidates(built);
        // Buckets whose policies cannot observe `context.approved` answer the same for
        // E(false) and E(true): evaluated once, their answers reused for E(true).
        let (readers, others): (Vec<&Bucket>, Vec<&Bucket>) =
            buckets.into_iter().partition(|b| b.reads_approval);
        let mut stable = Outcome::default();
        self.evaluate(
            built.request_as_asked(),
            built,
            others.into_iter(),
            &mut stable,
        );
        let mut asked = stable.clone();
        self.evaluate(
            built.request_as_asked(),
            built,
            readers.iter().copied(),
            &mut asked,
        );
        let decision = |effect, reason, determining: Vec<String>, outcome: &Outcome| Decision {
            decision_id: decision_id.clone(),
            effect,
            reason,
            determining_policies: determining,
            errors: diagnostics(outcome),
            evaluated_policies: outcome.evaluated,
        };
        if !asked.errors.is_empty() {
            let failing = asked.errors.keys().cloned().collect();
            return Ok(decision(
                Effect::Deny,
                Reason::EvaluationError,
                failing,
                &asked,
            ));
        }
        if asked.allows() {
            let permits = asked.permits.iter().cloned().collect();
            return Ok(decision(Effect::Allow, Reason::Permitted, permits, &asked));
        }
        if !built.approved && self.approval_could_allow(&asked, &readers) {
            let approved_request = built.with_approved(true)?;
            let mut approved = stable;
            self.evaluate(&approved_request, built, readers.into_iter(), &mut approved);
            if approved.allows() {
                let permits = approved.permits.iter().cloned().collect();
                return Ok(decision(
                    Effect::ApprovalRequired,
                    Reason::NeedsApproval,
                    permits,
                    &asked,
                ));
            }
        }
        if asked.forbids.is_empty() {
            Ok(decision(Effect::Deny, Reason::NoPermit, Vec::new(), &asked))
        } else {
            let forbids = asked.forbids.iter().cloned().collect();
            Ok(decision(Effect::Deny, Reason::Forbidden, forbids, &asked))
        }
    }

    /// Decide and say why: each candidate policy's outcome, and which policies the index
    /// skipped. Slower than [`Engine::decide`] (it evaluates candidates one by one); meant
    /// for operators, not the hot path.
    ///
    /// # Errors
    /// As [`Engine::decide`].
    pub fn explain(&self, request: &DecisionRequest) -> Result<Explanation, RequestError> {
        let built = request.to_cedar(&self.schema)?;
        let decision = self.decide_built(&built, request.decision_id.clone())?;
        let mut candidate: BTreeSet<usize> = BTreeSet::new();
        for bucket in self.candidates(&built) {
            candidate.extend(bucket.members.iter().copied());
        }
        let mut candidates = Vec::new();
        let mut skipped_by_index = Vec::new();
        for (i, p) in self.policies.iter().enumerate() {
            if !candidate.contains(&i) {
                skipped_by_index.push(p.id.clone());
                continue;
            }
            let outcome = self.trace(p, &built);
            candidates.push(PolicyTrace {
                policy_id: p.id.clone(),
                effect: match p.effect() {
                    CedarEffect::Permit => "permit".to_owned(),
                    CedarEffect::Forbid => "forbid".to_owned(),
                },
                file: p.file.clone(),
                outcome,
            });
        }
        Ok(Explanation {
            decision,
            candidates,
            skipped_by_index,
        })
    }

    fn keys<'a>(&'a self, built: &'a CedarRequest) -> RequestKeys<'a> {
        let ancestors = |uid: &EntityUid| -> Vec<&'a EntityUid> {
            built
                .entities
                .ancestors(uid)
                .map(Iterator::collect)
                .unwrap_or_default()
        };
        RequestKeys {
            principal: &built.principal,
            principal_ancestors: ancestors(&built.principal),
            action: &built.action,
            action_ancestors: self.schema.action_ancestors(&built.action),
            resource: &built.resource,
            resource_ancestors: ancestors(&built.resource),
        }
    }

    /// Whether E(true) could allow, given that E(false) denied without errors. It cannot
    /// (and is not evaluated) when
    /// - no candidate may observe `context.approved` (E(true) = E(false)), or
    /// - a matching `forbid` does not observe it (it matches under E(true) too), or
    /// - nothing matched (default deny) and no candidate `permit` observes it (the permits
    ///   that do not observe it stay unsatisfied).
    fn approval_could_allow(&self, asked: &Outcome, readers: &[&Bucket]) -> bool {
        if readers.is_empty() {
            return false;
        }
        let stable_forbid = asked
            .forbids
            .iter()
            .any(|id| !self.reads_approval.get(id).copied().unwrap_or(true));
        if stable_forbid {
            return false;
        }
        !asked.forbids.is_empty() || readers.iter().any(|b| b.approval_permit)
    }

    /// The buckets that could apply to the request.
    fn candidates<'a>(&'a self, built: &'a CedarRequest) -> Vec<&'a Bucket> {
        self.index.candidates(&self.keys(built))
    }

    /// Evaluate `buckets` for `request` and merge Cedar's answers into `out`.
    fn evaluate<'b>(
        &self,
        request: &Request,
        built: &CedarRequest,
        buckets: impl Iterator<Item = &'b Bucket>,
        out: &mut Outcome,
    ) {
        for bucket in buckets {
            out.evaluated += bucket.members.len();
            let response = self
                .authorizer
                .is_authorized(request, &bucket.set, &built.entities);
            let reasons = response.diagnostics().reason().map(ToString::to_string);
            // Cedar's reasons are the matching forbids when it denies, else the permits.
            match response.decision() {
                CedarDecision::Allow => out.permits.extend(reasons),
                CedarDecision::Deny => out.forbids.extend(reasons),
            }
            for e in response.diagnostics().errors() {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                out.errors
                    .insert(pe.policy_id().to_string(), render(pe.inner()));
            }
        }
    }

    /// One policy's outcome for the request as asked.
    fn trace(&self, p: &CompiledPolicy, built: &CedarRequest) -> PolicyOutcome {
        let single = match PolicySet::from_policies([p.policy.clone()]) {
            Ok(s) => s,
            Err(e) => {
                return PolicyOutcome::Errored {
                    message: render(&e),
                };
            }
        };
        let response =
            self.authorizer
                .is_authorized(built.request_as_asked(), &single, &built.entities);
        if let Some(cedar_policy::AuthorizationError::PolicyEvaluationError(e)) =
            response.diagnostics().errors().next()
        {
            return PolicyOutcome::Errored {
                message: render(e.inner()),
            };
        }
        if response.diagnostics().reason().next().is_some() {
            return PolicyOutcome::Matched;
        }
        match self.failing_scope_part(p, built) {
            Some(part) => PolicyOutcome::ScopeMismatch {
                part: part.to_owned(),
            },
            None => PolicyOutcome::ConditionFalse,
        }
    }

    /// The first scope part of `p` that does not hold for the request, if any.
    fn failing_scope_part(&self, p: &CompiledPolicy, built: &CedarRequest) -> Option<&'static str> {
        let within = |uid: &EntityUid, group: &EntityUid| {
            uid == group || built.entities.is_ancestor_of(group, uid)
        };
        let principal_ok = match p.policy.principal_constraint() {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(e) => built.principal == e,
            PrincipalConstraint::In(e) => within(&built.principal, &e),
            PrincipalConstraint::Is(t) => built.principal.type_name() == &t,
            PrincipalConstraint::IsIn(t, e) => {
                built.principal.type_name() == &t && within(&built.principal, &e)
            }
        };
        if !principal_ok {
            return Some("principal");
        }
        let action_groups = self.schema.action_ancestors(&built.action);
        let action_ok = match p.policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => built.action == a,
            ActionConstraint::In(list) => list
                .iter()
                .any(|a| *a == built.action || action_groups.contains(a)),
        };
        if !action_ok {
            return Some("action");
        }
        let resource_ok = match p.policy.resource_constraint() {
            ResourceConstraint::Any => true,
            ResourceConstraint::Eq(e) => built.resource == e,
            ResourceConstraint::In(e) => within(&built.resource, &e),
            ResourceConstraint::Is(t) => built.resource.type_name() == &t,
            ResourceConstraint::IsIn(t, e) => {
                built.resource.type_name() == &t && within(&built.resource, &e)
            }
        };
        if resource_ok { None } else { Some("resource") }
    }
}

fn diagnostics(outcome: &Outcome) -> Vec<EvaluationDiagnostic> {
    outcome
        .errors
        .iter()
        .map(|(id, message)| EvaluationDiagnostic {
            policy_id: id.clone(),
            message: message.clone(),
        })
        .collect()
}

/// The schema and policy sources of a directory.
pub(crate) fn read_dir(dir: &Path) -> Result<(Schema, Vec<PolicySource>), PolicyError> {
    let io = |path: &Path, source| PolicyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    paths.sort();
    let mut schemas = Vec::new();
    let mut sources = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path.extension().and_then(|e| e.to_str());
        match ext {
            Some("cedarschema") => {
                let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                schemas.push((name, text));
            }
            Some("cedar") => {
                let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                sources.push(PolicySource::new(name, text));
            }
            _ => {}
        }
    }
    let schema = match schemas.as_slice() {
        [] => Schema::aims()?,
        [(name, text)] => Schema::parse(name, text)?,
        _ => {
            return Err(PolicyError::Layout {
                path: dir.to_owned(),
                message: "more than one *.cedarschema file".to_owned(),
            });
        }
    };
    Ok((schema, sources))
}
