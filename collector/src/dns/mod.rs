//! DNS: parse the messages the kernel captured, match responses to queries, count search-list expansions, keep a bounded top-K of names.
