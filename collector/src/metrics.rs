//! Prometheus metrics of the collector (prefix `headroom_`).
