//! Errors of the policy library: loading and compiling policies ([`PolicyError`]) and
//! turning a request into Cedar's form ([`RequestError`]).
//!
//! A *denial* is never an error here: it is a [`crate::Decision`] value. A [`RequestError`]
//! means the request could not be evaluated at all (unknown action, attribute of the wrong
//! type, ...); callers must treat it as a deny (fail closed) and report it as bad input.
//! Errors carry Cedar's message text, never policy-relevant secrets.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Where in a policy or schema file a problem is: file name, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    /// The file (or source) name as given when loading.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl SourceLocation {
    /// The location of byte `offset` in `text` (clamped to the text).
    #[must_use]
    pub fn from_offset(file: &str, text: &str, offset: usize) -> Self {
        let mut line = 1;
        let mut column = 1;
        for (i, ch) in text.char_indices() {
            if i >= offset {
                break;
            }
            if ch == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        Self {
            file: file.to_owned(),
            line,
            column,
        }
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem found while compiling a policy set: a parse error or a validation error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompileDiagnostic {
    /// Where it is, when Cedar reports a source span.
    pub location: Option<SourceLocation>,
    /// The policy it concerns, when known.
    pub policy_id: Option<String>,
    /// Cedar's message (with its help text, if any).
    pub message: String,
}

impl fmt::Display for CompileDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        if let Some(id) = &self.policy_id {
            write!(f, "policy `{id}`: ")?;
        }
        f.write_str(&self.message)
    }
}

fn join(diags: &[CompileDiagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Loading or compiling schema, policies or test files failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The Cedar schema does not parse or is inconsistent.
    #[error("schema {file}: {message}")]
    Schema {
        /// Schema source name.
        file: String,
        /// Cedar's message.
        message: String,
    },
    /// A policy file does not parse. All errors of the file are reported.
    #[error("policy parse error: {}", join(.diagnostics))]
    Parse {
        /// Every parse error, with location.
        diagnostics: Vec<CompileDiagnostic>,
    },
    /// Policies do not validate against the schema (strict mode). All errors are reported.
    #[error("policy validation failed: {}", join(.diagnostics))]
    Validation {
        /// Every validation error, with location and policy id.
        diagnostics: Vec<CompileDiagnostic>,
    },
    /// Two policies have the same id (from `@id("...")` or generated).
    #[error("duplicate policy id `{id}` ({first} and {second})")]
    DuplicatePolicyId {
        /// The id.
        id: String,
        /// Where it was first defined.
        first: String,
        /// Where it was defined again.
        second: String,
    },
    /// Templates (policies with `?principal` / `?resource` slots) are not supported.
    #[error("{file}: policy `{id}` is a template; templates are not supported")]
    Template {
        /// File name.
        file: String,
        /// Policy id.
        id: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A directory holds no schema or more than one.
    #[error("{}: {message}", .path.display())]
    Layout {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A test-case file is malformed.
    #[error("test file {}: {message}", .path.display())]
    TestFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A request could not be turned into a Cedar request: it is bad input. Callers deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The action is not declared in the schema, or is an action group.
    #[error("unknown action `{action}`")]
    UnknownAction {
        /// The action id as given (literal).
        action: String,
    },
    /// The entity type is not declared in the schema.
    #[error("unknown entity type `{entity_type}`")]
    UnknownEntityType {
        /// The type name as given (literal).
        entity_type: String,
    },
    /// An attribute, tag or argument value cannot be represented in Cedar.
    #[error("invalid value for `{field}`: {message}")]
    InvalidValue {
        /// Which field.
        field: String,
        /// Why.
        message: String,
    },
    /// Cedar rejected an entity (wrong attribute type, missing attribute, ...).
    #[error("invalid entity: {message}")]
    Entity {
        /// Cedar's message.
        message: String,
    },
    /// Cedar rejected the context (missing attribute, wrong type, ...).
    #[error("invalid context: {message}")]
    Context {
        /// Cedar's message.
        message: String,
    },
    /// The request does not conform to the schema (principal/resource type not allowed
    /// for the action, context shape wrong).
    #[error("invalid request: {message}")]
    Request {
        /// Cedar's message.
        message: String,
    },
}

impl RequestError {
    /// A stable, greppable code for this error kind.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownAction { .. } => "policy_unknown_action",
            Self::UnknownEntityType { .. } => "policy_unknown_entity_type",
            Self::InvalidValue { .. } => "policy_invalid_value",
            Self::Entity { .. } => "policy_invalid_entity",
            Self::Context { .. } => "policy_invalid_context",
            Self::Request { .. } => "policy_invalid_request",
        }
    }
}

/// Cedar's message for a diagnostic, with its help text when there is one.
pub(crate) fn render<E: miette::Diagnostic + ?Sized>(e: &E) -> String {
    match e.help() {
        Some(help) => format!("{e} ({help})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_line_and_column() {
        let text = "ab\ncd\n";
        assert_eq!(SourceLocation::from_offset("f", text, 0).line, 1);
        let l = SourceLocation::from_offset("f", text, 4);
        assert_eq!((l.line, l.column), (2, 2));
        let l = SourceLocation::from_offset("f", text, 100);
        assert_eq!((l.line, l.column), (3, 1));
        assert_eq!(l.to_string(), "f:3:1");
    }
}
