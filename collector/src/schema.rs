//! The documents the collector serves and the webhook reads (`headroom.dev/v1alpha1`):
//! one definition for both binaries, built with or without the agent.
pub mod dns_names;
pub mod profiles;
