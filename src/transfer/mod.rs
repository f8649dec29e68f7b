//! TODO-SKELETON transfer

pub mod rsync;
pub mod streams;
