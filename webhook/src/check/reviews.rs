//! AdmissionReview bodies given to `check`: the review's `request.object` is judged, against
//! its `oldObject` for an UPDATE, as the webhook would judge it.

use serde_json::value::RawValue;

use super::Document;
use crate::{
    admission,
    error::Error,
    review::{self, ReviewIn},
    workload::Workload,
};

/// What a document gives the check.
#[derive(Debug)]
pub enum Judged {
    /// A workload, and the object it replaces (an UPDATE review).
    Workload(Box<Workload>, Option<Box<Workload>>),
    /// Nothing headroom evaluates; the reason says why.
    Skipped(String),
}

/// Reads an AdmissionReview document.
pub fn read(d: &Document) -> Result<Judged, Error> {
    let invalid = |message: String| Error::InvalidWorkload {
        document: d.origin.clone(),
        message,
    };
    let text = d.value.to_string();
    let review: ReviewIn<'_> =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not an AdmissionReview: {e}")))?;
    if review.api_version != review::API_VERSION {
        return Err(invalid(format!(
            "AdmissionReview apiVersion `{}`, expected {}",
            review.api_version,
            review::API_VERSION
        )));
    }
    let request = review
        .request
        .ok_or_else(|| invalid("AdmissionReview has no request".to_owned()))?;
    let update = match request.operation.as_str() {
        "CREATE" => false,
        "UPDATE" => true,
        other => {
            return Ok(Judged::Skipped(format!(
                "AdmissionReview {other} (adds no load)"
            )));
        }
    };
    let kind = match admission::request_kind(&request) {
        Ok(kind) => kind,
        Err(what) => return Ok(Judged::Skipped(format!("AdmissionReview of {what}"))),
    };
    let scale = request.sub_resource.is_some();
    let namespace = request.namespace.as_deref().unwrap_or("default");
    let read_object = |object: Option<&RawValue>, which: &str| {
        let object = object.ok_or_else(|| invalid(format!("request.{which} is missing")))?;
        let document = format!("{} request.{which}", d.origin);
        admission::read_workload(kind, scale, &document, object.get(), namespace).map(Box::new)
    };
    let workload = read_object(request.object, "object")?;
    let old = if update {
        Some(read_object(request.old_object, "oldObject")?)
    } else {
        None
    };
    Ok(Judged::Workload(workload, old))
}
