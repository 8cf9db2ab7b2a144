//! Policy tests: a directory of policies, its schema and test cases, and the runner.
//!
//! This module owns the test-case file format and [`run_tests`]. It reads files; it never
//! changes them.
//!
//! # Layout
//! A policy directory holds `*.cedar` policy files, at most one `*.cedarschema` (the
//! embedded AIMS schema when there is none) and any number of `*.test.json` files.
//!
//! # Test-case file format (`*.test.json`)
//! ```json
//! {
//!   "agents":    { "<name>": <Agent> , ... },
//!   "resources": { "<name>": <Resource>, ... },
//!   "context":   <RequestContext>,
//!   "cases": [
//!     {
//!       "name": "coding agent reads the repository",
//!       "principal": "<agent name>",
//!       "action": "read",
//!       "resource": "<resource name>",
//!       "context": { "posture_age_s": 5 },
//!       "expect": "allow",
//!       "policies": ["coding-read-repo"]
//!     },
//!     {
//!       "name": "exporting a secret waits for an approver",
//!       "principal": "responder", "action": "export_secret", "resource": "db-password",
//!       "expect": "approval_required",
//!       "approval": { "approvers": ["admin", "approver"], "four_eyes": true, "uses": 1 }
//!     }
//!   ]
//! }
//! ```
//! - `agents` and `resources` are fixtures in the JSON form of [`crate::Agent`] and
//!   [`crate::Resource`] (`{"object": {...}}` or `{"agent": {...}}`); `principal` and
//!   `resource` name them. `resource` may also name an agent fixture (for `delegate`).
//! - `context` is the default [`crate::RequestContext`]; a case's `context` object is
//!   merged over it key by key (a nested `arguments` object replaces the default's).
//! - `expect` is `allow`, `deny`, `approval_required`, or `error` (the request is refused as
//!   bad input, see [`crate::RequestError`]).
//! - `policies` (optional) must equal the decision's determining policy ids (any order).
//! - `approval` (optional, with `approval_required`) checks how the approval is given, as the
//!   determining policies' annotations say ([`crate::approval::ApprovalTerms`]): any of `approvers`
//!   (the names, any order; `null` for the deployment's approver roles), `ttl_s` (`null` for
//!   the deployment's default), `uses`, `show_arguments`, `four_eyes`. Members left out are
//!   not checked.
//!
//! Unknown fields are errors, so a typo cannot silently disable a check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::approval::ApprovalTerms;
use crate::engine::Engine;
use crate::error::PolicyError;
use crate::request::{Agent, DecisionRequest, RequestContext, Resource};

/// What a test case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Approval required.
    ApprovalRequired,
    /// Refused as bad input.
    Error,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    agents: BTreeMap<String, Agent>,
    #[serde(default)]
    resources: BTreeMap<String, Resource>,
    #[serde(default)]
    context: Option<serde_json::Value>,
    cases: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Option<serde_json::Map<String, serde_json::Value>>,
    expect: Expect,
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    approval: Option<ExpectedApproval>,
}

/// What a case expects of an approval's terms; members left out are not checked (a member
/// given as `null` expects the deployment's default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedApproval {
    #[serde(default, deserialize_with = "present")]
    approvers: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    ttl_s: Option<Option<u64>>,
    #[serde(default)]
    uses: Option<u32>,
    #[serde(default)]
    show_arguments: Option<bool>,
    #[serde(default)]
    four_eyes: Option<bool>,
}

/// A member that is present (possibly `null`), told apart from one left out.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl ExpectedApproval {
    /// Where `terms` differ from what is expected, in words.
    fn mismatch(&self, terms: Option<&ApprovalTerms>) -> Option<String> {
        let Some(terms) = terms else {
            return Some("expected approval terms, but the decision asks for no approval".into());
        };
        let approvers = terms
            .approvers
            .as_ref()
            .map(|names| names.iter().cloned().collect::<Vec<_>>());
        let mut wrong = Vec::new();
        if let Some(want) = &self.approvers {
            let mut want = want.clone();
            if let Some(names) = &mut want {
                names.sort();
            }
            if want != approvers {
                wrong.push(format!("approvers {want:?}, got {approvers:?}"));
            }
        }
        if self.ttl_s.is_some_and(|want| want != terms.ttl_s) {
            wrong.push(format!("ttl_s {:?}, got {:?}", self.ttl_s, terms.ttl_s));
        }
        if self.uses.is_some_and(|want| want != terms.uses) {
            wrong.push(format!("uses {:?}, got {}", self.uses, terms.uses));
        }
        if self
            .show_arguments
            .is_some_and(|want| want != terms.show_arguments)
        {
            wrong.push(format!(
                "show_arguments {:?}, got {}",
                self.show_arguments, terms.show_arguments
            ));
        }
        if self.four_eyes.is_some_and(|want| want != terms.four_eyes) {
            wrong.push(format!(
                "four_eyes {:?}, got {}",
                self.four_eyes, terms.four_eyes
            ));
        }
        (!wrong.is_empty()).then(|| format!("expected approval {}", wrong.join("; ")))
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// The test file's name.
    pub file: String,
    /// The case's name.
    pub name: String,
    /// What it expected.
    pub expected: Expect,
    /// What happened: the effect, or `error: <message>`.
    pub actual: String,
    /// The determining policies of the decision.
    pub determining_policies: Vec<String>,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The results of a directory's tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// Every case, in file then case order.
    pub cases: Vec<CaseResult>,
    /// How many passed.
    pub passed: usize,
    /// How many failed.
    pub failed: usize,
}

impl TestReport {
    /// True when every case passed and there was at least one.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }

    /// True when the directory had no test case at all (no `*.test.json`, or only empty
    /// ones): nothing was tested, which is not the same as a failure.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// A human-readable summary: one line per failure, then `N passed, N failed`; or, without
    /// any case, that there are no policy tests.
    #[must_use]
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no policy tests (no *.test.json cases)".to_owned();
        }
        let mut out = String::new();
        for c in self.cases.iter().filter(|c| !c.passed) {
            out.push_str(&format!(
                "FAIL {} / {}: {}\n",
                c.file,
                c.name,
                c.failure.as_deref().unwrap_or("")
            ));
        }
        out.push_str(&format!("{} passed, {} failed", self.passed, self.failed));
        out
    }
}

/// Load the policies of `dir` (strict validation) and run every `*.test.json` in it.
///
/// # Errors
/// [`PolicyError`] when the policies do not compile or a test file is malformed; failing
/// cases are not errors, they are in the report.
pub fn run_tests(dir: &Path) -> Result<TestReport, PolicyError> {
    let engine = Engine::from_dir(dir)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PolicyError::Io {
            path: dir.to_owned(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".test.json"))
        })
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        cases.extend(run_file(&engine, &path)?);
    }
    let passed = cases.iter().filter(|c| c.passed).count();
    Ok(TestReport {
        failed: cases.len() - passed,
        passed,
        cases,
    })
}

fn run_file(engine: &Engine, path: &Path) -> Result<Vec<CaseResult>, PolicyError> {
    let bad = |message: String| PolicyError::TestFile {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let file: TestFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for case in &file.cases {
        let principal = file
            .agents
            .get(&case.principal)
            .cloned()
            .ok_or_else(|| bad(format!("{}: no agent `{}`", case.name, case.principal)))?;
        let resource = match file.resources.get(&case.resource) {
            Some(r) => r.clone(),
            None => file
                .agents
                .get(&case.resource)
                .map(|a| Resource::Agent(a.clone()))
                .ok_or_else(|| bad(format!("{}: no resource `{}`", case.name, case.resource)))?,
        };
        let mut context = match &file.context {
            Some(serde_json::Value::Object(m)) => m.clone(),
            Some(_) => return Err(bad("`context` must be an object".to_owned())),
            None => serde_json::Map::new(),
        };
        if let Some(over) = &case.context {
            for (k, v) in over {
                context.insert(k.clone(), v.clone());
            }
        }
        let context: Result<RequestContext, _> =
            serde_json::from_value(serde_json::Value::Object(context));
        let result = match context {
            // A context that does not deserialize is bad input, like any other.
            Err(e) => Err(e.to_string()),
            Ok(context) => engine
                .decide(&DecisionRequest {
                    decision_id: None,
                    principal: principal.into(),
                    action: case.action.clone(),
                    resource,
                    context,
                })
                .map_err(|e| e.to_string()),
        };
        let terms = result
            .as_ref()
            .ok()
            .and_then(|decision| engine.approval_terms(decision));
        out.push(judge(&file_name, case, result, terms.as_ref()));
    }
    Ok(out)
}

fn judge(
    file: &str,
    case: &TestCase,
    result: Result<crate::Decision, String>,
    terms: Option<&ApprovalTerms>,
) -> CaseResult {
    let (actual, determining) = match &result {
        Ok(d) => (d.effect.as_str().to_owned(), d.determining_policies.clone()),
        Err(e) => (format!("error: {e}"), Vec::new()),
    };
    let effect_ok = match (&result, case.expect) {
        (Ok(d), Expect::Allow) => d.effect == crate::Effect::Allow,
        (Ok(d), Expect::Deny) => d.effect == crate::Effect::Deny,
        (Ok(d), Expect::ApprovalRequired) => d.effect == crate::Effect::ApprovalRequired,
        (Err(_), Expect::Error) => true,
        _ => false,
    };
    let mut failure = None;
    if !effect_ok {
        let mut detail = String::new();
        if let Ok(d) = &result {
            for e in &d.errors {
                detail.push_str(&format!(" [{}: {}]", e.policy_id, e.message));
            }
        }
        failure = Some(format!("expected {:?}, got {actual}{detail}", case.expect));
    } else if let Some(want) = &case.policies {
        let mut want = want.clone();
        want.sort();
        if want != determining {
            failure = Some(format!(
                "expected determining policies {want:?}, got {determining:?}"
            ));
        }
    }
    if failure.is_none() {
        failure = case.approval.as_ref().and_then(|want| want.mismatch(terms));
    }
    CaseResult {
        file: file.to_owned(),
        name: case.name.clone(),
        expected: case.expect,
        actual,
        determining_policies: determining,
        passed: failure.is_none(),
        failure,
    }
}
