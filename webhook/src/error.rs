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

    #[error(transparent)]
    Profile(#[from] collector::schema::profiles::ProfileError),

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
