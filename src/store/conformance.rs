//! Store conformance suite (placeholder, being written).
