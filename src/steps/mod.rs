//! TODO-SKELETON steps

pub mod prepare_dirs;
