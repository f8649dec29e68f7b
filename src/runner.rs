//! TODO-SKELETON runner
