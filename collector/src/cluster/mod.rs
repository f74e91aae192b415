//! The collector in a cluster: one pod watch for this node, API server and DNS discovery.
