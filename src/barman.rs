//! TODO-SKELETON barman
