//! `aims-policy`: the AIMS policy decision point, as a library.
//!
//! Where it sits: beside `aims-token`, below `aims-server` (the decision endpoint) and the
//! future `aims-gateway` (which embeds it). It is pure: no IO on the request path, no async,
//! no clock (time comes in the request's context), no randomness (decision ids come from the
//! caller). It only reads files when asked to load a policy directory or run policy tests.
//!
//! What it does: compiles Cedar policies once, validated in strict mode against the AIMS
//! schema ([`schema`]), indexes them by scope ([`index`]) and answers each
//! [`DecisionRequest`] with a [`Decision`] — `allow`, `deny` or `approval_required` with the
//! determining policy ids and Cedar's diagnostics — evaluating only the policies that could
//! apply. Semantics (default deny, forbid wins, error is deny, the approval rule) are in
//! [`engine`].
//!
//! ```no_run
//! # fn demo(request: aims_policy::DecisionRequest) -> Result<(), Box<dyn std::error::Error>> {
//! let engine = aims_policy::Engine::from_dir(std::path::Path::new("policies"))?;
//! match engine.decide(&request) {
//!     Ok(decision) => println!("{} by {:?}", decision.effect, decision.determining_policies),
//!     Err(bad_input) => println!("deny: {bad_input}"),
//! }
//! # Ok(()) }
//! ```

pub mod approval;
pub mod cedar_request;
pub mod compile;
pub mod decision;
mod declarations;
pub mod engine;
mod entities;
pub mod error;
pub mod index;
pub mod request;
pub mod schema;
mod shapes;
pub mod testcases;

pub use approval::ApprovalTerms;
pub use cedar_request::{CedarRequest, PrincipalEntity};
pub use compile::{PolicySource, Validation};
pub use decision::{
    Decision, Effect, EvaluationDiagnostic, Explanation, PolicyOutcome, PolicyTrace, Reason,
};
pub use engine::Engine;
pub use error::{CompileDiagnostic, PolicyError, RequestError, SourceLocation};
pub use request::{
    Agent, DecisionRequest, EntityRef, Posture, RequestContext, Resource, ResourceObject, Tags,
    Toolchain,
};
pub use schema::{AIMS_SCHEMA, NAMESPACE, Schema};
pub use testcases::{CaseResult, Expect, TestReport, run_tests};

/// The Cedar crate this library is built on, re-exported so callers (benchmarks, tools)
/// use the same version.
pub use cedar_policy;
