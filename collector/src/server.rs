//! The collector's HTTP endpoints: /metrics, /healthz, /readyz.
