//! TODO-SKELETON progress
