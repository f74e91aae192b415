//! The AdmissionReview `admission.k8s.io/v1` wire format, read in one pass: the objects stay
//! raw JSON until the workload reader parses their `spec` straight into typed form, and
//! fields the webhook does not use (managedFields, status) are skipped, not built.
//! kube-core's generic `AdmissionReview<DynamicObject>` buffers the whole body for its
//! flattened fields and builds a JSON tree of each object; on this path that cost more than
//! the decision itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewIn<'a> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(borrow, default)]
    pub request: Option<RequestIn<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: String,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
}

/// The parts of an object's metadata the webhook reads.
#[derive(Debug, Default, Deserialize)]
pub struct MetadataIn {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "ownerReferences")]
    pub owner_references: Option<Vec<OwnerIn>>,
}

/// The parts of an owner reference the webhook reads.
#[derive(Debug, Default, Deserialize)]
pub struct OwnerIn {
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

/// A workload object: metadata, and the spec left raw.
#[derive(Debug, Deserialize)]
pub struct ObjectIn<'a> {
    pub metadata: Option<MetadataIn>,
    #[serde(borrow, default)]
    pub spec: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ScaleSpecIn {
    #[serde(default)]
    pub replicas: Option<i32>,
}

/// An autoscaling/v1 `Scale`.
#[derive(Debug, Deserialize)]
pub struct ScaleIn {
    pub metadata: Option<MetadataIn>,
    #[serde(default)]
    pub spec: Option<ScaleSpecIn>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: ResponseOut<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut<'a> {
    pub uid: &'a str,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: &'a BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct StatusOut<'a> {
    pub code: u16,
    pub message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
}

impl ReviewOut<'_> {
    pub fn to_vec(&self) -> Vec<u8> {
        // Strings, bools, integers and maps of strings always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_without_building_the_objects() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"apps","version":"v1","kind":"Deployment"},
            "resource":{"group":"apps","version":"v1","resource":"deployments"},
            "name":"web","namespace":"default","operation":"CREATE","dryRun":true,
            "userInfo":{"username":"admin"},
            "object":{"metadata":{"name":"web","managedFields":[{"manager":"kubectl"}]},
                      "spec":{"replicas":3},"status":{}},
            "oldObject":null}}"#;
        let review: ReviewIn<'_> = serde_json::from_slice(body).unwrap();
        let request = review.request.unwrap();
        assert_eq!(request.kind.kind, "Deployment");
        assert_eq!(request.dry_run, Some(true));
        assert!(request.old_object.is_none());
        let object: ObjectIn<'_> = serde_json::from_str(request.object.unwrap().get()).unwrap();
        assert_eq!(object.metadata.unwrap().name.as_deref(), Some("web"));
        assert_eq!(object.spec.unwrap().get(), r#"{"replicas":3}"#);
    }

    #[test]
    fn writes_the_response_shape_the_api_server_reads() {
        let warnings = vec!["w".to_owned()];
        let audit = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let out = ReviewOut {
            api_version: API_VERSION,
            kind: KIND,
            response: ResponseOut {
                uid: "u1",
                allowed: false,
                status: Some(StatusOut {
                    code: 403,
                    message: "no",
                    reason: "Forbidden",
                }),
                warnings: &warnings,
                audit_annotations: &audit,
            },
        };
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u1","allowed":false,"status":{"code":403,"message":"no","reason":"Forbidden"},"warnings":["w"],"auditAnnotations":{"k":"v"}}}"#
        );
    }
}
