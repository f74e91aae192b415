//! The webhook crate's errors. Each variant says what went wrong and where, and, where a
//! user can fix it, what to change.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    Parse { path: String, message: String },

    #[error("budget {path}: field `{field}`: {message}")]
    InvalidBudget {
        path: String,
        field: &'static str,
        message: String,
    },

    #[error(
        "profiles {source_name}: apiVersion `{found_api_version}`, kind `{found_kind}`: expected \
         `headroom.dev/v1alpha1` `ProfileList`"
    )]
    UnsupportedProfileVersion {
        source_name: String,
        found_api_version: String,
        found_kind: String,
    },

    #[error("profiles {source_name}: {field}: {message}")]
    InvalidProfile {
        source_name: String,
        field: String,
        message: String,
    },

    #[error("nodes {path}: {message}")]
    InvalidNodes { path: String, message: String },

    #[error("{document}: {message}")]
    InvalidWorkload { document: String, message: String },

    #[error("GET {url}: {message}")]
    Fetch { url: String, message: String },

    #[error("Prometheus query `{query}` at {url}: {message}")]
    Prometheus {
        url: String,
        query: String,
        message: String,
    },

    #[error("TLS {what} {path}: {message}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        message: String,
    },

    #[error("Kubernetes API: {message}")]
    Kube { message: String },

    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
