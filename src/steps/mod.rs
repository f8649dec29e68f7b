//! TODO-SKELETON steps
