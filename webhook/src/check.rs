//! The offline check: evaluates the workloads in manifest files as creates, and
//! AdmissionReview bodies as the webhook would, for CI.

use std::path::{Path, PathBuf};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde::{Deserialize, Serialize};

use crate::{
    budget::ControlPlaneBudget,
    capacity::ApiserverCapacity,
    decision::{self, Context, Decision, Outcome},
    error::Error,
    inventory::Inventory,
    load::Load,
    profile::Snapshot,
    review,
    workload::{Autoscalers, Kind, Workload},
};

pub mod apiserver;
mod reviews;
use reviews::Judged;

/// Exit codes of `headroom-webhook check`.
pub const EXIT_ALLOWED: u8 = 0;
pub const EXIT_DENIED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

/// One manifest document, read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// `path document N`
    pub origin: String,
    pub value: serde_json::Value,
}

/// Reads `-` (stdin), a file, or every `*.yaml`/`*.yml`/`*.json` file in a directory
/// (recursively, sorted), and splits multi-document YAML.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, Error> {
    let mut documents = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
                Error::Read {
                    path: path.clone(),
                    source,
                }
            })?;
            split_documents("<stdin>", &text, &mut documents)?;
        } else if path.is_dir() {
            let mut files = Vec::new();
            collect_manifest_files(path, &mut files)?;
            for file in files {
                read_file(&file, &mut documents)?;
            }
        } else {
            read_file(path, &mut documents)?;
        }
    }
    Ok(documents)
}

fn collect_manifest_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let read = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_manifest_files(&entry, out)?;
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(entry);
        }
    }
    Ok(())
}

fn read_file(path: &Path, out: &mut Vec<Document>) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    split_documents(&path.display().to_string(), &text, out)
}

/// Splits a YAML stream (JSON is YAML) into documents; `List` items become documents.
pub fn split_documents(name: &str, text: &str, out: &mut Vec<Document>) -> Result<(), Error> {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = format!("{name} document {}", i + 1);
        let value = serde_json::Value::deserialize(document).map_err(|e| Error::Parse {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
            let items = value.get("items").and_then(|i| i.as_array()).cloned();
            for (j, item) in items.unwrap_or_default().into_iter().enumerate() {
                out.push(Document {
                    origin: format!("{origin} item {}", j + 1),
                    value: item,
                });
            }
        } else {
            out.push(Document { origin, value });
        }
    }
    Ok(())
}

/// One evaluated workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub document: String,
    pub workload: String,
    pub pods: u64,
    pub starts: u64,
    pub result: &'static str,
    pub allowed: bool,
    pub message: String,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady: Option<Load>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak: Option<Load>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Documents of kinds the webhook does not evaluate (Service, ConfigMap, …).
    pub skipped: usize,
    /// Why each skipped document was skipped: `m.yaml document 1: kind Service`.
    pub skipped_documents: Vec<String>,
}

impl Report {
    /// 0: everything judged was allowed; 1: something was denied; 2: nothing was judged.
    pub fn exit_code(&self) -> u8 {
        if self.findings.is_empty() {
            EXIT_BAD_INPUT
        } else if self.findings.iter().all(|f| f.allowed) {
            EXIT_ALLOWED
        } else {
            EXIT_DENIED
        }
    }

    /// When no document was a workload the check judges, why: a CI job given the wrong
    /// file must not pass silently.
    pub fn nothing_judged(&self) -> Option<String> {
        if !self.findings.is_empty() {
            return None;
        }
        let seen = if self.skipped_documents.is_empty() {
            "no documents".to_owned()
        } else {
            self.skipped_documents.join("; ")
        };
        Some(format!(
            "nothing to check: no document is a workload headroom evaluates ({seen}). It \
             evaluates {}, as manifests or AdmissionReview v1 bodies",
            crate::admission::SUPPORTED
        ))
    }

    fn skip(&mut self, d: &Document, why: String) {
        self.skipped += 1;
        self.skipped_documents.push(format!("{}: {why}", d.origin));
    }

    pub fn to_table(&self) -> String {
        let header = ["DOCUMENT", "WORKLOAD", "PODS", "STARTS", "RESULT"];
        let rows: Vec<[String; 5]> = self
            .findings
            .iter()
            .map(|f| {
                [
                    f.document.clone(),
                    f.workload.clone(),
                    f.pods.to_string(),
                    f.starts.to_string(),
                    f.result.to_owned(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  "));
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(header);
        for row in &rows {
            out.push_str(&line(row.each_ref().map(String::as_str)));
        }
        for f in &self.findings {
            out.push_str(&format!("\n{} ({}): {}\n", f.workload, f.result, f.message));
            for w in &f.warnings {
                out.push_str(&format!("  warning: {w}\n"));
            }
        }
        let denied = self.findings.iter().filter(|f| !f.allowed).count();
        out.push_str(&format!(
            "\n{} workloads checked, {} denied, {} other documents skipped\n",
            self.findings.len(),
            denied,
            self.skipped
        ));
        out
    }
}

/// Evaluates every workload document as a create, in order; each allowed workload's steady
/// load counts against the ones after it. `apiserver`: the API server's capacity, for a
/// budget with `apiserverRequestsPerSecond: auto`.
pub fn check(
    documents: &[Document],
    budget: &ControlPlaneBudget,
    snapshot: &Snapshot,
    inventory: &Inventory,
    apiserver: Option<&ApiserverCapacity>,
) -> Result<Report, Error> {
    let kind_of = |d: &Document| -> Result<String, Error> {
        d.value
            .get("kind")
            .and_then(|k| k.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::InvalidWorkload {
                document: d.origin.clone(),
                message: "missing field `kind`".to_owned(),
            })
    };
    let with_namespace = |d: &Document| {
        let mut value = d.value.clone();
        if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.entry("namespace").or_insert_with(|| "default".into());
        }
        value
    };

    let mut autoscalers = Autoscalers::default();
    for d in documents {
        if kind_of(d)? == "HorizontalPodAutoscaler" {
            let hpa: HorizontalPodAutoscaler =
                serde_json::from_value(with_namespace(d)).map_err(|e| Error::InvalidWorkload {
                    document: d.origin.clone(),
                    message: e.to_string(),
                })?;
            autoscalers.insert(&hpa);
        }
    }

    let mut report = Report::default();
    let mut pending = Load::ZERO;
    let budget_name = budget.metadata.name.clone().unwrap_or_default();
    // Offline the user chose the data: neither its age nor its coverage is judged.
    let snapshot = &Snapshot {
        nodes: None,
        ..snapshot.clone()
    };
    for d in documents {
        let kind = kind_of(d)?;
        let judged = match Kind::from_kind(&kind) {
            _ if kind == review::KIND => reviews::read(d)?,
            Some(kind) => Judged::Workload(
                Box::new(Workload::from_value(kind, &d.origin, with_namespace(d))?),
                None,
            ),
            None => Judged::Skipped(format!("kind {kind}")),
        };
        let (workload, old) = match judged {
            Judged::Workload(workload, old) => (workload, old),
            Judged::Skipped(why) => {
                report.skip(d, why);
                continue;
            }
        };
        let ctx = Context {
            budget_name: &budget_name,
            budget: &budget.spec,
            snapshot: Some(snapshot),
            // Offline the user chose the data; its age is not checked.
            data_age: Some(std::time::Duration::ZERO),
            inventory,
            autoscalers: &autoscalers,
            pending,
            apiserver,
            // Nor is the capacity data's.
            apiserver_age: apiserver.map(|_| std::time::Duration::ZERO),
        };
        let decision = decision::decide(&workload, old.as_deref(), &ctx);
        if decision.outcome == Outcome::Allowed
            && let Some(e) = &decision.evaluation
        {
            pending += (e.projection.workload_steady - snapshot.current_share(&workload.reference))
                .clamp_non_negative();
        }
        report
            .findings
            .push(finding(d, &workload, decision, &budget_name));
    }
    Ok(report)
}

fn finding(d: &Document, workload: &Workload, decision: Decision, budget_name: &str) -> Finding {
    let message = match (&decision.outcome, &decision.evaluation) {
        (Outcome::Allowed, Some(e)) => decision::allowed_summary(budget_name, e),
        _ => decision.message.clone(),
    };
    Finding {
        document: d.origin.clone(),
        workload: workload.reference.to_string(),
        pods: decision.pods,
        starts: decision.starts,
        result: decision.outcome.as_str(),
        allowed: decision.allowed(),
        steady: decision.evaluation.as_ref().map(|e| e.projection.steady),
        peak: decision.evaluation.as_ref().map(|e| e.projection.peak),
        message,
        warnings: decision.warnings,
    }
}

#[cfg(test)]
mod tests;
