//! Posture: what an agent is allowed to be at runtime (the profile), what it reports it is
//! (the evidence), and the rule that compares them, including changes since the last accepted
//! snapshot (drift).
//!
//! Pure rules only: the attestation protocol that carries evidence, and what happens on drift
//! (quarantine, revocation), live in the server.

use ring::digest;
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
    if value.is_empty() || value.len() > 256 || !crate::text::is_visible(value, false) {
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

/// The runtime facts an agent reports when it attests, measured by the agent at runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The model the agent runs.
    #[serde(default)]
    pub model: ModelEvidence,
    /// The framework and tools it loads.
    #[serde(default)]
    pub toolchain: ToolchainEvidence,
    /// Where it runs.
    #[serde(default)]
    pub deployment: DeploymentEvidence,
}

/// Reported model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEvidence {
    /// Model identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Weight digest (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Reported toolchain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolchainEvidence {
    /// Framework name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Framework version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Digest of the tool manifest loaded (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

/// Reported deployment context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentEvidence {
    /// Container image digest (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Cluster or host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Why one evidence field is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The profile checks the field and the evidence does not report it.
    Missing,
    /// The reported value is not in the profile's allow-list.
    NotAllowed,
    /// The value differs from the last accepted snapshot and its section may not change.
    Changed,
}

/// One evidence field that does not fit the profile (for the audit log, never the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The field, e.g. `model.digest`.
    pub field: &'static str,
    /// What is wrong with it.
    pub kind: MismatchKind,
}

impl Evidence {
    /// Checks bounds and digest formats of every reported value.
    pub fn validate(&self) -> Result<(), PostureError> {
        for (field, _, value) in self.fields() {
            let Some(value) = value else { continue };
            check_value(field, value)?;
            if DIGEST_FIELDS.contains(&field) {
                check_digest(field, value)?;
            }
        }
        Ok(())
    }

    /// A digest of this evidence (`sha256:<hex>` over its JSON form), named in the identity.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let hash = digest::digest(&digest::SHA256, &json);
        format!("sha256:{}", hex::encode(hash.as_ref()))
    }

    /// Every field with its name and section, in a fixed order.
    fn fields(&self) -> [(&'static str, PostureSection, Option<&String>); 10] {
        use PostureSection::{Deployment, Model, Toolchain};
        [
            ("model.id", Model, self.model.id.as_ref()),
            ("model.digest", Model, self.model.digest.as_ref()),
            ("toolchain.name", Toolchain, self.toolchain.name.as_ref()),
            (
                "toolchain.version",
                Toolchain,
                self.toolchain.version.as_ref(),
            ),
            (
                "toolchain.manifest_digest",
                Toolchain,
                self.toolchain.manifest_digest.as_ref(),
            ),
            (
                "deployment.image_digest",
                Deployment,
                self.deployment.image_digest.as_ref(),
            ),
            (
                "deployment.cluster",
                Deployment,
                self.deployment.cluster.as_ref(),
            ),
            (
                "deployment.namespace",
                Deployment,
                self.deployment.namespace.as_ref(),
            ),
            (
                "deployment.service_account",
                Deployment,
                self.deployment.service_account.as_ref(),
            ),
            (
                "deployment.region",
                Deployment,
                self.deployment.region.as_ref(),
            ),
        ]
    }
}

/// Evidence fields that hold digests.
const DIGEST_FIELDS: [&str; 3] = [
    "model.digest",
    "toolchain.manifest_digest",
    "deployment.image_digest",
];

impl PostureProfile {
    /// The allow-lists in the same order as [`Evidence::fields`].
    fn allow_lists(&self) -> [&Option<Vec<String>>; 10] {
        [
            &self.model.id,
            &self.model.digest,
            &self.toolchain.name,
            &self.toolchain.version,
            &self.toolchain.manifest_digest,
            &self.deployment.image_digest,
            &self.deployment.cluster,
            &self.deployment.namespace,
            &self.deployment.service_account,
            &self.deployment.region,
        ]
    }

    /// Compares `evidence` with this profile and with the last accepted snapshot. Empty means
    /// the evidence is acceptable; anything else is drift.
    ///
    /// A field is checked against its allow-list when the profile has one. A section not listed
    /// in `may_change` must be exactly as in `last_accepted` (when there is one), field by field.
    pub fn mismatches(
        &self,
        evidence: &Evidence,
        last_accepted: Option<&Evidence>,
    ) -> Vec<Mismatch> {
        let mut found = Vec::new();
        let previous = last_accepted.map(Evidence::fields);
        for (index, ((field, section, value), allowed)) in evidence
            .fields()
            .into_iter()
            .zip(self.allow_lists())
            .enumerate()
        {
            if let Some(allowed) = allowed {
                match value {
                    None => found.push(Mismatch {
                        field,
                        kind: MismatchKind::Missing,
                    }),
                    Some(v) if !allowed.contains(v) => {
                        found.push(Mismatch {
                            field,
                            kind: MismatchKind::NotAllowed,
                        });
                    }
                    Some(_) => {}
                }
            }
            let before = previous
                .as_ref()
                .and_then(|p| p.get(index))
                .map(|(_, _, v)| *v);
            if let Some(before) = before
                && !self.may_change.contains(&section)
                && before != value
                && !found.iter().any(|m| m.field == field)
            {
                found.push(Mismatch {
                    field,
                    kind: MismatchKind::Changed,
                });
            }
        }
        found
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

    fn evidence(model: &str, region: &str) -> Evidence {
        Evidence {
            model: ModelEvidence {
                id: Some(model.into()),
                digest: Some(DIGEST.into()),
            },
            deployment: DeploymentEvidence {
                region: Some(region.into()),
                ..DeploymentEvidence::default()
            },
            ..Evidence::default()
        }
    }

    fn profile() -> PostureProfile {
        PostureProfile {
            model: ModelProfile {
                id: Some(vec!["m1".into(), "m2".into()]),
                digest: None,
            },
            deployment: DeploymentProfile {
                region: Some(vec!["eu".into(), "us".into()]),
                ..DeploymentProfile::default()
            },
            may_change: vec![PostureSection::Deployment],
            ..PostureProfile::default()
        }
    }

    #[test]
    fn matching_evidence_has_no_mismatch() {
        assert!(profile().mismatches(&evidence("m1", "eu"), None).is_empty());
        // Deployment may change between attestations.
        assert!(
            profile()
                .mismatches(&evidence("m1", "us"), Some(&evidence("m1", "eu")))
                .is_empty()
        );
    }

    #[test]
    fn each_drift_kind_is_named() {
        let p = profile();
        assert_eq!(
            p.mismatches(&evidence("m3", "eu"), None),
            vec![Mismatch {
                field: "model.id",
                kind: MismatchKind::NotAllowed
            }]
        );
        let mut missing = evidence("m1", "eu");
        missing.deployment.region = None;
        assert_eq!(
            p.mismatches(&missing, None),
            vec![Mismatch {
                field: "deployment.region",
                kind: MismatchKind::Missing
            }]
        );
        // m2 is allowed, but the model section may not change without an operator.
        assert_eq!(
            p.mismatches(&evidence("m2", "eu"), Some(&evidence("m1", "eu"))),
            vec![Mismatch {
                field: "model.id",
                kind: MismatchKind::Changed
            }]
        );
    }

    #[test]
    fn evidence_is_validated_and_digested() {
        assert!(evidence("m1", "eu").validate().is_ok());
        let mut bad = evidence("m1", "eu");
        bad.model.digest = Some("sha256:xyz".into());
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Evidence>(r#"{"model":{"id":"a","weights":"b"}}"#).is_err());
        let d = evidence("m1", "eu").digest();
        assert!(d.starts_with("sha256:") && d.len() == 71);
        assert_ne!(d, evidence("m2", "eu").digest());
    }

    proptest::proptest! {
        /// No evidence outside the profile is ever accepted: acceptance equals a direct
        /// reading of the rule on every field.
        #[test]
        fn no_evidence_outside_the_profile_is_accepted(
            allowed_models in proptest::option::of(proptest::collection::vec(0u8..4, 1..3)),
            allowed_regions in proptest::option::of(proptest::collection::vec(0u8..4, 1..3)),
            model in proptest::option::of(0u8..4),
            region in proptest::option::of(0u8..4),
            last in proptest::option::of((proptest::option::of(0u8..4), proptest::option::of(0u8..4))),
            model_may_change in proptest::bool::ANY,
        ) {
            let name = |n: u8| format!("v{n}");
            let p = PostureProfile {
                model: ModelProfile { id: allowed_models.clone().map(|v| v.into_iter().map(name).collect()), digest: None },
                deployment: DeploymentProfile { region: allowed_regions.clone().map(|v| v.into_iter().map(name).collect()), ..DeploymentProfile::default() },
                may_change: if model_may_change { vec![PostureSection::Model] } else { vec![] },
                ..PostureProfile::default()
            };
            let make = |m: Option<u8>, r: Option<u8>| Evidence {
                model: ModelEvidence { id: m.map(name), digest: None },
                deployment: DeploymentEvidence { region: r.map(name), ..DeploymentEvidence::default() },
                ..Evidence::default()
            };
            let e = make(model, region);
            let previous = last.map(|(m, r)| make(m, r));
            let fits = |allowed: &Option<Vec<u8>>, v: Option<u8>| match allowed {
                None => true,
                Some(list) => v.is_some_and(|v| list.contains(&v)),
            };
            let unchanged = previous.as_ref().is_none_or(|prev| {
                (model_may_change || prev.model.id == e.model.id) && prev.deployment.region == e.deployment.region
            });
            let expected_ok = fits(&allowed_models, model) && fits(&allowed_regions, region) && unchanged;
            proptest::prop_assert_eq!(p.mismatches(&e, previous.as_ref()).is_empty(), expected_ok);
        }
    }
}
