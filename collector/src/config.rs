//! Typed configuration: flags, an optional file, one Default, validated at start-up.
