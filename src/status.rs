//! TODO-SKELETON status
