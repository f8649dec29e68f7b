//! TODO-SKELETON source
