//! TODO-SKELETON store
