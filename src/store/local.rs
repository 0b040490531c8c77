//! Local directory store (placeholder, being written).
