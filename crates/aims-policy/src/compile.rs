//! Compiling policy sources into one validated Cedar policy set.
//!
//! This module owns parsing `*.cedar` sources, giving every policy a stable id, rejecting
//! templates, and validating the whole set against the schema in Cedar's strict mode. Every
//! problem is reported with file, line and column, all at once. It runs when policies are
//! loaded, never per request.
//!
//! Policy ids: the `@id("...")` annotation when present (recommended: it is what decisions
//! and the audit log name), otherwise `<file>#<n>` with `n` the 0-based position in the file.
//!
//! Token lifetimes: a `permit` may carry `@max_token_ttl_s("<seconds>")`, 1 to
//! [`MAX_TOKEN_TTL_ANNOTATION_S`]. A task token whose scopes (or whose delegation) that
//! policy allows lives at most that long; see [`crate::Engine::token_lifetime_limit_s`]. A
//! malformed value, or the annotation on a `forbid`, fails compilation. The approval
//! annotations (`@approvers`, `@approval_ttl_s`, ...) are read here too, by
//! [`crate::approval`], with the same rules.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};

use crate::approval::ApprovalTerms;
use crate::error::{CompileDiagnostic, PolicyError, SourceLocation, render};
use crate::schema::Schema;

/// One policy file's text and the name it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// File name, used in ids and error locations.
    pub name: String,
    /// Cedar policy text.
    pub text: String,
}

impl PolicySource {
    /// A source named `name` with `text`.
    #[must_use]
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// How policies are checked against the schema when compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Validation {
    /// Cedar's strict validation: type errors and unsafe attribute accesses are refused.
    /// Use this for every policy set that serves decisions.
    #[default]
    Strict,
    /// No validation. Only for tests and tools that study how unvalidated policies behave
    /// (e.g. the differential test); decisions stay fail-closed, but runtime errors become
    /// far more likely.
    Skip,
}

/// The annotation that caps the lifetime of tokens a permit allows.
pub const MAX_TOKEN_TTL_ANNOTATION: &str = "max_token_ttl_s";

/// The largest value `@max_token_ttl_s` accepts (one day; the deployment's ceiling is lower).
pub const MAX_TOKEN_TTL_ANNOTATION_S: u64 = 86_400;

/// A compiled policy with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    pub(crate) id: String,
    pub(crate) file: String,
    pub(crate) policy: Policy,
    /// Whether the conditions may observe `context.approved` (conservative: true when
    /// unsure). A policy that cannot observe it decides the same with either value.
    pub(crate) reads_approval: bool,
    /// `@max_token_ttl_s`: the longest lifetime of a token this permit allows.
    pub(crate) max_token_ttl_s: Option<u64>,
    /// How an approval this permit asks for is given ([`crate::approval`]).
    pub(crate) approval: ApprovalTerms,
}

impl CompiledPolicy {
    pub(crate) fn effect(&self) -> Effect {
        self.policy.effect()
    }
}

/// The result of compiling: policies in load order, the full Cedar set, and warnings.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) policies: Vec<CompiledPolicy>,
    pub(crate) set: PolicySet,
    pub(crate) warnings: Vec<CompileDiagnostic>,
}

fn locate(file: &str, text: &str, diag: &dyn Diagnostic) -> Option<SourceLocation> {
    let first = diag.labels()?.next()?;
    Some(SourceLocation::from_offset(file, text, first.offset()))
}

/// Whether `p`'s conditions may observe `context.approved`: they access it (`.approved`,
/// `has approved`) or use `context` as a whole value. Read from Cedar's JSON form; true when
/// that form cannot be produced.
pub(crate) fn reads_approval(p: &Policy) -> bool {
    match p.to_json() {
        Ok(json) => json.get("conditions").is_none_or(observes_approval),
        Err(_) => true,
    }
}

fn observes_approval(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if m.get("Var").and_then(Value::as_str) == Some("context") {
                // `context` used whole (not through one attribute access).
                return true;
            }
            for op in [".", "has"] {
                if let Some(inner) = m.get(op) {
                    let on_context = inner
                        .get("left")
                        .and_then(|l| l.get("Var"))
                        .and_then(Value::as_str)
                        == Some("context");
                    if on_context {
                        return match inner.get("attr") {
                            Some(Value::String(attr)) => attr == "approved",
                            _ => true,
                        };
                    }
                }
            }
            m.values().any(observes_approval)
        }
        Value::Array(items) => items.iter().any(observes_approval),
        _ => false,
    }
}

/// The `@max_token_ttl_s` of `p`, checked: a whole number of seconds in range, on a permit.
fn token_ttl_annotation(p: &Policy) -> Result<Option<u64>, String> {
    let Some(raw) = p.annotation(MAX_TOKEN_TTL_ANNOTATION) else {
        return Ok(None);
    };
    if p.effect() == Effect::Forbid {
        return Err(format!(
            "@{MAX_TOKEN_TTL_ANNOTATION} belongs on a permit; a forbid grants no token"
        ));
    }
    let in_range = raw
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=MAX_TOKEN_TTL_ANNOTATION_S).contains(s))
        .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()));
    match in_range {
        Some(seconds) => Ok(Some(seconds)),
        None => Err(format!(
            "@{MAX_TOKEN_TTL_ANNOTATION} must be whole seconds from 1 to {MAX_TOKEN_TTL_ANNOTATION_S}"
        )),
    }
}

/// Parse, re-id, merge and validate.
pub(crate) fn compile(
    sources: &[PolicySource],
    schema: &Schema,
    validation: Validation,
) -> Result<Compiled, PolicyError> {
    let mut parse_errors = Vec::new();
    let mut policies: Vec<CompiledPolicy> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    // Which file each id came from, to locate validation errors.
    let mut file_of: HashMap<String, usize> = HashMap::new();
    for (file_idx, source) in sources.iter().enumerate() {
        let parsed = match PolicySet::from_str(&source.text) {
            Ok(set) => set,
            Err(errs) => {
                for e in errs.iter() {
                    parse_errors.push(CompileDiagnostic {
                        location: locate(&source.name, &source.text, e),
                        policy_id: None,
                        message: render(e),
                    });
                }
                continue;
            }
        };
        if let Some(t) = parsed.templates().next() {
            return Err(PolicyError::Template {
                file: source.name.clone(),
                id: t
                    .annotation("id")
                    .map_or_else(|| t.id().to_string(), str::to_owned),
            });
        }
        // `from_str` names policies `policy0`, `policy1`, ... in source order.
        let mut in_file: Vec<(usize, &Policy)> = parsed
            .policies()
            .map(|p| {
                let id: &str = p.id().as_ref();
                let n = id
                    .strip_prefix("policy")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                (n, p)
            })
            .collect();
        in_file.sort_by_key(|(n, _)| *n);
        for (n, p) in in_file {
            let id = match p.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{}#{n}", source.name),
            };
            let here = format!("{}#{n}", source.name);
            if let Some(first) = seen.insert(id.clone(), here.clone()) {
                return Err(PolicyError::DuplicatePolicyId {
                    id,
                    first,
                    second: here,
                });
            }
            file_of.insert(id.clone(), file_idx);
            let annotations =
                token_ttl_annotation(p).and_then(|ttl| Ok((ttl, ApprovalTerms::of(p)?)));
            let (max_token_ttl_s, approval) = match annotations {
                Ok(read) => read,
                Err(message) => {
                    parse_errors.push(CompileDiagnostic {
                        location: None,
                        policy_id: Some(id),
                        message: format!("{} ({here})", message),
                    });
                    continue;
                }
            };
            policies.push(CompiledPolicy {
                reads_approval: reads_approval(p),
                max_token_ttl_s,
                approval,
                policy: p.new_id(PolicyId::new(&id)),
                id,
                file: source.name.clone(),
            });
        }
    }
    if !parse_errors.is_empty() {
        return Err(PolicyError::Parse {
            diagnostics: parse_errors,
        });
    }
    let set = PolicySet::from_policies(policies.iter().map(|p| p.policy.clone())).map_err(|e| {
        PolicyError::Validation {
            diagnostics: vec![CompileDiagnostic {
                location: None,
                policy_id: None,
                message: render(&e),
            }],
        }
    })?;
    let mut warnings = Vec::new();
    if validation == Validation::Strict {
        let validator = Validator::new(schema.cedar().clone());
        let result = validator.validate(&set, ValidationMode::Strict);
        let diag = |id: &PolicyId, d: &dyn Diagnostic, message: String| {
            let key: &str = id.as_ref();
            let source = file_of.get(key).and_then(|i| sources.get(*i));
            CompileDiagnostic {
                location: source.and_then(|s| locate(&s.name, &s.text, d)),
                policy_id: Some(id.to_string()),
                message,
            }
        };
        let errors: Vec<CompileDiagnostic> = result
            .validation_errors()
            .map(|e| diag(e.policy_id(), e, render(e)))
            .collect();
        if !errors.is_empty() {
            return Err(PolicyError::Validation {
                diagnostics: errors,
            });
        }
        warnings = result
            .validation_warnings()
            .map(|w| diag(w.policy_id(), w, render(w)))
            .collect();
    }
    Ok(Compiled {
        policies,
        set,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::aims().unwrap()
    }

    #[test]
    fn ids_come_from_annotation_or_position() {
        let src = PolicySource::new(
            "a.cedar",
            r#"@id("named") permit(principal, action, resource);
               permit(principal, action == Aims::Action::"read", resource);"#,
        );
        let c = compile(&[src], &schema(), Validation::Strict).unwrap();
        let ids: Vec<_> = c.policies.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["named", "a.cedar#1"]);
        assert!(c.set.policy(&PolicyId::new("named")).is_some());
    }

    #[test]
    fn token_lifetime_annotations_are_checked() {
        let ok = PolicySource::new(
            "t.cedar",
            r#"@id("short") @max_token_ttl_s("300") permit(principal, action, resource);
               permit(principal, action, resource);"#,
        );
        let c = compile(&[ok], &schema(), Validation::Strict).unwrap();
        let ttls: Vec<_> = c.policies.iter().map(|p| p.max_token_ttl_s).collect();
        assert_eq!(ttls, [Some(300), None]);
        for bad in [
            r#"@max_token_ttl_s("0") permit(principal, action, resource);"#,
            r#"@max_token_ttl_s("+5") permit(principal, action, resource);"#,
            r#"@max_token_ttl_s("86401") permit(principal, action, resource);"#,
            r#"@max_token_ttl_s("5m") permit(principal, action, resource);"#,
            r#"@max_token_ttl_s permit(principal, action, resource);"#,
            r#"@max_token_ttl_s("60") forbid(principal, action, resource);"#,
        ] {
            let err = compile(
                &[PolicySource::new("b.cedar", bad)],
                &schema(),
                Validation::Strict,
            )
            .unwrap_err();
            let PolicyError::Parse { diagnostics } = &err else {
                panic!("{bad}: {err}")
            };
            assert!(err_text(diagnostics).contains("max_token_ttl_s"), "{err}");
            assert!(err_text(diagnostics).contains("b.cedar#0"), "{err}");
        }
    }

    #[test]
    fn parse_errors_have_file_line_column() {
        let src = PolicySource::new(
            "bad.cedar",
            "permit(principal, action, resource);\npermit(principal,, action);",
        );
        let err = compile(&[src], &schema(), Validation::Strict).unwrap_err();
        let PolicyError::Parse { diagnostics } = err else {
            panic!("{err}")
        };
        let loc = diagnostics[0].location.clone().unwrap();
        assert_eq!((loc.file.as_str(), loc.line), ("bad.cedar", 2));
    }

    #[test]
    fn validation_errors_have_file_line_column_and_policy() {
        let src = PolicySource::new(
            "v.cedar",
            "permit(principal, action, resource);\n\n@id(\"typo\")\npermit(principal, action, resource)\n  when { principal.trust_levle > 1 };",
        );
        let err = compile(&[src], &schema(), Validation::Strict).unwrap_err();
        let PolicyError::Validation { diagnostics } = err else {
            panic!("{err}")
        };
        let d = &diagnostics[0];
        assert_eq!(d.policy_id.as_deref(), Some("typo"));
        let loc = d.location.clone().unwrap();
        assert_eq!((loc.file.as_str(), loc.line), ("v.cedar", 5), "{d}");
        assert!(err_text(&diagnostics).contains("v.cedar:5:"));
    }

    fn err_text(d: &[CompileDiagnostic]) -> String {
        d.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unknown_action_in_policy_fails_validation_but_not_skip() {
        let src = PolicySource::new(
            "u.cedar",
            r#"permit(principal, action == Aims::Action::"fly", resource);"#,
        );
        assert!(compile(std::slice::from_ref(&src), &schema(), Validation::Strict).is_err());
        assert!(compile(&[src], &schema(), Validation::Skip).is_ok());
    }

    #[test]
    fn approval_readers_are_found() {
        let reads = |text: &str| {
            let set = PolicySet::from_str(text).unwrap();
            reads_approval(set.policies().next().unwrap())
        };
        assert!(reads(
            "permit(principal, action, resource) when { context.approved };"
        ));
        assert!(reads(
            "permit(principal, action, resource) unless { context has approved };"
        ));
        assert!(reads(
            r#"permit(principal, action, resource) when { context["approved"] };"#
        ));
        assert!(reads(
            "permit(principal, action, resource) when { context == context };"
        ));
        assert!(reads(
            "permit(principal, action, resource) when { [context].isEmpty() };"
        ));
        assert!(!reads("permit(principal, action, resource);"));
        assert!(!reads(
            "permit(principal, action, resource) when { context.posture_age_s < 5 && principal.approved };"
        ));
        assert!(!reads(
            "permit(principal, action, resource) when { context.arguments has approved };"
        ));
    }

    #[test]
    fn duplicate_ids_and_templates_are_refused() {
        let a = PolicySource::new(
            "a.cedar",
            r#"@id("x") permit(principal, action, resource);"#,
        );
        let b = PolicySource::new(
            "b.cedar",
            r#"@id("x") forbid(principal, action, resource);"#,
        );
        assert!(matches!(
            compile(&[a, b], &schema(), Validation::Strict),
            Err(PolicyError::DuplicatePolicyId { .. })
        ));
        let t = PolicySource::new(
            "t.cedar",
            "permit(principal == ?principal, action, resource);",
        );
        assert!(matches!(
            compile(&[t], &schema(), Validation::Strict),
            Err(PolicyError::Template { .. })
        ));
    }
}
