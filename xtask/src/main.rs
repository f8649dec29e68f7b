//! `cargo xtask test|demo|bench|lab`.
fn main() {}
