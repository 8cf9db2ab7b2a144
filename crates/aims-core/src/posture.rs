//! Posture profiles: what an agent is allowed to be at runtime (model, toolchain, deployment).
//!
//! This module owns the profile's format and its validation on write. Matching runtime
//! evidence against a profile belongs to attestation and is added with it.

use serde::{Deserialize, Serialize};

/// Why a posture profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostureError {
    /// A digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("{field}: digest must be sha256:<64 lowercase hex digits>")]
    BadDigest {
        /// The profile field holding the digest.
        field: &'static str,
    },
    /// A value is empty, too long or holds control characters.
    #[error("{field}: values must be 1 to 256 printable characters")]
    BadValue {
        /// The profile field holding the value.
        field: &'static str,
    },
    /// A list of allowed values is empty (which would allow nothing) or too long.
    #[error("{field}: an allow-list must hold 1 to 64 values (omit the field to not check it)")]
    BadList {
        /// The profile field holding the list.
        field: &'static str,
    },
}

/// One section of a posture profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostureSection {
    /// Model id and weight digest.
    Model,
    /// Agent framework, version and tool-manifest digest.
    Toolchain,
    /// Image digest, cluster, namespace, service account, region.
    Deployment,
}

/// Allowed models. Each field is an allow-list; an absent field is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProfile {
    /// Allowed model identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Vec<String>>,
    /// Allowed weight digests (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Vec<String>>,
}

/// Allowed toolchains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolchainProfile {
    /// Allowed framework names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Vec<String>>,
    /// Allowed framework versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Vec<String>>,
    /// Allowed tool-manifest digests (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<Vec<String>>,
}

/// Allowed deployment contexts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentProfile {
    /// Allowed container image digests (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<Vec<String>>,
    /// Allowed clusters or hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<String>>,
    /// Allowed namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Vec<String>>,
    /// Allowed service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Vec<String>>,
    /// Allowed regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Vec<String>>,
}

/// What an agent is allowed to be at runtime. The empty profile checks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostureProfile {
    /// Allowed models.
    #[serde(default)]
    pub model: ModelProfile,
    /// Allowed toolchains.
    #[serde(default)]
    pub toolchain: ToolchainProfile,
    /// Allowed deployment contexts.
    #[serde(default)]
    pub deployment: DeploymentProfile,
    /// Sections whose values may change between two accepted attestations without operator
    /// approval. A section not listed must stay as it was in the last accepted snapshot.
    #[serde(default)]
    pub may_change: Vec<PostureSection>,
}

impl PostureProfile {
    /// Checks every field; the profile is stored only if this passes.
    pub fn validate(&self) -> Result<(), PostureError> {
        let plain: [(&'static str, &Option<Vec<String>>); 7] = [
            ("model.id", &self.model.id),
            ("toolchain.name", &self.toolchain.name),
            ("toolchain.version", &self.toolchain.version),
            ("deployment.cluster", &self.deployment.cluster),
            ("deployment.namespace", &self.deployment.namespace),
            (
                "deployment.service_account",
                &self.deployment.service_account,
            ),
            ("deployment.region", &self.deployment.region),
        ];
        for (field, list) in plain {
            check_list(field, list, check_value)?;
        }
        let digests: [(&'static str, &Option<Vec<String>>); 3] = [
            ("model.digest", &self.model.digest),
            ("toolchain.manifest_digest", &self.toolchain.manifest_digest),
            ("deployment.image_digest", &self.deployment.image_digest),
        ];
        for (field, list) in digests {
            check_list(field, list, check_digest)?;
        }
        Ok(())
    }
}

fn check_list(
    field: &'static str,
    list: &Option<Vec<String>>,
    check: fn(&'static str, &str) -> Result<(), PostureError>,
) -> Result<(), PostureError> {
    let Some(values) = list else { return Ok(()) };
    if values.is_empty() || values.len() > 64 {
        return Err(PostureError::BadList { field });
    }
    values.iter().try_for_each(|v| check(field, v))
}

fn check_value(field: &'static str, value: &str) -> Result<(), PostureError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(PostureError::BadValue { field });
    }
    Ok(())
}

/// Accepts exactly `sha256:` followed by 64 lowercase hex digits.
pub fn check_digest(field: &'static str, value: &str) -> Result<(), PostureError> {
    let ok = value.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(PostureError::BadDigest { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn full_profile_parses_and_validates() {
        let json = format!(
            r#"{{"model":{{"id":["gpt-x"],"digest":["{DIGEST}"]}},
                "toolchain":{{"name":["langgraph"],"version":["0.2.1"],"manifest_digest":["{DIGEST}"]}},
                "deployment":{{"image_digest":["{DIGEST}"],"cluster":["prod-eu"],"namespace":["agents"],
                               "service_account":["coder"],"region":["eu-west-1"]}},
                "may_change":["deployment"]}}"#
        );
        let profile: PostureProfile = serde_json::from_str(&json).unwrap();
        profile.validate().unwrap();
        assert_eq!(profile.may_change, vec![PostureSection::Deployment]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<PostureProfile>(r#"{"modle":{}}"#).is_err());
        assert!(serde_json::from_str::<PostureProfile>(r#"{"model":{"ids":[]}}"#).is_err());
    }

    #[test]
    fn bad_digests_and_empty_lists_are_refused() {
        let mut p = PostureProfile::default();
        p.model.digest = Some(vec!["sha256:ABC".into()]);
        assert_eq!(
            p.validate(),
            Err(PostureError::BadDigest {
                field: "model.digest"
            })
        );
        p.model.digest = Some(vec![]);
        assert!(matches!(p.validate(), Err(PostureError::BadList { .. })));
        p.model.digest = None;
        p.deployment.region = Some(vec!["eu\nwest".into()]);
        assert!(matches!(p.validate(), Err(PostureError::BadValue { .. })));
    }
}
