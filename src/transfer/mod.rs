//! TODO-SKELETON transfer
